"""An OpenAI-compatible HTTP server for mixtures, with a live web playground.

Needs the ``server`` extra: ``pip install 'mixture-of-agents[server]'``.
"""

from moa.server.app import create_app, create_app_from_env
from moa.server.errors import APIError
from moa.server.settings import ServerSettings, api_keys_from_env

__all__ = ["APIError", "ServerSettings", "api_keys_from_env", "create_app", "create_app_from_env"]
