"""The public surface is pinned: a change to it is a deliberate change to this list."""

import servicekit

EXPECTED = {
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
    "ProblemDocument",
    "propagation_headers",
    "run_periodically",
    "token_matches",
    "translate_db_errors",
}


def test_all_is_pinned_and_every_name_exists() -> None:
    assert set(servicekit.__all__) == EXPECTED
    for name in servicekit.__all__:
        assert hasattr(servicekit, name), name
