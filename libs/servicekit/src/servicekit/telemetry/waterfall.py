"""Print one trace from the local trace files as a waterfall.

    python -m servicekit.telemetry.waterfall                 # the latest trace
    python -m servicekit.telemetry.waterfall <trace_id>      # that one (a unique prefix is enough)
    python -m servicekit.telemetry.waterfall --list          # the latest traces, one line each

`make up` has every service append its sampled spans to `.run/traces/<service>.jsonl`
(`<P>_TRACES_FILE`, written by `servicekit.telemetry.tracing.JsonLinesSpanExporter`); `make trace`
runs this. Spans reach the files within about a second (`OTEL_BSP_SCHEDULE_DELAY`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

BAR_WIDTH = 40


@dataclass
class Span:
    """One span read back from a trace file."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    service: str
    start: int
    end: int
    status: str
    attributes: dict[str, Any]
    children: list[Span] = field(default_factory=list)

    @classmethod
    def from_json(cls, entry: dict[str, Any]) -> Span:
        """Build from one line of the file (see `servicekit.telemetry.tracing.span_to_dict`)."""
        start = int(entry["start_time_unix_nano"])
        return cls(
            trace_id=str(entry["trace_id"]),
            span_id=str(entry["span_id"]),
            parent_span_id=entry.get("parent_span_id"),
            name=str(entry.get("name", "?")),
            service=str(entry.get("service") or "?"),
            start=start,
            end=int(entry.get("end_time_unix_nano") or start),
            status=str(entry.get("status", "UNSET")),
            attributes=dict(entry.get("attributes") or {}),
        )


def read_spans(paths: Iterable[Path]) -> list[Span]:
    """Every span in `paths`; lines that are not spans (a torn last line) are skipped."""
    spans: list[Span] = []
    for path in paths:
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                try:
                    spans.append(Span.from_json(json.loads(line)))
                except (ValueError, KeyError, TypeError):
                    continue
    return spans


def group_traces(spans: Iterable[Span]) -> dict[str, list[Span]]:
    """Spans by trace id."""
    traces: dict[str, list[Span]] = defaultdict(list)
    for span in spans:
        traces[span.trace_id].append(span)
    return dict(traces)


def latest(traces: dict[str, list[Span]]) -> str | None:
    """The trace that began last."""
    if not traces:
        return None
    return max(traces, key=lambda trace_id: min(s.start for s in traces[trace_id]))


def build_tree(spans: list[Span]) -> list[Span]:
    """Link children to parents; the roots are spans whose parent is not in the trace."""
    by_id = {s.span_id: s for s in spans}
    roots: list[Span] = []
    for span in sorted(spans, key=lambda s: s.start):
        span.children = []
    for span in sorted(spans, key=lambda s: s.start):
        parent = by_id.get(span.parent_span_id or "")
        if parent is None or parent is span:
            roots.append(span)
        else:
            parent.children.append(span)
    return roots


def _walk(spans: list[Span], depth: int = 0) -> Iterator[tuple[int, Span]]:
    for span in spans:
        yield depth, span
        yield from _walk(span.children, depth + 1)


def _label(span: Span) -> str:
    extra = []
    status = span.attributes.get("http.response.status_code")
    if status is not None:
        extra.append(str(status))
    path = span.attributes.get("url.path")
    if path and span.name.split(" ", 1)[-1] != path:
        extra.append(str(path))
    if span.status == "ERROR":
        extra.append("ERROR")
    return f"{span.name} [{' '.join(extra)}]" if extra else span.name


def render(trace_id: str, spans: list[Span], out: TextIO, *, width: int = BAR_WIDTH) -> None:
    """Write the waterfall of one trace: offset, duration, service, span, and a time bar."""
    roots = build_tree(spans)
    begin = min(s.start for s in spans)
    total = max(max(s.end for s in spans) - begin, 1)
    services = sorted({s.service for s in spans})
    out.write(
        f"trace {trace_id}  {total / 1e6:.1f} ms, {len(spans)} spans, "
        f"services: {', '.join(services)}\n\n"
    )
    out.write(f"{'start ms':>9} {'dur ms':>8}  {'service':<10} span\n")
    rows = list(_walk(roots))
    label_width = min(60, max(len("  " * d + _label(s)) for d, s in rows))
    for depth, span in rows:
        offset = span.start - begin
        first = int(offset / total * width)
        length = max(1, round((span.end - span.start) / total * width))
        bar = " " * first + "█" * min(length, width - first)
        label = ("  " * depth + _label(span))[:label_width]
        out.write(
            f"{offset / 1e6:>9.1f} {(span.end - span.start) / 1e6:>8.1f}  "
            f"{span.service:<10} {label:<{label_width}} |{bar:<{width}}|\n"
        )


def default_directory() -> Path:
    """`$STACK_RUN_DIR/traces`, else `.run/traces` in the current directory."""
    run = os.environ.get("STACK_RUN_DIR")
    return (Path(run) if run else Path(".run")) / "traces"


def main(argv: list[str] | None = None, out: TextIO = sys.stdout) -> int:
    """Command line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description="Print a trace from the local trace files.")
    parser.add_argument("trace_id", nargs="?", help="trace id or a unique prefix (default: latest)")
    parser.add_argument("--dir", type=Path, default=None, help="folder of <service>.jsonl files")
    parser.add_argument("--list", action="store_true", help="list the latest traces")
    parser.add_argument("-n", type=int, default=20, help="how many traces --list shows")
    args = parser.parse_args(argv)
    directory: Path = args.dir or default_directory()
    files = sorted(directory.glob("*.jsonl"))
    if not files:
        out.write(f"no trace files in {directory} (is the stack up? `make up`)\n")
        return 1
    traces = group_traces(read_spans(files))
    if args.list:
        ordered = sorted(traces.items(), key=lambda kv: min(s.start for s in kv[1]), reverse=True)
        for trace_id, spans in ordered[: args.n]:
            roots = build_tree(spans)
            duration = (max(s.end for s in spans) - min(s.start for s in spans)) / 1e6
            out.write(f"{trace_id}  {duration:>8.1f} ms  {len(spans):>3} spans  {roots[0].name}\n")
        return 0
    if args.trace_id:
        wanted = args.trace_id.lower()
        matches = [t for t in traces if t.startswith(wanted)]
        if len(matches) != 1:
            found = "no trace" if not matches else f"{len(matches)} traces"
            out.write(f"{found} matching {args.trace_id!r} in {directory}\n")
            return 1
        trace_id = matches[0]
    else:
        chosen = latest(traces)
        if chosen is None:
            out.write(f"no spans in {directory} yet (send a request first)\n")
            return 1
        trace_id = chosen
    render(trace_id, traces[trace_id], out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
