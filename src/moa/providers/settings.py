"""User-facing settings of one provider (a block under ``providers:`` in a config file)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr

__all__ = ["DEFAULT_KEEPALIVE", "LocalSettings", "ProviderSettings"]

DEFAULT_KEEPALIVE = 2.0
"""Seconds an idle upstream connection is kept: well under the common 5 s server idle timeout."""


class ProviderSettings(BaseModel):
    """How to reach one provider. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str = "openai"
    """``openai``: any OpenAI-compatible HTTP endpoint; ``local``: in-process GGUF models;
    any other name registered with :func:`moa.providers.registry.register_kind` or through
    the ``moa.providers`` entry-point group."""
    base_url: str | None = None
    api_key: SecretStr | None = None
    """The key itself; prefer ``api_key_env`` so that keys stay out of files."""
    api_key_env: str | None = None
    """The environment variable holding the key."""
    requires_key: bool | None = None
    """Whether a missing key is an error (default: yes for remote endpoints, no for local ones)."""
    headers: dict[str, str] = Field(default_factory=dict)
    max_concurrency: int | None = Field(default=None, ge=1)
    timeout: float | None = Field(default=None, gt=0)
    """Seconds a single HTTP request may take."""
    keepalive: float = Field(default=DEFAULT_KEEPALIVE, gt=0)
    """Seconds an idle connection stays open for reuse. Keep it below the server's own idle
    timeout (5 s on uvicorn-based servers such as vLLM, and on llama.cpp's server): a
    connection the server closes as it is reused fails the call, which then waits for a retry."""
    supports_continue: bool = False
    """The server can continue a final assistant message (vLLM, llama.cpp server)."""
    extra_body: dict[str, Any] = Field(default_factory=dict)
    """Extra JSON fields sent with every request to this provider."""


class LocalSettings(BaseModel):
    """How in-process local models share this machine's CPU."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    threads: int | None = Field(default=None, ge=1)
    """Threads for one running model (default: all cores divided by ``parallel``)."""
    parallel: int | None = Field(default=None, ge=1)
    """How many local generations may run at once (default: 1 on up to four cores)."""
    n_ctx: int = Field(default=4096, ge=256)
    """Context window, in tokens, of each call: of a loaded model, and of each row of its
    batch."""
    batch: int = Field(default=1, ge=1, le=64)
    """Calls of one model decoded together when they wait for it at the same time (1: one
    at a time). A CPU reads the weights once per step whatever the number of sequences, so
    four sampled answers cost far less than four times one. The batch's cache holds
    ``batch * n_ctx`` cells, next to the model's own ``n_ctx``."""
    handover_s: float = Field(default=2.0, ge=0)
    """How long a running batch goes on taking waiting calls of its model once a call that
    cannot join it (another model's, or one that must go alone) waits for the CPU; then it
    takes no more, and that call goes as soon as the batch has drained. Longer fills batches
    when calls of several models arrive together; shorter lets the other model in sooner."""
    model_dir: str | None = None
    """Where assembled model files live (default: the user cache, or $MOA_MODEL_DIR)."""
    extra_buffers: bool | None = None
    """Let llama.cpp repack weights into its CPU extra buffers (CPU_REPACK, AMX). Default: on,
    except in llama.cpp builds with AMX kernels, which crash on machines that do not run AMX
    (virtual machines among them); there ``true`` is honoured only once a child process has
    loaded the model with them and evaluated a prompt."""
