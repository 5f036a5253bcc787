"""Fixtures the platform's fleet tests share."""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from tests.conftest import serve_wsgi
from tests.fleet_pair import RecordServer


@pytest.fixture
def record_server() -> Iterator[Any]:
    """The counter pair's vendor: a source to read and a target that counts its writes."""
    server = RecordServer()
    url, wsgi = serve_wsgi(server.app)
    server.url = url  # type: ignore[attr-defined]
    yield server
    wsgi.shutdown()
