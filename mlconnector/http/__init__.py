"""The connector kit every vendor module stands on: session, auth (static headers and one
OAuth 2.0 provider), backoff, rate limit, the error taxonomy and paginator strategies."""

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
from mlconnector.http.oauth import OAuth2Provider, OAuth2Settings
from mlconnector.http.paginate import (
    CursorPaging,
    KeysetPaging,
    LinkHeaderPaging,
    OffsetPaging,
    Page,
    PageNumberPaging,
    Paginator,
    StepBackOnShrink,
)
from mlconnector.http.ratelimit import QuotaHeaders, RateLimit, RateLimiter
from mlconnector.http.runtime import HttpRuntime, get_runtime

__all__ = [
    "ApiKeyAuth", "Auth", "AuthError", "BasicAuth", "ConnectorError", "CursorPaging", "FatalError", "HttpClient",
    "HttpRuntime", "KeysetPaging", "LinkHeaderPaging", "NoAuth", "NotFoundError", "OAuth2Provider", "OAuth2Settings",
    "OffsetPaging", "Page", "PageNumberPaging", "Paginator", "QuotaHeaders", "RateLimit", "RateLimiter", "RetriableError",
    "RetryPolicy", "RetrySettings", "StepBackOnShrink", "Token", "TokenAuth", "TokenCache", "TokenProvider",
    "classify_response", "get_runtime",
]
