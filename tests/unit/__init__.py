"""Unit tests (a package so its conftest and the top-level one have distinct module names)."""
