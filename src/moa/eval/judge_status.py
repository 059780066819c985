"""Whether a judged run's judge was validated: the line its report opens with.

A run of a judged task (``alpaca_eval``, ``mt_bench``) records its judge's key
in ``run.json`` (:func:`~moa.eval.systems.judge_key`). Its report is labelled
*judge validated* only with a ``judge-validation.json`` (``moa judge
validate``) that passed and holds the same key; otherwise it says why not and
how to validate the judge. The numbers are shown either way.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moa.eval.judge_criteria import BASELINE, COMPARISONS, FORMAT
from moa.providers.cache import DEFAULT_CACHE

__all__ = ["JudgeStatus", "judge_status", "record_judge_validation", "validation_command"]

_JUDGED = ("pairwise", "graded")


@dataclass(frozen=True)
class JudgeStatus:
    """Validated or not, why, and how to validate."""

    validated: bool
    message: str
    """``judge validated: ...`` with the key figures, or ``judge not validated: why``."""
    commands: tuple[str, ...] = ()
    """To validate the judge and rebuild the report (when it is not validated)."""
    file: str | None = None
    judged: bool = True
    """``False``: the run answered without a judge (``--no-judge``): there are no numbers
    to trust or distrust, only answers and their costs."""

    def markdown(self) -> list[str]:
        label, _, reason = self.message.partition(": ")
        if self.validated or not self.judged:
            return [f"> **{label}:** {reason}", ""]
        lines = [
            f"> **{label}:** {reason} The open-ended numbers below (win rates, ratings) come from "
            "a judge that has not been validated: do not trust them as they stand.",
            ">",
            "> Validate the judge, then rebuild this report with the validation:",
            ">",
        ]
        lines += [f"> `{command}`  " for command in self.commands]
        return [*lines, ""]

    def to_dict(self) -> dict[str, Any]:
        return {
            "validated": self.validated,
            "message": self.message,
            "commands": list(self.commands),
            "file": self.file,
            "judged": self.judged,
        }


def judge_status(
    info: Mapping[str, Any], validation: str | Path | None, out: Path
) -> JudgeStatus | None:
    """The judge's status for the run ``info`` (its ``run.json``); ``None``: not judged."""
    if info.get("task_kind") not in _JUDGED:
        return None
    if info.get("unjudged"):
        return JudgeStatus(
            False,
            "not judged: this run was answered with --no-judge, so it has each system's "
            "answers, calls, tokens and latencies, and no win rate or grade. The same command "
            "with --judge MODEL instead of --no-judge judges them (the answers come from the "
            "call cache); validate that judge first (moa judge validate).",
            judged=False,
        )
    if not info.get("judge"):
        return None
    commands = _commands(info, out)
    if validation is None:
        return _not(
            "no --judge-validation file was given, so nothing shows this judge can be trusted",
            commands,
        )
    path = Path(validation).expanduser()
    try:
        document = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return _not(f"cannot read the judge validation {str(path)!r} ({exc})", commands, path)
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        return _not(f"{str(path)!r} is not a judge-validation.json", commands, path)
    judge = document.get("judge") or {}
    key = info.get("judge_key")
    if not key:
        return _not(
            "this run's run.json records no judge key (written by an older moa); run the same "
            "moa eval command again (nothing is recomputed) to record it",
            commands,
            path,
        )
    if judge.get("key") != key:
        return _not(
            f"{str(path)!r} validates the judge `{judge.get('spec')}` (key {judge.get('key')}), "
            f"but this run's judge is `{info.get('judge')}` (key {key}): a different model, "
            "sampling, judge prompt or --judge-protocol",
            commands,
            path,
        )
    if not document.get("validated"):
        failed = [name for name, c in document["criteria"].items() if c.get("passed") is False]
        return _not(
            f"the validation in {str(path)!r} failed ({', '.join(failed)}: {_figures(document)})",
            commands,
            path,
        )
    note = (
        " (validated on pairwise comparisons; this task's 1-10 grading uses other prompts)"
        if info.get("task_kind") == "graded"
        else ""
    )
    return JudgeStatus(
        True,
        f"judge validated: `{info.get('judge')}` (key {key}, {str(path)!r}, "
        f"{document.get('items')} instructions): {_figures(document)}{note}.",
        file=str(path),
    )


