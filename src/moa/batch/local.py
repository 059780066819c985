"""The local engine: one event loop in this process answers the jobs.

A fixed number of tasks pull jobs from one queue, so a million-line input
costs as many tasks as there are slots, and each finished record reaches the
driver at once. Providers keep their own per-provider concurrency and rate
limits on top of this. Each Ray actor runs the same loop (:func:`answer_jobs`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from moa.batch.answer import BatchWorkers, MixtureFactory
from moa.batch.engine import Deliver, Worker
from moa.batch.inputs import BatchItem, InputKind

__all__ = ["LocalEngine", "answer_jobs"]

Job = TypeVar("Job")


async def answer_jobs(
    worker: Worker[Job],
    jobs: Iterable[Job],
    concurrency: int,
    deliver: Callable[[Job, dict[str, Any]], None],
) -> None:
    """Answer ``jobs`` with ``concurrency`` in flight, delivering each record as it finishes.

    An exception (from a job or from ``deliver``) cancels the jobs still running.
    """
    queue = iter(jobs)

    async def slot() -> None:
        for job in queue:  # one shared iterator: each job goes to one slot
            deliver(job, await worker.answer(job))

    slots = [asyncio.ensure_future(slot()) for _ in range(concurrency)]
    try:
        await asyncio.gather(*slots)
    finally:
        for task in slots:
            task.cancel()
        await asyncio.gather(*slots, return_exceptions=True)


@dataclass(frozen=True)
class LocalEngine:
    """``--engine local``: ``concurrency`` jobs in flight in this process."""

    concurrency: int = 8

    def run(
        self,
        factory: MixtureFactory,
        kind: InputKind,
        items: Sequence[BatchItem],
        deliver: Deliver,
    ) -> None:
        asyncio.run(self.arun(factory, kind, items, deliver))

    async def arun(
        self,
        factory: MixtureFactory,
        kind: InputKind,
        items: Sequence[BatchItem],
        deliver: Deliver,
    ) -> None:
        worker = BatchWorkers(factory, kind)()
        try:
            await self.amap(worker, {item.key: item for item in items}, deliver)
        finally:
            await worker.aclose()

    async def amap(
        self,
        worker: Worker[Job],
        jobs: Mapping[str, Job],
        deliver: Callable[[Job, dict[str, Any]], None],
    ) -> None:
        """Answer ``jobs`` with ``worker`` (which stays open: its owner closes it)."""
        await answer_jobs(worker, jobs.values(), self.concurrency, deliver)
