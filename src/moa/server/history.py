"""``GET /v1/moa/runs``: the server's run history, read without blocking the event loop."""

from __future__ import annotations

import asyncio
import threading

from moa.errors import ConfigError
from moa.history import HistorySettings, HistoryStore, RunFilter, StoredRun
from moa.server.errors import APIError

__all__ = ["RunsReader"]


class RunsReader:
    """Reads the history in a worker thread; a history that is off is a 404."""

    def __init__(self, history: HistorySettings | None) -> None:
        self.history = history
        self._store: HistoryStore | None = None
        self._lock = threading.Lock()

    def _open(self) -> HistoryStore:
        if self.history is None:
            raise APIError(
                404,
                "this server keeps no run history (it was started with --no-history)",
                code="history_off",
            )
        with self._lock:
            if self._store is None:
                self._store = HistoryStore(self.history.path)
            return self._store

    async def list(self, where: RunFilter) -> list[StoredRun]:
        def read() -> list[StoredRun]:
            try:
                return self._open().runs(where)
            except ConfigError as exc:
                raise APIError.invalid(str(exc)) from exc

        return await asyncio.to_thread(read)

    async def get(self, run_id: str) -> StoredRun:
        def read() -> StoredRun:
            try:
                return self._open().get(run_id)
            except ConfigError as exc:
                raise APIError(404, str(exc), code="run_not_found") from exc

        return await asyncio.to_thread(read)

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None
