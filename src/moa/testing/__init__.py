"""Test doubles for ``moa`` users and for this project's own tests."""

from moa.testing.fakes import FakeProvider, FunctionProvider, Reply

__all__ = ["FakeProvider", "FunctionProvider", "Reply"]
