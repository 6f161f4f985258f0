"""Unit tests of the storefront (the build's unit-tests step runs them)."""

import app


def test_title_names_the_version():
    assert app.title("1.2.0") == "storefront 1.2.0"
