"""AlpacaEval-compatible outputs: one ``model_outputs.json`` per system.

The files have AlpacaEval's own fields (``instruction``, ``output``,
``generator``, ``dataset``), so its official tool can judge our systems too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["write_model_outputs"]


def write_model_outputs(
    info: dict[str, Any], records: Sequence[dict[str, Any]], folder: Path
) -> list[Path]:
    """Write ``folder/<system>/model_outputs.json`` for every system with finished items."""
    order = {item_id: n for n, item_id in enumerate(info.get("item_ids", []))}
    paths = []
    for system in info.get("systems", []):
        rows = sorted(
            (
                r
                for r in records
                if r.get("key") == system["key"] and not r.get("error") and r.get("output")
            ),
            key=lambda r: order.get(str(r.get("item_id")), len(order)),
        )
        if not rows:
            continue
        outputs = [
            {
                "instruction": r["prompts"][0],
                "output": r["output"],
                "generator": system["name"],
                "dataset": r.get("dataset", ""),
            }
            for r in rows
        ]
        path = folder / _safe(system["name"]) / "model_outputs.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(outputs, indent=2, ensure_ascii=False) + "\n", "utf-8")
        paths.append(path)
    return paths


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "system"
