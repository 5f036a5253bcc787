"""A simulator of Procore's REST API (v1.0) for the Epicor -> Procore pair.

What it reproduces: OAuth at `/oauth/token` (client credentials without a refresh token;
authorization code and refresh_token grants with single-use, rotating refresh tokens;
90-minute access tokens), the `Procore-Company-Id` header rule, bare-array list bodies
paged with `page`/`per_page` and the `Total`/`Per-Page`/`Link` headers, `filters[...]`
including `a...b` date ranges, soft delete with `filters[include_deleted]`, company-wide
`origin_id` uniqueness, `PATCH .../sync` batch upserts that always answer 200 with
`{"entities", "errors"}`, string-typed money, the hourly and spike rate-limit windows with
`X-Rate-Limit-*` headers (both enforced by default: 3600 per hour and the docs' 25 per 10 s;
the `rate_limit` option sets the hourly one, and 0 turns both off), and the vendor's error shapes.

Resources: vendors (company directory, near-duplicate names on purpose), projects, cost
codes per project, line item types, purchase order contracts with line items, and direct
costs with line items.

Layout: `values` (facts, error wording, value forms, writable attributes), `store` (tables on
the kit store, seed and tick), `rules` (each resource's business rules and JSON shape), `auth`
(rate windows, OAuth, the per-call guard), `routes` (the HTTP surface, filters, sort and pages)
and `sandbox` (settings, control API, parameters, writes and syncs).
"""

from .sandbox import ProcoreSandbox, Settings
from .values import API, ApiError

__all__ = ["API", "ApiError", "ProcoreSandbox", "Settings"]
