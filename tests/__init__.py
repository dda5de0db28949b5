"""Tests for smartmeter_tx (run with: python -m twisted.trial tests)."""
