"""Admission: whether a request gets in, tier by tier, before it costs anything.

- `limiter`: the service tier's concurrency limit and degraded mode;
- `adaptive`: the concurrency limit found from measured latency (gradient);
- `lag`: event-loop lag and the queue timeout in front of the limiter;
- `cache`: the read cache behind cached and degraded reads (Redis or in-process);
- `readonly`: the data tier: writes refused while the database is saturated;
- `body`: the request body cap;
- `middleware`: the one pure-ASGI layer that applies them in that order;
- `wiring`: how an app gets that layer from its settings.
"""
