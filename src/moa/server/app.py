"""The OpenAI-compatible HTTP app: routes, error handlers, playground files.

:func:`create_app` builds everything from :class:`ServerSettings`; tests and
embedding applications hand over ready mixtures (``mixtures=``) and the
registry that serves config files and pass-through ids (``providers=``).
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response

from moa import __version__
from moa.engine.mixture import Mixture
from moa.history import HistorySettings, RunFilter, RunLog
from moa.providers.registry import ProviderRegistry
from moa.server.catalog import MixtureCatalog
from moa.server.completions import ChatRun, ChatStream, ClientGoneError, race
from moa.server.errors import APIError
from moa.server.history import RunsReader
from moa.server.limits import CHAT_PATH, RUNS_PATH, RequestGuard
from moa.server.metrics import CONTENT_TYPE_LATEST, ServerMetrics
from moa.server.responses import completion_body
from moa.server.schemas import chat_body_schema, parse_chat_request
from moa.server.settings import DEFAULT_API_KEY_ENV, ServerSettings, api_keys_from_env
from moa.server.streaming import ChunkEncoder
from moa.tracing import Tracing

__all__ = ["SETTINGS_ENV", "create_app", "create_app_from_env", "tune_gc_for_serving"]

SETTINGS_ENV = "MOA_SERVER_SETTINGS"
"""Environment variable through which ``moa serve --workers N`` hands settings to each worker."""

_STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}


def create_app(
    settings: ServerSettings | None = None,
    *,
    mixtures: dict[str, Mixture] | None = None,
    providers: ProviderRegistry | None = None,
    tracing: Tracing | None = None,
) -> FastAPI:
    """The server app. Config errors surface here, before it serves anything.

    ``tracing`` sends OpenTelemetry spans through a given tracer provider; by
    default the ``OTEL_*`` environment decides (see :mod:`moa.tracing`).
    """
    settings = settings or ServerSettings()
    catalog = MixtureCatalog.load(
        config_dir=settings.config_dir,
        include_presets=settings.include_presets,
        mixtures=mixtures,
        providers=providers,
        allow_passthrough=settings.allow_passthrough,
        passthrough_models=settings.passthrough_models,
    )
    metrics = ServerMetrics()
    static = _static_files()
    tracing = tracing if tracing is not None else Tracing.from_env()
    history = (
        HistorySettings.from_env(content=settings.history_content) if settings.history else None
    )
    run_log = RunLog(history, tracing)
    runs = RunsReader(history)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        metrics.close()
        await catalog.aclose()
        await asyncio.to_thread(run_log.close)
        runs.close()

    app = FastAPI(
        title="moa: Mixture-of-Agents, OpenAI-compatible",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,  # its page loads scripts from a CDN; /openapi.json stays
        redoc_url=None,
    )
    app.state.catalog = catalog
    app.state.metrics = metrics
    app.state.settings = settings
    app.state.run_log = run_log
    _add_error_handlers(app, metrics)
    _document_chat_body(app)

    @app.post(CHAT_PATH, response_model=None)
    async def chat_completions(request: Request) -> Response:
        if tracing is None:
            return await answer(request, None)
        span, parent = tracing.start_request(f"POST {CHAT_PATH}", request.headers)
        span.set_attribute("http.request.method", "POST")
        span.set_attribute("url.path", CHAT_PATH)
        try:
            response = await answer(request, parent)
        except APIError as exc:
            tracing.end_request(span, status=exc.status, error=exc.message)
            raise
        except Exception as exc:
            tracing.end_request(span, status=500, error=f"{type(exc).__name__}: {exc}")
            raise
        if isinstance(response, ChatStream):
            response.on_end(lambda status: tracing.end_request(span, status=status))
        else:
            tracing.end_request(span, status=response.status_code)
        return response

    async def answer(request: Request, parent: object | None) -> Response:
        chat = parse_chat_request(await request.body(), max_messages=settings.max_messages)
        mixture = catalog.get(chat.model)
        if chat.overrides is not None:
            mixture = mixture.variant(chat.overrides)
        label = chat.model if chat.model in catalog else "passthrough"
        run = ChatRun(mixture, chat, metrics, label, log=run_log, parent=parent)
        run.check()
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        headers = {"x-request-id": completion_id, "x-moa-trace-id": run.capture.trace_id}
        if chat.stream:
            encoder = ChunkEncoder(
                completion_id=completion_id,
                created=created,
                model=chat.model,
                include_usage=chat.include_usage,
                progress=chat.progress,
                agent_deltas=chat.agent_deltas,
            )
            return ChatStream(run, encoder, deadline=settings.request_deadline, headers=headers)
        try:
            result = await race(run.result(), request.receive, settings.request_deadline)
        except ClientGoneError:
            return Response(status_code=499)
        body = completion_body(
            result, completion_id=completion_id, created=created, model=chat.model
        )
        return Response(_json(body), media_type="application/json", headers=headers)

    @app.get(RUNS_PATH)
    async def list_runs(
        q: str | None = None,
        mixture: str | None = None,
        model: str | None = None,
        since: float | None = None,
        until: float | None = None,
        failed: bool = False,
        source: str | None = None,
        limit: int = 20,
        offset: int = 0,
    ) -> dict[str, Any]:
        where = RunFilter(
            query=q,
            mixture=mixture,
            model=model,
            since=since,
            until=until,
            failed=failed,
            source=source,
            limit=max(1, min(limit, 200)),
            offset=max(0, offset),
        )
        found = await runs.list(where)
        return {"object": "list", "data": [run.summary() for run in found]}

    @app.get(RUNS_PATH + "/{run_id}")
    async def get_run(run_id: str) -> dict[str, Any]:
        return (await runs.get(run_id)).to_dict()

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [catalog.describe(n) for n in catalog.names()]}

    @app.get("/v1/models/{model:path}")
    async def get_model(model: str) -> dict[str, Any]:
        if model not in catalog:
            catalog.get(model)  # raises the 404, or accepts a pass-through id
            return {"id": model, "object": "model", "created": catalog.created, "owned_by": "moa"}
        return catalog.describe(model)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "version": __version__, "mixtures": len(catalog.names())}

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    async def playground() -> Response:
        return _static_response(static, "index.html")

    @app.get("/static/{name}", include_in_schema=False)
    async def static_file(name: str) -> Response:
        return _static_response(static, name)

    app.add_middleware(RequestGuard, settings=settings, metrics=metrics)
    return app


def create_app_from_env() -> FastAPI:
    """The app of one ``moa serve`` worker: settings from ``$MOA_SERVER_SETTINGS``.

    Keys never travel through that variable: it names the variable that holds them.
    """
    raw = json.loads(os.environ.get(SETTINGS_ENV, "{}"))
    key_env = raw.pop("api_key_env", DEFAULT_API_KEY_ENV)
    settings = ServerSettings.model_validate({**raw, "api_keys": api_keys_from_env(key_env)})
    app = create_app(settings)
    tune_gc_for_serving()
    return app


def tune_gc_for_serving() -> None:
    """Keep the cyclic garbage collector from pausing every open stream at once.

    For the process that serves, once the app is built: everything alive then
    (modules, the app, its mixtures) is frozen out of collections, and full
    collections run ten times less often (young cycles are still collected as
    usual). Each full collection scans every object of every request in flight;
    with 500 streams open they took 30-140 ms and showed as the p99 of
    ``moa bench server --upstream inprocess --ramp 10 --latency 10`` (about 100 ms,
    15 ms with this).
    """
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, 100)


def _json(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def _document_chat_body(app: FastAPI) -> None:
    """Put the request body of chat completions into ``/openapi.json``.

    The route reads the raw body itself (validation names the offending field and
    answers in OpenAI's error shape), so FastAPI cannot see its schema; clients and
    schema-driven fuzzers need it.
    """
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = build()  # FastAPI keeps it as app.openapi_schema
        body, refs = chat_body_schema("#/components/schemas/")
        document.setdefault("components", {}).setdefault("schemas", {}).update(refs)
        document["paths"][CHAT_PATH]["post"]["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body}},
        }
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def _static_files() -> dict[str, bytes]:
    folder = resources.files("moa.server").joinpath("static")
    return {
        entry.name: entry.read_bytes()
        for entry in folder.iterdir()
        if entry.is_file() and any(entry.name.endswith(ext) for ext in _STATIC_TYPES)
    }


def _static_response(static: dict[str, bytes], name: str) -> Response:
    body = static.get(name)
    if body is None:
        raise APIError(404, f"no file {name!r} here", code="not_found")
    media_type = _STATIC_TYPES[name[name.rindex(".") :]]
    return Response(body, media_type=media_type, headers={"cache-control": "no-cache"})


def _add_error_handlers(app: FastAPI, metrics: ServerMetrics) -> None:
    def respond(error: APIError) -> Response:
        metrics.observe_error(error.type, error.code)
        return Response(
            error.json_bytes(),
            status_code=error.status,
            media_type="application/json",
            headers=error.headers,
        )

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, APIError)
        return respond(exc)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return respond(APIError(exc.status_code, str(exc.detail), code="http_error"))

    async def validation_error(request: Request, exc: Exception) -> Response:
        return respond(APIError.invalid(str(exc)))

    async def unexpected(request: Request, exc: Exception) -> Response:
        error = APIError(500, "internal server error", type="server_error", code="internal_error")
        metrics.observe_error(error.type, error.code)
        return JSONResponse(error.body(), status_code=500)

    app.add_exception_handler(APIError, api_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, unexpected)
