"""The newest traces from the local trace files, and one trace's waterfall.

`make up` has every service append its spans to `.run/traces/<service>.jsonl`
(servicekit.telemetry.tracing). The page lists the latest traces: the collector reads only what
each file gained since its last look (a load test makes these files large), from at most the
last `START_BYTES` of a file it meets. A trace's waterfall is rendered on demand by
servicekit.telemetry.waterfall from every file, in a worker thread.
"""

from __future__ import annotations

import io
import json
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

from servicekit.telemetry import waterfall

#: Traces listed on the page.
KEPT = 12
#: A file met for the first time is read from this far before its end.
START_BYTES = 256 * 1024
#: At most this much is read from one file per tick (the rest waits for the next ones).
TICK_BYTES = 1024 * 1024
TRACE_ID = re.compile(r"^[0-9a-f]{32}$")


class TraceTail:
    """Follows the trace files of a folder; `latest()` lists the newest root spans."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._offsets: dict[Path, int] = {}
        self._roots: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def read(self) -> None:
        """Read what the files gained (blocking file I/O: call it in a thread)."""
        try:
            files = sorted(self.directory.glob("*.jsonl"))
        except OSError:
            return
        for path in files:
            try:
                self._read_file(path)
            except OSError:
                continue

    def _read_file(self, path: Path) -> None:
        size = path.stat().st_size
        offset = self._offsets.get(path)
        if offset is None or offset > size:  # new, or truncated since
            offset = max(0, size - START_BYTES)
        with path.open("rb") as handle:
            handle.seek(offset)
            chunk = handle.read(TICK_BYTES)
        # Only whole lines; a torn last line is read again next time.
        end = chunk.rfind(b"\n") + 1
        self._offsets[path] = offset + end
        for line in chunk[:end].splitlines():
            self._take(line)

    def _take(self, line: bytes) -> None:
        try:
            span = json.loads(line)
        except ValueError:
            return
        if not isinstance(span, dict) or span.get("parent_span_id") is not None:
            return  # the page lists traces by the span that began them
        attributes = span.get("attributes") or {}
        if str(attributes.get("url.path", "")).startswith("/ops"):
            return  # the page's own requests
        try:
            start, end = int(span["start_time_unix_nano"]), int(span["end_time_unix_nano"])
            trace_id = str(span["trace_id"])
        except (KeyError, TypeError, ValueError):
            return
        self._roots[trace_id] = {
            "trace_id": trace_id,
            "name": str(span.get("name", "?"))[:80],
            "service": str(span.get("service") or "?"),
            "status": attributes.get("http.response.status_code"),
            "error": span.get("status") == "ERROR",
            "duration_ms": round((end - start) / 1e6, 1),
            "at": start / 1e9,
        }
        self._roots.move_to_end(trace_id)
        while len(self._roots) > KEPT:
            self._roots.popitem(last=False)

    def latest(self) -> list[dict[str, Any]]:
        """The newest traces first."""
        return sorted(self._roots.values(), key=lambda t: t["at"], reverse=True)


def render_waterfall(directory: Path, trace_id: str) -> str | None:
    """One trace as the text waterfall of `make trace`, or None if no file has it."""
    spans = [
        s for s in waterfall.read_spans(sorted(directory.glob("*.jsonl"))) if s.trace_id == trace_id
    ]
    if not spans:
        return None
    out = io.StringIO()
    waterfall.render(trace_id, spans, out)
    return out.getvalue()
