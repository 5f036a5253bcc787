"""Faithful simulators of the vendor APIs, for the demo, the tests and the benchmarks."""

from __future__ import annotations

import importlib

from sandboxes.base import RunningSandbox, Sandbox, SandboxOptions, start_sandbox

SANDBOXES: dict[str, str] = {
    "servicetitan": "sandboxes.servicetitan:ServiceTitanSandbox",
    "epicor": "sandboxes.epicor:EpicorSandbox",
    "acumatica": "sandboxes.acumatica:AcumaticaSandbox",
    "syspro": "sandboxes.syspro:SysproSandbox",
    "servicenow": "sandboxes.servicenow:ServiceNowSandbox",
    "procore": "sandboxes.procore:ProcoreSandbox",
}


def sandbox_class(vendor: str) -> type[Sandbox]:
    try:
        module_name, class_name = SANDBOXES[vendor].split(":")
    except KeyError:
        raise KeyError(f"unknown sandbox vendor {vendor!r}; known: {', '.join(SANDBOXES)}") from None
    return getattr(importlib.import_module(module_name), class_name)


def create_sandbox(vendor: str, options: SandboxOptions | None = None, **settings: object) -> Sandbox:
    """A vendor sandbox; `settings` are that vendor's own constructor keywords."""
    return sandbox_class(vendor)(options or SandboxOptions(), **settings)


__all__ = ["RunningSandbox", "Sandbox", "SandboxOptions", "create_sandbox", "sandbox_class", "start_sandbox"]
