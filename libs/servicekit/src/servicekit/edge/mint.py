"""Print a service credential for calling an internal service by hand (curl, /docs).

    python -m servicekit.edge.mint <audience> [caller] [ttl_seconds]

The secret is read from `<AUDIENCE>_SERVICE_TOKEN` (the development placeholder if unset).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from servicekit.edge.credential import DEFAULT_TTL_SECONDS, mint_service_token


def main(argv: Sequence[str] | None = None) -> int:
    """Print a token for the audience named in `argv`; 2 on a usage error."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not 1 <= len(args) <= 3:
        print(__doc__, file=sys.stderr)
        return 2
    audience = args[0]
    caller = args[1] if len(args) > 1 else "operator"
    ttl = int(args[2]) if len(args) > 2 else DEFAULT_TTL_SECONDS
    secret = os.environ.get(f"{audience.upper()}_SERVICE_TOKEN", "dev-service-token")
    print(mint_service_token(secret, caller=caller, audience=audience, ttl_seconds=ttl))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
