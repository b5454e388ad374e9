"""The service manifest (`services.toml` at the repository root), read and checked (stdlib only).

Everything that lists the services reads it through `load()`: the local runner, the Prometheus
configs, the compose and Kubernetes files, the members check and every test tier. A test (or a
throwaway copy of the repository) points `SERVICE_MANIFEST` at another file.

    python infra/manifest.py names            # one name per line, in start order
    python infra/manifest.py packages         # workspace member directories, the library first
    python infra/manifest.py members          # every workspace member, checked against the above
    python infra/manifest.py show             # a table
"""

from __future__ import annotations

import keyword
import os
import re
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PATH = REPO / "services.toml"
#: The shared library: a workspace member, never a service.
LIBRARY_PACKAGE = "libs/servicekit"
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,30}$")
_PREFIX = re.compile(r"^[A-Z][A-Z0-9_]{0,30}$")
_FIELDS = {
    "name": str,
    "package": str,
    "module": str,
    "port": int,
    "prefix": str,
    "database": bool,
    "downstreams": list,
    "public": bool,
    "gateway": bool,
    "seed": str,
}
_REQUIRED = ("name", "package", "module", "port", "prefix")


class ManifestError(ValueError):
    """The manifest is malformed; the message names the entry and what to fix."""


@dataclass(frozen=True)
class Service:
    """One `[[service]]` entry."""

    name: str
    package: str
    module: str
    port: int
    prefix: str
    database: bool = False
    downstreams: tuple[str, ...] = ()
    public: bool = False
    gateway: bool = False
    seed: str | None = None

    @property
    def app(self) -> str:
        """The uvicorn factory path."""
        return f"{self.module}.main:create_app"

    @property
    def source_dir(self) -> str:
        """Where the import package lives, relative to the repository."""
        return f"{self.package}/src/{self.module}"

    def url_setting(self, downstream: str) -> str:
        """The environment variable that points this service at `downstream`."""
        return f"{self.prefix}_{downstream.upper()}_URL"


@dataclass(frozen=True)
class Manifest:
    """Every service, in start order (each after the services it calls)."""

    services: tuple[Service, ...]
    path: Path

    def __iter__(self) -> Iterator[Service]:
        return iter(self.services)

    def __len__(self) -> int:
        return len(self.services)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.services)

    def get(self, name: str) -> Service:
        for service in self.services:
            if service.name == name:
                return service
        raise KeyError(f"no service {name!r} in {self.path}; known: {', '.join(self.names)}")

    @property
    def gateway(self) -> Service:
        return next(s for s in self.services if s.gateway)

    @property
    def internal(self) -> tuple[Service, ...]:
        """The services behind the gateway (they require the service credential)."""
        return tuple(s for s in self.services if not s.gateway)

    @property
    def with_database(self) -> tuple[Service, ...]:
        return tuple(s for s in self.services if s.database)

    def callers_of(self, name: str) -> tuple[Service, ...]:
        """The services that call `name`."""
        return tuple(s for s in self.services if name in s.downstreams)

    @property
    def packages(self) -> tuple[str, ...]:
        """Workspace member directories: the library first, then every service's package."""
        return (LIBRARY_PACKAGE, *sorted({s.package for s in self.services}))


def _entry(raw: object, position: int) -> Service:
    if not isinstance(raw, dict):
        raise ManifestError(f"[[service]] #{position} is not a table")
    label = f"[[service]] #{position} ({raw.get('name', '?')})"
    unknown = set(raw) - set(_FIELDS)
    if unknown:
        raise ManifestError(
            f"{label}: unknown field(s) {sorted(unknown)}; known: {sorted(_FIELDS)}"
        )
    missing = [f for f in _REQUIRED if f not in raw]
    if missing:
        raise ManifestError(f"{label}: missing field(s) {missing}")
    for field, kind in _FIELDS.items():
        if field in raw and not isinstance(raw[field], kind):
            raise ManifestError(f"{label}: {field} must be a {kind.__name__}")
    name, prefix, port = raw["name"], raw["prefix"], raw["port"]
    if not _NAME.match(name) or keyword.iskeyword(name):
        raise ManifestError(f"{label}: name must match {_NAME.pattern} and not be a keyword")
    if not _PREFIX.match(prefix):
        raise ManifestError(f"{label}: prefix must match {_PREFIX.pattern}")
    if not 1024 <= port <= 65535:
        raise ManifestError(f"{label}: port must be within 1024..65535")
    downstreams = raw.get("downstreams", [])
    if not all(isinstance(d, str) for d in downstreams):
        raise ManifestError(f"{label}: downstreams must be a list of service names")
    return Service(
        name=name,
        package=raw["package"],
        module=raw["module"],
        port=port,
        prefix=prefix,
        database=raw.get("database", False),
        downstreams=tuple(downstreams),
        public=raw.get("public", False),
        gateway=raw.get("gateway", False),
        seed=raw.get("seed"),
    )


