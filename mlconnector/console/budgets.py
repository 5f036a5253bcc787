"""The rate budget each vendor grants an integration, as its connector settings state it
(requests per second or per hour), for the overview beside the monthly document count."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

PREFIX = "rate_limit_per_"


def rate_budgets(config: dict[str, Any]) -> list[str]:
    """'<system> 10 per second'-style lines, one per system whose connector declares a limit."""
    from connectors import connector_class

    lines = []
    for system, settings in sorted((config.get("systems") or {}).items()):
        try:
            parsed = connector_class(system).Config.model_validate(settings or {})
        except (KeyError, ValidationError):
            continue  # an unknown or invalid system: `mlconnector check` says why
        for name in type(parsed).model_fields:
            value = getattr(parsed, name)
            if name.startswith(PREFIX) and value:
                lines.append(f"{system} {value:g} per {name[len(PREFIX):]}")
    return lines
