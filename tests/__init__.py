"""The test suite: a package, so the unit and integration tests share tests/kit.py."""
