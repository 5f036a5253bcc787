"""ServiceNow simulator: OAuth at `/oauth_token.do`, the Table API, the Import Set API with
transform maps, encoded queries, `X-Total-Count` / `Link` paging and optional per-hour
rate-limit rules. `sandbox` holds the settings and control hooks, `store` the dictionary and
tables, `seed` the seeded data, `query` encoded queries, `rules` the business rules and
transform maps, `routes` the HTTP surface."""

from .query import Query, parse_query
from .routes import sn_error
from .rules import ReferenceRule, TransformMap, default_transform_maps
from .sandbox import ServiceNowSandbox
from .store import TABLES, TableDef

__all__ = ["Query", "ReferenceRule", "ServiceNowSandbox", "TABLES", "TableDef", "TransformMap",
           "default_transform_maps", "parse_query", "sn_error"]
