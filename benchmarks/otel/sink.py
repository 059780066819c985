"""A stand-in OpenTelemetry collector for benchmarks: accepts OTLP/HTTP trace exports.

It answers every ``POST /v1/traces`` with 200 and counts the requests and bytes it
received, so that ``moa bench server`` and ``moa bench overhead`` can run with span
export on (serialisation, batching and HTTP included) without a real collector:

    python benchmarks/otel/sink.py 4318 &
    OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 moa bench server

It prints what it received when stopped (Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import contextlib
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType

received = {"requests": 0, "bytes": 0}


class Sink(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        size = int(self.headers.get("content-length", "0"))
        self.rfile.read(size)
        received["requests"] += 1
        received["bytes"] += size
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 4318
    server = ThreadingHTTPServer(("127.0.0.1", port), Sink)

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    print(f"OTLP sink: {received['requests']} export(s), {received['bytes']:,} bytes", flush=True)


if __name__ == "__main__":
    main()