def _start_order(services: list[Service]) -> tuple[Service, ...]:
    """Each service after its downstreams; ties keep the file's order. Refuses cycles."""
    by_name = {s.name: s for s in services}
    ordered: list[Service] = []
    state: dict[str, str] = {}

    def visit(service: Service, path: tuple[str, ...]) -> None:
        if state.get(service.name) == "done":
            return
        if state.get(service.name) == "visiting":
            cycle = " -> ".join((*path, service.name))
            raise ManifestError(f"downstreams form a cycle: {cycle}")
        state[service.name] = "visiting"
        for downstream in service.downstreams:
            visit(by_name[downstream], (*path, service.name))
        state[service.name] = "done"
        ordered.append(service)

    for service in services:
        visit(service, ())
    return tuple(ordered)


def parse(text: str, path: Path) -> Manifest:
    """A checked manifest from TOML text; `ManifestError` says what is wrong."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(f"{path}: not valid TOML: {exc}") from exc
    unknown = set(data) - {"service"}
    if unknown:
        raise ManifestError(f"{path}: unknown top-level key(s) {sorted(unknown)}")
    raw = data.get("service", [])
    services = [_entry(entry, i) for i, entry in enumerate(raw, start=1)]
    if not services:
        raise ManifestError(f"{path}: no [[service]] entries")
    for field in ("name", "port", "prefix", "module"):
        values = [getattr(s, field) for s in services]
        duplicates = sorted({str(v) for v in values if values.count(v) > 1})
        if duplicates:
            raise ManifestError(f"{path}: {field} used twice: {', '.join(duplicates)}")
    names = {s.name for s in services}
    for service in services:
        unknown_downstreams = sorted(set(service.downstreams) - names)
        if unknown_downstreams:
            raise ManifestError(
                f"{path}: {service.name} calls unknown service(s) {unknown_downstreams}; "
                f"known: {sorted(names)}"
            )
        if service.name in service.downstreams:
            raise ManifestError(f"{path}: {service.name} lists itself as a downstream")
    gateways = [s.name for s in services if s.gateway]
    if len(gateways) != 1:
        raise ManifestError(f"{path}: exactly one service must be the gateway, found {gateways}")
    return Manifest(_start_order(services), path)


def workspace_members(root: Path = REPO) -> tuple[str, ...]:
    """Every uv workspace member directory (`[tool.uv.workspace] members` of `root`'s
    pyproject.toml, globs expanded), the library first. Services are members, and so is any
    other package (a load generator, a second library)."""
    pyproject = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    globs = pyproject.get("tool", {}).get("uv", {}).get("workspace", {}).get("members", [])
    found = {
        path.relative_to(root).as_posix()
        for pattern in globs
        for path in root.glob(pattern)
        if (path / "pyproject.toml").is_file()
    }
    return tuple(sorted(found, key=lambda member: (member != LIBRARY_PACKAGE, member)))


def check_members(manifest: Manifest, members: tuple[str, ...]) -> None:
    """`ManifestError` unless the library and every service's package are workspace members."""
    missing = sorted(set(manifest.packages) - set(members))
    if missing:
        raise ManifestError(
            f"{manifest.path}: package(s) {missing} are not uv workspace members; add them to "
            "[tool.uv.workspace] members in pyproject.toml (each needs its own pyproject.toml)"
        )


def load(path: Path | str | None = None) -> Manifest:
    """The manifest at `path`, else `$SERVICE_MANIFEST`, else `services.toml` at the root."""
    chosen = Path(path or os.environ.get("SERVICE_MANIFEST") or DEFAULT_PATH)
    return parse(chosen.read_text(encoding="utf-8"), chosen)


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "show"
    try:
        return _run(command)
    except (ManifestError, OSError) as exc:
        print(f"manifest: {exc}", file=sys.stderr)
        return 1


def _run(command: str) -> int:
    manifest = load()
    if command == "names":
        print("\n".join(manifest.names))
    elif command == "packages":
        print("\n".join(manifest.packages))
    elif command == "members":
        members = workspace_members()
        check_members(manifest, members)
        print("\n".join(members))
    elif command == "show":
        print(f"{'name':<12} {'port':>5} {'prefix':<12} {'db':<3} {'pub':<3} downstreams")
        for s in manifest:
            flags = ("yes" if s.database else "-", "yes" if s.public else "-")
            print(
                f"{s.name:<12} {s.port:>5} {s.prefix:<12} {flags[0]:<3} {flags[1]:<3} "
                f"{', '.join(s.downstreams) or '-'}"
            )
    else:
        print(f"unknown command {command!r}; use names, packages, members or show", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
