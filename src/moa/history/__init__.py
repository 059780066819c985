"""The run history: every run of ``moa run``, ``moa chat`` and the server, kept in SQLite.

:class:`RunLog` takes finished runs off the caller's path (a background
thread writes them); :class:`HistoryStore` reads and searches them
(``moa logs``, ``GET /v1/moa/runs``). See docs/observability.md.
"""

from moa.history.capture import FinishedRun, RunCapture, RunSource
from moa.history.rows import StoredRun, mixture_hash, mixture_yaml, setup_of
from moa.history.settings import ContentPolicy, HistorySettings, default_history_path
from moa.history.store import HistoryStore, RunFilter
from moa.history.writer import RunLog

__all__ = [
    "ContentPolicy",
    "FinishedRun",
    "HistorySettings",
    "HistoryStore",
    "RunCapture",
    "RunFilter",
    "RunLog",
    "RunSource",
    "StoredRun",
    "default_history_path",
    "mixture_hash",
    "mixture_yaml",
    "setup_of",
]
