"""servicekit: the platform every service of the template is built on.

One import surface; the modules behind it are small and have one concern each.
"""

from servicekit import context, contract
from servicekit.admission.limiter import ConcurrencyLimiter
from servicekit.admission.readonly import ReadOnlyGuard
from servicekit.app import create_service_app
from servicekit.background import run_periodically
from servicekit.context import MissingContextError, get, must_get
from servicekit.contract import Caller, Trust
from servicekit.data.database import Base, Database, SessionDep, create_engine, translate_db_errors
from servicekit.data.redis import create_redis
from servicekit.data.shadow import ShadowWriteError, TrafficMarked, for_each_traffic
from servicekit.downstream.breaker import AsyncCircuitBreaker, BreakerConfig, CircuitOpenError
from servicekit.downstream.breaker_registry import Breakers
from servicekit.downstream.client import ServiceClient, propagation_headers
from servicekit.downstream.retry import RetryPolicy
from servicekit.downstream.routing import Route, RouteError, RoutingTable
from servicekit.downstream.wiring import Downstreams
from servicekit.edge.credential import (
    ServiceCredential,
    ServiceCredentialTrust,
    mint_service_token,
    token_matches,
    verify_service_token,
)
from servicekit.edge.idempotency import IdempotencyKeyDep, idempotency_key_header
from servicekit.edge.security import SecurityHeaders
from servicekit.errors import (
    BadRequestError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    PayloadTooLargeError,
    PaymentRequiredError,
    ProblemDocument,
    ServiceError,
    TooManyRequestsError,
    UnauthorizedError,
    UnavailableError,
    UnprocessableError,
    problem_body,
    problem_response,
    problem_responses,
)
from servicekit.faults import (
    FaultInjector,
    Faults,
    InjectedFaultError,
    faults_router,
    inject_faults,
)
from servicekit.once import Once
from servicekit.settings import ServiceSettings, async_database_url
from servicekit.telemetry.logs import configure_logging
from servicekit.telemetry.metrics import Metrics, exemplar, traffic
from servicekit.telemetry.tracing import Tracing

__all__ = [
    "AsyncCircuitBreaker",
    "BadRequestError",
    "Base",
    "BreakerConfig",
    "Breakers",
    "Caller",
    "CircuitOpenError",
    "ConcurrencyLimiter",
    "ConflictError",
    "Database",
    "Downstreams",
    "FaultInjector",
    "Faults",
    "ForbiddenError",
    "IdempotencyKeyDep",
    "InjectedFaultError",
    "Metrics",
    "MissingContextError",
    "NotFoundError",
    "Once",
    "PayloadTooLargeError",
    "PaymentRequiredError",
    "ProblemDocument",
    "ReadOnlyGuard",
    "RetryPolicy",
    "Route",
    "RouteError",
    "RoutingTable",
    "SecurityHeaders",
    "ServiceClient",
    "ServiceCredential",
    "ServiceCredentialTrust",
    "ServiceError",
    "ServiceSettings",
    "SessionDep",
    "ShadowWriteError",
    "TooManyRequestsError",
    "Tracing",
    "TrafficMarked",
    "Trust",
    "UnauthorizedError",
    "UnavailableError",
    "UnprocessableError",
    "async_database_url",
    "configure_logging",
    "context",
    "contract",
    "create_engine",
    "create_redis",
    "create_service_app",
    "exemplar",
    "faults_router",
    "for_each_traffic",
    "get",
    "idempotency_key_header",
    "inject_faults",
    "mint_service_token",
    "must_get",
    "problem_body",
    "problem_response",
    "problem_responses",
    "propagation_headers",
    "run_periodically",
    "token_matches",
    "traffic",
    "translate_db_errors",
    "verify_service_token",
]
