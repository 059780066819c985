"""What a server instance serves and the limits it enforces."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

__all__ = ["DEFAULT_API_KEY_ENV", "ServerSettings", "api_keys_from_env"]

DEFAULT_API_KEY_ENV = "MOA_API_KEYS"


class ServerSettings(BaseModel):
    """Settings of :func:`moa.server.create_app`; ``moa serve`` fills them from its options."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    config_dir: Path | None = None
    """Serve every ``*.yaml`` mixture config in this folder, named by ``name:`` or file stem."""
    include_presets: bool = True
    """Also serve the shipped presets (a config file of the same name replaces one)."""
    allow_passthrough: bool = True
    """Answer a ``provider:model`` id that names no mixture with that model alone."""
    passthrough_models: tuple[str, ...] = ()
    """Pass-through only for ids matching one of these shell-style patterns
    (``openai:gpt-4o-mini``, ``groq:*``); empty: any id of a known provider."""
    api_keys: tuple[SecretStr, ...] = ()
    """Bearer keys accepted on ``/v1/*``; empty means no authentication."""
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    max_messages: int = Field(default=1000, ge=1)
    max_concurrent_requests: int = Field(default=512, ge=1)
    """Chat completions answered at once; one more is refused with 429."""
    request_deadline: float | None = Field(default=600.0, gt=0)
    """Seconds one chat completion may take, streaming included (504 after that)."""
    history: bool = True
    """Record every chat completion in the run history (also served at ``/v1/moa/runs``)."""
    history_content: Literal["full", "none"] = "full"
    """``none`` keeps no message or answer text in the history, only shapes and numbers."""


def api_keys_from_env(env_var: str = DEFAULT_API_KEY_ENV) -> tuple[SecretStr, ...]:
    """Keys from an environment variable holding one key or several, comma- or space-separated."""
    value = os.environ.get(env_var, "")
    return tuple(SecretStr(key) for key in re.split(r"[,\s]+", value) if key)
