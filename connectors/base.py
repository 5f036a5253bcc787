"""What every vendor connector offers the engine.

A connector is one client (base URL, auth, headers, paging, error mapping) plus small
entity declarations. The engine only needs: build from config + credentials, read records
changed since a watermark, read one record, find a target record by its external key,
write, and `check()`.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Generic, Iterator, TypeVar

from pydantic import BaseModel, ConfigDict

from mlconnector.http import ConnectorError, HttpRuntime

ModelT = TypeVar("ModelT", bound=BaseModel)


class VendorModel(BaseModel):
    """Base for vendor records: unknown fields are kept, so a payload round-trips whole."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


@dataclass(frozen=True)
class EntitySpec(Generic[ModelT]):
    """One readable entity: where it lives, its key, how changes are found, its model."""

    name: str
    path: str
    key: str
    change_field: str | None
    model: type[ModelT]


@dataclass
class CheckStep:
    """One verdict of `check()`: an authenticated cheap read and how long it took."""

    step: str
    ok: bool
    latency_ms: float
    detail: str = ""


def timed_check(step: str, call: Any) -> CheckStep:
    """Run one check call, turning any connector error into a failed verdict."""
    started = time.perf_counter()
    try:
        detail = call()
        ok = True
    except ConnectorError as exc:
        detail, ok = str(exc), False
    except Exception as exc:  # network trouble, bad URL: still a verdict, not a crash
        detail, ok = f"{type(exc).__name__}: {exc}", False
    return CheckStep(step, ok, round((time.perf_counter() - started) * 1000, 1), str(detail or ""))


class Connector(ABC):
    """Base of vendor connectors. Subclasses declare `system`, `Config` and `Credentials`."""

    system: ClassVar[str]
    Config: ClassVar[type[BaseModel]]
    Credentials: ClassVar[type[BaseModel]]

    @classmethod
    @abstractmethod
    def create(cls, config: dict[str, Any], credentials: dict[str, Any], runtime: HttpRuntime) -> "Connector":
        """Validate config and credentials and build a ready client."""

    @classmethod
    @abstractmethod
    def settings_from_sandbox_info(cls, info: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """(config, credentials) for a sandbox's `GET /_sandbox/info` answer."""

    @abstractmethod
    def check(self) -> list[CheckStep]:
        ...

    def iter_changed(self, entity: str, since: datetime | None, until: datetime) -> Iterator[BaseModel]:
        """Records of `entity` changed at or after `since` (all if None), up to `until`."""
        raise NotImplementedError(f"{self.system} cannot list {entity}")

    @property
    def call_count(self) -> int:
        """Outbound HTTP attempts made so far (API-economy accounting)."""
        return 0
