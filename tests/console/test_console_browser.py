"""The console in a real headless Chromium over the ServiceTitan -> Epicor pair: PostgreSQL,
Redis for the sign-in limiter, both vendor sandboxes over HTTP, records processed in-process.

A finance user signs in, finds a held bill by its ServiceTitan number, links its vendor (and
the bill is then seen in Epicor through Epicor's OData API), edits a failed bill and replays
it after seeing the field diff, resolves another, reads a reconciliation that shows a planted
difference, and has a form without its CSRF token refused.
"""

from __future__ import annotations

import json
from typing import Any, Iterator

import pytest
import requests
from click.testing import CliRunner
from sqlalchemy import select

from sandboxes import SandboxOptions
from tests.conftest import serve_wsgi, wait_until
from tests.console.browser import start_browser, stop_browser
from tests.console.conftest import PASSWORD, add_user

GL_DEFAULT = "5100-100"


@pytest.fixture
def world(console_env: dict[str, str]) -> Iterator[dict[str, Any]]:
    from mlconnector.harness import start_pair
    from mlconnector.web import create_app

    harness = start_pair("servicetitan-epicor", "acme", options=SandboxOptions(seed=3, records=2), overrides={
        "invoice_group": "STAP", "gl": {"default_account": GL_DEFAULT},
        "counterparts": {"vendor": {"match": "name", "create": False}},
        "systems": {"epicor": {"retry": {"max_tries": 1}}}})
    add_user("fiona", "operator")
    url, server = serve_wsgi(create_app())
    driver, profile = start_browser()
    try:
        yield {"url": url, "st": harness.sandboxes.running["servicetitan"], "epicor": harness.sandboxes.running["epicor"],
               "driver": driver}
    finally:
        stop_browser(driver, profile)
        server.shutdown()
        harness.stop()


def go(driver: Any, by: str, selector: str) -> None:
    """Click something that loads a page, and wait until the new page has replaced the old."""
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    page = driver.find_element("tag name", "html")
    driver.find_element(by, selector).click()
    WebDriverWait(driver, 30).until(expected_conditions.staleness_of(page))


