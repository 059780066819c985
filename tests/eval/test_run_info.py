"""Merging ``run.json`` across the runs into one folder."""

from __future__ import annotations

from typing import Any

from moa.eval.run_info import merged_run_info


def _info(items: list[str], keys: list[str], command: str, **more: Any) -> dict[str, Any]:
    systems = [{"key": k, "name": k.upper(), "note": command} for k in keys]
    base = {"task": "gsm8k", "data": "d", "item_ids": items, "items": len(items)}
    return {**base, "systems": systems, "command": command, **more}


def test_the_first_runs_order_stays_and_a_rerun_system_takes_its_new_entry() -> None:
    old = _info(["0", "1", "2"], ["a", "b"], "all", self_moa_of="m")
    new = _info(["2", "7"], ["c", "b"], "part")
    merged = merged_run_info(old, new)
    assert merged["item_ids"] == ["0", "1", "2", "7"] and merged["items"] == 4
    assert [s["key"] for s in merged["systems"]] == ["a", "b", "c"]
    assert [s["note"] for s in merged["systems"]] == ["all", "part", "part"]
    assert merged["self_moa_of"] == "m"
    assert merged["command"] == "all" and merged["more_commands"] == ["part"]
    again = merged_run_info(merged, new)  # the same partial run twice is listed once
    assert again["more_commands"] == ["part"]


def test_nothing_to_merge_with() -> None:
    new = _info(["0"], ["a"], "x")
    assert merged_run_info(None, new) == new
    assert merged_run_info({**new, "task": "mmlu"}, new) == new
    assert merged_run_info({**new, "unjudged": True}, new) == new
