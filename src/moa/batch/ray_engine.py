"""The Ray engine: Ray Data spreads the items over a pool of actors, here or on a cluster.

Each actor builds the mixture once (a local GGUF model is loaded once per
actor, not per request), owns one event loop, and answers a batch of items at a
time with ``concurrency`` requests in flight, through the same
:func:`~moa.batch.answer.answer_items` as the local engine. Results stream back
to the driver, which appends each record to the journal as it arrives.

Ray Data restarts an actor that dies and runs its batch again; a record that
then arrives twice is kept once (the journal ignores a repeated key).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from moa.batch.answer import MixtureFactory, answer_items
from moa.batch.engine import Deliver
from moa.batch.inputs import BatchItem, InputKind
from moa.errors import ConfigError

__all__ = ["RayEngine", "start_ray"]


def _ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise ConfigError(
            "--engine ray needs Ray Data: pip install 'mixture-of-agents[ray]'"
        ) from exc
    return ray


def start_ray(address: str | None = None) -> None:
    """Join ``address``, or start Ray on this machine bound to loopback only.

    A Ray started here serves this process alone, so it listens on 127.0.0.1
    (not on the machine's network address) and sends no usage statistics.
    """
    ray = _ray()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address is None:
        ray.init(_node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False)
    else:
        ray.init(address=address, log_to_driver=False)


class _BatchActor:
    """One actor of the pool: a mixture and an event loop, kept for the actor's life."""

    def __init__(self, factory: MixtureFactory, kind: InputKind, concurrency: int) -> None:
        self.loop = asyncio.new_event_loop()
        self.mixture = factory()
        self.mixture.check()
        self.kind: InputKind = kind
        self.concurrency = concurrency

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        items = [
            BatchItem(int(index), str(key), str(request), None, str(custom_id) or None)
            for index, key, request, custom_id in zip(
                batch["index"], batch["key"], batch["request"], batch["custom_id"], strict=True
            )
        ]
        records = self.loop.run_until_complete(
            answer_items(self.mixture, items, self.kind, self.concurrency)
        )
        return {
            "key": [item.key for item in items],
            "record": [json.dumps(record, ensure_ascii=False) for record in records],
        }


@dataclass(frozen=True)
class RayEngine:
    """``--engine ray``: ``actors`` actors, each with ``concurrency`` requests in flight."""

    actors: int = 2
    concurrency: int = 8
    address: str | None = None
    """A running cluster (``ray start --head`` prints it; ``auto`` finds a local one);
    ``None`` joins the session already open in this process, or starts Ray here."""
    actor_cpus: float = 0.5
    """CPUs Ray reserves per actor: remote models wait on the network, local ones need cores."""
    batch_size: int | None = None
    """Items per actor call (default: ``concurrency``)."""

    def run(
        self,
        factory: MixtureFactory,
        kind: InputKind,
        items: Sequence[BatchItem],
        deliver: Deliver,
    ) -> None:
        if not items:
            return
        ray = _ray()
        started = False
        if not ray.is_initialized():
            start_ray(self.address)
            started = True
        try:
            self._run(ray, factory, kind, items, deliver)
        finally:
            if started:
                ray.shutdown()

    def _run(
        self,
        ray: Any,
        factory: MixtureFactory,
        kind: InputKind,
        items: Sequence[BatchItem],
        deliver: Deliver,
    ) -> None:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        by_key = {item.key: item for item in items}
        size = self.batch_size or self.concurrency
        rows = [
            {
                "index": item.index,
                "key": item.key,
                "request": item.request,
                "custom_id": item.custom_id or "",
            }
            for item in items
        ]
        # One block per actor call, so records stream back a batch at a time.
        dataset = ray.data.from_items(rows, override_num_blocks=math.ceil(len(rows) / size))
        answered = dataset.map_batches(
            _BatchActor,
            fn_constructor_args=(factory, kind, self.concurrency),
            batch_size=size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=self.actors),
            num_cpus=self.actor_cpus,
        )
        for batch in answered.iter_batches(batch_size=None, batch_format="numpy"):
            for key, record in zip(batch["key"], batch["record"], strict=True):
                deliver(by_key[str(key)], json.loads(str(record)))
