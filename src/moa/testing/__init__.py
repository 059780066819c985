"""Test doubles for ``moa`` users and for this project's own tests.

``FakeOpenAIServer`` and ``ModelBehavior`` (a real OpenAI-compatible HTTP
server) are imported on first use, so this module works without the
``server`` extra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from moa.testing.fakes import FakeProvider, FunctionProvider, Reply

if TYPE_CHECKING:
    from moa.testing.openai_server import FakeOpenAIServer, ModelBehavior

__all__ = ["FakeOpenAIServer", "FakeProvider", "FunctionProvider", "ModelBehavior", "Reply"]

_LAZY = {"FakeOpenAIServer", "ModelBehavior"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from moa.testing import openai_server

        return getattr(openai_server, name)
    raise AttributeError(f"module 'moa.testing' has no attribute {name!r}")
