"""Fixtures for the official-UI tests: the browser fixtures come from tests/conftest.py."""
