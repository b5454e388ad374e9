"""The pollution audit and the shadow reset: `make shadow-audit`, `make shadow-reset`.

    python scripts/shadow.py audit [--snapshot=1]   # exit 1 when live data holds dyed writes
    python scripts/shadow.py reset                  # empty the shadow tables, re-seed them

The databases are those of the services in `services.toml` that own one, at their
`<PREFIX>_DATABASE_URL` (default `sqlite:///<run dir>/<service>.db`, as `make up` uses; the
run dir is `STACK_RUN_DIR` or `.run`). Services sharing one database are checked once.

`audit` fails when a live table holds a row whose `traffic` column is not `live` (a dyed
insert or update that reached it), and, when a snapshot was recorded before the run
(`--snapshot=1`, i.e. `make shadow-audit SNAPSHOT=1`), when any live table changed since:
this proves that nothing live changed at all, so record it when no live traffic runs. The
comparison consumes the snapshot (one per run).

`reset` empties every shadow table and runs each service's seed with `--shadow-only`
(the inventory copies the live catalogue into the shadow one, with deep stock). It then
deletes every key under the shadow prefix (`shadow:`) in each Redis a service is configured
with (`<PREFIX>_REDIS_URL`): the dyed rate-limit counters and the dyed read cache, which would
otherwise serve the old shadow catalogue. Live keys are never touched.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from redis.asyncio import Redis  # noqa: E402
from redis.exceptions import RedisError  # noqa: E402
from servicekit.data import shadow  # noqa: E402

from infra.manifest import ManifestError, load  # noqa: E402

SNAPSHOT_VALUES = ("", "0", "1")


def run_dir() -> Path:
    return Path(os.environ.get("STACK_RUN_DIR") or REPO / ".run").resolve()


@dataclass(frozen=True)
class Target:
    """One database and the services that keep their tables in it."""

    url: str
    services: tuple[str, ...]
    seeds: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"{'+'.join(self.services)} ({redacted(self.url)})"


def redacted(url: str) -> str:
    """The URL without a password, for messages."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        credentials, _, host = rest.rpartition("@")
        rest = f"{credentials.split(':', 1)[0]}@{host}"
    return f"{scheme}{sep}{rest}"


def targets() -> list[Target]:
    by_url: dict[str, tuple[list[str], list[str]]] = {}
    for service in load().with_database:
        default = f"sqlite:///{run_dir() / service.name}.db"
        url = os.environ.get(f"{service.prefix}_DATABASE_URL") or default
        names, seeds = by_url.setdefault(url, ([], []))
        names.append(service.name)
        if service.seed:
            seeds.append(service.seed)
    return [Target(url, tuple(n), tuple(s)) for url, (n, s) in by_url.items()]


def check_exists(target: Target) -> None:
    path = shadow.sqlite_path(target.url) if target.url.startswith("sqlite") else None
    if path is not None and not Path(path).exists():
        raise SystemExit(
            f"shadow: no database for {target.label}: {path} does not exist "
            "(start the stack with `make up`, or set <PREFIX>_DATABASE_URL)"
        )


def snapshot_file() -> Path:
    return run_dir() / "shadow" / "snapshot.json"


async def record_snapshot(found: list[Target]) -> int:
    sums: dict[str, dict[str, str]] = {}
    for target in found:
        async with shadow.admin_connection(target.url) as conn:
            sums[target.url] = await shadow.live_checksums(conn)
    path = snapshot_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"taken_at": time.time(), "databases": sums}, indent=2))
    tables = sum(len(t) for t in sums.values())
    print(f"shadow-audit: snapshot of {tables} live table(s) recorded in {path}")
    return 0


async def run_audit(found: list[Target]) -> int:
    path = snapshot_file()
    snapshot = json.loads(path.read_text()) if path.exists() else None
    failed = 0
    for target in found:
        recorded = (snapshot or {}).get("databases", {}).get(target.url)
        async with shadow.admin_connection(target.url) as conn:
            tables, findings = await shadow.audit(conn, recorded)
        compared = "against the snapshot" if recorded is not None else "no snapshot"
        print(f"shadow-audit: {target.label}: {len(tables)} live table(s), {compared}")
        for finding in findings:
            print(f"  POLLUTED {finding.table}: {finding.problem}")
        failed += len(findings)
        if not tables:
            print("  ERROR no shadow tables: run the migrations (`make up`)")
            failed += 1
    if snapshot is not None:
        path.unlink()
    print("shadow-audit: " + ("FAILED" if failed else "clean: no live table holds dyed data"))
    return 1 if failed else 0


async def empty_shadow(target: Target) -> dict[str, int]:
    async with shadow.admin_connection(target.url) as conn:
        return await shadow.reset(conn)


def redis_urls() -> list[str]:
    """Every Redis a service of the manifest is configured with, each once."""
    urls = (os.environ.get(f"{service.prefix}_REDIS_URL") for service in load())
    return sorted({url for url in urls if url})


async def delete_shadow_keys(url: str) -> int:
    """Unlink every key under the shadow prefix, in batches (SCAN, never KEYS)."""
    client = Redis.from_url(url, socket_timeout=10)
    deleted = 0
    try:
        batch: list[bytes] = []
        async for key in client.scan_iter(match=f"{shadow.REDIS_PREFIX}*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += await client.unlink(*batch)
                batch.clear()
        if batch:
            deleted += await client.unlink(*batch)
    finally:
        await client.aclose()
    return deleted


def run_reset(found: list[Target]) -> int:
    for target in found:
        deleted = asyncio.run(empty_shadow(target))
        rows = sum(deleted.values())
        print(f"shadow-reset: {target.label}: {len(deleted)} table(s) emptied, {rows} row(s)")
        for seed in target.seeds:
            done = subprocess.run(  # noqa: S603 - the manifest's own seed module
                [sys.executable, "-m", seed, "--shadow-only", target.url],
                cwd=REPO,
                capture_output=True,
                text=True,
                check=False,
            )
            print(done.stdout.rstrip())
            if done.returncode != 0:
                print(f"shadow-reset: {seed} failed (exit {done.returncode}):\n{done.stderr}")
                return 1
    for url in redis_urls():
        try:
            keys = asyncio.run(delete_shadow_keys(url))
        except (OSError, RedisError) as exc:
            print(f"shadow-reset: Redis at {redacted(url)} did not answer ({exc}); its shadow keys")
            print("  are left. Start it, or unset <PREFIX>_REDIS_URL, and run `make shadow-reset`.")
            return 1
        print(f"shadow-reset: {redacted(url)}: {keys} {shadow.REDIS_PREFIX}* key(s) deleted")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shadow", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    audit = commands.add_parser("audit", help="fail when live tables hold dyed data")
    audit.add_argument(
        "--snapshot",
        default="",
        help="1: record a snapshot of the live tables (before a run); empty or 0: audit",
    )
    commands.add_parser("reset", help="empty the shadow tables and re-seed the shadow catalogue")
    args = parser.parse_args(argv)
    if args.command == "audit" and args.snapshot not in SNAPSHOT_VALUES:
        parser.error(f"SNAPSHOT={args.snapshot!r}: valid values are 1 (record) or 0/empty (audit)")
    try:
        found = targets()
    except ManifestError as exc:
        print(f"shadow: {exc}", file=sys.stderr)
        return 2
    for target in found:
        check_exists(target)
    if args.command == "reset":
        return run_reset(found)
    if args.snapshot == "1":
        return asyncio.run(record_snapshot(found))
    return asyncio.run(run_audit(found))


if __name__ == "__main__":
    raise SystemExit(main())
