"""``moa serve``: the OpenAI-compatible server and its playground."""

from __future__ import annotations

import ipaddress
import json
import os
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from moa.cli.common import err_console, reporting_errors
from moa.errors import ConfigError

__all__ = ["is_loopback", "serve"]


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    config_dir: Annotated[
        Path | None,
        typer.Option(
            "--config-dir",
            envvar="MOA_CONFIG_DIR",
            help="Serve every *.yaml mixture in this folder, named by name: or file stem.",
        ),
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    api_key_env: Annotated[
        str,
        typer.Option(
            help="Environment variable with the accepted bearer key(s), comma-separated. "
            "Unset: no authentication."
        ),
    ] = "MOA_API_KEYS",
    presets: Annotated[
        bool, typer.Option("--presets/--no-presets", help="Also serve the shipped presets.")
    ] = True,
    passthrough: Annotated[
        bool,
        typer.Option(
            "--passthrough/--no-passthrough",
            help="Answer a provider:model id that names no mixture with that model alone.",
        ),
    ] = True,
    passthrough_model: Annotated[
        list[str] | None,
        typer.Option(
            "--passthrough-model",
            help="Pass through only ids matching this shell-style pattern (repeatable), "
            "e.g. 'openai:gpt-4o-mini' or 'groq:*'. Default: any id of a known provider.",
        ),
    ] = None,
    allow_unauthenticated: Annotated[
        bool,
        typer.Option(
            "--allow-unauthenticated",
            help="Serve on an interface other than loopback without client keys: anyone who "
            "reaches the port spends the upstream keys of this server.",
        ),
    ] = False,
    max_concurrency: Annotated[
        int, typer.Option(min=1, help="Chat completions at once (per worker); more get 429.")
    ] = 512,
    max_body_bytes: Annotated[int, typer.Option(min=1024, help="Largest request body.")] = (
        4 * 1024 * 1024
    ),
    max_messages: Annotated[int, typer.Option(min=1, help="Most messages in one request.")] = 1000,
    deadline: Annotated[
        float, typer.Option(min=0.001, help="Seconds one request may take (then 504).")
    ] = 600.0,
    keep_alive: Annotated[
        int,
        typer.Option(
            min=1,
            help="Seconds an idle client connection stays open. Keep it above the idle timeout "
            "of the clients and load balancers in front (openai SDK 5 s, AWS ALB 60 s).",
        ),
    ] = 75,
    history: Annotated[
        bool,
        typer.Option(
            "--history/--no-history",
            help="Record every request in the run history (moa logs, GET /v1/moa/runs).",
        ),
    ] = True,
    log_content: Annotated[
        str,
        typer.Option(
            "--log-content",
            help="What the history keeps: full (messages and answers) or none.",
        ),
    ] = "full",
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    access_log: Annotated[
        bool, typer.Option("--access-log/--no-access-log", help="Log every request line.")
    ] = True,
) -> None:
    """Serve mixtures over the OpenAI Chat Completions API, with a playground at /."""
    with reporting_errors():
        try:
            import uvicorn

            from moa.server import ServerSettings, api_keys_from_env, create_app
            from moa.server.app import SETTINGS_ENV, tune_gc_for_serving
            from moa.server.metrics import shared_metrics_dir
        except ImportError as exc:
            raise ConfigError(
                "the server needs its extra: pip install 'mixture-of-agents[server]'"
            ) from exc
        if log_content not in ("full", "none"):
            raise typer.BadParameter("must be full or none", param_hint="--log-content")
        keys = api_keys_from_env(api_key_env)
        if not keys and not allow_unauthenticated and not is_loopback(host):
            raise ConfigError(
                f"--host {host} serves every client that reaches it, and no client keys are "
                f"set: anyone could spend this server's upstream API keys. Set {api_key_env} "
                "(comma-separated bearer keys), listen on 127.0.0.1, or pass "
                "--allow-unauthenticated"
            )
        settings = ServerSettings(
            config_dir=config_dir,
            include_presets=presets,
            allow_passthrough=passthrough,
            passthrough_models=tuple(passthrough_model or ()),
            api_keys=keys,
            max_body_bytes=max_body_bytes,
            max_messages=max_messages,
            max_concurrent_requests=max_concurrency,
            request_deadline=deadline,
            history=history,
            history_content="none" if log_content == "none" else "full",
        )
        app = create_app(settings)  # a broken config fails here, before the port is taken
        catalog = app.state.catalog
        names = catalog.names()
        url = f"http://{host}:{port}"
        err_console.print(
            f"moa: serving {len(names)} mixture(s) ({escape(', '.join(names))}) "
            f"at {escape(url)}/v1; playground at {escape(url)}/",
            highlight=False,
        )
        for name in names:
            problem = catalog.problem(name)
            if problem is not None:
                err_console.print(
                    f"[yellow]{escape(name)} cannot run here:[/] {escape(problem)}",
                    highlight=False,
                )
        if not keys:
            err_console.print(
                f"[yellow]no API key required[/] (set {escape(api_key_env)} to require one)",
                highlight=False,
            )
        target: object = app
        metrics_dir: AbstractContextManager[object] = nullcontext()
        if workers == 1:
            tune_gc_for_serving()
        else:
            # Workers import the app anew; the keys stay in their own variable.
            public = settings.model_dump(mode="json", exclude={"api_keys"})
            os.environ[SETTINGS_ENV] = json.dumps({**public, "api_key_env": api_key_env})
            target = "moa.server.app:create_app_from_env"
            # Every worker writes its metrics there, so any of them can answer for all.
            metrics_dir = shared_metrics_dir()
        with metrics_dir:
            uvicorn.run(
                target,  # type: ignore[arg-type]
                host=host,
                port=port,
                workers=workers,
                factory=workers > 1,
                log_level=log_level,
                access_log=access_log,
                # A client that keeps idle connections as long as the server does sometimes
                # sends a request down one the server is closing (it fails, or a balancer 502s).
                timeout_keep_alive=keep_alive,
            )
