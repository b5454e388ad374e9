"""servicekit: the platform every service of the template is built on.

One import surface; the modules behind it are small and have one concern each.
"""

from servicekit import context
from servicekit.app import create_service_app
from servicekit.auth import ServiceAuthMiddleware, token_matches
from servicekit.background import run_periodically
from servicekit.client import (
    CUSTOMER_HEADER,
    SERVICE_TOKEN_HEADER,
    ServiceClient,
    propagation_headers,
)
from servicekit.context import MissingContextError, get, must_get
from servicekit.db import Base, Database, SessionDep, create_engine, translate_db_errors
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
from servicekit.logs import configure_logging
from servicekit.metrics import Metrics
from servicekit.once import Once
from servicekit.recovery import RecoveryMiddleware
from servicekit.redis_client import create_redis
from servicekit.settings import ServiceSettings, async_database_url

__all__ = [
    "CUSTOMER_HEADER",
    "SERVICE_TOKEN_HEADER",
    "BadRequestError",
    "Base",
    "ConflictError",
    "Database",
    "ForbiddenError",
    "Metrics",
    "MissingContextError",
    "NotFoundError",
    "Once",
    "PayloadTooLargeError",
    "PaymentRequiredError",
    "ProblemDocument",
    "RecoveryMiddleware",
    "ServiceAuthMiddleware",
    "ServiceClient",
    "ServiceError",
    "ServiceSettings",
    "SessionDep",
    "TooManyRequestsError",
    "UnauthorizedError",
    "UnavailableError",
    "UnprocessableError",
    "async_database_url",
    "configure_logging",
    "context",
    "create_engine",
    "create_redis",
    "create_service_app",
    "get",
    "must_get",
    "problem_body",
    "problem_response",
    "problem_responses",
    "propagation_headers",
    "run_periodically",
    "token_matches",
    "translate_db_errors",
]
