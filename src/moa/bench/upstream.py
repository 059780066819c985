"""A fake OpenAI-compatible upstream in its own process, for benchmarks.

A real upstream never shares our interpreter. Run in a thread of the
benchmark's own process, the fake server's request handling would compete for
the GIL with the engine being measured and count as its overhead; in a child
process it runs beside it, as a remote server would.

The child is ``python -m moa.bench.upstream`` (not :mod:`multiprocessing`, which
would re-import the caller's main module) and speaks JSON lines on its standard
input and output: the behaviours in, the base URL out, then ``records`` or ``stop``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import asdict, astuple
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from moa.testing.openai_server import ModelBehavior, RequestRecord

__all__ = ["ChildUpstream"]


def _behavior_data(behavior: ModelBehavior) -> dict[str, Any]:
    if not isinstance(behavior.text, str):
        raise TypeError("a behaviour sent to another process needs a plain text reply")
    return asdict(behavior)


def _behavior(data: dict[str, Any]) -> ModelBehavior:
    from moa.testing.openai_server import ModelBehavior

    failures = [(int(status), after) for status, after in data.pop("failures", [])]
    return ModelBehavior(**data, failures=failures)


class ChildUpstream:
    """A :class:`~moa.testing.FakeOpenAIServer` run by a child Python process."""

    def __init__(
        self,
        models: Mapping[str, ModelBehavior] | None = None,
        default: ModelBehavior | None = None,
        *,
        max_concurrent: int | None = None,
    ) -> None:
        self._setup = {
            "max_concurrent": max_concurrent,
            "models": None
            if models is None
            else {name: _behavior_data(b) for name, b in models.items()},
            "default": None if default is None else _behavior_data(default),
        }
        self._process: subprocess.Popen[str] | None = None
        self.base_url = ""

    def _pipes(self) -> tuple[IO[str], IO[str]]:
        if self._process is None or self._process.stdin is None or self._process.stdout is None:
            raise RuntimeError("the upstream is not running")
        return self._process.stdin, self._process.stdout

    def _ask(self, line: str) -> str:
        stdin, stdout = self._pipes()
        stdin.write(line + "\n")
        stdin.flush()
        answer = stdout.readline()
        if not answer:
            raise RuntimeError("the fake upstream process exited (see its error output above)")
        return answer.strip()

    def start(self) -> ChildUpstream:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "moa.bench.upstream"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            self.base_url = self._ask(json.dumps(self._setup))
        except BaseException:
            self.stop()
            raise
        return self

    def records(self) -> list[RequestRecord]:
        """Every request the upstream has handled so far, in order of completion."""
        from moa.testing.openai_server import RequestRecord

        return [RequestRecord(*fields) for fields in json.loads(self._ask("records"))]

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        try:
            if process.stdin is not None:
                process.stdin.write("stop\n")
                process.stdin.close()
            process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            process.kill()
            process.wait()
        finally:
            if process.stdout is not None:
                process.stdout.close()

    def __enter__(self) -> ChildUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _serve() -> None:
    from moa.testing.openai_server import FakeOpenAIServer

    setup = json.loads(sys.stdin.readline())
    models = setup["models"]
    default = setup["default"]
    with FakeOpenAIServer(
        None if models is None else {name: _behavior(b) for name, b in models.items()},
        None if default is None else _behavior(default),
        max_concurrent=setup.get("max_concurrent"),
    ) as server:
        print(server.base_url, flush=True)
        for line in sys.stdin:
            if line.strip() != "records":
                break
            records = [astuple(r) for r in server.records]
            print(json.dumps(records), flush=True)


if __name__ == "__main__":
    _serve()
