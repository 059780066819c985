"""``moa bench soak`` on a small scale: the load, the failures and the readings are real."""

from __future__ import annotations

from moa.bench.soak import Idle, SoakReport, SoakShape, soak


def test_a_short_soak_answers_everything_and_reads_the_server() -> None:
    report = soak(SoakShape(requests=300, warmup=50, concurrency=16, settle=2.0, disconnect=0.1))
    # The upstream fails one call in ten at random, so once in a long while every attempt of
    # one call fails: the server must then answer an OpenAI-shaped 502 that says so. Nothing
    # else may go wrong: no 500, no other 5xx, no dropped connection.
    failed = {k: n for k, n in report.outcomes.items() if k not in ("200", "left")}
    kinds = {k.removeprefix("warm-up ") for k in failed}  # warm-up outcomes are kept apart
    assert kinds <= {"502 aggregation_failed", "502 quorum_not_met"}, report.outcomes
    assert all("random failure of call" in report.errors[k] for k in kinds), report.errors
    assert sum(failed.values()) <= 2, (report.outcomes, report.errors)
    measured = sum(n for k, n in failed.items() if not k.startswith("warm-up "))
    assert report.outcomes["200"] + report.outcomes["left"] + measured == 300
    assert report.outcomes["left"] > 0  # some clients really left mid-stream
    assert report.before is not None and report.after is not None
    assert report.before.rss_mb > 10 and report.before.sockets >= 1
    assert report.after.tasks == report.before.tasks is not None
    assert f"server errors (5xx, dropped connections): {report.server_errors}" in report.format()
    # The upstream fails one call in ten, never ten in a row: its circuit never opens.
    assert report.circuit_skipped == 0
    assert "upstream calls refused by the circuit breaker: 0" in report.format()


def test_the_targets() -> None:
    report = SoakReport(SoakShape(), before=Idle(100.0, 3, 3), after=Idle(140.0, 3, 3))
    report.outcomes.update({"200": 10, "left": 1})
    assert report.met
    report.after = Idle(151.0, 3, 3)
    assert not report.met  # memory grew 51 MB
    report.after = Idle(120.0, 4, 3)
    assert not report.met  # a socket more
    report.after = Idle(120.0, 3, 4)
    assert not report.met  # a task more
    report.after = Idle(120.0, 3, 3)
    report.outcomes["502 aggregation_failed"] = 1
    assert not report.met and report.server_errors == 1
