"""Maps and dry runs in the console: a GL map refused when malformed, previewed with the held
bills it releases, saved (the bills then written in Epicor); a dry run that writes nothing."""

from __future__ import annotations

from typing import Any, Iterator

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from sandboxes import SandboxOptions
from tests.console.conftest import add_user, csrf_token, sign_in


@pytest.fixture
def gl_held(app: Any) -> Iterator[Any]:
    """servicetitan-epicor with no GL rule: every inventory bill is held for its GL account."""
    from mlconnector.cli import main
    from mlconnector.harness import start_pair

    harness = start_pair("servicetitan-epicor", "acme", options=SandboxOptions(seed=5, records=4),
                         overrides={"invoice_group": "STAP", "gl": None})
    assert CliRunner().invoke(main, ["sync", "acme"]).exit_code == 0
    yield harness
    harness.stop()


def _bills() -> list[Any]:
    from mlconnector.db.models import SyncRecord
    from mlconnector.db.session import session_scope

    with session_scope() as session:
        return list(session.scalars(select(SyncRecord).where(SyncRecord.flow == "inventory_bills")))


def _units() -> list[str]:
    from mlconnector.db.models import HoldRelease
    from mlconnector.db.session import session_scope

    prefix = "config:gl.by_business_unit."
    with session_scope() as session:
        keys = session.scalars(select(HoldRelease.release_key).where(HoldRelease.release_key.startswith(prefix))).all()
    return sorted({key[len(prefix):] for key in keys if key[len(prefix):].isdigit()})


def test_a_gl_map_is_validated_previewed_and_releases_the_bills_it_maps(app: Any, gl_held: Any) -> None:
    from mlconnector.db.models import AuditEvent
    from mlconnector.db.session import session_scope

    held = [b for b in _bills() if b.status == "held"]
    assert held and all("no Epicor GL account" in (b.hold_reason or "") for b in held)
    units = _units()
    assert units
    add_user("otto", "operator")
    client = app.test_client()
    assert sign_in(client, "otto").status_code == 302
    page = client.get("/console/integrations/acme/maps").get_data(as_text=True)
    assert "gl.by_business_unit" in page and "gl.by_st_account" in page
    token = csrf_token(page)
    wrong = client.post("/console/integrations/acme/maps", data={"csrf_token": token, "map:gl.by_business_unit": "7 5100-100"})
    assert wrong.status_code == 422 and "line 1: write &#39;source = target&#39;" in wrong.get_data(as_text=True)
    lines = "\n".join(f"{unit} = 5100-100" for unit in units)
    preview = client.post("/console/integrations/acme/maps", data={"csrf_token": token, "map:gl.by_business_unit": lines})
    text = preview.get_data(as_text=True)
    assert preview.status_code == 200 and f"Saving would re-queue {len(held)} held record(s)" in text, text
    assert all(b.status == "held" for b in _bills())  # a preview changes nothing
    saved = client.post("/console/integrations/acme/maps", follow_redirects=True,
                        data={"csrf_token": token, "map:gl.by_business_unit": lines, "confirmed": "yes"})
    assert f"re-queued {len(held)} held record(s)" in saved.get_data(as_text=True)
    assert all(b.status == "written" for b in _bills())
    epicor = gl_held.sandboxes.running["epicor"]
    assert len([i for i in epicor.sandbox.get_entities("ap_invoices") if i.get("GroupID") == "STAP"]) == len(held)
    with session_scope() as session:
        changed = session.scalars(select(AuditEvent).where(AuditEvent.kind == "config_changed")).all()
        assert [row.actor for row in changed] == ["otto"] and "gl.by_business_unit" in changed[0].message


def test_a_dry_run_shows_the_plan_and_writes_nothing(app: Any, gl_held: Any) -> None:
    add_user("vic", "viewer")
    client = app.test_client()
    assert sign_in(client, "vic").status_code == 302
    token = csrf_token(client.get("/console/integrations/acme/dry-run").get_data(as_text=True))
    before = [(b.id, b.status, b.updated_at) for b in _bills()]
    response = client.post("/console/integrations/acme/dry-run",
                           data={"csrf_token": token, "flow": "inventory_bills", "limit": "10", "full": "y"})
    text = response.get_data(as_text=True)
    assert response.status_code == 200 and "nothing was written" in text
    assert f"{len(before)} hold" in text and "no Epicor GL account" in text
    assert [(b.id, b.status, b.updated_at) for b in _bills()] == before
