"""Architecture rules, checked on the source: apps never import apps; only pure ASGI middleware."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from infra.manifest import load

ROOT = Path(__file__).resolve().parents[2]


def apps() -> dict[str, Path]:
    """Every service of the manifest: its import name and where its sources are."""
    return {service.module: ROOT / service.source_dir for service in load()}


APPS = apps()
LIBRARY = ROOT / "libs/servicekit/src/servicekit"
FORBIDDEN_MIDDLEWARE = {"BaseHTTPMiddleware", "SlowAPIMiddleware"}


def imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def sources(package_dir: Path) -> list[Path]:
    return sorted(package_dir.rglob("*.py"))


@pytest.mark.parametrize("app", sorted(APPS))
def test_an_app_never_imports_another_app(app: str) -> None:
    others = set(APPS) - {app}
    offenders = {
        str(p.relative_to(ROOT)): sorted(imported_roots(p) & others)
        for p in sources(APPS[app])
        if imported_roots(p) & others
    }
    assert sources(APPS[app]), f"{app} has no sources"
    assert offenders == {}


def test_the_library_never_imports_an_app() -> None:
    offenders = {
        str(p.relative_to(ROOT)): sorted(imported_roots(p) & set(APPS))
        for p in sources(LIBRARY)
        if imported_roots(p) & set(APPS)
    }
    assert offenders == {}


def test_no_base_http_middleware_anywhere() -> None:
    offenders = []
    for package_dir in [LIBRARY, *APPS.values()]:
        for path in sources(package_dir):
            tree = ast.parse(path.read_text())
            names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
            names |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
            names |= {
                a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names
            }
            if names & FORBIDDEN_MIDDLEWARE:
                offenders.append(str(path.relative_to(ROOT)))
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "middleware"
                    and node.args
                    and isinstance(node.args[0], ast.Constant)
                    and node.args[0].value == "http"
                ):
                    offenders.append(f"{path.relative_to(ROOT)}: @app.middleware('http')")
    assert offenders == []


def test_nothing_is_named_after_a_stdlib_module() -> None:
    import sys

    stdlib = set(sys.stdlib_module_names)
    clashes = [
        str(p.relative_to(ROOT))
        for d in [LIBRARY, *APPS.values()]
        for p in sources(d)
        if p.stem in stdlib and p.stem != "__init__"
    ]
    assert clashes == []
