"""Telemetry: traces, metrics and logs that tell one story per request.

- `tracing`: OpenTelemetry set up from the standard `OTEL_*` variables;
- `metrics`: every metric the kit exports (semantic-convention names, exemplars);
- `logs`: JSON lines carrying the request's ids, and the access-line policy;
- `waterfall`: `python -m servicekit.telemetry.waterfall [trace]` prints a trace from the
  local span files.
"""
