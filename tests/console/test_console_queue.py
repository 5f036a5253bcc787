"""The exceptions queue pages by keyset: every open record once, in order, whatever the page;
filters narrow by integration, flow, state, reason and age. And the overview's counts."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any
from urllib.parse import unquote

from tests.console.conftest import add_user, sign_in


def _seed(count: int) -> list[int]:
    from mlconnector.db.models import Integration, SyncRecord, utcnow
    from mlconnector.db.session import session_scope

    now = utcnow()
    with session_scope() as session:
        session.add(Integration(id="acme", pair="servicetitan-epicor", name="acme", enabled=True, config={}))
        session.flush()
        rows = []
        for index in range(count):
            status = ("held", "failed", "written")[index % 3]
            # Pairs of records share an updated_at: the cursor must break ties by id.
            rows.append(SyncRecord(integration_id="acme", flow=("inventory_bills", "vendors")[index % 2],
                                   source_id=str(500 + index), status=status, deliveries=1,
                                   payload={"id": 500 + index, "referenceNumber": f"INV-{index:04d}"},
                                   hold_reason="vendor 'Acme' has no epicor vendor" if status == "held" else None,
                                   last_error="HTTP 400: period closed" if status == "failed" else None,
                                   updated_at=now - timedelta(hours=100 - index // 2)))
        session.add_all(rows)
        session.flush()
        return [r.id for r in rows if r.status in ("held", "failed")]


def _ids(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'class="queue-row" data-record="(\d+)"', html)]


def test_keyset_pages_cover_every_open_record_once_and_filters_narrow(app: Any) -> None:
    open_ids = _seed(180)
    add_user("vera", "viewer")
    client = app.test_client()
    assert sign_in(client, "vera").status_code == 302
    seen, query = [], {}
    while True:
        html = client.get("/console/exceptions", query_string=query).get_data(as_text=True)
        seen += _ids(html)
        found = re.search(r'id="next-page" href="[^"]*after=([^"&]+)', html)
        if not found:
            break
        query = {"after": unquote(found.group(1))}
    assert sorted(seen) == sorted(open_ids) and len(seen) == len(set(seen)) == 120
    assert seen == sorted(seen)  # oldest change first; equal times in id order
    only = lambda **q: _ids(client.get("/console/exceptions", query_string=q).get_data(as_text=True))  # noqa: E731
    assert len(only(state="failed", flow="vendors")) == 30
    assert len(only(reason="period closed", flow="inventory_bills")) == 30
    assert len(only(reason="period closed")) == 50  # one page of the 60
    assert len(only(older_than_hours=90)) == len([i for i in range(180) if i % 3 != 2 and 100 - i // 2 >= 90])
    assert len(only(document="INV-0004")) == 1
    assert client.get("/console/exceptions", query_string={"older_than_hours": "soon"}).status_code == 400
    overview = client.get("/console/").get_data(as_text=True)
    assert 'href="/console/exceptions?integration=acme&amp;flow=inventory_bills&amp;state=held">30</a>' in overview
