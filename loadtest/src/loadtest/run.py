"""`make loadtest` and `make loadtest-ui`: run Locust on the journey, report, and gate on the SLO.

    python -m loadtest.run          # headless; knobs from the environment (loadtest.knobs)
    python -m loadtest.run --ui     # Locust's web UI on 127.0.0.1 (WEB_PORT, default 8089)

Headless, in order: the knobs are checked (a bad one: exit 2, nothing written); the stack is
probed at `HOST/healthz` (not up: exit 3, nothing written); Locust runs as its own processes,
alone or as a master with `WORKERS` local workers, printing its live stats; then
`loadtest/reports/<timestamp>/` holds `report.html`, the stats CSVs, `outcomes.json` and
`summary.json`. Exit 0 when the SLO holds, 1 when a threshold broke (named), 4 when Locust
itself failed. `LOADTEST_REPORTS_DIR` moves the reports folder.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from loadtest import knobs, summary

LOCUSTFILE = Path(__file__).resolve().parents[2] / "locustfile.py"
REPORTS = Path(__file__).resolve().parents[2] / "reports"
EXIT_SLO, EXIT_KNOB, EXIT_UNREACHABLE, EXIT_LOCUST = 1, 2, 3, 4
#: Locust's default stop timeout is none; users finish their request, then the master quits.
WORKER_GRACE_SECONDS = 30.0


def say(text: str) -> None:
    print(text, flush=True)


def probe(host: str) -> str | None:
    """None when `host/healthz` answers 200, else why not."""
    try:
        with urllib.request.urlopen(f"{host}/healthz", timeout=5) as answer:  # noqa: S310 (http(s) only, checked by knobs)
            if answer.status == 200:
                return None
            return f"{host}/healthz answered {answer.status}"
    except urllib.error.HTTPError as exc:
        return f"{host}/healthz answered {exc.code}"
    except OSError as exc:
        return f"{host}/healthz is not reachable ({getattr(exc, 'reason', exc)})"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def report_dir(root: Path) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    folder = root / stamp
    suffix = 1
    while folder.exists():
        suffix += 1
        folder = root / f"{stamp}-{suffix}"
    folder.mkdir(parents=True)
    return folder


def locust(*args: str) -> list[str]:
    return [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), *args]


def run_locust(chosen: knobs.Knobs, folder: Path, env: Mapping[str, str]) -> int:
    """Run the headless test (master + workers when asked); Locust's exit code."""
    common = ["--headless", "--host", chosen.host, "--exit-code-on-error", "0"]
    reports = ["--csv", str(folder / "stats"), "--html", str(folder / "report.html")]
    master_env = {**env, "LOADTEST_OUTCOMES_FILE": str(folder / "outcomes.json")}
    if not chosen.workers:
        return subprocess.call(locust(*common, *reports), env=master_env)  # noqa: S603
    port = free_port()
    master = subprocess.Popen(  # noqa: S603 (our own command line)
        locust(
            *common,
            *reports,
            "--master",
            "--master-bind-host",
            "127.0.0.1",
            "--master-bind-port",
            str(port),
            "--expect-workers",
            str(chosen.workers),
        ),
        env=master_env,
    )
    workers = [
        subprocess.Popen(  # noqa: S603 (our own command line)
            locust(
                "--worker",
                "--master-host",
                "127.0.0.1",
                "--master-port",
                str(port),
                "--loglevel",
                "WARNING",
            ),
            env=dict(env),
            stdout=subprocess.DEVNULL,
        )
        for _ in range(chosen.workers)
    ]
    try:
        code = master.wait()
    finally:
        for worker in workers:
            try:
                worker.wait(timeout=WORKER_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        if master.poll() is None:
            master.send_signal(signal.SIGTERM)
            master.wait()
    return code


def headless(chosen: knobs.Knobs, env: Mapping[str, str]) -> int:
    unreachable = probe(chosen.host)
    if unreachable:
        say(f"loadtest: the stack is not up: {unreachable}. Start it with `make up` (or set HOST).")
        return EXIT_UNREACHABLE
    root = Path(env.get("LOADTEST_REPORTS_DIR") or REPORTS)
    folder = report_dir(root)
    stages = ", ".join(f"{users} users until {until:.0f}s" for until, users, _ in chosen.stages)
    say(
        f"loadtest: {chosen.scenario.name} ({chosen.scenario.description}), mix "
        f"{chosen.mix}, against {chosen.host}: {stages}; spawn {chosen.spawn_rate:g}/s; "
        f"{'dyed (X-Shadow-Traffic: 1)' if chosen.dye else 'LIVE traffic (DYE=0)'}; "
        f"{chosen.workers or 'no'} workers; {len(chosen.keys)} API keys"
    )
    code = run_locust(chosen, folder, env)
    outcomes_file = folder / "outcomes.json"
    if not outcomes_file.exists() or not (folder / "stats_stats.csv").exists():
        say(f"loadtest: Locust failed (exit {code}) before writing its stats; see above. {folder}")
        return EXIT_LOCUST
    run: dict[str, Any] = {
        "scenario": chosen.scenario.name,
        "mix": chosen.mix,
        "host": chosen.host,
        "dye": chosen.dye,
        "workers": chosen.workers,
        "planned": {
            "users": chosen.users,
            "spawn_rate": chosen.spawn_rate,
            "duration_s": chosen.duration,
        },
    }
    built = summary.build(
        prefix=folder / "stats",
        outcomes=json.loads(outcomes_file.read_text()),
        run=run,
        slo_p99_ms=chosen.slo_p99_ms,
        slo_error_rate=chosen.slo_error_rate,
    )
    (folder / "summary.json").write_text(json.dumps(built, indent=2) + "\n")
    say("\n" + summary.describe(built))
    broken = [c["name"] for c in built["slo"]["checks"] if not c["passed"]]
    if broken:
        say(f"loadtest: SLO broken: {', '.join(broken)}")
    say(f"report: {folder}/report.html  summary: {folder}/summary.json")
    return EXIT_SLO if broken else 0


def web_ui(chosen: knobs.Knobs, env: Mapping[str, str]) -> int:
    unreachable = probe(chosen.host)
    if unreachable:
        say(f"loadtest: the stack is not up: {unreachable}. Start it with `make up` (or set HOST).")
        return EXIT_UNREACHABLE
    port = env.get("WEB_PORT", "").strip() or "8089"
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        say(f"loadtest: WEB_PORT={port!r} is not valid; expected a port 1-65535 (default 8089)")
        return EXIT_KNOB
    say(
        f"Locust web UI: http://127.0.0.1:{port}  (scenario {chosen.scenario.name} against "
        f"{chosen.host}; press Start there; Ctrl-C here stops it)"
    )
    command = locust(
        "--host",
        chosen.host,
        "--web-host",
        "127.0.0.1",
        "--web-port",
        port,
        "--exit-code-on-error",
        "0",
    )
    try:
        return subprocess.call(command, env=dict(env))  # noqa: S603 (our own command line)
    except KeyboardInterrupt:
        return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args not in ([], ["--ui"]):
        say("usage: python -m loadtest.run [--ui]   (knobs come from the environment)")
        return EXIT_KNOB
    env = dict(os.environ)
    try:
        chosen = knobs.parse(env)
    except knobs.KnobError as exc:
        say(f"loadtest: {exc}")
        say("knobs:\n" + "\n".join(f"  {k:<18} {v}" for k, v in knobs.VALID.items()))
        return EXIT_KNOB
    return web_ui(chosen, env) if args else headless(chosen, env)


if __name__ == "__main__":
    sys.exit(main())
