"""Automatic agent selection: measure a pool of models, search configurations, verify on held-out.

run = SelectRun(SearchOptions(pool=("local:a", "local:b")), "gsm8k", "data/gsm8k")
selection = asyncio.run(run.arun())
write_outputs(selection, run, Path("select-out"))

Several tasks, one configuration for all (``MultiSelectRun``, ``task_list``,
``write_multi_outputs``; the rule is in :mod:`moa.select.floors`).
"""

from moa.select.candidates import Budget, Candidate, Sampling
from moa.select.diversity import PairDiversity, lexical_distance, pair_diversity
from moa.select.evaluate import Evaluation, Evaluator, Outcome
from moa.select.floors import Standing, TaskDelta
from moa.select.multitask import MultiSelection
from moa.select.run import (
    MultiSelectRun,
    SelectRun,
    TaskData,
    task_list,
    write_multi_outputs,
    write_outputs,
)
from moa.select.search import SearchOptions, Selection, run_search, split_items

__all__ = [
    "Budget",
    "Candidate",
    "Evaluation",
    "Evaluator",
    "MultiSelectRun",
    "MultiSelection",
    "Outcome",
    "PairDiversity",
    "Sampling",
    "SearchOptions",
    "SelectRun",
    "Selection",
    "Standing",
    "TaskData",
    "TaskDelta",
    "lexical_distance",
    "pair_diversity",
    "run_search",
    "split_items",
    "task_list",
    "write_multi_outputs",
    "write_outputs",
]
