"""Generate a service from the template and register it: `make new-service NAME=<name>`.

    python scripts/new_service.py NAME=<name> [PORT=<port>] [DOWNSTREAMS=a,b] [PUBLIC=1]

Every check runs before anything is written; a refusal says what is wrong and what is valid:
the name (a lowercase Python identifier, not a keyword, not taken by a service, a stdlib
module or an installed distribution's import name), the port (free in the manifest and on this
machine) and the downstreams (services of the manifest, never the gateway).

Then, in order:
1. `copier copy` of `templates/service` (copier.yml at the root) into `services/<name>/`,
   recording the template version in `services/<name>/.copier-answers.yml`;
2. one `[[service]]` entry appended to `services.toml` (and, with `--public`, the name added
   to the gateway's `downstreams`: the gateway calls it, so `GATEWAY_<NAME>_URL` is set
   everywhere downstream URLs are);
3. `python infra/render.py` (compose, Prometheus compose targets, Kubernetes);
4. `uv lock` and `uv sync` (the root `services/*` members glob already covers the package).

If copier fails, what it wrote is removed and the manifest is left untouched.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import keyword
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from infra.manifest import Manifest, ManifestError, load, parse  # noqa: E402

NAME = re.compile(r"^[a-z][a-z0-9_]{0,30}$")
#: The knobs of `make new-service`, as the Makefile passes them.
KNOBS = ("NAME", "PORT", "DOWNSTREAMS", "PUBLIC")


class Refused(ValueError):
    """Bad input: the message says what is wrong and what is valid; nothing was written."""


def import_names() -> set[str]:
    """Top-level import names of every installed distribution (a new package must not shadow
    one of them)."""
    names: set[str] = set()
    for dist in importlib.metadata.distributions():
        top = dist.read_text("top_level.txt")
        if top:
            names.update(line.strip() for line in top.splitlines() if line.strip())
        for file in dist.files or ():
            first = file.parts[0] if file.parts else ""
            if first.endswith(".py"):
                names.add(first[:-3])
            elif first and "." not in first and not first.startswith("__"):
                names.add(first)
        names.add(dist.metadata["Name"].lower().replace("-", "_"))
    return names


def port_bound(port: int) -> bool:
    """True when something on this machine listens on `port` (127.0.0.1)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def check_name(name: str, manifest: Manifest) -> None:
    if not NAME.match(name) or keyword.iskeyword(name):
        raise Refused(
            f"NAME={name!r} is not a valid service name: use lowercase letters, digits and "
            "underscores, a letter first, at most 31 characters, not a Python keyword "
            "(e.g. NAME=shipping)"
        )
    if name in manifest.names or name in {s.module for s in manifest}:
        raise Refused(
            f"NAME={name!r} is taken: services.toml already has it "
            f"(services: {', '.join(manifest.names)})"
        )
    if (REPO / "services" / name).exists():
        raise Refused(f"NAME={name!r}: services/{name} already exists")
    if name in sys.stdlib_module_names:
        raise Refused(f"NAME={name!r} is a standard library module; pick another name")
    if name in import_names():
        raise Refused(
            f"NAME={name!r} is the import name of an installed distribution; importing it "
            "would be ambiguous, pick another name"
        )


def next_port(manifest: Manifest) -> int:
    """The first port after the manifest's highest that nothing listens on."""
    port = max(s.port for s in manifest) + 1
    while port_bound(port) and port < 65535:
        port += 1
    return port


def check_port(port: int, manifest: Manifest) -> None:
    if not 1024 <= port <= 65535:
        raise Refused(f"PORT={port} is outside 1024..65535")
    owner = next((s.name for s in manifest if s.port == port), None)
    if owner:
        raise Refused(
            f"PORT={port} is taken by {owner} in services.toml; free: {next_port(manifest)}"
        )
    if port_bound(port):
        raise Refused(f"PORT={port} is in use on this machine; free: {next_port(manifest)}")


def check_downstreams(downstreams: list[str], manifest: Manifest) -> None:
    callable_ = [s.name for s in manifest if not s.gateway]
    unknown = [d for d in downstreams if d not in callable_]
    if unknown:
        raise Refused(
            f"DOWNSTREAMS: unknown service(s) {', '.join(unknown)}; "
            f"valid: {', '.join(callable_)} (comma-separated)"
        )
    if len(set(downstreams)) != len(downstreams):
        raise Refused(f"DOWNSTREAMS lists a service twice: {','.join(downstreams)}")


def entry(name: str, port: int, downstreams: list[str], public: bool) -> str:
    listed = ", ".join(f'"{d}"' for d in downstreams)
    return (
        "\n[[service]]\n"
        f'name = "{name}"\n'
        f'package = "services/{name}"\n'
        f'module = "{name}"\n'
        f"port = {port}\n"
        f'prefix = "{name.upper()}"\n'
        "database = true\n"
        f"downstreams = [{listed}]\n"
        f"public = {'true' if public else 'false'}\n"
    )


