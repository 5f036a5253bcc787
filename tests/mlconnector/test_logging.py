"""One log format for every logger, and the record being worked on named on every line."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import pytest

from mlconnector.flows import SourceRecord
from mlconnector.logging import configure_logging, get_logger, log_context
from tests.mlconnector.test_platform import FeedHandler, widget_db  # noqa: F401  (the fixture)


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


@pytest.fixture
def captured() -> Any:
    stream = io.StringIO()
    configure_logging("INFO", "json", stream)  # library loggers below have names no command quiets
    yield stream
    configure_logging("INFO", "auto")


def test_library_and_platform_lines_share_one_json_shape_and_the_bound_ids(captured: io.StringIO) -> None:
    with log_context(record_id=7) as bind:
        bind(integration_id="acme")
        get_logger("mlconnector.engine").info("written", target="20/INV-1")
        logging.getLogger("vendorlib.retry").warning("Backing off %s(...) for %.1fs", "get", 0.5)
    logging.getLogger("vendorlib.worker").info("outside any record")
    platform, library, outside = _lines(captured)
    assert platform["event"] == "written" and platform["record_id"] == 7 and platform["integration_id"] == "acme"
    assert library["event"] == "Backing off get(...) for 0.5s" and library["logger"] == "vendorlib.retry"
    assert library["record_id"] == 7 and library["integration_id"] == "acme" and library["level"] == "warning"
    assert {"timestamp", "level", "event"} <= set(platform) & set(library)
    assert "record_id" not in outside and "integration_id" not in outside  # unbound once the record is done


def test_a_secret_in_a_library_message_is_masked(captured: io.StringIO) -> None:
    from mlconnector.redaction import register_secret

    register_secret("tok-0123456789abcdef")
    logging.getLogger("vendorlib.http").warning("GET /x?access_token=tok-0123456789abcdef failed")
    assert "tok-0123456789abcdef" not in captured.getvalue()


def test_every_line_of_a_record_delivery_names_the_record_integration_and_flow(
        widget_db: Any, captured: io.StringIO, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    from mlconnector import engine, ledger
    from mlconnector.db.models import SyncRecord

    def fetch(self: Any, ctx: Any, source_id: str) -> dict[str, Any]:
        logging.getLogger("connectors.shop").info("read shop row %s", source_id)  # a library-style logger
        get_logger("mlconnector.test").info("fetched", source_id=source_id)
        return {"id": source_id}

    monkeypatch.setattr(FeedHandler, "fetch", fetch)
    with widget_db() as session:
        ledger.upsert_records(session, "w1", "feed", [SourceRecord("r-1", "v1")])
        record_id = session.query(SyncRecord).filter_by(source_id="r-1").one().id
    captured.truncate(0), captured.seek(0)
    assert engine.process_record(record_id).outcome == "written"
    lines = [line for line in _lines(captured) if line.get("logger") == "connectors.shop" or line["event"] == "fetched"]
    assert len(lines) == 2
    for line in lines:
        assert (line["record_id"], line["integration_id"], line["flow"]) == (record_id, "w1", "feed"), line
    get_logger("mlconnector.test").info("after")
    assert "record_id" not in _lines(captured)[-1]
