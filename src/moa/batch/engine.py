"""What an engine is: something that answers items and hands each record back as it finishes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from moa.batch.answer import MixtureFactory
from moa.batch.inputs import BatchItem, InputKind

__all__ = ["Deliver", "Engine"]

Deliver = Callable[[BatchItem, dict[str, Any]], None]
"""Called in the driver process with each item's record, as soon as it exists."""


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
