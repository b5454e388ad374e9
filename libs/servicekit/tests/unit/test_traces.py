"""`python -m servicekit.telemetry.waterfall`: one trace from the local files, as a waterfall."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from servicekit.telemetry.waterfall import main

T1 = "11111111111111111111111111111111"
T2 = "22222222222222222222222222222222"
MS = 1_000_000


def span(
    trace_id: str,
    span_id: str,
    parent: str | None,
    name: str,
    service: str,
    start_ms: float,
    end_ms: float,
    **attributes: Any,
) -> dict[str, Any]:
    return {
        "trace_id": trace_id,
        "span_id": span_id,
        "parent_span_id": parent,
        "name": name,
        "kind": "SERVER",
        "service": service,
        "start_time_unix_nano": int(1e18 + start_ms * MS),
        "end_time_unix_nano": int(1e18 + end_ms * MS),
        "status": "ERROR" if attributes.get("http.response.status_code", 200) >= 500 else "UNSET",
        "attributes": attributes,
        "events": [],
    }


def write(directory: Path, service: str, spans: list[dict[str, Any]]) -> None:
    with (directory / f"{service}.jsonl").open("a") as handle:
        for entry in spans:
            handle.write(json.dumps(entry) + "\n")


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


def make_files(directory: Path) -> None:
    # A caller's span id as parent of the gateway: not in the files, so the gateway is a root.
    write(
        directory,
        "gateway",
        [
            span(
                T1,
                "a" * 16,
                "f" * 16,
                "POST /api/orders",
                "gateway",
                0,
                100,
                **{"http.response.status_code": 201},
            ),
            span(T1, "b" * 16, "a" * 16, "POST order", "gateway", 5, 95),
            span(T2, "e" * 16, None, "GET /api/products", "gateway", 500, 510),
        ],
    )
    write(
        directory,
        "order",
        [
            span(T1, "c" * 16, "b" * 16, "POST /orders", "order", 10, 90),
            span(T1, "d" * 16, "c" * 16, "INSERT customer_order", "order", 20, 30),
        ],
    )
    with (directory / "order.jsonl").open("a") as handle:
        handle.write('{"torn": ')  # a line still being written


def test_prints_the_requested_trace_as_an_indented_waterfall(tmp_path: Path) -> None:
    make_files(tmp_path)
    code, out = run(T1[:8], "--dir", str(tmp_path))
    assert code == 0
    header, _, _, *rows = out.splitlines()
    assert header.startswith(f"trace {T1}  100.0 ms, 4 spans, services: gateway, order")
    names = [row.split("|")[0] for row in rows]
    assert "POST /api/orders [201]" in names[0] and "gateway" in names[0]
    assert "  POST order" in names[1]
    assert "    POST /orders" in names[2] and "order" in names[2]
    assert "      INSERT customer_order" in names[3]
    # Offsets and durations in ms; the bars are to scale (the root spans the full width).
    assert rows[0].split()[:2] == ["0.0", "100.0"]
    assert rows[3].split()[:2] == ["20.0", "10.0"]
    assert rows[0].split("|")[1] == "█" * 40
    assert rows[3].split("|")[1].strip() == "████"


def test_defaults_to_the_latest_trace_and_lists_traces(tmp_path: Path) -> None:
    make_files(tmp_path)
    code, out = run("--dir", str(tmp_path))
    assert code == 0 and out.startswith(f"trace {T2}")
    code, out = run("--list", "--dir", str(tmp_path))
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()] == [T2, T1]


def test_explains_what_is_missing(tmp_path: Path) -> None:
    code, out = run("--dir", str(tmp_path))
    assert code == 1 and "no trace files" in out
    make_files(tmp_path)
    code, out = run("9999", "--dir", str(tmp_path))
    assert code == 1 and "no trace matching '9999'" in out
