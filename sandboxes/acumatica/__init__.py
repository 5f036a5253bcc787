"""Acumatica contract-based REST API simulator.

Serves `/entity/{Endpoint}/{Version}/{Entity}` the way an Acumatica instance does: every
field a value object, details only when `$expand`-ed, `$filter`/`$select`/`$top`/`$skip`,
PUT upserts by `id` or key fields (with the `If-None-Match: *` / `If-Match: *` variants),
long-running actions polled through a `Location` status URL, OAuth 2 at
`/identity/connect/token`, cookie sessions at `/entity/auth/login`, and the three license
limits (API users, concurrent requests, requests per minute). Facts the vendor notes mark
unconfirmed are settings (`AcumaticaSettings`, `LicenseLimits`) with the documented default.

Modules: `model` (entities, settings, values), `query` ($filter), `store` (tables, seed),
`rules` (business rules), `auth` (OAuth, sessions, API users), `routes` (the HTTP surface),
`sandbox` (the class that joins them).
"""

from sandboxes.acumatica.model import (
    ENDPOINT_NAME, ENDPOINT_VERSION, ENTITIES, AcumaticaSettings, ApiError, EntityDef, LicenseLimits, Shape,
)
from sandboxes.acumatica.sandbox import AcumaticaSandbox

__all__ = ["ENDPOINT_NAME", "ENDPOINT_VERSION", "ENTITIES", "AcumaticaSandbox", "AcumaticaSettings", "ApiError",
           "EntityDef", "LicenseLimits", "Shape"]
