"""ServiceNow simulator: OAuth at `/oauth_token.do`, the Table API, the Import Set API with
transform maps, encoded queries, `X-Total-Count` / `Link` paging and optional per-hour
rate-limit rules. `sandbox` holds the settings and control hooks, `store` the dictionary,
tables and encoded queries, `seed` the seeded data, `rules` the business rules and transform
maps, `routes` the HTTP surface."""

from .sandbox import ServiceNowSandbox

__all__ = ["ServiceNowSandbox"]
