"""The wire contract is the one place that spells a hop header's name (servicekit.contract)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from servicekit import contract

from infra.manifest import load

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = ROOT / "libs/servicekit/src/servicekit/contract.py"
HEADERS = {hop.header for hop in contract.REQUEST_HEADERS} | {
    name.lower() for name in contract.RESPONSE_HEADERS
}


def source_dirs() -> list[Path]:
    """The library and every service's package, from the manifest."""
    return [ROOT / "libs/servicekit/src", *(ROOT / s.source_dir for s in load())]


def spellings(path: Path) -> list[str]:
    """Every string or bytes constant in `path` that is a contract header name."""
    found = []
    tree = ast.parse(path.read_text(), filename=str(path))
    # Context keys are named after what they hold (`Key("baggage")`), not header spellings.
    key_names = {
        id(node.args[0])
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and getattr(node.func, "attr", getattr(node.func, "id", None)) == "Key"
        and node.args
    }
    for node in ast.walk(tree):
        if id(node) in key_names:
            continue
        if isinstance(node, ast.Constant) and isinstance(node.value, str | bytes):
            value = node.value.decode("latin-1") if isinstance(node.value, bytes) else node.value
            if value.lower() in HEADERS:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {value!r}")
    return found


def test_the_contract_declares_every_hop_header() -> None:
    expected = {
        "x-request-id",
        "traceparent",
        "baggage",
        "x-request-timeout-ms",
        "x-request-priority",
        "x-shadow-traffic",
        "x-customer-id",
        "x-service-token",
        "idempotency-key",
        "x-degraded",
        "idempotent-replayed",
    }
    assert expected <= HEADERS


@pytest.mark.parametrize("directory", source_dirs(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_source_outside_the_contract_spells_a_hop_header(directory: Path) -> None:
    offenders = [
        hit
        for path in sorted(directory.rglob("*.py"))
        if path != CONTRACT
        for hit in spellings(path)
    ]
    assert offenders == [], "spell these through servicekit.contract:\n" + "\n".join(offenders)


def test_the_contract_itself_spells_each_header_once() -> None:
    hits = [h for h in spellings(CONTRACT)]
    names = [h.rsplit(": ", 1)[1].strip("'").lower() for h in hits]
    assert sorted(names) == sorted(set(names)), hits
