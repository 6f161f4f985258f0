"""A small web service to deploy, a load generator, and the ``make demo`` runner."""