def registered(text: str, manifest: Manifest, name: str, public: bool) -> str:
    """The manifest text with the new entry; with `public`, the gateway also calls it."""
    if public:
        gateway = manifest.gateway
        block = re.search(
            rf'(\[\[service\]\]\s*\nname = "{gateway.name}"\n(?:(?!\[\[service\]\]).)*?)'
            r"^downstreams = \[[^\]]*\]$",
            text,
            flags=re.S | re.M,
        )
        if block is None:
            raise Refused(f"cannot find the gateway's downstreams line in {manifest.path}")
        listed = ", ".join(f'"{d}"' for d in sorted({*gateway.downstreams, name}))
        text = (
            text[: block.start()]
            + block.group(1)
            + f"downstreams = [{listed}]"
            + text[block.end() :]
        )
    return text


def plan_manifest(args: argparse.Namespace) -> tuple[Manifest, str, int, list[str]]:
    """Every check; returns (current manifest, new manifest text, port, downstreams)."""
    manifest = load()
    check_name(args.name, manifest)
    downstreams = [d.strip() for d in args.downstreams.split(",") if d.strip()]
    check_downstreams(downstreams, manifest)
    port = next_port(manifest) if args.port in (None, "") else _port(args.port)
    check_port(port, manifest)
    text = manifest.path.read_text(encoding="utf-8")
    text = registered(text, manifest, args.name, args.public)
    text = text.rstrip("\n") + "\n" + entry(args.name, port, downstreams, args.public)
    try:
        parse(text, manifest.path)  # the result must be a valid manifest before it is written
    except ManifestError as exc:
        raise Refused(f"the new services.toml would be invalid: {exc}") from exc
    return manifest, text, port, downstreams


def _port(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise Refused(f"PORT={value!r} is not a number") from None


def _flag(value: str) -> bool:
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("", "0", "false", "no"):
        return False
    raise Refused(f"PUBLIC={value!r}: use PUBLIC=1 (public) or PUBLIC=0 (the default)")


def run(command: list[str], **env: str) -> None:
    print(f"==> {' '.join(command)}", flush=True)
    subprocess.run(command, cwd=REPO, check=True, env={**os.environ, **env})  # noqa: S603


def generate(name: str, port: int, downstreams: list[str], public: bool) -> Path:
    from copier import run_copy  # the dev tool, imported only once the input is checked

    target = REPO / "services" / name
    try:
        run_copy(
            str(REPO),
            target,
            data={"name": name, "port": port, "downstreams": downstreams, "public": public},
            # The working tree as it is (copier includes uncommitted template changes).
            vcs_ref="HEAD",
            defaults=True,
            overwrite=False,
            quiet=True,
        )
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    # The template is this repository: recorded relative to the service, so `copier update`
    # run inside services/<name> finds it in any clone.
    answers = target / ".copier-answers.yml"
    text = re.sub(r"(?m)^_src_path: .*$", "_src_path: ../..", answers.read_text(encoding="utf-8"))
    answers.write_text(text, encoding="utf-8")
    return target


def parse_args(argv: list[str]) -> argparse.Namespace:
    """`NAME=shipping PORT=8010 DOWNSTREAMS=inventory PUBLIC=1`, as make passes its knobs."""
    values: dict[str, str] = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in KNOBS:
            raise Refused(
                f"unknown knob {arg!r}; valid: NAME=<name> (required), PORT=<port> "
                "(default: the next free one), DOWNSTREAMS=a,b, PUBLIC=1"
            )
        values[key] = value
    if not values.get("NAME"):
        raise Refused(
            "NAME is required: make new-service NAME=<name> [PORT=] [DOWNSTREAMS=] [PUBLIC=1]"
        )
    return argparse.Namespace(
        name=values["NAME"],
        port=values.get("PORT") or None,
        downstreams=values.get("DOWNSTREAMS", ""),
        public=_flag(values.get("PUBLIC", "")),
    )


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        manifest, text, port, downstreams = plan_manifest(args)
    except (Refused, ManifestError) as exc:
        print(f"new-service: {exc}\nnothing was written.", file=sys.stderr)
        return 2
    target = generate(args.name, port, downstreams, args.public)
    manifest.path.write_text(text, encoding="utf-8")
    print(f"==> services.toml: {args.name} on port {port}", flush=True)
    python = sys.executable
    # Where the new package sorts among the imports depends on its name, and a long name may
    # push a line past the limit: the linter and the formatter settle both.
    run([python, "-m", "ruff", "check", "--quiet", "--fix", "--select", "I", str(target)])
    run([python, "-m", "ruff", "format", "--quiet", str(target)])
    run([python, "infra/render.py"])
    uv = shutil.which("uv") or str(Path.home() / ".local/bin/uv")
    run([uv, "lock"])  # the new member joins uv.lock, so `uv sync --frozen` keeps working
    run([uv, "sync", "--frozen", "--all-packages"])
    print(
        f"\n{args.name} is ready: services/{args.name}/ (README.md), port {port}.\n"
        f"  tests:  .venv/bin/python -m pytest services/{args.name}/tests\n"
        "  run it: make up (with the other services)",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
