"""What an engine is: something that answers jobs and hands each record back as it finishes.

Two levels. A :class:`Worker` answers one job at a time (a batch line, an
evaluation item); both engines drive workers the same way, ``concurrency``
jobs in flight on one event loop, here (``LocalEngine.amap``) or in every
actor of a Ray pool (``RayEngine.map``). :class:`Engine` is the batch job's
view on top of that: a mixture factory and the input's items.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from moa.batch.answer import MixtureFactory
from moa.batch.inputs import BatchItem, InputKind

__all__ = ["Deliver", "Engine", "Job", "Worker", "WorkerFactory"]

Job = TypeVar("Job")
_JobIn = TypeVar("_JobIn", contravariant=True)

Deliver = Callable[[BatchItem, dict[str, Any]], None]
"""Called in the driver process with each item's record, as soon as it exists."""


class Worker(Protocol[_JobIn]):
    """Answers jobs; one per process (or per Ray actor), built once and reused."""

    async def answer(self, job: _JobIn) -> dict[str, Any]:
        """The job's record (plain JSON data: it may travel back from another machine)."""
        ...

    async def aclose(self) -> None: ...


WorkerFactory = Callable[[], Worker[Job]]
"""Builds a worker where the work runs; picklable for ``--engine ray``."""


class Engine(Protocol):
    """Runs a batch's pending items; records arrive through ``deliver`` in any order.

    An engine may deliver a record twice (a retried worker); the journal keeps
    the first. Interrupting ``run`` loses nothing already delivered.
    """

    def run(
        self,
        factory: MixtureFactory,
        kind: InputKind,
        items: Sequence[BatchItem],
        deliver: Deliver,
    ) -> None: ...