def _not(reason: str, commands: tuple[str, ...], path: Path | None = None) -> JudgeStatus:
    message = f"judge not validated: {reason}."
    return JudgeStatus(False, message, commands, None if path is None else str(path))


def _pct(estimate: Mapping[str, Any] | None) -> str:
    mean = None if estimate is None else estimate.get("mean")
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    assert estimate is not None
    return f"{mean:.1f}% [{estimate['low']:.1f}, {estimate['high']:.1f}]"


def _figures(document: Mapping[str, Any]) -> str:
    criteria = document["criteria"]
    loses, order = criteria["weak_loses"], criteria["known_order"]
    moa, lite = COMPARISONS["moa"], COMPARISONS["moa_lite"]
    weak = (document.get("weak") or {}).get("spec", "the weak model")
    stopped = document.get("stopped_early")
    known = (
        f"known order not run (stopped after {stopped['judged']} instructions)"
        if stopped
        else f"{moa} {_pct(order.get(moa))} vs {lite} {_pct(order.get(lite))} against "
        f"{BASELINE} (intervals {'separate' if order.get('cis_separate') else 'overlap'})"
    )
    return (
        f"prefers {BASELINE} to {weak}'s answers in {_pct(loses['weak_first'])} "
        f"(weak answer first) and {_pct(loses['reference_first'])} (second) of instructions; "
        f"{known}; position consistency {_pct(criteria['position_consistency']['rate'])}"
    )


def validation_command(judge: str, data: str, out: str, info: Mapping[str, Any]) -> str:
    """``moa judge validate`` for ``judge``, with the run's prompts and call cache."""
    words = ["moa", "judge", "validate", "--judge", judge, "--data", data, "--out", out]
    if info.get("prompts"):
        words += ["--prompts", str(info["prompts"])]
    protocol = info.get("judge_protocol")
    if protocol and protocol != "pairwise":
        words += ["--judge-protocol", str(protocol)]
    cache = info.get("cache")
    if cache and Path(cache).expanduser() != DEFAULT_CACHE.expanduser():
        words += ["--cache", str(cache)]
    return shlex.join(words)


def _commands(info: Mapping[str, Any], out: Path) -> tuple[str, ...]:
    judge = str(info.get("judge"))
    folder = f"runs/judge-validation/{re.sub(r'[^A-Za-z0-9._-]+', '-', judge).strip('-')}"
    validate = validation_command(judge, _alpaca_folder(info), folder, info)
    report = ["moa", "eval", str(info.get("task")), "--out", str(out), "--report-only"]
    report += ["--judge-validation", f"{folder}/judge-validation.json"]
    return (validate, shlex.join(report))


def _alpaca_folder(info: Mapping[str, Any]) -> str:
    """The AlpacaEval folder next to the run's data, when there is one (else a placeholder)."""
    data = Path(str(info.get("data") or ".")).expanduser()
    folder = data if data.is_dir() else data.parent
    for candidate in (folder, folder.parent / "alpaca_eval"):
        if (candidate / "instructions.json").is_file():
            return str(candidate)
    return "PATH/TO/alpaca_eval"


def record_judge_validation(out: Path, validation: Path) -> None:
    """Name ``validation`` in ``out/run.json``, for this report and the ones after it."""
    path = out / "run.json"
    if not path.is_file():
        return  # load_run says what is missing
    info = json.loads(path.read_text("utf-8"))
    info["judge_validation"] = str(validation.expanduser().resolve())
    path.write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", "utf-8")
