"""Tests (a package so that tests/test_X.py and tests/e2e/test_X.py may share a name)."""
