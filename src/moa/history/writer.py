"""Where finished runs go: one background thread writes the history and exports the traces.

A front door hands each :class:`~moa.history.capture.FinishedRun` to
:meth:`RunLog.submit`, which only puts it on a queue; the thread takes
whatever has queued up, writes it in one transaction and turns it into spans.
A request therefore never waits for SQLite or for a tracing exporter, and a
history that cannot be written costs a logged warning, never an answer.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from moa.engine.spec import MixtureSpec
from moa.history.capture import FinishedRun, RunCapture, RunSource
from moa.history.settings import HistorySettings
from moa.history.store import HistoryStore
from moa.types import Message

if TYPE_CHECKING:
    from moa.tracing import Tracing

__all__ = ["RunLog"]

log = logging.getLogger(__name__)
_STOP = object()


class RunLog:
    """Records runs in the history and/or a trace, off the caller's path; see the module doc."""

    def __init__(
        self, history: HistorySettings | None = None, tracing: Tracing | None = None
    ) -> None:
        self.history = history
        self.tracing = tracing
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._store: HistoryStore | None = None
        self._lock = threading.Lock()
        self.written = 0
        """Runs written to the history so far (tests and benches read it)."""

    @property
    def enabled(self) -> bool:
        return self.history is not None or self.tracing is not None

    def start(
        self,
        spec: MixtureSpec,
        messages: tuple[Message, ...],
        *,
        source: RunSource,
        replay_of: str | None = None,
        setup: Mapping[str, Any] | None = None,
        parent: object | None = None,
    ) -> RunCapture:
        """A capture for a run about to start; its ``trace_id`` is the run's trace id.

        With tracing on, the run's root span starts here (under ``parent``, an
        OpenTelemetry context such as the server's request span).
        """
        span = trace_id = None
        if self.tracing is not None:
            span, trace_id = self.tracing.start_run(spec.name, parent)
        return RunCapture(
            spec,
            messages,
            source=source,
            trace_id=trace_id,
            replay_of=replay_of,
            setup=setup,
            span=span,
        )

    def submit(self, run: FinishedRun) -> None:
        """Queue ``run`` for the background thread (returns at once)."""
        if not self.enabled:
            return
        self._ensure_thread()
        self._queue.put(run)

    def close(self, timeout: float | None = 30.0) -> None:
        """Write what is queued, then stop the thread (the process may exit after this)."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(_STOP)
            thread.join(timeout)
        if self._store is not None:
            self._store.close()
            self._store = None
        if self.tracing is not None:
            self.tracing.flush()

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until everything submitted so far is written (for tests and replays)."""
        done = threading.Event()
        if self._thread is None:
            return
        self._queue.put(done.set)
        done.wait(timeout)

    # -- the thread ---------------------------------------------------------------------

    def _ensure_thread(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="moa-history", daemon=True)
                self._thread.start()

    def _work(self) -> None:
        stop = False
        while not stop:
            batch: list[FinishedRun] = []
            waiters: list[Callable[[], None]] = []
            item = self._queue.get()
            while True:
                if item is _STOP:
                    stop = True
                elif isinstance(item, FinishedRun):
                    batch.append(item)
                elif callable(item):
                    waiters.append(item)
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            self._write(batch)
            for waiter in waiters:
                waiter()

    def _write(self, batch: list[FinishedRun]) -> None:
        if not batch:
            return
        if self.tracing is not None:
            for run in batch:
                try:
                    self.tracing.export(run)
                except Exception:  # a broken exporter must not lose the history
                    log.warning("could not export the trace of run %s", run.id, exc_info=True)
        if self.history is None:
            return
        try:
            store = self._open()
            self.written += store.add(batch, self.history.content)
        except Exception:
            log.warning(
                "could not write %d run(s) to the history %s",
                len(batch),
                self.history.path,
                exc_info=True,
            )

    def _open(self) -> HistoryStore:
        if self._store is None:
            assert self.history is not None
            store = HistoryStore(self.history.path)
            if self.history.keep_days is not None:
                removed = store.prune(older_than_days=self.history.keep_days)
                if removed:
                    log.info("history: removed %d run(s) past the retention", removed)
            self._store = store
        return self._store
