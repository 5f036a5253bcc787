"""The HTTP core every connector stands on: session, auth, backoff, rate limit, errors."""

from mlconnector.http.auth import (
    ApiKeyAuth,
    Auth,
    BasicAuth,
    NoAuth,
    Token,
    TokenAuth,
    TokenCache,
    TokenProvider,
)
from mlconnector.http.client import HttpClient, RetryPolicy, RetrySettings
from mlconnector.http.errors import (
    AuthError,
    ConnectorError,
    FatalError,
    NotFoundError,
    RetriableError,
    classify_response,
)
from mlconnector.http.ratelimit import RateLimit, RateLimiter
from mlconnector.http.runtime import HttpRuntime, get_runtime

__all__ = [
    "ApiKeyAuth", "Auth", "AuthError", "BasicAuth", "ConnectorError", "FatalError",
    "HttpClient", "HttpRuntime", "NoAuth", "NotFoundError", "RateLimit", "RateLimiter",
    "RetriableError", "RetryPolicy", "RetrySettings", "Token", "TokenAuth", "TokenCache", "TokenProvider",
    "classify_response", "get_runtime",
]
