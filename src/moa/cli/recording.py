"""What ``moa run``, ``moa chat`` and ``moa logs replay`` share: recording their runs.

Each run goes to the run history (unless ``--no-log`` or ``history: false``)
and, when OpenTelemetry is configured, to a trace; both are written by a
background thread after the answer is shown (see :mod:`moa.history.writer`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer

from moa.config import MixtureConfig
from moa.engine.events import Event
from moa.engine.mixture import Mixture
from moa.history import ContentPolicy, HistorySettings, RunLog, RunSource, setup_of
from moa.tracing import Tracing
from moa.types import GenerationParams, Message

__all__ = [
    "LogContentOption",
    "NoLogOption",
    "content_policy",
    "recorded_stream",
    "run_log",
    "setup_of",
]

NoLogOption = Annotated[
    bool,
    typer.Option("--no-log", help="Do not record this run in the run history (moa logs)."),
]
LogContentOption = Annotated[
    str,
    typer.Option(
        "--log-content",
        help="What the history keeps: full (messages and answers) or none "
        "(only the mixture, models, tokens, timings and errors).",
    ),
]


def content_policy(value: str) -> ContentPolicy:
    """``--log-content``'s value, checked."""
    if value not in ("full", "none"):
        raise typer.BadParameter("must be full or none", param_hint="--log-content")
    return "full" if value == "full" else "none"


@contextmanager
def run_log(config: MixtureConfig | None, *, no_log: bool, content: str) -> Iterator[RunLog]:
    """A :class:`RunLog` for this command, written out when the command ends."""
    policy = content_policy(content)
    keep = not no_log and (config is None or config.history)
    history = HistorySettings.from_env(content=policy) if keep else None
    log = RunLog(history, Tracing.from_env())
    try:
        yield log
    finally:
        log.close()


def recorded_stream(
    mixture: Mixture,
    messages: list[Message],
    log: RunLog,
    *,
    source: RunSource,
    config: MixtureConfig | None = None,
    params: GenerationParams | None = None,
    replay_of: str | None = None,
) -> Iterator[Event]:
    """:meth:`Mixture.stream`, with the run handed to ``log`` however it ends."""
    capture = log.start(
        mixture.spec,
        tuple(messages),
        source=source,
        replay_of=replay_of,
        setup=None if config is None else setup_of(config),
    )
    error: BaseException | None = None
    try:
        for event in mixture.stream(messages, params=params, trace_id=capture.trace_id):
            capture.observe(event)
            yield event
    except Exception as exc:  # a library error ends the run; interruptions count as cancelled
        error = exc
        raise
    finally:
        log.submit(capture.finish(error=error))
