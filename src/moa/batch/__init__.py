"""Run a mixture over a whole dataset: ``moa batch``, here or on a Ray cluster.

Input is a JSONL file of OpenAI Batch API requests, or a JSONL/CSV/Parquet
table with a prompt column; output is the Batch API's output lines (each with
the ``chat.completion`` body the server would answer), or the table with
answer, token and cost columns. Runs resume: finished requests are kept and
only the rest are sent again. See docs/batch.md.
"""

from moa.batch.answer import ConfigMixture, MixtureFactory, answer_item
from moa.batch.engine import Engine
from moa.batch.inputs import BatchInput, BatchItem, read_input
from moa.batch.job import BatchObserver, BatchOptions, BatchSummary, run_batch
from moa.batch.local import LocalEngine
from moa.batch.ray_engine import RayEngine

__all__ = [
    "BatchInput",
    "BatchItem",
    "BatchObserver",
    "BatchOptions",
    "BatchSummary",
    "ConfigMixture",
    "Engine",
    "LocalEngine",
    "MixtureFactory",
    "RayEngine",
    "answer_item",
    "read_input",
    "run_batch",
]
