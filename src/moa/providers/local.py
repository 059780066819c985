"""The ``local`` provider: GGUF models run in-process by llama-cpp-python.

A model id is ``local:NAME`` for a catalog model (``moa models pull NAME``
installs it) or ``local:/path/to/file.gguf`` for any GGUF file. Each model is
loaded once and serves one generation at a time; a CPU gate lets at most
``parallel`` generations run at once, each with ``threads`` threads, so that
concurrent agents share a small CPU instead of fighting over it. Generation
runs on a worker thread and its tokens reach the event loop as they appear;
cancelling the consumer stops the generation within a token.

With ``local.batch`` above 1, calls of one model that wait for it at the same
time (the samples of a vote or Self-MoA, a layer's agents, concurrent items)
are decoded together by :mod:`moa.providers.local_batch`. The first to get the
model starts a batch; calls waiting for the model join it, at the start or
whenever a row is free, up to ``batch`` at a time, first come first in. Once a
call that cannot join it (another model's, or one that must go alone) has
waited ``handover_s``, a running batch takes no more calls, so that it drains
and lets that call have its turn. The engine lets up to ``batch`` calls of each
model in at once (:meth:`LocalProvider.concurrency_key`).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from moa.errors import ConfigError, MoAError, ModelNotInstalledError, ProviderError
from moa.providers.base import Provider
from moa.providers.catalog import CATALOG, catalog_model, model_dir
from moa.providers.local_model import Entry, Generation, LocalModel, call_kwargs, import_llama
from moa.providers.settings import LocalSettings
from moa.providers.turns import Turns
from moa.types import CompletionChunk, CompletionRequest, Usage

__all__ = ["LocalProvider", "default_parallel"]

_END = object()
_POLL_S = 0.05
"""How often a worker waiting for a model or the CPU looks at its cancel flag."""
_GATHER_S = 0.02
"""With batching on, how long the first call to get a model waits for others to join it."""


def default_parallel(cores: int) -> int:
    """Generations that may run at once: one on up to four cores, else a quarter of them."""
    return 1 if cores <= 4 else cores // 4


class _Cancelled(Exception):
    pass


@dataclass
class _Call:
    """One ``stream`` call on its way to a model."""

    run: Generation
    request: CompletionRequest
    kwargs: dict[str, Any]
    post: Callable[[object], None]
    batchable: bool
    ended: bool = False

    def end(self) -> None:
        """Tell the consumer there is nothing more (once)."""
        if not self.ended:
            self.ended = True
            self.post(_END)


class _Line:
    """Workers waiting for a lock, by when each began to."""

    def __init__(self) -> None:
        self._since: list[float] = []
        self._lock = threading.Lock()

    def enter(self) -> float:
        since = time.monotonic()
        with self._lock:
            self._since.append(since)
        return since

    def leave(self, since: float) -> None:
        with self._lock:
            self._since.remove(since)

    def longest_wait(self) -> float | None:
        """Seconds the first of them has been waiting; None when nobody waits."""
        with self._lock:
            return time.monotonic() - min(self._since) if self._since else None


@contextmanager
def _holding(turns: Turns, run: Generation, line: _Line | None = None) -> Iterator[None]:
    """Hold ``turns``, giving up as soon as ``run`` is cancelled while waiting for it."""
    since = None if line is None else line.enter()
    try:
        if not turns.acquire(run.cancelled.is_set):
            raise _Cancelled
    finally:
        if line is not None and since is not None:
            line.leave(since)
    try:
        if run.cancelled.is_set():
            raise _Cancelled
        yield
    finally:
        turns.release()


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
        self.batch = self.settings.batch
        # The engine queues calls beyond this, so waiting for the CPU does not eat a call's
        # timeout. Unbatched, as many calls as may run at once; batched, as many calls of each
        # model as its batch can take (see concurrency_key), so that calls of several models
        # arriving together each fill their model's batch.
        self.max_concurrency = self.parallel if self.batch == 1 else self.batch
        self._gate = Turns(self.parallel, poll_s=_POLL_S)
        self._models: dict[Path, LocalModel] = {}
        self._models_lock = threading.Lock()
        self._waiting: dict[LocalModel, list[_Call]] = {}
        """Batchable calls whose worker has not got their model yet (under ``_models_lock``)."""
        self._alone_lines: dict[LocalModel, _Line] = {}
        """Per model, workers of calls that cannot join a batch, waiting for it."""

    def __repr__(self) -> str:
        return (
            f"LocalProvider(name={self.name!r}, parallel={self.parallel}, threads={self.threads})"
        )

    def concurrency_key(self, request: CompletionRequest) -> Hashable:
        return None if self.batch == 1 else request.model

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
                    model,
                    path,
                    sha256=sha256,
                    n_ctx=self.settings.n_ctx,
                    threads=self.threads,
                    extra_buffers=self.settings.extra_buffers,
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

        batchable = self.batch > 1 and model.can_batch(
            kwargs, continue_final=request.continue_final
        )
        call = _Call(run, request, kwargs, post, batchable)
        if batchable:
            with self._models_lock:
                self._waiting.setdefault(model, []).append(call)
        worker = threading.Thread(
            target=self._work,
            args=(model, call),
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

    def _work(self, model: LocalModel, call: _Call) -> None:
        """A call's worker: wait for the model and the CPU, then answer it (with others)."""
        owned, checked = True, False
        line = None if call.batchable else self._alone_line(model)
        try:
            with _holding(model.busy, call.run, line):
                owned, checked = self._unwait(model, call), True
                if not owned:
                    return  # a batch took it along and answers it
                model.load()
                with _holding(self._gate, call.run):
                    if call.batchable:
                        time.sleep(_GATHER_S)  # others on their way come in at the start
                        self._answer_batch(model, call)
                    else:
                        self._answer(model, call)
        except _Cancelled:
            if not checked:  # cancelled while waiting: a batch may have taken it meanwhile
                owned = self._unwait(model, call)
        except Exception as exc:
            self._fail(model, call, exc)
        finally:
            if owned:
                call.end()

    def _alone_line(self, model: LocalModel) -> _Line:
        with self._models_lock:
            return self._alone_lines.setdefault(model, _Line())

    def _unwait(self, model: LocalModel, call: _Call) -> bool:
        """Take ``call`` off the waiting list; False when a batch has already taken it."""
        if not call.batchable:
            return True
        with self._models_lock:
            waiting = self._waiting.get(model, [])
            if call in waiting:
                waiting.remove(call)
                return True
            return False

    def _answer(self, model: LocalModel, call: _Call) -> None:
        """One call alone on the model, streaming its text, then its usage."""
        run, request = call.run, call.request
        finish: str | None = None
        pieces = model.generate(
            run, request.messages, call.kwargs, continue_final=request.continue_final
        )
        for text, reason in pieces:
            if run.cancelled.is_set():
                raise _Cancelled
            finish = reason or finish
            if text:
                call.post(CompletionChunk(text))
        call.post(CompletionChunk("", Usage(run.prompt_tokens, run.completion_tokens, 1), finish))

    def _answer_batch(self, model: LocalModel, leader: _Call) -> None:
        """A batch started by ``leader``; calls waiting for the model join it while it runs.

        Each call ends as soon as its own answer does. A leader that cannot be
        batched (no chat template, no room) is answered alone.
        """
        joined: list[_Call] = []  # those still going: a batch can outlive many calls

        def done(call: _Call, reason: str | None) -> None:
            run = call.run
            if not run.cancelled.is_set():
                usage = Usage(run.prompt_tokens, run.completion_tokens, 1)
                call.post(CompletionChunk("", usage, reason))
            call.end()

        def entry(call: _Call) -> Entry:
            return (
                call.run,
                call.request.messages,
                call.kwargs,
                _emitter(call.post),
                partial(done, call),
            )

        started = False

        def more(rows: int, take: Callable[[Entry], bool]) -> list[Entry]:
            nonlocal started
            with self._models_lock:
                alone = self._alone_lines.get(model)
                waits = (self._gate.longest_wait(), alone.longest_wait() if alone else None)
                waited = max((w for w in waits if w is not None), default=None)
                if started and waited is not None and waited >= self.settings.handover_s:
                    return []  # let the batch drain: someone else's turn is next
                started = True
                joined[:] = [call for call in joined if not call.ended]
                waiting = self._waiting.get(model, [])
                taken: list[Entry] = []
                for call in list(waiting):
                    if len(taken) == rows:
                        break
                    if call.run.cancelled.is_set():
                        continue
                    joining = entry(call)
                    if not take(joining):
                        break  # first come first in: it goes next, maybe alone
                    waiting.remove(call)
                    joined.append(call)
                    taken.append(joining)
                return taken

        try:
            batched = model.generate_batch([entry(leader)], n_seq=self.batch, more=more)
        except Exception as exc:
            for call in (leader, *joined):
                if not call.ended:
                    self._fail(model, call, exc)
            return
        finally:
            for call in joined:
                call.end()
        if not batched:
            self._answer(model, leader)

    def _fail(self, model: LocalModel, call: _Call, exc: Exception) -> None:
        """Tell the call's consumer what went wrong (nothing when it has gone already)."""
        if isinstance(exc, MoAError):
            call.post(exc)
            return
        if call.run.cancelled.is_set():  # an aborted prompt evaluation surfaces as an error
            return
        hint = ""
        if "context window" in str(exc):
            hint = f"; shorten the input or raise local.n_ctx (now {self.settings.n_ctx})"
        error = ProviderError(
            f"local model {model.label!r} failed: {exc}{hint}",
            provider=self.name,
            model=call.request.model,
        )
        error.__cause__ = exc
        call.post(error)

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


def _emitter(post: Callable[[object], None]) -> Callable[[str], None]:
    def emit(text: str) -> None:
        if text:
            post(CompletionChunk(text))

    return emit
