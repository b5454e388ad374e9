"""The edge: what every request meets first, and what every answer carries.

- `middleware`: the outer pure-ASGI layer (request context, server span, security headers,
  recovery, RED metrics, the access line);
- `credential`: the service credential (signed, expiring, bound to the callee) and the layer
  that refuses internal calls without it;
- `recovery`, `security`: what the edge layer calls for escaped exceptions and answer headers;
- `health`, `openapi`: the probe routes and the problem documents in OpenAPI;
- `mint`: `python -m servicekit.edge.mint <audience>` prints a credential for calls by hand.
"""
