"""The store: several writers at once (as with moa serve --workers N), retention, cancellation."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from moa import Mixture, MixtureSpec, ProviderRegistry
from moa.history import HistorySettings, HistoryStore, RunFilter, RunLog
from moa.testing import FakeProvider
from moa.types import Message

SPEC = MixtureSpec.model_validate(
    {"name": "duo", "layers": [[{"model": "fake:a"}]], "aggregator": {"model": "fake:agg"}}
)


def _record(log: RunLog, question: str) -> None:
    mixture = Mixture(SPEC, ProviderRegistry().add("fake", FakeProvider()))
    messages = (Message("user", question),)
    capture = log.start(mixture.spec, messages, source="server")
    for event in mixture.stream(messages, trace_id=capture.trace_id):
        capture.observe(event)
    log.submit(capture.finish())


def test_writers_in_parallel_share_one_file(tmp_path: Path) -> None:
    settings = HistorySettings(tmp_path / "history.sqlite")
    logs = [RunLog(settings) for _ in range(4)]  # one per server worker, each its own connection

    def work(n: int) -> None:
        for i in range(10):
            _record(logs[n], f"worker {n} question {i}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for log in logs:
        log.close()
    store = HistoryStore(settings.path)
    assert store.count() == 40
    assert len(store.runs(RunFilter(query='"worker 3"', limit=None))) == 10
    store.close()


def test_retention_removes_old_runs_when_a_writer_opens(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    log = RunLog(HistorySettings(path))
    _record(log, "old")
    log.close()
    store = HistoryStore(path)
    store._conn.execute("UPDATE runs SET created = ?", (time.time() - 40 * 86400,))
    store._conn.commit()
    store.close()
    log = RunLog(HistorySettings(path, keep_days=30))
    _record(log, "new")
    log.close()
    store = HistoryStore(path)
    assert [r.row["question"] for r in store.runs()] == ["new"]
    assert store.runs(RunFilter(query="old")) == []  # gone from the search index too
    store.close()


def test_a_run_stopped_midway_is_recorded_as_cancelled(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    log = RunLog(HistorySettings(path))
    fake = FakeProvider(delay={"agg": 5.0})
    mixture = Mixture(SPEC, ProviderRegistry().add("fake", fake))
    messages = (Message("user", "slow one"),)
    capture = log.start(mixture.spec, messages, source="cli")
    events = mixture.stream(messages, trace_id=capture.trace_id)
    for event in events:
        capture.observe(event)
        if capture.calls:  # the proposer answered; stop before the aggregator does
            break
    events.close()  # type: ignore[attr-defined]
    log.submit(capture.finish())
    log.close()
    store = HistoryStore(path)
    [run] = store.runs(RunFilter(failed=True))
    assert run.row["cancelled"] and run.row["output"] is None and run.result() is None
    assert [c.model for c in run.calls()] == ["fake:a"]
    store.close()
