"""SIGTERM stops a long command the way Ctrl-C does: finished work kept, logs written."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from moa.cli.common import stopping_on_sigterm


class ReachedTheDefault(Exception):
    """SIGTERM got past ``stopping_on_sigterm`` (without this, it would end pytest)."""


@pytest.fixture(autouse=True)
def sigterm_caught_outside() -> Iterator[None]:
    def caught(signum: int, frame: object) -> None:
        raise ReachedTheDefault

    previous = signal.signal(signal.SIGTERM, caught)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.fixture
def sigint_ignored() -> Iterator[None]:
    """As in a job a non-interactive shell started in the background."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("ignored", [False, True])
def test_sigterm_raises_keyboard_interrupt_inside_the_block_only(
    ignored: bool, request: pytest.FixtureRequest
) -> None:
    if ignored:
        request.getfixturevalue("sigint_ignored")
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), stopping_on_sigterm():
        os.kill(os.getpid(), signal.SIGTERM)
        signal.sigtimedwait([], 1)  # let the handler run
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.usefixtures("sigint_ignored")
@pytest.mark.parametrize("returns", [False, True])
def test_with_sigint_ignored_sigterm_cancels_every_task_and_the_block_raises_keyboard_interrupt(
    returns: bool,
) -> None:
    unwound: list[str] = []

    async def worker(name: str) -> None:
        try:
            await asyncio.sleep(30)
        finally:
            unwound.append(name)

    async def main() -> str:
        workers = [asyncio.create_task(worker(f"w{n}")) for n in range(3)]
        await asyncio.sleep(0)
        os.kill(os.getpid(), signal.SIGTERM)
        try:
            await asyncio.gather(*workers)
        except asyncio.CancelledError:
            if returns:  # a run that takes its cancellation as the end of its work
                return "partial"
            raise
        return "done"

    shutdown_errors: list[dict[str, object]] = []

    def run() -> str:
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(lambda _, context: shutdown_errors.append(context))
        try:
            return loop.run_until_complete(main())
        finally:
            loop.close()

    with pytest.raises(KeyboardInterrupt), stopping_on_sigterm():
        run()
    assert sorted(unwound) == ["w0", "w1", "w2"]
    assert shutdown_errors == []


_EVAL_TERMINATED_ON_THE_FOURTH_CALL = """
import os, signal, sys
from moa.cli.main import app
from moa.providers.registry import register_kind
from moa.testing import FunctionProvider

calls = []

def answer(request):
    calls.append(request.model)
    if len(calls) == 4:
        os.kill(os.getpid(), signal.SIGTERM)
    return "The answer is 7"

register_kind("sigterm-fake", lambda name, settings, local: FunctionProvider(answer))
app(sys.argv[1:], prog_name="moa")
"""


@pytest.mark.parametrize("sigint", ["default", "ignored"])
def test_moa_eval_stopped_by_sigterm_keeps_its_items_and_writes_its_call_log(
    tmp_path: Path, sigint: str
) -> None:
    # A process of its own: the signal, and whatever the interrupted run leaves behind,
    # stay out of the test session.
    config = tmp_path / "mix.yaml"
    config.write_text(
        "name: mix\nproviders:\n  fake: {kind: sigterm-fake}\n"
        'layers:\n  - [{model: "fake:weak"}, {model: "fake:strong"}]\n'
        'aggregator: {model: "fake:agg"}\n'
    )
    data = tmp_path / "gsm8k.jsonl"
    data.write_text("".join(f'{{"question": "{n} + 4?", "answer": "#### 7"}}\n' for n in (3, 2, 1)))
    out, log = tmp_path / "out", tmp_path / "calls.jsonl"
    args = ["eval", "gsm8k", "--data", str(data)]
    args += ["--system", str(config), "--no-baselines", "--out", str(out)]
    args += ["--cache", str(tmp_path / "c.sqlite"), "--record-calls", str(log)]
    handler = signal.SIG_IGN if sigint == "ignored" else signal.SIG_DFL
    result = subprocess.run(
        [sys.executable, "-c", _EVAL_TERMINATED_ON_THE_FOURTH_CALL, *args],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lambda: signal.signal(signal.SIGINT, handler),
    )
    assert result.returncode == 130, result.stderr
    assert "interrupted" in result.stderr
    # Every task unwound: none ends in a traceback or is left pending at shutdown.
    assert "Traceback" not in result.stderr and "pending" not in result.stderr, result.stderr
    items = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
    assert [r["item_id"] for r in items] == ["0"]  # the first item, finished before the signal
    assert (out / "report.md").is_file()
    assert len(log.read_text().splitlines()) - 1 >= 3  # its three calls at least
