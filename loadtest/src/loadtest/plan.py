"""`make capacity-plan`: growth and unit costs from Prometheus (or a recorded series file).

    python -m loadtest.plan [KNOB=value ...]     # knobs also come from the environment

Reads over `WINDOW` the gateway's request rate and the stack's resources (`QUERIES`), fits the
weekly growth (`loadtest.growth`), applies the three-band rule, derives unit costs, and says
when the knee measured by `make capacity` (its latest `recommendations.json`, or `KNEE_RPS`)
will be reached. Writes `loadtest/reports/capacity-plan-<timestamp>/` with `plan.md`,
`plan.png` and `plan.json`. A bad knob, an unreachable Prometheus, an unreadable series file or
no traffic at all: exit 2 or 3 with the reason, nothing written.

A series file (`SERIES=`) is JSON: `{"rps": [[epoch seconds, value], ...], "memory_bytes": ...,
"db_connections": ..., "cpu_cores": ..., "redis_memory_bytes": ..., "redis_keys": ...}`;
only `rps` is required. `RECORD=path` saves what was read from Prometheus in that shape.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from loadtest import growth, knobs

REPO = Path(__file__).resolve().parents[3]
REPORTS = REPO / "loadtest" / "reports"
EXIT_KNOB, EXIT_SOURCE = 2, 3
_PROBES = 'http_route!~"/healthz|/readyz|/metrics"'
#: Series name -> PromQL over every scraped service (`service` is the target label).
QUERIES = {
    "rps": "sum(rate(http_server_request_duration_seconds_count"
    f'{{service="gateway", {_PROBES}, traffic=~"{{traffic}}"}}[5m]))',
    "memory_bytes": "sum(process_resident_memory_bytes)",
    "db_connections": "sum(db_client_connection_count)",
    "cpu_cores": "sum(rate(process_cpu_seconds_total[5m]))",
    # redis_exporter's names: present when Prometheus scrapes one.
    "redis_memory_bytes": "sum(redis_memory_used_bytes)",
    "redis_keys": "sum(redis_db_keys)",
}
_WINDOW = re.compile(r"^(\d+)([mhdw])$")
_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}

VALID = {
    "PROMETHEUS_URL": "http(s)://host:port of Prometheus (default http://127.0.0.1:9090)",
    "WINDOW": "how far back to read: a number and m, h, d or w (default 28d)",
    "TRAFFIC": "live (default: user traffic only) | all (dyed load-test traffic too)",
    "SERIES": "a recorded series file (JSON) read instead of Prometheus",
    "RECORD": "a file to save the series read from Prometheus into",
    "KNEE_RPS": "a number > 0 (default: the latest make capacity report's sustainable rate)",
    "LOADTEST_REPORTS_DIR": "a folder for the plan (default loadtest/reports)",
}


def _window(raw: str) -> float:
    match = _WINDOW.match(raw.strip())
    if not match or int(match.group(1)) == 0:
        raise knobs.KnobError("WINDOW", raw, valid=VALID)
    return int(match.group(1)) * _UNITS[match.group(2)]


def parse(env: Mapping[str, str], overrides: Sequence[str] = ()) -> dict[str, Any]:
    merged = dict(env)
    for item in overrides:
        name, equals, value = item.partition("=")
        if not equals or name not in VALID:
            raise knobs.KnobError(
                name,
                value,
                "not a knob of make capacity-plan",
                valid={name: "one of " + ", ".join(VALID)},
            )
        merged[name] = value
    prometheus = (merged.get("PROMETHEUS_URL") or "http://127.0.0.1:9090").rstrip("/")
    if urllib.parse.urlsplit(prometheus).scheme not in ("http", "https"):
        raise knobs.KnobError("PROMETHEUS_URL", prometheus, valid=VALID)
    traffic = merged.get("TRAFFIC", "").strip() or "live"
    if traffic not in ("live", "all"):
        raise knobs.KnobError("TRAFFIC", traffic, valid=VALID)
    series = merged.get("SERIES", "").strip()
    if series and not Path(series).is_file():
        raise knobs.KnobError("SERIES", series, "no such file", valid=VALID)
    return {
        "prometheus": prometheus,
        "window": _window(merged.get("WINDOW", "").strip() or "28d"),
        "traffic": traffic,
        "series": Path(series) if series else None,
        "record": Path(merged["RECORD"]) if merged.get("RECORD", "").strip() else None,
        "knee_rps": knobs.number(merged, "KNEE_RPS", float, 1e-9, VALID),
        "reports": Path(merged.get("LOADTEST_REPORTS_DIR") or REPORTS),
    }


class SourceError(RuntimeError):
    """Prometheus or the series file cannot give the series."""


def from_prometheus(url: str, window: float, traffic: str) -> dict[str, list[tuple[float, float]]]:
    end = time.time()
    step = max(60.0, window / 1000)
    found: dict[str, list[tuple[float, float]]] = {}
    for name, query in QUERIES.items():
        query = query.replace("{traffic}", "shadow|live" if traffic == "all" else "live")
        arguments = urllib.parse.urlencode(
            {"query": query, "start": end - window, "end": end, "step": step}
        )
        try:
            address = f"{url}/api/v1/query_range?{arguments}"  # http(s): checked by parse
            with urllib.request.urlopen(address, timeout=30) as answer:  # noqa: S310
                body = json.loads(answer.read())
        except (OSError, ValueError) as exc:
            raise SourceError(f"Prometheus at {url} did not answer ({exc})") from None
        result = body.get("data", {}).get("result", [])
        found[name] = [(float(t), float(v)) for t, v in result[0]["values"]] if result else []
    return found


def from_file(path: Path) -> dict[str, list[tuple[float, float | None]]]:
    try:
        raw = json.loads(path.read_text())
        return {
            str(name): [(float(t), None if v is None else float(v)) for t, v in points]
            for name, points in raw.items()
        }
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise SourceError(f"{path} is not a series file ({exc}); see `loadtest.plan`") from None


def latest_knee(reports: Path) -> tuple[float, str] | None:
    """The sustainable rate of the newest `make capacity` report, and where it came from."""
    for folder in sorted(reports.glob("capacity-2*"), reverse=True):
        file = folder / "recommendations.json"
        if file.exists():
            rate = json.loads(file.read_text()).get("sustainable_rps")
            if rate:
                return float(rate), str(file)
    return None


def build(series: Mapping[str, Any], knee: tuple[float, str] | None) -> dict[str, Any]:
    """The plan as data: growth, band, unit costs, the knee's date."""
    fitted = growth.weekly_growth(series["rps"])
    name, action = growth.band(None if fitted is None else fitted.weekly)
    rps = growth.clean(series["rps"])
    plan: dict[str, Any] = {
        "points": len(rps),
        "from": rps[0][0],
        "to": rps[-1][0],
        "span": growth.span_text(rps[-1][0] - rps[0][0]),
        "band": name,
        "action": action,
        "growth": None,
        "unit_costs": growth.unit_costs(series),
        "knee_rps": None if knee is None else knee[0],
        "knee_source": None if knee is None else knee[1],
        "knee": None,
    }
    if fitted is not None:
        plan["growth"] = {
            "weekly": fitted.weekly,
            "low": fitted.low,
            "high": fitted.high,
            "level_rps": fitted.level,
        }
        if knee is not None:
            status, when = growth.knee_date(fitted, knee[0])
            plan["knee"] = {
                "status": status,
                "date": None if when is None else when.date().isoformat(),
            }
    return plan


