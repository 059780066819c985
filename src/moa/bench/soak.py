"""Soak: many requests through ``moa serve``, some of whose upstream calls fail and some of
whose clients leave mid-stream; the server must answer all, and give back what it took.

A fake upstream in its own process answers every model in ``latency`` seconds and
fails a ``failure_rate`` share of the calls, at random, with a 500 (10% by default). The
load mixes streaming and whole answers; a share of the streaming clients close
their connection after the first chunk. After a warm-up, the server's resident
memory, its open sockets and the tasks on its event loop (``moa_event_loop_tasks``
of ``/metrics``) are read while it is idle; the same again after the load, once the
server has had ``settle`` seconds. Targets: no 5xx and no dropped connection, RSS
growth under 50 MB, sockets and tasks back to where they were. The report also says how
many upstream calls the circuit breaker refused (``moa_circuit_skipped_total``): the
upstream is never down, so none should be.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from moa.bench.server import BenchShape, _free_port, _start_server, chat_request, stop_server

__all__ = ["SoakReport", "SoakShape", "command", "soak"]

TARGET_RSS_GROWTH_MB = 50.0
PROMPT = "What is 2 + 2?"


@dataclass(frozen=True)
class SoakShape:
    requests: int = 10_000
    concurrency: int = 32
    warmup: int = 1_000
    latency: float = 0.02
    failure_rate: float = 0.1
    """Share of upstream calls that fail with a 500."""
    streaming: float = 0.5
    """Share of requests that stream."""
    disconnect: float = 0.05
    """Share of requests whose client leaves after the first streamed chunk."""
    settle: float = 10.0
    attempts: int = 5
    """Attempts per upstream call (the mixture's retry policy)."""
    seed: int = 0


@dataclass
class Idle:
    """The server at rest: resident memory (MB), open sockets, event-loop tasks."""

    rss_mb: float
    sockets: int
    tasks: int | None


@dataclass
class SoakReport:
    shape: SoakShape
    outcomes: Counter[str] = field(default_factory=Counter)
    """Per request: ``200``, another status, ``left`` (the client went away), or an error."""
    wall_s: float = 0.0
    before: Idle | None = None
    after: Idle | None = None
    circuit_skipped: int | None = None
    """Upstream calls the circuit breaker refused, warm-up included (None: not read)."""
    errors: dict[str, str] = field(default_factory=dict)
    """The first error message the server gave for each failing outcome."""

    @property
    def server_errors(self) -> int:
        return sum(n for k, n in self.outcomes.items() if k not in ("200", "left"))

    @property
    def rss_growth_mb(self) -> float:
        assert self.before is not None and self.after is not None
        return self.after.rss_mb - self.before.rss_mb

    @property
    def met(self) -> bool:
        assert self.before is not None and self.after is not None
        return (
            self.server_errors == 0
            and self.rss_growth_mb < TARGET_RSS_GROWTH_MB
            and self.after.sockets <= self.before.sockets
            and self.after.tasks == self.before.tasks
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "shape": asdict(self.shape),
            "outcomes": dict(self.outcomes),
            "wall_s": round(self.wall_s, 1),
            "before": asdict(self.before) if self.before else None,
            "after": asdict(self.after) if self.after else None,
            "circuit_skipped": self.circuit_skipped,
            "errors": dict(self.errors),
            "met": self.met,
        }

    def format(self) -> str:
        assert self.before is not None and self.after is not None
        s = self.shape
        rate = s.requests / self.wall_s if self.wall_s else 0.0
        outcomes = ", ".join(f"{k}: {n}" for k, n in sorted(self.outcomes.items()))
        return "\n".join(
            [
                f"soak: {s.requests} requests ({s.streaming:.0%} streaming, {s.disconnect:.0%} "
                f"leaving mid-stream), {s.concurrency} clients, {s.failure_rate:.0%} of upstream "
                f"calls failing; {self.wall_s:.0f}s ({rate:.0f} requests/s)",
                f"outcomes: {outcomes}",
                f"server errors (5xx, dropped connections): {self.server_errors}",
                f"upstream calls refused by the circuit breaker: {self.circuit_skipped}",
                f"after {s.warmup} warm-up requests, idle: RSS {self.before.rss_mb:.1f} MB, "
                f"{self.before.sockets} sockets, {self.before.tasks} event-loop tasks",
                f"after the load and {s.settle:g}s, idle: RSS {self.after.rss_mb:.1f} MB "
                f"({self.rss_growth_mb:+.1f} MB; target < {TARGET_RSS_GROWTH_MB:g}), "
                f"{self.after.sockets} sockets, {self.after.tasks} event-loop tasks",
                *(f"first {k}: {m}" for k, m in sorted(self.errors.items())),
                f"targets {'met' if self.met else 'NOT met'}",
            ]
        )


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text: str = response.read().decode()
    return text


def _circuit_skipped(metrics: str) -> int | None:
    """``moa_circuit_skipped_total``, summed over providers (None: no breaker in the metrics)."""
    found = re.findall(r"^moa_circuit_skipped_total\{[^}]*\} (\S+)$", metrics, flags=re.M)
    return round(sum(float(value) for value in found)) if found else None


def _idle(pid: int, port: int) -> Idle:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    rss_mb = int(match.group(1)) / 1024 if match else 0.0
    sockets = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            sockets += os.readlink(fd).startswith("socket:")
        except OSError:
            continue
    # The sockets are counted before /metrics is read: its connection would be one more.
    tasks = re.search(r"^moa_event_loop_tasks (\S+)$", _metrics(port), flags=re.M)
    return Idle(round(rss_mb, 1), sockets, int(float(tasks.group(1))) if tasks else None)


async def _request(port: int, stream: bool, leave: bool, errors: dict[str, str]) -> str:
    """The request's outcome; the first error message of each failing outcome goes to
    ``errors``."""
    outcome, rest = await _exchange(port, stream, leave)
    if outcome not in ("200", "left") and outcome not in errors:
        found = re.search(rb'"message": ?"((?:[^"\\]|\\.)*)"', rest)
        errors[outcome] = found.group(1).decode(errors="replace")[:500] if found else ""
    return outcome


async def _exchange(port: int, stream: bool, leave: bool) -> tuple[str, bytes]:
    body = json.dumps(
        {"model": "soak", "messages": [{"role": "user", "content": PROMPT}], "stream": stream}
    ).encode()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as exc:
        return f"connect {type(exc).__name__}", b""
    try:
        writer.write(chat_request(body))
        head = await reader.readuntil(b"\r\n\r\n")
        status = head.split(b" ", 2)[1].decode()
        if leave and status == "200":
            await reader.readuntil(b"\n\n")  # the first chunk, then away
            return "left", b""
        rest = await reader.read()
        if status == "200" and stream and b"data: [DONE]" not in rest:
            return "stream ended without [DONE]", rest
        if status == "200" and b'data: {"error"' in rest:
            return "error event", rest
        code = re.search(rb'"code": ?"([^"]+)"', rest)
        if status == "200" or code is None:
            return status, rest
        return f"{status} {code.group(1).decode()}", rest
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, IndexError) as exc:
        return f"dropped ({type(exc).__name__})", b""
    finally:
        writer.close()


