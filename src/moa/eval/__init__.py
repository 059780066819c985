"""Evaluation: run systems (mixtures, presets, single models) over a benchmark and report.

>>> from pathlib import Path
>>> from moa.eval import EvalOptions, EvalRun
>>> options = EvalOptions("gsm8k", "test.jsonl", Path("runs/gsm8k"), systems=["local"])
>>> EvalRun(options).run()                                          # doctest: +SKIP

The report (``moa.eval.report``) needs the ``eval`` extra (numpy, matplotlib).
"""

from moa.eval.datasets import EvalItem
from moa.eval.runner import EvalOptions, EvalRun, select_items
from moa.eval.systems import GenerationSettings, System, self_moa_spec, single_spec
from moa.eval.tasks import TASKS, Task, get_task

__all__ = [
    "TASKS",
    "EvalItem",
    "EvalOptions",
    "EvalRun",
    "GenerationSettings",
    "System",
    "Task",
    "get_task",
    "select_items",
    "self_moa_spec",
    "single_spec",
]
