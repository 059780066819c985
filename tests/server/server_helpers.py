"""Helpers of the server tests: a real uvicorn server on 127.0.0.1, mixtures of fakes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from moa import Mixture, MixtureSpec, ProviderRegistry
from moa.testing import FakeProvider

MIXTURE = {
    "name": "fake-moa",
    "layers": [[{"model": "fake:a"}, {"model": "fake:b"}, {"model": "fake:c"}]],
    "aggregator": {"model": "fake:agg"},
    "retry": {"max_attempts": 1},
}
ANSWER = "The final answer is four."


@contextmanager
def running(app: Any) -> Iterator[str]:
    """Serve ``app`` on an ephemeral port in a background thread; yield its base URL."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_level="warning", access_log=False, lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def fake_mixture(fake: FakeProvider, spec: dict[str, Any] | None = None) -> Mixture:
    registry = ProviderRegistry().add("fake", fake)
    return Mixture(MixtureSpec.model_validate(spec or MIXTURE), registry)


ServeFactory = Callable[..., str]