async def _load(
    port: int, shape: SoakShape, count: int, rng: random.Random, errors: dict[str, str]
) -> Counter[str]:
    plan = []
    for _ in range(count):
        stream = rng.random() < shape.streaming
        plan.append(
            (stream, stream and rng.random() < shape.disconnect / max(shape.streaming, 1e-9))
        )
    outcomes: Counter[str] = Counter()

    async def client() -> None:
        while plan:
            stream, leave = plan.pop()
            outcomes[await _request(port, stream, leave, errors)] += 1

    await asyncio.gather(*(client() for _ in range(shape.concurrency)))
    return outcomes


def soak(shape: SoakShape) -> SoakReport:
    """Start the upstream and ``moa serve``, warm up, measure, load, measure again."""
    from moa.bench.upstream import ChildUpstream
    from moa.testing.openai_server import ModelBehavior

    behavior = ModelBehavior(
        text="It is four, since two and two make four.",
        latency=shape.latency,
        failure_rate=shape.failure_rate,
    )
    report = SoakReport(shape)
    rng = random.Random(shape.seed)
    with ChildUpstream(default=behavior) as upstream, tempfile.TemporaryDirectory() as folder:
        config_dir = Path(folder)
        config = {
            "name": "soak",
            "providers": {"up": {"base_url": upstream.base_url, "requires_key": False}},
            "layers": [[{"model": "up:a"}, {"model": "up:b"}, {"model": "up:c"}]],
            "aggregator": {"model": "up:agg"},
            "retry": {
                "max_attempts": shape.attempts,
                "backoff_initial": 0.01,
                "backoff_max": 0.05,
            },
        }
        (config_dir / "soak.yaml").write_text(yaml.safe_dump(config), "utf-8")
        port = _free_port()
        server = _start_server(config_dir, port, BenchShape(concurrency=shape.concurrency))
        try:
            warm = asyncio.run(_load(port, shape, shape.warmup, rng, report.errors))
            time.sleep(shape.settle)
            report.before = _idle(server.pid, port)
            started = time.perf_counter()
            report.outcomes = asyncio.run(_load(port, shape, shape.requests, rng, report.errors))
            report.wall_s = time.perf_counter() - started
            time.sleep(shape.settle)
            report.after = _idle(server.pid, port)
            report.circuit_skipped = _circuit_skipped(_metrics(port))
            report.outcomes.update(
                {f"warm-up {k}": n for k, n in warm.items() if k != "200" and k != "left"}
            )
        finally:
            stop_server(server)
    return report


def command(
    requests: Annotated[int, typer.Option(min=1, help="Requests after the warm-up.")] = 10_000,
    concurrency: Annotated[int, typer.Option(min=1, help="Clients at once.")] = 32,
    warmup: Annotated[int, typer.Option(min=0, help="Requests before the first reading.")] = 1_000,
    latency: Annotated[
        float, typer.Option(min=0.0, help="Seconds every upstream call takes.")
    ] = 0.02,
    failure_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of upstream calls that fail (500).")
    ] = 0.1,
    streaming: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of requests that stream.")
    ] = 0.5,
    disconnect: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="Share of requests whose client leaves mid-stream."),
    ] = 0.05,
    settle: Annotated[
        float, typer.Option(min=0.0, help="Seconds of rest before each reading.")
    ] = 10.0,
    attempts: Annotated[int, typer.Option(min=1, help="Attempts per upstream call.")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Soak moa serve: failing upstream calls, clients that leave, and what it gives back."""
    if disconnect > streaming:
        raise typer.BadParameter("--disconnect cannot exceed --streaming (only streams are left)")
    shape = SoakShape(
        requests,
        concurrency,
        warmup,
        latency,
        failure_rate,
        streaming,
        disconnect,
        settle,
        attempts,
    )
    report = soak(shape)
    typer.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.format())
    if not report.met:
        raise typer.Exit(1)
