"""benchmarks/latest.py on recorded results: a row per benchmark, stale when its code changed."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import latest
import report


def test_every_id_has_a_row_with_its_recorded_verdict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(latest, "RESULTS", tmp_path)
    measured = report.measured_tree(["benchmarks/latest.py"])
    own: dict[str, Any] = {"measured_at": "then", "python": "here", "measured": measured}
    (tmp_path / "b1_middleware.json").write_text(
        json.dumps({**own, "ratio": 0.8, "target": 0.9, "pass": False})
    )
    changed = {**measured, "hash": "0" * 64}
    (tmp_path / "b9_routing.json").write_text(
        json.dumps({**own, "measured": changed, "decision_us": 0.2, "pass": True})
    )

    rows = {row[0]: row for row in map(latest.row, latest.BENCHMARKS)}

    assert sorted(rows) == [f"B{i}" for i in range(1, 10)]
    assert rows["B1"][2:5] == ["0.80x", "**not met**", "then"]
    assert rows["B9"][3] == "met" and "stale" in rows["B9"][4]
    assert rows["B7"][2] == "not measured"