def _epicor_invoices(epicor: Any) -> list[dict[str, Any]]:
    """AP invoices in the STAP group, read through Epicor's own OData API."""
    info = epicor.info()
    creds = info["credentials"]
    response = requests.get(f"{info['api_base']}/api/v2/odata/{creds['company']}/Erp.BO.APInvoiceSvc/APInvoices",
                            params={"$top": 100, "$filter": "GroupID eq 'STAP'"}, auth=(creds["username"], creds["password"]),
                            headers={"x-api-key": creds["api_key"]}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["value"]


def _record(flow: str, source_id: str) -> Any:
    from mlconnector.db.models import SyncRecord
    from mlconnector.db.session import session_scope

    with session_scope() as session:
        return session.scalar(select(SyncRecord).where(SyncRecord.flow == flow, SyncRecord.source_id == source_id))


def _actors(record_id: int) -> dict[str, str | None]:
    from mlconnector import audit
    from mlconnector.db.session import session_scope

    with session_scope() as session:
        return {row.kind: row.actor for row in audit.trail(session, record_id)}


def test_finance_user_works_the_exceptions_in_the_browser(world: dict[str, Any]) -> None:
    from mlconnector.cli import main
    from selenium.webdriver.common.by import By

    driver, url, st, epicor = world["driver"], world["url"], world["st"], world["epicor"]
    put = lambda entity, body: requests.post(f"{st.url}/_sandbox/entities/{entity}", json=body, timeout=10).json()  # noqa: E731
    address = {"street": "12 Yard Rd", "city": "Fresno", "state": "CA", "zip": "93701", "country": "USA"}
    made = [requests.post(f"{epicor.url}/_sandbox/entities/vendors", timeout=10, json={
        "VendorID": vendor_id, "Name": name, "Address1": "1 Mill St", "City": "Fresno", "State": "CA", "ZIP": "93701",
        "Country": "USA", "Inactive": False}) for vendor_id, name in (("NORD0001", "Nordic Duct Supply"),
                                                                      ("HARB0001", "Harbor Coil Supply"))]
    assert all(r.status_code == 200 for r in made), [r.text for r in made]
    known, target = (r.json() for r in made)
    twin = put("vendors", {"name": known["Name"], "address": address})  # matched by name: its bills reach the write
    vendor = put("vendors", {"name": "Zephyr Coil Works", "address": address})  # no Epicor match, create off: held
    order = put("purchase_orders", {"vendorId": vendor["id"], "status": "Received"})
    others = [put("purchase_orders", {"vendorId": twin["id"], "status": "Received"})["id"] for _ in range(2)]
    bills = st.sandbox.get_entities("inventory_bills")
    bill = next(b for b in bills if b["purchaseOrderId"] == order["id"])
    failed = [b for b in bills if b["purchaseOrderId"] in others]
    number = (bill.get("referenceNumber") or "").strip() or f"ST-{bill['id']}"
    # Epicor refuses every AP invoice for now: the twin's bills fail; the new vendor's bill is held before any write.
    requests.post(f"{epicor.url}/_sandbox/faults", json={"error_rate": 1.0, "error_status": 400,
                                                         "path_contains": "APInvoiceSvc/GetNewAPInvHedInvoice"}, timeout=5)
    assert CliRunner().invoke(main, ["sync", "acme"]).exit_code == 0

    def twins_failed() -> bool:
        """A bill a slow moment left pending (a timeout is retried) meets the refusal on the next sync."""
        if [_record("inventory_bills", str(b["id"])).status for b in failed] == ["failed", "failed"]:
            return True
        assert CliRunner().invoke(main, ["sync", "acme"]).exit_code == 0
        return False

    wait_until(twins_failed, timeout=60, interval=1.0,
               message=lambda: f"twin's bills not failed: {[_record('inventory_bills', str(b['id'])).status for b in failed]}")
    requests.post(f"{epicor.url}/_sandbox/faults", json={"replace": True}, timeout=5)
    held = _record("inventory_bills", str(bill["id"]))
    assert held.status == "held" and "Zephyr Coil Works" in held.hold_reason

    # Sign in; the queue finds the held bill by its ServiceTitan number.
    driver.get(f"{url}/console/exceptions")
    assert "/console/signin" in driver.current_url
    driver.find_element(By.NAME, "username").send_keys("fiona")
    driver.find_element(By.NAME, "password").send_keys(PASSWORD)
    go(driver, By.CSS_SELECTOR, "#signin button")
    assert driver.current_url.endswith("/console/exceptions")
    driver.find_element(By.ID, "document").send_keys(number)
    go(driver, By.ID, "search")
    rows = driver.find_elements(By.CSS_SELECTOR, "#queue .queue-row")
    assert [r.get_attribute("data-record") for r in rows] == [str(held.id)]
    go(driver, By.CSS_SELECTOR, f"#queue a[href$='/console/records/{held.id}']")
    assert "Zephyr Coil Works" in driver.find_element(By.ID, "hold-reason").text

    # Link its vendor: search Epicor, see both names and what the link releases, confirm.
    go(driver, By.CSS_SELECTOR, "a.link-need")
    assert "Zephyr Coil Works" in driver.find_element(By.ID, "source-record").text
    driver.find_element(By.NAME, "q").send_keys(target["Name"].split()[0])
    go(driver, By.CSS_SELECTOR, "#search-target button")
    go(driver, By.CSS_SELECTOR, f"button.choose[data-target='{target['VendorNum']}']")
    summary = driver.find_element(By.ID, "link-summary").text
    assert "Zephyr Coil Works" in summary and target["Name"] in summary
    assert "would re-queue 2 held record(s)" in driver.find_element(By.ID, "release-count").text
    assert _epicor_invoices(epicor) == [] or number not in {i["InvoiceNum"] for i in _epicor_invoices(epicor)}
    go(driver, By.CSS_SELECTOR, "#confirm-link button")
    assert "re-queued 2 held record(s)" in driver.find_element(By.CSS_SELECTOR, ".flash.ok").text
    written = [i for i in _epicor_invoices(epicor) if i["InvoiceNum"] == number]
    assert len(written) == 1 and written[0]["VendorNum"] == target["VendorNum"]
    assert _record("inventory_bills", str(bill["id"])).status == "written"

    # Edit a failed bill's payload, see the field diff, confirm: it is written under the edit.
    first = _record("inventory_bills", str(failed[0]["id"]))
    driver.get(f"{url}/console/records/{first.id}")
    assert driver.find_element(By.ID, "last-error").text
    go(driver, By.ID, "edit")
    payload = json.loads(driver.find_element(By.NAME, "payload").get_attribute("value"))
    edited_number = f"FIX-{failed[0]['id']}"
    payload["referenceNumber"] = edited_number
    driver.execute_script("arguments[0].value = arguments[1]", driver.find_element(By.NAME, "payload"), json.dumps(payload))
    go(driver, By.ID, "preview-edit")
    diff = [row.text for row in driver.find_elements(By.CSS_SELECTOR, "#diff .diff-row")]
    assert len(diff) == 1 and diff[0].startswith("referenceNumber") and edited_number in diff[0]
    assert edited_number not in {i["InvoiceNum"] for i in _epicor_invoices(epicor)}  # nothing before the confirmation
    driver.find_element(By.NAME, "note").send_keys("reference keyed wrong in the field")
    go(driver, By.ID, "confirm-edit")
    assert driver.find_element(By.ID, "record-status").text == "written"
    assert edited_number in {i["InvoiceNum"] for i in _epicor_invoices(epicor)}
    assert _actors(first.id)["replay"] == "fiona"

    # A form stripped of its CSRF token is refused and changes nothing; the real one resolves.
    second = _record("inventory_bills", str(failed[1]["id"]))
    driver.get(f"{url}/console/records/{second.id}")
    driver.find_element(By.NAME, "note").send_keys("keyed by hand in Epicor")
    driver.execute_script("document.querySelector('#resolve input[name=csrf_token]').remove()")
    go(driver, By.CSS_SELECTOR, "#resolve button")
    assert "form was refused" in driver.find_element(By.ID, "error-message").text
    assert _record("inventory_bills", str(failed[1]["id"])).status == "failed"
    driver.get(f"{url}/console/records/{second.id}")
    driver.find_element(By.NAME, "note").send_keys("keyed by hand in Epicor")
    go(driver, By.CSS_SELECTOR, "#resolve button")
    assert driver.find_element(By.ID, "record-status").text == "resolved"
    assert _actors(second.id)["resolved"] == "fiona"

    # Plant a difference: the linked bill's invoice amount changed by hand in Epicor.
    invoice = written[0]
    changed = requests.post(f"{epicor.url}/_sandbox/entities/ap_invoices", timeout=10, json={
        "Company": invoice.get("Company"), "VendorNum": invoice["VendorNum"], "InvoiceNum": invoice["InvoiceNum"],
        "InvoiceAmt": float(invoice["InvoiceAmt"]) + 100})
    assert changed.status_code == 200, changed.text
    period = str(bill["billDate"])[:7]
    driver.get(f"{url}/console/reconcile/acme?period={period}")
    planted = [row for row in driver.find_elements(By.CSS_SELECTOR, "tr.difference.kind-amount_differs")
               if row.find_elements(By.CSS_SELECTOR, f"a[href$='/console/records/{held.id}']")]
    assert len(planted) == 1, driver.find_element(By.TAG_NAME, "main").text
    csv_text = driver.execute_async_script(
        "fetch(arguments[0]).then(r => r.text()).then(arguments[1])", driver.find_element(By.ID, "csv").get_attribute("href"))
    assert "amount_differs" in csv_text and number in csv_text

    # Signed out, the record pages answer only with the sign-in page.
    go(driver, By.ID, "signout")
    driver.get(f"{url}/console/records/{held.id}")
    assert "/console/signin" in driver.current_url and "Zephyr" not in driver.page_source
