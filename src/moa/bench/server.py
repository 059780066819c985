"""Server overhead under load: many concurrent streaming requests through ``moa serve``.

Three processes share the machine, as they would in production: a fake
OpenAI-compatible upstream (:class:`~moa.bench.upstream.ChildUpstream`) whose
every call takes exactly ``latency`` seconds, a real ``moa serve`` serving a
mixture of that upstream's models, and this process, the load generator, whose
clients speak raw HTTP/1.1 so that measuring costs as little as possible.

For each request the upstream's own time is the critical path it would have
with nothing in between: ``(layers + 1) * latency`` to the end of the stream,
``layers * latency + first_token`` to the first token. What a client measures
beyond that is the latency the server added (HTTP, validation, the engine,
upstream HTTP clients, SSE encoding, and any queueing on the CPU). The upstream's
own lateness under load is measured too and reported, not subtracted.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from moa.providers.base import Provider
from moa.types import CompletionChunk, CompletionRequest, Usage

__all__ = ["ServerBenchReport", "command", "measure_server"]

TARGET_P99_MS = 50.0
PROMPT = "Explain in two sentences why the sky is blue."
_CONTENT = b'"delta":{"content":"'
_DONE = b"data: [DONE]"
_ERROR = b'data: {"error"'


@dataclass(frozen=True)
class RequestTiming:
    """One request as its client saw it (``time.perf_counter`` seconds)."""

    started: float
    first_token: float | None
    finished: float
    status: int
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class BenchShape:
    requests: int = 500
    concurrency: int = 500
    ramp: float = 10.0
    layers: int = 1
    agents: int = 3
    latency: float = 10.0
    first_token: float = 1.0
    tokens: int = 40
    workers: int = 1
    upstream: str = "http"
    """``http``: a fake OpenAI server in its own process, reached through the real HTTP
    provider; ``inprocess``: providers inside the server with the same timing (no HTTP client)."""
    history: bool = True
    """The server records every request in a run history (its own, in a temporary folder)."""

    @property
    def ideal_s(self) -> float:
        return (self.layers + 1) * self.latency

    @property
    def ideal_ttft_s(self) -> float:
        return self.layers * self.latency + self.first_token


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


@dataclass
class ServerBenchReport:
    shape: BenchShape
    timings: list[RequestTiming]
    wall_s: float
    upstream_late_ms: list[float] = field(default_factory=list)
    server_cpu_s: float | None = None
    upstream_cpu_s: float | None = None
    client_cpu_s: float | None = None
    load: tuple[float, int] | None = None
    upstream_retries: int | None = None
    """Failed upstream attempts the server tried again (its ``/metrics``)."""
    history_runs: int | None = None
    """Runs the server wrote to its run history (``None``: history off)."""

    @property
    def peak_in_flight(self) -> int:
        """The most requests that were open at the same moment."""
        events = sorted(
            [(t.started, 1) for t in self.timings] + [(t.finished, -1) for t in self.timings],
            key=lambda event: (event[0], event[1]),
        )
        peak = open_now = 0
        for _, change in events:
            open_now += change
            peak = max(peak, open_now)
        return peak

    @property
    def errors(self) -> list[RequestTiming]:
        return [t for t in self.timings if not t.ok]

    @property
    def added_ms(self) -> list[float]:
        ideal = self.shape.ideal_s
        return [(t.finished - t.started - ideal) * 1000 for t in self.timings if t.ok]

    @property
    def added_ttft_ms(self) -> list[float]:
        ideal = self.shape.ideal_ttft_s
        return [
            (t.first_token - t.started - ideal) * 1000
            for t in self.timings
            if t.ok and t.first_token is not None
        ]

    @property
    def met(self) -> bool:
        return not self.errors and _percentile(self.added_ms, 99) <= TARGET_P99_MS

    def to_dict(self) -> dict[str, Any]:
        def summary(values: list[float]) -> dict[str, float]:
            return {
                "p50": _percentile(values, 50),
                "p90": _percentile(values, 90),
                "p99": _percentile(values, 99),
                "max": max(values, default=float("nan")),
            }

        errors = self.errors
        return {
            "shape": self.shape.__dict__,
            "ideal_s": self.shape.ideal_s,
            "ideal_ttft_s": self.shape.ideal_ttft_s,
            "requests": len(self.timings),
            "peak_in_flight": self.peak_in_flight,
            "errors": len(errors),
            "error_examples": sorted({t.error or "" for t in errors})[:5],
            "added_ms": summary(self.added_ms),
            "added_ttft_ms": summary(self.added_ttft_ms),
            "upstream_late_ms": summary(self.upstream_late_ms),
            "upstream_retries": self.upstream_retries,
            "history_runs": self.history_runs,
            "wall_s": self.wall_s,
            "throughput_rps": len(self.timings) / self.wall_s if self.wall_s else 0.0,
            "server_cpu_s": self.server_cpu_s,
            "upstream_cpu_s": self.upstream_cpu_s,
            "client_cpu_s": self.client_cpu_s,
            "target_p99_ms": TARGET_P99_MS,
            "target_met": self.met,
            "load_average_1m": None if self.load is None else self.load[0],
            "cpus": None if self.load is None else self.load[1],
        }

    def format(self) -> str:
        s = self.shape
        added, ttft, late = self.added_ms, self.added_ttft_ms, self.upstream_late_ms
        n = len(self.timings)
        cpu = ""
        if self.server_cpu_s is not None and n:
            per_request = self.server_cpu_s / n * 1000
            cpu = f"\nCPU: server {self.server_cpu_s:.2f} s ({per_request:.2f} ms a request)"
            if self.upstream_cpu_s is not None:
                cpu += f", fake upstream {self.upstream_cpu_s:.2f} s"
            if self.client_cpu_s is not None:
                cpu += f", load generator {self.client_cpu_s:.2f} s"
        lines = [
            f"{n} streaming requests from {s.concurrency} clients started over {s.ramp:g} s "
            f"(at most {self.peak_in_flight} in flight at once), "
            f"through moa serve with {s.workers} worker(s); upstream: "
            + ("fake OpenAI server over HTTP" if s.upstream == "http" else "in-process fakes"),
            f"mixture: {s.layers} layer(s) x {s.agents} agents + aggregator "
            f"({s.layers * s.agents + 1} upstream calls a request); every call {s.latency:g} s, "
            f"{s.tokens} tokens; the answer's first token at {s.first_token:g} s",
            f"upstream's own time per request: {s.ideal_s:.3f} s "
            f"(first token {s.ideal_ttft_s:.3f} s)",
            f"errors: {len(self.errors)} of {n}"
            + (f" ({'; '.join(self.to_dict()['error_examples'])})" if self.errors else ""),
            "added latency, end of stream: " + _quantiles(added),
            "added latency, first token:   " + _quantiles(ttft),
            "upstream's own lateness:      " + _quantiles(late) + " (part of the above)",
            "upstream calls retried by the server: "
            + ("unknown" if self.upstream_retries is None else str(self.upstream_retries)),
            "run history: "
            + (
                "off"
                if self.history_runs is None
                else f"on, {self.history_runs} run(s) written (warm-up included)"
            ),
            f"wall {self.wall_s:.2f} s, {n / self.wall_s:.1f} requests/s{cpu}",
            f"target p99 <= {TARGET_P99_MS:g} ms with 0 errors: {'met' if self.met else 'NOT met'}",
        ]
        if self.load is not None:
            lines.append(f"machine: load average {self.load[0]:.2f} on {self.load[1]} CPUs")
        return "\n".join(lines)


def _quantiles(values: list[float]) -> str:
    if not values:
        return "n/a"
    return (
        f"p50 {_percentile(values, 50):.1f} ms, p90 {_percentile(values, 90):.1f} ms, "
        f"p99 {_percentile(values, 99):.1f} ms, max {max(values):.1f} ms"
    )


# -- the load generator ------------------------------------------------------------------


def chat_request(body: bytes) -> bytes:
    """A raw HTTP/1.1 chat completions request with ``body``, on a connection of its own."""
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\n"
        b"Content-Type: application/json\r\nConnection: close\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


def stop_server(server: subprocess.Popen[bytes]) -> None:
    """Stop a server process, killing it if it does not stop within 15 seconds."""
    server.terminate()
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


async def _one_request(host: str, port: int, body: bytes) -> RequestTiming:
    started = time.perf_counter()
    first: float | None = None
    status = 0
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError as exc:
        return RequestTiming(started, None, time.perf_counter(), 0, f"connect: {exc}")
    try:
        writer.write(chat_request(body))
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        tail = b""
        while chunk := await reader.read(65536):
            window = tail + chunk
            if first is None:
                at = window.find(_CONTENT) + len(_CONTENT)
                # The role chunk's empty content does not count as the first token.
                if at >= len(_CONTENT) and len(window) > at and window[at] != ord('"'):
                    first = time.perf_counter()
            tail = window[-256:]
            if _ERROR in window:
                return RequestTiming(started, first, time.perf_counter(), status, "error event")
        finished = time.perf_counter()
    except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
        return RequestTiming(started, first, time.perf_counter(), status, type(exc).__name__)
    finally:
        writer.close()
    if status != 200:
        code = re.search(rb'"code": ?"([^"]+)"', tail)
        reason = f"HTTP {status}" + (f" {code.group(1).decode()}" if code else "")
        return RequestTiming(started, first, finished, status, reason)
    if _DONE not in tail:
        return RequestTiming(started, first, finished, status, "stream ended without [DONE]")
    return RequestTiming(started, first, finished, status)


async def _load(host: str, port: int, shape: BenchShape) -> tuple[list[RequestTiming], float]:
    body = json.dumps(
        {
            "model": "bench",
            "messages": [{"role": "user", "content": PROMPT}],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    ).encode()
    remaining = shape.requests
    timings: list[RequestTiming] = []

    async def client(index: int) -> None:
        nonlocal remaining
        if shape.ramp:
            await asyncio.sleep(shape.ramp * index / shape.concurrency)
        while remaining > 0:
            remaining -= 1
            timings.append(await _one_request(host, port, body))

    # The load generator's own collection pauses would count as server latency.
    threshold = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(threshold[0], threshold[1], 100)
    try:
        started = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(shape.concurrency)))
        return timings, time.perf_counter() - started
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


# -- the server under test ---------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _config(base_url: str, shape: BenchShape) -> dict[str, Any]:
    return {
        "name": "bench",
        "providers": {"upstream": {"base_url": base_url, "requires_key": False}},
        "layers": [
            [{"model": f"upstream:l{n}-a{i}"} for i in range(1, shape.agents + 1)]
            for n in range(1, shape.layers + 1)
        ],
        "aggregator": {"model": "upstream:aggregator"},
    }


def _server_command(config_dir: Path, port: int, shape: BenchShape) -> list[str]:
    if shape.upstream == "inprocess":
        entry = "from moa.bench.server import serve_inprocess; serve_inprocess()"
        return [sys.executable, "-c", entry, json.dumps(shape.__dict__), str(port)]
    options = ["--port", str(port), "--config-dir", str(config_dir), "--no-presets"]
    options += ["--workers", str(shape.workers), "--max-concurrency", str(shape.concurrency * 2)]
    options += ["--log-level", "warning", "--no-access-log"]
    options += [] if shape.history else ["--no-history"]
    return [sys.executable, "-c", "from moa.cli.main import main; main()", "serve", *options]


class _ScheduledProvider(Provider):
    """In-process stand-in for the fake upstream: the same timing, no HTTP.

    Tokens are due at fixed offsets from the call's start (as in the fake server), so
    event-loop lag delays a token without pushing back the ones after it.
    """

    name = "upstream"

    def __init__(self, shape: BenchShape) -> None:
        self.shape = shape
        self.tokens = [f"word{i} " for i in range(shape.tokens)]

    async def stream(self, request: CompletionRequest) -> AsyncIterator[CompletionChunk]:
        started = time.perf_counter()
        shape = self.shape
        if request.model == "aggregator":
            step = (shape.latency - shape.first_token) / max(1, len(self.tokens) - 1)
            due = [shape.first_token + i * step for i in range(len(self.tokens))]
        else:
            due = [shape.latency] * len(self.tokens)
        for token, offset in zip(self.tokens, due, strict=True):
            delay = started + offset - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            yield CompletionChunk(token)
        yield CompletionChunk("", Usage(10, len(self.tokens), 1), "stop")


def serve_inprocess() -> None:
    """The server process of ``--upstream inprocess``: scheduled in-process providers."""
    import uvicorn

    from moa.config import parse_config
    from moa.engine.mixture import Mixture
    from moa.providers.registry import ProviderRegistry
    from moa.server import ServerSettings, create_app
    from moa.server.app import tune_gc_for_serving

    shape = BenchShape(**json.loads(sys.argv[1]))
    spec = parse_config(_config("http://unused", shape), "benchmark").spec()
    registry = ProviderRegistry().add("upstream", _ScheduledProvider(shape))
    settings = ServerSettings(
        include_presets=False,
        max_concurrent_requests=shape.concurrency * 2,
        history=shape.history,
    )
    app = create_app(settings, mixtures={"bench": Mixture(spec, registry)})
    tune_gc_for_serving()
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", access_log=False)


def _start_server(config_dir: Path, port: int, shape: BenchShape) -> subprocess.Popen[bytes]:
    command = _server_command(config_dir, port, shape)
    # The bench's requests go to a history of their own, not the user's.
    env = {**os.environ, "MOA_API_KEYS": "", "MOA_HOME": str(config_dir / "home")}
    server = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"moa serve exited with status {server.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as probe:
                probe.sendall(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
                if probe.recv(64).startswith(b"HTTP/1.1 200"):
                    return server
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError("moa serve did not become ready within 30 s")


def _upstream_retries(port: int) -> int | None:
    """The server's ``moa_upstream_retries_total``, summed over models (None: unreadable)."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
    except OSError:
        return None
    return round(
        sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "moa_upstream_retries_total"
        )
    )


