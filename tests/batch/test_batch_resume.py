"""Resuming: a rerun keeps what finished, retries what failed upstream, never repeats a line."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from batch_helpers import fake_mixture, read_lines, write_requests

from moa.batch import BatchItem, BatchOptions, LocalEngine, run_batch
from moa.batch.answer import MixtureFactory
from moa.batch.engine import Deliver
from moa.batch.inputs import InputKind
from moa.engine.mixture import Mixture
from moa.testing import FunctionProvider


class _InterruptedEngine:
    """The local engine, with Ctrl-C pressed after ``after`` records."""

    def __init__(self, after: int) -> None:
        self.after = after
        self.seen = 0

    def run(
        self, factory: MixtureFactory, kind: InputKind, items: Sequence[BatchItem], deliver: Deliver
    ) -> None:
        def counting(item: BatchItem, record: dict[str, Any]) -> None:
            deliver(item, record)
            self.seen += 1
            if self.seen == self.after:
                raise KeyboardInterrupt

        LocalEngine(concurrency=4).run(factory, kind, items, counting)


def test_ctrl_c_keeps_what_finished_and_a_rerun_does_only_the_rest(tmp_path: Path) -> None:
    source = write_requests(tmp_path / "in.jsonl", 30)
    output = tmp_path / "out.jsonl"
    with pytest.raises(KeyboardInterrupt):
        run_batch(BatchOptions(source, output), fake_mixture, _InterruptedEngine(after=12))
    kept = read_lines(output)
    assert len(kept) == 12
    calls: list[str] = []

    def counting_mixture() -> Mixture:
        mixture = fake_mixture()
        inner = mixture.providers.get("fake")
        assert isinstance(inner, FunctionProvider)
        original = inner.function

        def function(request: Any) -> Any:
            calls.append(request.messages[-1].content)
            return original(request)

        inner.function = function
        return mixture

    summary = run_batch(BatchOptions(source, output), counting_mixture)
    assert (summary.resumed, summary.done, summary.complete) == (12, 18, True)
    assert len(calls) == 18 * 4  # three proposers and the aggregator per remaining request
    lines = read_lines(output)
    assert [line["custom_id"] for line in lines] == [f"req-{n}" for n in range(30)]
    for line in kept:
        assert line in lines  # finished lines are kept as they were


def test_a_cut_last_line_and_upstream_failures_are_sent_again(tmp_path: Path) -> None:
    source = write_requests(tmp_path / "in.jsonl", 5)
    output = tmp_path / "out.jsonl"
    run_batch(BatchOptions(source, output), fake_mixture)
    lines = output.read_text().splitlines()
    failed = json.loads(lines[1])
    failed["response"]["status_code"] = 502
    lines[1] = json.dumps(failed)
    output.write_text("\n".join(lines[:4]) + "\n" + lines[4][:25])  # a crash cut the last line
    summary = run_batch(BatchOptions(source, output), fake_mixture)
    assert (summary.resumed, summary.done) == (3, 2)
    final = read_lines(output)
    assert [line["custom_id"] for line in final] == [f"req-{n}" for n in range(5)]
    assert all(line["response"]["status_code"] == 200 for line in final)  # type: ignore[index]


def test_an_interrupted_table_resumes_from_its_partial_file(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("prompt\n" + "".join(f"question {n}\n" for n in range(10)))
    output = tmp_path / "out.csv"
    with pytest.raises(KeyboardInterrupt):
        run_batch(BatchOptions(source, output), fake_mixture, _InterruptedEngine(after=4))
    assert not output.exists()
    assert len((tmp_path / "out.csv.partial.jsonl").read_text().splitlines()) == 4
    summary = run_batch(BatchOptions(source, output), fake_mixture)
    assert (summary.resumed, summary.done) == (4, 6)
    assert len(output.read_text().splitlines()) == 11
    assert not (tmp_path / "out.csv.partial.jsonl").exists()


def test_the_call_cache_answers_a_repeated_batch(tmp_path: Path) -> None:
    from moa.batch import ConfigMixture
    from moa.config import parse_config
    from moa.testing import FakeOpenAIServer, ModelBehavior

    with FakeOpenAIServer(default=ModelBehavior(text="cached answer")) as server:
        config = parse_config(
            {
                "name": "http-moa",
                "providers": {"up": {"base_url": server.base_url, "requires_key": False}},
                "layers": [{"agents": [{"model": "up:a"}, {"model": "up:b"}]}],
                "aggregator": {"model": "up:c"},
            }
        )
        factory = ConfigMixture(config, tmp_path / "calls.sqlite")
        source = write_requests(tmp_path / "in.jsonl", 4)
        run_batch(BatchOptions(source, tmp_path / "first.jsonl"), factory)
        sent = len(server.requests)
        assert sent == 12
        run_batch(BatchOptions(source, tmp_path / "second.jsonl"), factory)
        assert len(server.requests) == sent  # every call came from the cache
    assert len(read_lines(tmp_path / "second.jsonl")) == 4
