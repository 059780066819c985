"""An OpenAI-compatible HTTP server for mixtures, with a live web playground.

Needs the ``server`` extra: ``pip install 'mixture-of-agents[server]'``. The app
is imported on first use, so the wire-format modules (:mod:`moa.server.schemas`,
:mod:`moa.server.responses`, :mod:`moa.server.errors`) work without that extra:
``moa batch`` reads and writes the same request and response bodies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from moa.server.errors import APIError

if TYPE_CHECKING:
    from moa.server.app import create_app, create_app_from_env
    from moa.server.settings import ServerSettings, api_keys_from_env

__all__ = ["APIError", "ServerSettings", "api_keys_from_env", "create_app", "create_app_from_env"]

_LAZY = {
    "create_app": "moa.server.app",
    "create_app_from_env": "moa.server.app",
    "ServerSettings": "moa.server.settings",
    "api_keys_from_env": "moa.server.settings",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'moa.server' has no attribute {name!r}")
