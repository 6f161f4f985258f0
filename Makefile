# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)
# Three workers on two cores: the e2e modules spend much of their time waiting on Airflow and on the services
# they deploy, so a third worker shortens the run (the long modules start first: tests/conftest.py LONG_MODULES).
PYTEST_WORKERS ?= 3

.PHONY: venv demo test test-fast bench lint schema docs clean

$(STAMP):
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test]"
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

venv: $(STAMP)

## The main job: a production canary on the embedded local platform (a bad release rolled back, a good
## one promoted). Options: make demo DEMO_ARGS="--speed 60 --rps 300 --keep"
demo: venv
	$(PY) -m airflow_deploy_provider.demo.run $(DEMO_ARGS)

## The whole test suite.
test: venv
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder -q

test-fast: venv
	$(PY) -m pytest -q -m "not slow"

bench: venv
	$(PY) benchmarks/parse_time.py

lint: venv
	$(VENV)/bin/ruff check airflow_deploy_provider tests benchmarks

## Regenerate docs/configuration.md from the schema.
docs: venv
	$(PY) -m airflow_deploy_provider.config.reference > docs/configuration.md

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
