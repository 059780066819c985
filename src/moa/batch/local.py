"""The local engine: one event loop in this process answers the batch.

A fixed number of workers pull items from one queue, so a million-line input
costs as many tasks as there are workers, and each finished record reaches the
journal at once. Providers keep their own per-provider concurrency and rate
limits on top of this.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from moa.batch.answer import MixtureFactory, answer_item
from moa.batch.engine import Deliver
from moa.batch.inputs import BatchItem, InputKind

__all__ = ["LocalEngine"]


@dataclass(frozen=True)
class LocalEngine:
    """``--engine local``: ``concurrency`` requests in flight in this process."""

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
        mixture = factory()
        mixture.check()
        queue = iter(items)

        async def worker() -> None:
            for item in queue:  # one shared iterator: each item goes to one worker
                deliver(item, await answer_item(mixture, item, kind))

        try:
            workers = [asyncio.ensure_future(worker()) for _ in range(self.concurrency)]
            try:
                await asyncio.gather(*workers)
            finally:
                for task in workers:
                    task.cancel()
                await asyncio.gather(*workers, return_exceptions=True)
        finally:
            await mixture.aclose()