def _processes() -> dict[int, tuple[int, float, bytes]]:
    """Every process as pid -> (parent pid, CPU seconds used, command line), from /proc."""
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    found: dict[int, tuple[int, float, bytes]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        found[int(entry.name)] = (
            int(fields[1]),
            (int(fields[11]) + int(fields[12])) / ticks,
            command,
        )
    return found


def _cpu_seconds(pid: int | None) -> float | None:
    """CPU seconds of ``pid`` and its direct children (server workers); ``None`` off Linux."""
    if pid is None:
        return None
    table = _processes()
    used = [cpu for p, (parent, cpu, _) in table.items() if pid in (p, parent)]
    return sum(used) if used else None


def _upstream_pid() -> int | None:
    """The fake upstream is a child of this process running ``moa.bench.upstream``."""
    for pid, (parent, _, command) in _processes().items():
        if parent == os.getpid() and b"moa.bench.upstream" in command:
            return pid
    return None


def measure_server(shape: BenchShape) -> ServerBenchReport:
    """Start the upstream and the server, run the load, stop both."""
    from moa.bench.upstream import ChildUpstream
    from moa.testing.openai_server import ModelBehavior

    text = " ".join(f"word{i}" for i in range(shape.tokens))
    behavior = ModelBehavior(text=text, latency=shape.latency, first_token_delay=shape.first_token)
    with ChildUpstream(default=behavior) as upstream, tempfile.TemporaryDirectory() as folder:
        config_dir = Path(folder)
        config = _config(upstream.base_url, shape)
        (config_dir / "bench.yaml").write_text(yaml.safe_dump(config), "utf-8")
        port = _free_port()
        server = _start_server(config_dir, port, shape)
        try:
            warm = BenchShape(
                requests=4, concurrency=4, ramp=0.0, layers=shape.layers, agents=shape.agents
            )
            asyncio.run(_load("127.0.0.1", port, warm))
            before = len(upstream.records())
            upstream_pid = _upstream_pid()
            retries_before = _upstream_retries(port)
            cpu_before = _cpu_seconds(server.pid), _cpu_seconds(upstream_pid), time.process_time()
            timings, wall = asyncio.run(_load("127.0.0.1", port, shape))
            cpu_after = _cpu_seconds(server.pid), _cpu_seconds(upstream_pid), time.process_time()
            retries_after = _upstream_retries(port)
            records = upstream.records()[before:]
        finally:
            stop_server(server)
        # Read once the server has stopped: its writer has written everything by then.
        history_runs = _history_runs(config_dir / "home") if shape.history else None
    late = [(r.duration - shape.latency) * 1000 for r in records if r.status == 200]
    cpu = [
        None if start is None or end is None else end - start
        for start, end in zip(cpu_before, cpu_after, strict=True)
    ]
    try:
        load: tuple[float, int] | None = (os.getloadavg()[0], os.cpu_count() or 1)
    except (AttributeError, OSError):
        load = None
    retries = (
        None if retries_before is None or retries_after is None else retries_after - retries_before
    )
    return ServerBenchReport(
        shape, timings, wall, late, cpu[0], cpu[1], cpu[2], load, retries, history_runs
    )


def _history_runs(home: Path) -> int:
    from moa.history import HistoryStore

    path = home / "history.sqlite"
    if not path.is_file():
        return 0
    store = HistoryStore(path, create=False)
    try:
        return store.count()
    finally:
        store.close()


def command(
    requests: Annotated[int, typer.Option(min=1, help="Requests in all.")] = 500,
    concurrency: Annotated[
        int, typer.Option(min=1, help="Clients, each keeping one request in flight.")
    ] = 500,
    ramp: Annotated[
        float, typer.Option(min=0.0, help="Seconds over which the clients start (0: all at once).")
    ] = 10.0,
    layers: Annotated[int, typer.Option(min=1, help="Proposer layers of the mixture.")] = 1,
    agents: Annotated[int, typer.Option(min=1, help="Agents per layer.")] = 3,
    latency: Annotated[
        float, typer.Option(min=0.01, help="Seconds every upstream call takes.")
    ] = 10.0,
    first_token: Annotated[
        float, typer.Option(min=0.0, help="Seconds to an upstream stream's first token.")
    ] = 1.0,
    tokens: Annotated[int, typer.Option(min=1, help="Tokens of every upstream answer.")] = 40,
    workers: Annotated[int, typer.Option(min=1, help="moa serve worker processes.")] = 1,
    upstream: Annotated[
        str,
        typer.Option(
            help="http: a fake OpenAI server in its own process, through the real HTTP provider; "
            "inprocess: fake providers inside the server (the server's own cost, no HTTP client)."
        ),
    ] = "http",
    history: Annotated[
        bool,
        typer.Option(
            "--history/--no-history",
            help="The server records every request in a run history (a temporary one).",
        ),
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Latency the server adds over its upstream, under N concurrent streaming requests."""
    if first_token > latency:
        raise typer.BadParameter("--first-token cannot exceed --latency")
    if upstream not in ("http", "inprocess"):
        raise typer.BadParameter("--upstream is http or inprocess")
    if upstream == "inprocess" and workers != 1:
        raise typer.BadParameter("--upstream inprocess runs one worker")
    shape = BenchShape(
        requests,
        concurrency,
        ramp,
        layers,
        agents,
        latency,
        first_token,
        tokens,
        workers,
        upstream,
        history,
    )
    report = measure_server(shape)
    typer.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.format())
