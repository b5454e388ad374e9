"""The one way a service is run: uvicorn with connection limits, N worker processes.

    python -m servicekit.serve gateway.main:create_app [--env-prefix GATEWAY]
        [--host 127.0.0.1] [--port 8000] [--timeout-graceful-shutdown 20]

`make up` (infra/local/stack.py), the container image and so Kubernetes all start services
with this command, so every process gets the same protections (`servicekit.edge.connections`
says what they are and why a protocol subclass). The app is a factory (`create_app`), built in
each worker; access lines come from the kit's edge layer and no `Server` banner is sent.

Settings are environment variables with the service's prefix (by default the app's package
name in upper case, as in services.toml), plus the standard `WEB_CONCURRENCY`:

    <P>_HOST, <P>_PORT                  where to listen (the command line wins)
    <P>_HEADER_TIMEOUT                  seconds to receive a request's headers (10)
    <P>_MAX_CONNECTIONS                 open connections per process (4096)
    <P>_MAX_CONNECTIONS_PER_CLIENT      open connections per client address per process
                                        (2048; 0 = off, for a server behind a proxy)
    <P>_BACKLOG                         listen backlog (2048, capped by net.core.somaxconn)
    <P>_LOOP                            event loop: asyncio (default) or uvloop (see below)
    WEB_CONCURRENCY                     worker processes sharing the socket (1)

The descriptor limit is raised to its hard limit at start, and the connection cap kept
`FD_RESERVE` plus `ACCEPT_TURNS` backlogs below it, so the database pool, outbound connections
and log files always find a descriptor. Every limit in the app is per process: with several workers,
the concurrency limit, the per-process rate-limit fallback, the in-process cache and the
breakers are each worker's own (README "How it runs").
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import sys
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from uvicorn.config import STARTUP_FAILURE
from uvicorn.server import Server
from uvicorn.supervisors import Multiprocess

from servicekit.edge.connections import ConnectionLimits, ServerConfig

logger = logging.getLogger("servicekit.serve")

#: Descriptors kept free of connections: pools, outbound clients, logs, the loop's own.
FD_RESERVE = 512
#: Loop turns a refused connection holds its descriptor. asyncio accepts up to a backlog of
#: connections per turn (turn 1) and builds their transports in tasks (turn 2); the protocol's
#: `connection_made` refuses and closes one (turn 3), and the socket is released at the start
#: of turn 4, before that turn accepts again. So up to three backlogs of refused connections
#: are open at once beside the admitted ones (tests/chaos/test_slowloris.py measures it).
ACCEPT_TURNS = 3
#: How long the supervisor waits for a worker to answer its ping before replacing it. A new
#: worker imports the kit before it can answer (seconds on a busy machine; uvicorn's 5 s
#: default made workers be killed and respawned in a loop there).
WORKER_HEALTHCHECK_SECONDS = 60


class ServerSettings(BaseSettings):
    """The server's `<P>_*` settings (the app's own settings class ignores them)."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    header_timeout: float = Field(default=10.0, gt=0, le=300)
    max_connections: int = Field(default=4096, ge=1, le=1_000_000)
    max_connections_per_client: int = Field(default=2048, ge=0, le=1_000_000)
    backlog: int = Field(default=2048, ge=1, le=65535)
    # asyncio, although uvloop is faster per request: since libuv 1.45 (libuv#3696, "don't
    # accept() connections in a loop") uvloop takes one new connection off the listen queue
    # per loop turn. Under a flood every turn is long, so new connections wait seconds in the
    # kernel's accept queue, where no shedding reaches them; asyncio accepts up to the backlog
    # per turn (tests/chaos/test_flood_probe.py, docs/resilience.md). uvloop suits a service
    # behind a proxy that keeps few, long-lived connections to it.
    loop: Literal["asyncio", "uvloop"] = "asyncio"


def raise_fd_limit() -> int:
    """Raise this process's descriptor soft limit to the hard one; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return max(soft, target)


def connection_limits(settings: ServerSettings, fd_limit: int) -> ConnectionLimits:
    """The limits to enforce: the connection cap never reaches the descriptor limit.

    Besides FD_RESERVE, `ACCEPT_TURNS` backlogs are kept free: the loop accepts up to a
    backlog per turn, and a refused connection holds its descriptor for that many turns.
    """
    budget = max(1, fd_limit - FD_RESERVE - ACCEPT_TURNS * settings.backlog)
    return ConnectionLimits(
        header_timeout=settings.header_timeout,
        max_connections=min(settings.max_connections, budget),
        max_connections_per_client=settings.max_connections_per_client,
    )


def workers_from(environ: dict[str, str] | os._Environ[str]) -> int:
    """`WEB_CONCURRENCY`, 1 when unset; anything but a positive integer is refused."""
    raw = environ.get("WEB_CONCURRENCY", "1").strip() or "1"
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"WEB_CONCURRENCY must be a positive integer, got {raw!r}")
    return int(raw)


def build_config(
    app: str,
    settings: ServerSettings,
    *,
    workers: int = 1,
    fd_limit: int,
    timeout_graceful_shutdown: int | None = None,
    **overrides: Any,
) -> ServerConfig:
    """uvicorn's config for `app` (a `module:factory` path) with the kit's limits."""
    return ServerConfig(
        app,
        limits=connection_limits(settings, fd_limit),
        factory=True,
        host=settings.host,
        port=settings.port,
        backlog=settings.backlog,
        loop=settings.loop,
        workers=workers,
        access_log=False,  # the kit's edge layer writes the access line
        server_header=False,  # no banner telling attackers what runs here
        timeout_graceful_shutdown=timeout_graceful_shutdown,
        timeout_worker_healthcheck=WORKER_HEALTHCHECK_SECONDS,
        **overrides,
    )


def run(config: ServerConfig) -> None:
    """Serve until stopped: in this process, or in `config.workers` supervised processes."""
    if config.workers > 1:
        # One listening socket shared by the workers; uvicorn restarts a worker that dies.
        Multiprocess(config, sockets=[config.bind_socket()]).run()
        return
    server = Server(config)
    server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m servicekit.serve", description=__doc__)
    parser.add_argument("app", help="the app factory, `module.main:create_app`")
    parser.add_argument("--env-prefix", help="settings prefix (default: the package, upper)")
    parser.add_argument("--host", help="overrides <P>_HOST")
    parser.add_argument("--port", type=int, help="overrides <P>_PORT")
    parser.add_argument("--timeout-graceful-shutdown", type=int, default=None)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    prefix = (args.env_prefix or args.app.split(".", 1)[0].split(":", 1)[0]).upper()
    given = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    try:
        settings = ServerSettings(_env_prefix=f"{prefix}_", **given)
        workers = workers_from(os.environ)
    except ValidationError as exc:
        problems = "; ".join(
            f"{prefix}_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()
        )
        sys.exit(f"servicekit.serve: {problems}")
    except ValueError as exc:
        sys.exit(f"servicekit.serve: {exc}")
    fd_limit = raise_fd_limit()
    config = build_config(
        args.app,
        settings,
        workers=workers,
        fd_limit=fd_limit,
        timeout_graceful_shutdown=args.timeout_graceful_shutdown,
    )
    if config.limits.max_connections < settings.max_connections:
        logger.warning(
            "%s_MAX_CONNECTIONS=%d lowered to %d: the descriptor limit is %d",
            prefix,
            settings.max_connections,
            config.limits.max_connections,
            fd_limit,
        )
    run(config)


if __name__ == "__main__":
    main()
