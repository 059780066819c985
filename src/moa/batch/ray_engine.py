"""The Ray engine: Ray Data spreads the jobs over a pool of actors, here or on a cluster.

Each actor builds its worker once (a mixture, or an evaluation's models: a
local GGUF model is loaded once per actor, not per request), owns one event
loop, and answers a batch of jobs at a time with ``concurrency`` in flight,
through the same :func:`~moa.batch.local.answer_jobs` as the local engine.
Records stream back to the driver, which hands each one on as it arrives
(``moa batch`` appends it to its journal, ``moa eval`` to its item log).

Ray Data restarts an actor that dies and runs its batch again; a record that
then arrives twice is delivered twice, and the caller keeps the first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import pickle
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from moa.batch.answer import BatchWorkers, MixtureFactory
from moa.batch.engine import Deliver, Worker, WorkerFactory
from moa.batch.inputs import BatchItem, InputKind
from moa.batch.local import answer_jobs
from moa.errors import ConfigError

__all__ = ["RayEngine", "start_ray"]

Job = TypeVar("Job")


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
        # "local": a new instance even where another one is running (ray.init() with no
        # address joins the cluster last started on this machine, if any).
        ray.init(
            address="local",
            _node_ip_address="127.0.0.1",
            include_dashboard=False,
            log_to_driver=False,
        )
    else:
        ray.init(address=address, log_to_driver=False)


class _PoolActor:
    """One actor of the pool: a worker and an event loop, kept for the actor's life."""

    def __init__(self, factory: WorkerFactory[Any], concurrency: int) -> None:
        self.loop = asyncio.new_event_loop()
        self.worker = factory()
        self.concurrency = concurrency

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        pairs = [
            (str(key), pickle.loads(job))
            for key, job in zip(batch["key"], batch["job"], strict=True)
        ]
        records: dict[str, str] = {}

        def keep(pair: tuple[str, Any], record: dict[str, Any]) -> None:
            records[pair[0]] = json.dumps(record, ensure_ascii=False, default=str)

        self.loop.run_until_complete(
            answer_jobs(_Keyed(self.worker), pairs, self.concurrency, keep)
        )
        return {"key": list(records), "record": list(records.values())}


class _Keyed:
    """A worker over ``(key, job)`` pairs, so a record can be matched back to its key."""

    def __init__(self, worker: Worker[Any]) -> None:
        self.worker = worker

    async def answer(self, job: tuple[str, Any]) -> dict[str, Any]:
        return await self.worker.answer(job[1])

    async def aclose(self) -> None:
        await self.worker.aclose()


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
        self.map(BatchWorkers(factory, kind), {item.key: item for item in items}, deliver)

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Ray for the block's duration: the session already open, or one started (and ended)."""
        ray = _ray()
        started = False
        if not ray.is_initialized():
            start_ray(self.address)
            started = True
        try:
            yield
        finally:
            if started:
                ray.shutdown()

    def map(
        self,
        factory: WorkerFactory[Job],
        jobs: Mapping[str, Job],
        deliver: Callable[[Job, dict[str, Any]], None],
    ) -> None:
        """Answer ``jobs`` on the actor pool; ``deliver`` runs here, as records arrive."""
        if not jobs:
            return
        with self.session():
            self._map(_ray(), factory, jobs, deliver)

    def _map(
        self,
        ray: Any,
        factory: WorkerFactory[Job],
        jobs: Mapping[str, Job],
        deliver: Callable[[Job, dict[str, Any]], None],
    ) -> None:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        size = self.batch_size or self.concurrency
        rows = [{"key": key, "job": pickle.dumps(job)} for key, job in jobs.items()]
        # One block per actor call, so records stream back a batch at a time.
        dataset = ray.data.from_items(rows, override_num_blocks=math.ceil(len(rows) / size))
        answered = dataset.map_batches(
            _PoolActor,
            fn_constructor_args=(factory, self.concurrency),
            batch_size=size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=self.actors),
            num_cpus=self.actor_cpus,
        )
        for batch in answered.iter_batches(batch_size=None, batch_format="numpy"):
            for key, record in zip(batch["key"], batch["record"], strict=True):
                deliver(jobs[str(key)], json.loads(str(record)))
