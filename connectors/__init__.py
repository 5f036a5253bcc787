"""One module per vendor API. `build_connector` finds a connector class by system name."""

from __future__ import annotations

import importlib
from typing import Any

from connectors.base import Connector

CONNECTORS: dict[str, str] = {
    "servicetitan": "connectors.servicetitan:ServiceTitanConnector",
    "epicor": "connectors.epicor:EpicorConnector",
    "acumatica": "connectors.acumatica:AcumaticaConnector",
    "syspro": "connectors.syspro:SysproConnector",
    "servicenow": "connectors.servicenow:ServiceNowConnector",
    "procore": "connectors.procore:ProcoreConnector",
}


class UnknownSystemError(KeyError):
    pass


def connector_class(system: str) -> type[Connector]:
    try:
        module_name, class_name = CONNECTORS[system].split(":")
    except KeyError:
        raise UnknownSystemError(
            f"unknown system {system!r}; known: {', '.join(sorted(CONNECTORS))}"
        ) from None
    return getattr(importlib.import_module(module_name), class_name)


def build_connector(system: str, config: dict[str, Any], credentials: dict[str, Any]) -> Connector:
    """A connector for one system of one integration, on this process's HTTP runtime."""
    from mlconnector.http import get_runtime

    return connector_class(system).create(config, credentials, get_runtime())
