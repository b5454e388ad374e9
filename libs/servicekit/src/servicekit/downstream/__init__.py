"""Downstream calls: how a service calls another and survives its failures.

- `client`: one HTTP client per downstream (timeouts, deadline, credential, propagation);
- `breaker`: the circuit breaker; `breaker_registry`: one breaker per downstream, shared state;
- `retry`: backoff, jitter and a retry budget; `webhook`: breaker notices to a webhook;
- `wiring`: a service's downstream clients built together and closed together.
"""
