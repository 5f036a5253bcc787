"""This month's documents created through a target's API, per integration (for `status`)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone



def test_documents_created_this_month_counts_each_creation_once(configure) -> None:
    from mlconnector import audit, health
    from mlconnector.db import migrate
    from mlconnector.db.session import session_scope

    configure()
    migrate.upgrade()
    with session_scope() as session:
        # A customer created by the resolver and reported again by its own flow's write: one creation.
        audit.append(session, "counterpart_created", "created acumatica customer ST1", integration_id="a", sync_record_id=1,
                     target_id="ST1")
        audit.append(session, "written", "created acumatica customers ST1", integration_id="a", sync_record_id=1, target_id="ST1")
        # A customer created while resolving an invoice, and the invoice itself: two.
        audit.append(session, "counterpart_created", "created acumatica customer ST2", integration_id="a", sync_record_id=2,
                     target_id="ST2")
        audit.append(session, "written", "created and released acumatica ar_invoices Invoice/AR000001", integration_id="a",
                     sync_record_id=2, target_id="Invoice/AR000001")
        # Neither an update, nor an unchanged document, nor another integration's creation.
        audit.append(session, "written", "updated acumatica customers ST1", integration_id="a", sync_record_id=3, target_id="ST1")
        audit.append(session, "skipped", "unchanged acumatica ar_invoices Invoice/AR000001", integration_id="a", sync_record_id=2)
        audit.append(session, "written", "created acumatica bills Bill/000001", integration_id="b", sync_record_id=4,
                     target_id="Bill/000001")
    with session_scope() as session:
        assert health.documents_created_this_month(session) == {"a": 3, "b": 1}
        assert health.documents_created_this_month(session, "b") == {"b": 1}
        next_month = datetime.now(timezone.utc).replace(day=28) + timedelta(days=5)
        assert health.documents_created_this_month(session, now=next_month) == {}


def test_status_shows_each_integrations_documents_created_this_month(configure) -> None:
    import json

    from click.testing import CliRunner

    from mlconnector import audit
    from mlconnector.cli import main
    from mlconnector.db import migrate
    from mlconnector.db.session import session_scope
    from mlconnector.integrations import create_integration

    configure()
    migrate.upgrade()
    with session_scope() as session:
        create_integration(session, "a", "counter-test", {"systems": {"counter": {"base_url": "http://127.0.0.1:9"}}})
        session.flush()
        for n in range(2):
            audit.append(session, "written", f"created counter items {n}", integration_id="a", sync_record_id=n,
                         target_id=str(n))
    shown = CliRunner().invoke(main, ["status"], terminal_width=200)
    assert shown.exit_code == 0 and "a: 2 document(s) created in target systems this month" in shown.output, shown.output
    rows = json.loads(CliRunner().invoke(main, ["status", "--json"]).output)
    assert rows and all(row["integration_created_this_month"] == 2 for row in rows)
