"""Automatic agent selection: measure a pool of models, search configurations, verify on held-out.

run = SelectRun(SearchOptions(pool=("local:a", "local:b")), "gsm8k", "data/gsm8k")
selection = asyncio.run(run.arun())
write_outputs(selection, run, Path("select-out"))
"""

from moa.select.candidates import Budget, Candidate, Sampling
from moa.select.diversity import PairDiversity, lexical_distance, pair_diversity
from moa.select.evaluate import Evaluation, Evaluator, Outcome
from moa.select.run import SelectRun, write_outputs
from moa.select.search import SearchOptions, Selection, run_search, split_items

__all__ = [
    "Budget",
    "Candidate",
    "Evaluation",
    "Evaluator",
    "Outcome",
    "PairDiversity",
    "Sampling",
    "SearchOptions",
    "SelectRun",
    "Selection",
    "lexical_distance",
    "pair_diversity",
    "run_search",
    "split_items",
    "write_outputs",
]
