"""The OpenAI-compatible HTTP app: routes, error handlers, playground files.

:func:`create_app` builds everything from :class:`ServerSettings`; tests and
embedding applications hand over ready mixtures (``mixtures=``) and the
registry that serves config files and pass-through ids (``providers=``).
"""

from __future__ import annotations

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
from moa.providers.registry import ProviderRegistry
from moa.server.catalog import MixtureCatalog
from moa.server.completions import ChatRun, ChatStream, ClientGoneError, race
from moa.server.errors import APIError
from moa.server.limits import CHAT_PATH, RequestGuard
from moa.server.metrics import CONTENT_TYPE_LATEST, ServerMetrics
from moa.server.responses import completion_body
from moa.server.schemas import chat_body_schema, parse_chat_request
from moa.server.settings import DEFAULT_API_KEY_ENV, ServerSettings, api_keys_from_env
from moa.server.streaming import ChunkEncoder

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
) -> FastAPI:
    """The server app. Config errors surface here, before it serves anything."""
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

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        metrics.close()
        await catalog.aclose()

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
    _add_error_handlers(app, metrics)
    _document_chat_body(app)

    @app.post(CHAT_PATH, response_model=None)
    async def chat_completions(request: Request) -> Response:
        chat = parse_chat_request(await request.body(), max_messages=settings.max_messages)
        mixture = catalog.get(chat.model)
        if chat.overrides is not None:
            mixture = mixture.variant(chat.overrides)
        label = chat.model if chat.model in catalog else "passthrough"
        run = ChatRun(mixture, chat, metrics, label)
        run.check()
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        headers = {"x-request-id": completion_id}
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
        headers["x-moa-trace-id"] = result.trace_id
        return Response(_json(body), media_type="application/json", headers=headers)

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
