"""The ``local`` provider: GGUF models run in-process by llama-cpp-python.

A model id is ``local:NAME`` for a catalog model (``moa models pull NAME``
installs it) or ``local:/path/to/file.gguf`` for any GGUF file. Each model is
loaded once and serves one generation at a time; a CPU gate lets at most
``parallel`` generations run at once, each with ``threads`` threads, so that
concurrent agents share a small CPU instead of fighting over it. Generation
runs on a worker thread and its tokens reach the event loop as they appear;
cancelling the consumer stops the generation within a token.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from moa.errors import ConfigError, MoAError, ModelNotInstalledError, ProviderError
from moa.providers.base import Provider
from moa.providers.catalog import CATALOG, catalog_model, model_dir
from moa.providers.local_model import Generation, LocalModel, call_kwargs, import_llama
from moa.providers.settings import LocalSettings
from moa.types import CompletionChunk, CompletionRequest, Usage

__all__ = ["LocalProvider", "default_parallel"]

_END = object()
_POLL_S = 0.05
"""How often a worker waiting for a model or the CPU looks at its cancel flag."""


def default_parallel(cores: int) -> int:
    """Generations that may run at once: one on up to four cores, else a quarter of them."""
    return 1 if cores <= 4 else cores // 4


class _Cancelled(Exception):
    pass


@contextmanager
def _holding(lock: threading.Lock | threading.BoundedSemaphore, run: Generation) -> Iterator[None]:
    """Hold ``lock``, giving up as soon as ``run`` is cancelled while waiting for it."""
    while not lock.acquire(timeout=_POLL_S):
        if run.cancelled.is_set():
            raise _Cancelled
    try:
        if run.cancelled.is_set():
            raise _Cancelled
        yield
    finally:
        lock.release()


class LocalProvider(Provider):
    """In-process GGUF models; see the module docstring."""

    supports_continue = True
    prefers_streaming = True

    def __init__(self, name: str = "local", settings: LocalSettings | None = None) -> None:
        self.name = name
        self.settings = settings or LocalSettings()
        cores = os.cpu_count() or 1
        self.parallel = self.settings.parallel or default_parallel(cores)
        self.threads = self.settings.threads or max(1, cores // self.parallel)
        # The engine queues calls beyond this, so waiting for the CPU does not eat a call's timeout.
        self.max_concurrency = self.parallel
        self._gate = threading.BoundedSemaphore(self.parallel)
        self._models: dict[Path, LocalModel] = {}
        self._models_lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"LocalProvider(name={self.name!r}, parallel={self.parallel}, threads={self.threads})"
        )

    def model_path(self, model: str) -> tuple[Path, str | None]:
        """The file behind ``model`` and the sha256 it must have (``None`` for a user's file)."""
        entry = CATALOG.get(model)
        if entry is not None:
            path = model_dir(self.settings) / entry.filename
            if not path.is_file():
                raise ModelNotInstalledError(model, entry.pull_command)
            return path, entry.sha256
        if model.endswith(".gguf") or "/" in model or os.sep in model or model.startswith("~"):
            path = Path(model).expanduser()
            if not path.is_file():
                raise ConfigError(f"local model file {str(path)!r} does not exist")
            return path.resolve(), None
        catalog_model(model)  # raises, listing the catalog
        raise AssertionError("unreachable")  # pragma: no cover

    def check_model(self, model: str) -> None:
        """A catalog model must be installed, a path must name a file; neither is read."""
        self.model_path(model)

    def _model(self, model: str) -> LocalModel:
        path, sha256 = self.model_path(model)
        with self._models_lock:
            loaded = self._models.get(path)
            if loaded is None:
                loaded = self._models[path] = LocalModel(
                    model, path, sha256=sha256, n_ctx=self.settings.n_ctx, threads=self.threads
                )
            return loaded

    async def stream(self, request: CompletionRequest) -> AsyncIterator[CompletionChunk]:
        llama_cpp = import_llama()
        kwargs = call_kwargs(llama_cpp.Llama, request.params, continue_final=request.continue_final)
        if request.continue_final and request.messages[-1].role != "assistant":
            raise ConfigError("continue_final needs the conversation to end with an assistant turn")
        model = self._model(request.model)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        run = Generation()

        def post(item: object) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is gone: nobody is listening any more
                run.cancelled.set()

        worker = threading.Thread(
            target=self._work,
            args=(model, run, request, kwargs, post),
            name=f"moa-local-{model.label}",
            daemon=True,
        )
        worker.start()
        finished = False
        try:
            while (item := await queue.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, CompletionChunk)
                yield item
            finished = True
        finally:
            if not finished:
                run.cancelled.set()
                # Return only once the worker has let go of the model and the CPU.
                while await queue.get() is not _END:
                    pass

    def _work(
        self,
        model: LocalModel,
        run: Generation,
        request: CompletionRequest,
        kwargs: dict[str, Any],
        post: Callable[[object], None],
    ) -> None:
        finish: str | None = None
        try:
            with _holding(model.busy, run):
                model.load()
                with _holding(self._gate, run):
                    pieces = model.generate(
                        run, request.messages, kwargs, continue_final=request.continue_final
                    )
                    for text, reason in pieces:
                        if run.cancelled.is_set():
                            raise _Cancelled
                        finish = reason or finish
                        if text:
                            post(CompletionChunk(text))
            usage = Usage(run.prompt_tokens, run.completion_tokens, 1)
            post(CompletionChunk("", usage, finish))
        except _Cancelled:
            pass
        except MoAError as exc:
            post(exc)
        except Exception as exc:
            if not run.cancelled.is_set():  # an aborted prompt evaluation surfaces as an error
                hint = ""
                if "context window" in str(exc):
                    hint = f"; shorten the input or raise local.n_ctx (now {self.settings.n_ctx})"
                error = ProviderError(
                    f"local model {model.label!r} failed: {exc}{hint}",
                    provider=self.name,
                    model=request.model,
                )
                error.__cause__ = exc
                post(error)
        finally:
            post(_END)

    async def aclose(self) -> None:
        """Nothing is bound to an event loop here; loaded models stay for the next call.

        The sync facade closes providers after every call, and reloading a model
        each time would cost seconds: :meth:`unload` frees them explicitly.
        """

    async def unload(self) -> None:
        """Stop running generations and free every loaded model."""
        with self._models_lock:
            models = list(self._models.values())
            self._models.clear()
        for model in models:
            if model.active is not None:
                model.active.cancelled.set()
        await asyncio.to_thread(_close_all, models)


def _close_all(models: list[LocalModel]) -> None:
    for model in models:
        with model.busy:
            model.close()
