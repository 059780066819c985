"""``run.json``: what an output directory's evaluation is, kept whole across the runs into it.

A run into a folder that already holds the same evaluation (same task, data, prompts,
generation settings and judge) adds to it: its items and systems join the ones already
there, so a run over a few items or one more system never shrinks the report. The
``command`` stays the one that reproduces the whole report; the commands of runs that
covered only part of it are listed under ``more_commands``. A run of a different
evaluation into the same folder replaces ``run.json`` (its item log is kept either way).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

IDENTITY = ("task", "data", "prompts", "generation", "judge_key", "judge_protocol", "unjudged")
"""The fields two runs must share for the second to add to the first."""


def read_run_info(path: Path) -> dict[str, Any] | None:
    """``run.json`` at ``path``; ``None`` when missing or unreadable."""
    try:
        info = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return info if isinstance(info, dict) else None


def same_evaluation(old: dict[str, Any], new: dict[str, Any]) -> bool:
    return all(old.get(name) == new.get(name) for name in IDENTITY)


def merged_run_info(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """``new``, with the items and systems of ``old`` kept when both are one evaluation."""
    if old is None or not same_evaluation(old, new):
        return new
    old_ids = [str(i) for i in old.get("item_ids") or []]
    new_ids = [str(i) for i in new.get("item_ids") or []]
    seen = set(new_ids)
    known_ids = set(old_ids)
    item_ids = old_ids + [i for i in new_ids if i not in known_ids]
    old_systems = [s for s in old.get("systems") or [] if isinstance(s, dict)]
    new_systems = list(new.get("systems") or [])
    keys = {s.get("key") for s in new_systems}
    systems = old_systems_first(old_systems, new_systems)
    covers = known_ids <= seen and {s.get("key") for s in old_systems} <= keys
    command = new.get("command") if covers else old.get("command")
    more = [str(c) for c in old.get("more_commands") or []]
    if not covers and new.get("command") not in (old.get("command"), *more):
        more.append(str(new.get("command")))
    merged = {
        **new,
        "items": len(item_ids),
        "item_ids": item_ids,
        "command": command,
        "self_moa_of": new.get("self_moa_of") or old.get("self_moa_of"),
        "systems": systems,
    }
    if more and not covers:
        merged["more_commands"] = more
    else:
        merged.pop("more_commands", None)
    return merged


def old_systems_first(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The report's order stays the first run's; a system run again takes its new entry."""
    by_key = {s.get("key"): s for s in new}
    kept = [by_key.get(s.get("key"), s) for s in old]
    known = {s.get("key") for s in old}
    return kept + [s for s in new if s.get("key") not in known]