def _date(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%d %H:%M")


def markdown(plan: Mapping[str, Any], source: str) -> str:
    g = plan["growth"]
    lines = [
        "# Capacity plan",
        "",
        f"Source: {source}; {plan['points']} points from {_date(plan['from'])} to "
        f"{_date(plan['to'])} UTC ({plan['span']}).",
        "",
        f"**{plan['band']}**: {plan['action']}.",
        "",
    ]
    if g is not None:
        lines += [
            f"Weekly growth {g['weekly']:+.1%} (95 % interval {g['low']:+.1%} to "
            f"{g['high']:+.1%}); "
            f"traffic now {g['level_rps']:.2f} requests/s (fitted).",
            "",
        ]
    if plan["knee_rps"] is None:
        lines.append("Knee: unknown (run `make capacity`, or set KNEE_RPS).")
    else:
        knee = plan["knee"]
        when = (
            "no growth rate"
            if knee is None
            else {
                "reached": "already reached",
                "never": "not at the current growth",
                "ahead": f"reached around {knee['date']}",
            }[knee["status"]]
        )
        lines.append(f"Knee {plan['knee_rps']:.1f} requests/s ({plan['knee_source']}): {when}.")
    lines += ["", "| unit cost | value | unit |", "|---|---|---|"]
    for name, cost in plan["unit_costs"].items():
        value = cost["value"]
        shown = f"no data ({', '.join(cost['missing'])})" if value is None else f"{value:.4g}"
        lines.append(f"| {name} | {shown} | {cost['unit']} |")
    lines += [
        "",
        f"Bands: > {growth.SCALE_NOW:.0%}/week scale now; {growth.PLAN_NEXT_WEEK:.0%}-"
        f"{growth.SCALE_NOW:.0%} plan next week; < {growth.PLAN_NEXT_WEEK:.0%} hold. Growth is a "
        "Theil-Sen fit of log(rate) against time.",
        "",
        "![traffic and its projection](plan.png)",
        "",
    ]
    return "\n".join(lines)


def draw(path: Path, series: Mapping[str, Any], plan: Mapping[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = growth.clean(series["rps"])
    as_date: list[Any] = [datetime.datetime.fromtimestamp(t, datetime.UTC) for t, _ in points]
    figure, axis = plt.subplots(figsize=(8, 4.5))
    axis.plot(as_date, [v for _, v in points], ".", markersize=3, label="requests/s")
    fitted = growth.weekly_growth(series["rps"])
    if fitted is not None:
        end = points[-1][0] + 4 * growth.WEEK
        knee = plan["knee"]
        if knee and knee["status"] == "ahead":
            reached = datetime.datetime.fromisoformat(knee["date"]).replace(tzinfo=datetime.UTC)
            end = min(max(end, reached.timestamp() + growth.WEEK), points[-1][0] + 52 * growth.WEEK)
        times = [points[0][0] + i * (end - points[0][0]) / 200 for i in range(201)]
        dates: list[Any] = [datetime.datetime.fromtimestamp(t, datetime.UTC) for t in times]
        axis.plot(
            dates,
            [fitted.rate_at(t) for t in times],
            label=f"fit and projection ({fitted.weekly:+.1%}/week)",
        )
    if plan["knee_rps"] is not None:
        axis.axhline(plan["knee_rps"], color="red", linestyle="--", label="knee (make capacity)")
    axis.set(ylabel="requests/s", title=f"Traffic and its projection: {plan['band']}")
    axis.legend()
    figure.autofmt_xdate()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        chosen = parse(os.environ, args)
    except knobs.KnobError as exc:
        print(f"capacity-plan: {exc}")
        print("knobs:\n" + "\n".join(f"  {k:<20} {v}" for k, v in VALID.items()))
        return EXIT_KNOB
    try:
        if chosen["series"] is not None:
            series: Mapping[str, Any] = from_file(chosen["series"])
            source = f"series file {chosen['series']}"
        else:
            series = from_prometheus(chosen["prometheus"], chosen["window"], chosen["traffic"])
            source = f"Prometheus {chosen['prometheus']} ({chosen['traffic']} traffic)"
            if chosen["record"] is not None:
                chosen["record"].write_text(json.dumps(series) + "\n")
    except SourceError as exc:
        print(f"capacity-plan: {exc}")
        return EXIT_SOURCE
    if not growth.clean(series.get("rps", [])):
        print(f"capacity-plan: no request rate in {source}: nothing to plan from.")
        return EXIT_SOURCE
    knee = (
        (chosen["knee_rps"], "KNEE_RPS") if chosen["knee_rps"] else latest_knee(chosen["reports"])
    )
    plan = build(series, knee)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    folder = chosen["reports"] / f"capacity-plan-{stamp}"
    folder.mkdir(parents=True, exist_ok=False)
    (folder / "plan.json").write_text(json.dumps(plan, indent=2) + "\n")
    draw(folder / "plan.png", series, plan)
    (folder / "plan.md").write_text(markdown(plan, source))
    g = plan["growth"]
    print(
        f"capacity-plan: {plan['band']}: {plan['action']}"
        + ("" if g is None else f" (weekly growth {g['weekly']:+.1%})")
    )
    if plan["knee"]:
        reached = plan["knee"]
        when = reached["date"] or ""
        print(f"capacity-plan: knee {plan['knee_rps']:.1f}/s: {reached['status']} {when}")
    print(f"plan: {folder}/plan.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
