"""Contract tests of the ServiceNow sandbox over real HTTP, with plain `requests`.

Facts the vendor notes mark (unconfirmed) and these tests rely on: refresh grants answer the
same refresh token; the 401 wording "User is not authenticated"; a data-policy failure is a
400 "Operation Failed"; import-set statuses other than "inserted" and their messages; the
snake_case staging column names.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any, Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from sandboxes.base import RunningSandbox, SandboxOptions, start_sandbox
from sandboxes.servicenow import ServiceNowSandbox

RECORDS = 40
CUSTOM = ("u_correlation_id",)  # these tests exercise the customer-added coalesce column
SYS_ID = re.compile(r"^[0-9a-f]{32}$")
STAMP = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")


@pytest.fixture(scope="module")
def running() -> Iterator[RunningSandbox]:
    sandbox = start_sandbox(ServiceNowSandbox(SandboxOptions(records=RECORDS), custom_columns=CUSTOM))
    yield sandbox
    sandbox.stop()


@pytest.fixture(autouse=True)
def fresh(running: RunningSandbox) -> None:
    assert requests.post(f"{running.url}/_sandbox/reset", json={"records": RECORDS}).status_code == 200


@pytest.fixture
def creds(running: RunningSandbox) -> dict[str, str]:
    return running.info()["credentials"]


def get_token(url: str, creds: dict[str, str], **extra: str) -> dict[str, Any]:
    response = requests.post(f"{url}/oauth_token.do", data={"grant_type": "password", **creds, **extra})
    assert response.status_code == 200, response.text
    return response.json()


class Api:
    """A bearer-authenticated session against one sandbox."""

    def __init__(self, url: str, creds: dict[str, str]) -> None:
        self.url = url
        self.session = requests.Session()
        self.token = get_token(url, creds)
        self.session.headers.update({"Authorization": f"Bearer {self.token['access_token']}",
                                     "Accept": "application/json"})

    def __call__(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.session.request(method, f"{self.url}{path}", **kwargs)


@pytest.fixture
def api(running: RunningSandbox, creds: dict[str, str]) -> Api:
    return Api(running.url, creds)


def put(running: RunningSandbox, entity: str, payload: dict[str, Any]) -> dict[str, Any]:
    response = requests.post(f"{running.url}/_sandbox/entities/{entity}", json=payload)
    assert response.status_code == 200, response.text
    return response.json()


def links(response: requests.Response) -> dict[str, int]:
    """rel -> sysparm_offset of each Link header entry."""
    found = {}
    for url, rel in re.findall(r'<([^>]+)>;rel="(\w+)"', response.headers.get("Link", "")):
        found[rel] = int(parse_qs(urlsplit(url).query)["sysparm_offset"][0])
    return found


def seed_rows(running: RunningSandbox, table: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [put(running, table, row) for row in rows]


# ---- OAuth ------------------------------------------------------------------------------------------


def test_password_grant_issues_a_30_minute_bearer_and_a_refresh_token(running: RunningSandbox, creds: dict[str, str]) -> None:
    response = requests.post(f"{running.url}/oauth_token.do", data={"grant_type": "password", **creds})
    body = response.json()
    assert response.status_code == 200
    assert body["token_type"] == "Bearer" and body["expires_in"] == 1800 and body["scope"] == "useraccount"
    assert body["access_token"] and body["refresh_token"] and body["access_token"] != body["refresh_token"]
    assert "no-store" in response.headers["Cache-Control"]
    stats = requests.get(f"{running.url}/_sandbox/stats").json()
    assert stats["tokens_issued"] == 1 and stats["grant_password"] == 1


def test_refresh_grant_gives_a_new_access_token_and_the_refresh_token_stays_usable(
        running: RunningSandbox, creds: dict[str, str]) -> None:
    first = get_token(running.url, creds)
    form = {"grant_type": "refresh_token", "client_id": creds["client_id"], "client_secret": creds["client_secret"],
            "refresh_token": first["refresh_token"]}
    second = requests.post(f"{running.url}/oauth_token.do", data=form).json()
    third = requests.post(f"{running.url}/oauth_token.do", data=form).json()
    assert second["access_token"] not in (first["access_token"], third["access_token"])
    assert second["refresh_token"] == first["refresh_token"] == third["refresh_token"]
    ok = requests.get(f"{running.url}/api/now/table/sn_fin_supplier", params={"sysparm_limit": 1},
                      headers={"Authorization": f"Bearer {second['access_token']}"})
    assert ok.status_code == 200


def test_client_credentials_grant_has_no_refresh_token(running: RunningSandbox, creds: dict[str, str]) -> None:
    body = requests.post(f"{running.url}/oauth_token.do", data={
        "grant_type": "client_credentials", "client_id": creds["client_id"], "client_secret": creds["client_secret"]}).json()
    assert body["access_token"] and "refresh_token" not in body and body["expires_in"] == 1800


@pytest.mark.parametrize("change", [
    {"client_secret": "wrong-secret"},
    {"client_id": "0" * 32},
    {"password": "not-the-password"},
    {"username": "someone.else"},
])
def test_token_endpoint_refuses_bad_credentials_with_access_denied(
        running: RunningSandbox, creds: dict[str, str], change: dict[str, str]) -> None:
    response = requests.post(f"{running.url}/oauth_token.do", data={"grant_type": "password", **creds, **change})
    assert response.status_code == 401
    assert response.json() == {"error_description": "access_denied", "error": "server_error"}


def test_token_endpoint_refuses_unknown_refresh_token_json_bodies_and_unknown_grants(
        running: RunningSandbox, creds: dict[str, str]) -> None:
    client = {"client_id": creds["client_id"], "client_secret": creds["client_secret"]}
    bad_refresh = requests.post(f"{running.url}/oauth_token.do",
                                data={"grant_type": "refresh_token", "refresh_token": "nope", **client})
    as_json = requests.post(f"{running.url}/oauth_token.do", json={"grant_type": "password", **creds})
    unknown = requests.post(f"{running.url}/oauth_token.do", data={"grant_type": "magic", **client})
    assert bad_refresh.status_code == 401
    assert as_json.status_code == 400 and as_json.json()["error"] == "invalid_request"
    assert unknown.status_code == 400 and unknown.json()["error"] == "unsupported_grant_type"


def test_api_refuses_missing_unknown_and_expired_tokens(running: RunningSandbox, api: Api) -> None:
    path = "/api/now/table/sn_fin_supplier"
    assert api("GET", path, params={"sysparm_limit": 1}).status_code == 200
    missing = requests.get(f"{running.url}{path}")
    unknown = requests.get(f"{running.url}{path}", headers={"Authorization": "Bearer not-a-token"})
    assert missing.status_code == unknown.status_code == 401
    assert missing.json() == {"error": {"message": "User is not authenticated",
                                        "detail": "Required to provide Auth information"}, "status": "failure"}
    assert missing.headers["WWW-Authenticate"] == 'Basic realm="Service-now"'
    requests.post(f"{running.url}/_sandbox/expire-tokens")
    assert api("GET", path).status_code == 401
    refreshed = requests.post(f"{running.url}/oauth_token.do", data={
        "grant_type": "refresh_token", "client_id": running.info()["credentials"]["client_id"],
        "client_secret": running.info()["credentials"]["client_secret"], "refresh_token": api.token["refresh_token"]})
    assert requests.get(f"{running.url}{path}", params={"sysparm_limit": 1},
                        headers={"Authorization": f"Bearer {refreshed.json()['access_token']}"}).status_code == 200


def test_revoked_tokens_take_refresh_tokens_with_them(running: RunningSandbox, creds: dict[str, str]) -> None:
    token = get_token(running.url, creds)
    requests.post(f"{running.url}/_sandbox/revoke-tokens")
    response = requests.post(f"{running.url}/oauth_token.do", data={
        "grant_type": "refresh_token", "client_id": creds["client_id"], "client_secret": creds["client_secret"],
        "refresh_token": token["refresh_token"]})
    assert response.status_code == 401


def test_a_short_token_ttl_expires_on_its_own() -> None:
    with start_sandbox(ServiceNowSandbox(SandboxOptions(records=2, token_ttl=1), custom_columns=CUSTOM)) as short:
        token = get_token(short.url, short.info()["credentials"])
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        assert token["expires_in"] == 1
        assert requests.get(f"{short.url}/api/now/table/sys_user", headers=headers).status_code == 200
        time.sleep(1.05)
        assert requests.get(f"{short.url}/api/now/table/sys_user", headers=headers).status_code == 401


def test_basic_auth_is_accepted_and_a_wrong_password_is_not(running: RunningSandbox, creds: dict[str, str]) -> None:
    path = f"{running.url}/api/now/table/sys_user"
    assert requests.get(path, auth=(creds["username"], creds["password"])).status_code == 200
    assert requests.get(path, auth=(creds["username"], "guess")).status_code == 401
    assert requests.get(path, auth=(creds["username"].encode(), "pässwörd".encode())).status_code == 401
    non_ascii = requests.post(f"{running.url}/oauth_token.do", data={"grant_type": "password", **creds, "password": "pässwörd"})
    assert non_ascii.status_code == 401


# ---- headers and bodies ------------------------------------------------------------------------------


def test_writes_need_json_content_type_and_a_json_body(api: Api) -> None:
    path = "/api/now/table/sn_fin_supplier"
    no_type = api("POST", path, data='{"name": "X"}')
    bad_json = api("POST", path, data="{not json", headers={"Content-Type": "application/json"})
    array = api("POST", path, json=[{"name": "A"}, {"name": "B"}])
    assert no_type.status_code == 415 and no_type.json()["status"] == "failure"
    assert bad_json.status_code == 400
    assert bad_json.json()["error"] == {"message": "Exception while reading request", "detail": "The payload is not valid JSON."}
    assert array.status_code == 400


def test_only_json_is_served(api: Api) -> None:
    response = api("GET", "/api/now/table/sys_user", headers={"Accept": "application/xml"})
    assert response.status_code == 406 and response.json()["status"] == "failure"


def test_unknown_tables_and_paths_answer_in_the_vendor_envelope(api: Api) -> None:
    table = api("GET", "/api/now/table/u_no_such_table")
    path = api("GET", "/api/now/v9/table/sys_user")
    method = api("PUT", "/api/now/import/sn_fcms_intg_imp_order")
    assert table.status_code == 400 and table.json() == {"error": {"message": "Invalid table u_no_such_table", "detail": None},
                                                         "status": "failure"}
    assert path.status_code == 400 and path.json()["error"]["message"] == "Requested URI does not represent any resource"
    assert method.status_code == 405 and method.json()["status"] == "failure"


# ---- Table API reads ------------------------------------------------------------------------------


def test_list_wraps_string_values_with_system_fields(api: Api) -> None:
    response = api("GET", "/api/now/table/core_company", params={"sysparm_query": "vendor=true", "sysparm_limit": 5})
    rows = response.json()["result"]
    assert response.status_code == 200 and len(rows) == 5
    for row in rows:
        assert SYS_ID.match(row["sys_id"]) and STAMP.match(row["sys_created_on"]) and STAMP.match(row["sys_updated_on"])
        assert row["vendor"] == "true" and row["sys_mod_count"].isdigit()
        assert row["sys_created_on"] <= row["sys_updated_on"]
        assert all(isinstance(v, (str, dict)) for v in row.values())


def test_pagination_edges_and_link_header(running: RunningSandbox, api: Api) -> None:
    seed_rows(running, "u_paging", [{"u_n": str(i)} for i in range(10)])
    path = "/api/now/table/u_paging"
    first = api("GET", path, params={"sysparm_limit": 4, "sysparm_query": "ORDERBYu_n"})
    middle = api("GET", path, params={"sysparm_limit": 4, "sysparm_offset": 4, "sysparm_query": "ORDERBYu_n"})
    last = api("GET", path, params={"sysparm_limit": 4, "sysparm_offset": 8, "sysparm_query": "ORDERBYu_n"})
    exact = api("GET", path, params={"sysparm_limit": 10})
    shifted = api("GET", path, params={"sysparm_limit": 4, "sysparm_offset": 3})
    empty = api("GET", path, params={"sysparm_query": "u_n=99"})
    assert [r["u_n"] for r in first.json()["result"]] == ["0", "1", "2", "3"]
    assert [r["u_n"] for r in last.json()["result"]] == ["8", "9"]
    assert first.headers["X-Total-Count"] == "10"
    assert links(first) == {"first": 0, "next": 4, "last": 8}
    assert links(middle) == {"first": 0, "prev": 0, "next": 8, "last": 8}
    assert links(last) == {"first": 0, "prev": 4, "last": 8}
    assert links(exact) == {"first": 0, "last": 0} and len(exact.json()["result"]) == 10
    assert links(shifted)["prev"] == -1  # the instance's own negative prev offset
    assert empty.status_code == 200 and empty.json() == {"result": []} and empty.headers["X-Total-Count"] == "0"
    assert "next" not in links(empty)
    assert "sysparm_query=u_n%3D99" in empty.headers["Link"]  # links keep the request's query


def test_default_limit_is_10000_and_headers_can_be_switched_off(running: RunningSandbox, api: Api) -> None:
    seed_rows(running, "u_paging", [{"u_n": str(i)} for i in range(3)])
    plain = api("GET", "/api/now/table/u_paging")
    quiet = api("GET", "/api/now/table/u_paging", params={"sysparm_no_count": "true",
                                                        "sysparm_suppress_pagination_header": "true"})
    assert "sysparm_limit=10000" in plain.headers["Link"]
    assert "X-Total-Count" not in quiet.headers and "Link" not in quiet.headers
    assert len(quiet.json()["result"]) == 3


def test_v1_answers_an_empty_list_with_404_and_v2_with_an_empty_array(api: Api) -> None:
    v1 = api("GET", "/api/now/v1/table/sn_fin_supplier", params={"sysparm_query": "name=No Such Supplier"})
    v2 = api("GET", "/api/now/v2/table/sn_fin_supplier", params={"sysparm_query": "name=No Such Supplier"})
    assert v1.status_code == 404 and v1.json()["error"]["message"] == "No Record found"
    assert v2.status_code == 200 and v2.json()["result"] == []


@pytest.mark.parametrize("query, expected", [
    ("u_name=Acme Supply", ["1"]),
    ("u_name!=Acme Supply", ["2", "3", "4", "5", "6"]),
    ("u_qty>=10", ["3", "4", "5"]),
    ("u_qty<10", ["1", "2"]),  # numeric, not text, comparison; the empty quantity never matches
    ("u_nameLIKEsupply", ["1", "2"]),
    ("u_nameNOT LIKEsupply", ["3", "4", "5", "6"]),
    ("u_nameSTARTSWITHacme", ["1", "2"]),
    ("u_nameENDSWITHsteel", ["3"]),
    ("u_codeINA,C", ["1", "3"]),
    ("u_codeNOT INA,C", ["2", "4", "5", "6"]),
    ("u_codeISEMPTY", ["6"]),
    ("u_qtyISNOTEMPTY^u_qty<=20", ["1", "2", "3", "4"]),
    ("u_qtyBETWEEN9@20", ["2", "3", "4"]),
    ("u_code=A^ORu_code=B", ["1", "2"]),
    ("u_code=A^NQu_name=Bolt Steel", ["1", "3"]),
    ("u_name=Caret^^Co", ["5"]),
    ("u_no_such_field=1^u_code=B", ["2"]),  # an invalid clause is ignored
    ("u_qty>=10^ORDERBYDESCu_qty", ["5", "4", "3"]),
])
def test_encoded_query_operators(running: RunningSandbox, api: Api, query: str, expected: list[str]) -> None:
    seed_rows(running, "u_query", [
        {"u_id": "1", "u_name": "Acme Supply", "u_code": "A", "u_qty": "2"},
        {"u_id": "2", "u_name": "ACME SUPPLY CO", "u_code": "B", "u_qty": "9"},
        {"u_id": "3", "u_name": "Bolt Steel", "u_code": "C", "u_qty": "10"},
        {"u_id": "4", "u_name": "Delta Tools", "u_code": "D", "u_qty": "20"},
        {"u_id": "5", "u_name": "Caret^Co", "u_code": "E", "u_qty": "100"},
        {"u_id": "6", "u_name": "Empty", "u_code": "", "u_qty": ""},
    ])
    response = api("GET", "/api/now/table/u_query", params={"sysparm_query": query, "sysparm_fields": "u_id"})
    ids = [row["u_id"] for row in response.json()["result"]]
    assert (ids if "ORDERBY" in query else sorted(ids)) == expected


def test_name_value_pairs_filter_like_sysparm_query(api: Api) -> None:
    by_pair = api("GET", "/api/now/table/core_company", params={"vendor": "false", "sysparm_fields": "vendor"})
    assert by_pair.json()["result"] and all(r["vendor"] == "false" for r in by_pair.json()["result"])


def test_invalid_clauses_return_no_rows_when_the_instance_property_says_so(running: RunningSandbox, api: Api) -> None:
    sandbox = running.sandbox
    assert isinstance(sandbox, ServiceNowSandbox)
    sandbox.invalid_query_returns_no_rows = True
    try:
        response = api("GET", "/api/now/table/sn_fin_supplier", params={"sysparm_query": "u_bogus=1"})
    finally:
        sandbox.invalid_query_returns_no_rows = False
    assert response.json()["result"] == []


def test_change_filter_on_sys_updated_on_finds_exactly_the_ticked_records(running: RunningSandbox, api: Api) -> None:
    before = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time.time() - 1))
    changed = requests.post(f"{running.url}/_sandbox/tick", json={"count": 6}).json()["changed"]
    response = api("GET", "/api/now/table/sn_fin_supplier", params={
        "sysparm_query": f"sys_updated_on>={before}^ORDERBYsys_updated_on^ORDERBYsys_id", "sysparm_fields": "sys_id,sys_updated_on"})
    generated = api("GET", "/api/now/table/sn_fin_supplier", params={
        "sysparm_query": f"sys_updated_on>=javascript:gs.dateGenerate('{before[:10]}','{before[11:]}')"})
    upper = api("GET", "/api/now/table/sn_fin_supplier", params={"sysparm_query": f"sys_updated_on<{before}"})
    expected = {c["sys_id"] for c in changed if c["table"] == "sn_fin_supplier"}
    rows = response.json()["result"]
    assert expected and {r["sys_id"] for r in rows} == expected
    assert [r["sys_updated_on"] for r in rows] == sorted(r["sys_updated_on"] for r in rows)
    assert {r["sys_id"] for r in generated.json()["result"]} == expected
    assert int(upper.headers["X-Total-Count"]) == RECORDS - len(expected)


def test_fields_display_values_and_reference_links(running: RunningSandbox, api: Api) -> None:
    path = "/api/now/table/sn_shop_purchase_order"
    plain = api("GET", path, params={"sysparm_limit": 1, "sysparm_fields": "number,supplier,u_bogus"}).json()["result"][0]
    supplier_id = plain["supplier"]["value"]
    supplier = api("GET", f"/api/now/table/sn_fin_supplier/{supplier_id}").json()["result"]
    shown = api("GET", path, params={"sysparm_limit": 1, "sysparm_fields": "supplier", "sysparm_display_value": "true",
                                     "sysparm_exclude_reference_link": "true"}).json()["result"][0]
    both = api("GET", path, params={"sysparm_limit": 1, "sysparm_fields": "number,supplier",
                                    "sysparm_display_value": "all"}).json()["result"][0]
    bare = api("GET", path, params={"sysparm_limit": 1, "sysparm_fields": "supplier",
                                    "sysparm_exclude_reference_link": "true"}).json()["result"][0]
    assert set(plain) == {"number", "supplier"}
    assert plain["supplier"]["link"].endswith(f"/api/now/table/sn_fin_supplier/{supplier_id}")
    assert shown == {"supplier": supplier["name"]}
    assert both["supplier"]["value"] == supplier_id and both["supplier"]["display_value"] == supplier["name"]
    assert both["number"] == {"display_value": plain["number"], "value": plain["number"]}
    assert bare == {"supplier": supplier_id}


# ---- Table API writes -------------------------------------------------------------------------------


def test_insert_read_update_delete(running: RunningSandbox, api: Api) -> None:
    path = "/api/now/table/sn_fin_supplier"
    created = api("POST", path, json={"name": "Zeta Steel LLC", "active": True, "zip": 53202, "u_not_a_column": "x"})
    row = created.json()["result"]
    record = f"{path}/{row['sys_id']}"
    assert created.status_code == 201 and created.headers["Location"].endswith(record)
    assert row["name"] == "Zeta Steel LLC" and row["active"] == "true" and row["zip"] == "53202"
    assert "u_not_a_column" not in row and row["sys_mod_count"] == "0" and SYS_ID.match(row["sys_id"])
    assert api("GET", record).json()["result"] == row
    patched = api("PATCH", record, json={"city": "Milwaukee"}).json()["result"]
    same = api("PATCH", record, json={"city": "Milwaukee"}).json()["result"]
    put_ = api("PUT", record, json={"phone": "(414) 555-0100"}).json()["result"]
    assert patched["city"] == "Milwaukee" and patched["sys_mod_count"] == "1"
    assert patched["sys_updated_on"] >= row["sys_updated_on"]
    assert same["sys_mod_count"] == "1"  # nothing changed, nothing touched
    assert put_["phone"] == "(414) 555-0100" and put_["city"] == "Milwaukee" and put_["sys_mod_count"] == "2"
    deleted = api("DELETE", record)
    assert deleted.status_code == 204 and deleted.content == b""
    gone = api("GET", record)
    assert gone.status_code == 404
    assert gone.json() == {"error": {"message": "No Record found",
                                     "detail": "Record doesn't exist or ACL restricts the record retrieval"},
                           "status": "failure"}
    assert api("DELETE", record).status_code == 404


def test_mandatory_fields_are_enforced_on_insert_and_update(api: Api) -> None:
    missing = api("POST", "/api/now/table/sn_fin_supplier", json={"city": "Chicago"})
    some = api("GET", "/api/now/table/sn_fin_supplier", params={"sysparm_limit": 1}).json()["result"][0]
    blanked = api("PATCH", f"/api/now/table/sn_fin_supplier/{some['sys_id']}", json={"name": ""})
    assert missing.status_code == blanked.status_code == 400
    assert missing.json()["error"]["message"] == "Operation Failed"
    assert "mandatory: name" in missing.json()["error"]["detail"]


def test_method_override_tunnels_patch_through_post(api: Api) -> None:
    some = api("GET", "/api/now/table/sn_fin_supplier", params={"sysparm_limit": 1}).json()["result"][0]
    record = f"/api/now/table/sn_fin_supplier/{some['sys_id']}"
    response = api("POST", record, json={"city": "Toronto"}, headers={"X-HTTP-Method-Override": "PATCH"})
    assert response.status_code == 200 and response.json()["result"]["city"] == "Toronto"
    assert api("POST", record, json={"city": "X"}).status_code == 405


def test_numbered_tables_assign_numbers_and_input_display_values_resolve_references(api: Api) -> None:
    supplier = api("GET", "/api/now/table/sn_fin_supplier", params={"sysparm_limit": 1}).json()["result"][0]
    created = api("POST", "/api/now/table/sn_shop_purchase_order", json={"supplier": supplier["name"]},
                  params={"sysparm_input_display_value": "true", "sysparm_exclude_reference_link": "true"}).json()["result"]
    assert re.match(r"^PO\d{7}$", created["number"]) and created["supplier"] == supplier["sys_id"]


# ---- Import Set API -----------------------------------------------------------------------------------


def test_import_inserts_then_coalesces_into_updated_and_ignored(api: Api) -> None:
    path = "/api/now/import/sn_fcms_intg_imp_supplier"
    row = {"name": "Zeta Steel LLC", "city": "Chicago", "u_correlation_id": "EPIC-V-1"}
    inserted = api("POST", path, json=row)
    updated = api("POST", path, json={**row, "city": "Milwaukee"})
    ignored = api("POST", path, json={**row, "city": "Milwaukee"})
    body = inserted.json()
    result = body["result"][0]
    assert inserted.status_code == 201 and re.match(r"^ISET\d{7}$", body["import_set"])
    assert body["staging_table"] == "sn_fcms_intg_imp_supplier"
    assert {"transform_map", "table", "display_name", "display_value", "record_link", "status", "sys_id"} <= set(result)
    assert result["status"] == "inserted" and result["table"] == "sn_fin_supplier"
    assert result["display_name"] == "name" and result["display_value"] == "Zeta Steel LLC"
    assert result["record_link"].endswith(f"/api/now/table/sn_fin_supplier/{result['sys_id']}")
    assert updated.json()["result"][0]["status"] == "updated"
    assert ignored.json()["result"][0]["status"] == "ignored"
    assert ignored.json()["result"][0]["status_message"] == "No field values changed"
    assert {r["sys_id"] for r in (updated.json()["result"][0], ignored.json()["result"][0])} == {result["sys_id"]}
    target = api("GET", f"/api/now/table/sn_fin_supplier/{result['sys_id']}").json()["result"]
    assert target["city"] == "Milwaukee" and target["u_correlation_id"] == "EPIC-V-1"
    staged = api("GET", "/api/now/table/sn_fcms_intg_imp_supplier",
                 params={"sysparm_query": "ORDERBYsys_import_row", "sysparm_fields": "sys_id,sys_import_state,sys_target_sys_id"})
    assert [r["sys_import_state"] for r in staged.json()["result"]] == ["inserted", "updated", "ignored"]
    again = api("GET", f"{path}/{staged.json()['result'][0]['sys_id']}").json()
    assert again["import_set"] == body["import_set"] and again["result"][0]["sys_id"] == result["sys_id"]
    assert again["result"][0]["status"] == "inserted"


def test_blank_staged_values_do_not_wipe_target_fields(api: Api) -> None:
    path = "/api/now/import/sn_fcms_intg_imp_supplier"
    first = api("POST", path, json={"name": "Keep Co.", "phone": "(312) 555-0101", "u_correlation_id": "EPIC-V-7"})
    api("POST", path, json={"name": "Keep Co.", "city": "Chicago", "u_correlation_id": "EPIC-V-7"})
    target = api("GET", f"/api/now/table/sn_fin_supplier/{first.json()['result'][0]['sys_id']}").json()["result"]
    assert target["phone"] == "(312) 555-0101" and target["city"] == "Chicago"


def test_import_values_are_stored_as_strings(api: Api) -> None:
    response = api("POST", "/api/now/import/sn_fcms_intg_imp_supplier",
                   json={"name": "Numbers Inc.", "zip": 60601, "active": False, "u_correlation_id": "EPIC-V-2"})
    target_id = response.json()["result"][0]["sys_id"]
    target = api("GET", f"/api/now/table/sn_fin_supplier/{target_id}").json()["result"]
    assert target["zip"] == "60601" and target["active"] == "false"


def test_import_po_resolves_the_supplier_and_rejects_what_the_transform_cannot_take(api: Api) -> None:
    api("POST", "/api/now/import/sn_fcms_intg_imp_supplier", json={"name": "Ref Supplier", "u_correlation_id": "EPIC-V-9"})
    path = "/api/now/import/sn_fcms_intg_imp_order"
    good = api("POST", path, json={"erp_po_number": "5001", "supplier_company_name": "EPIC-V-9", "po_amount": "99.50",
                                   "order_type": "Standard", "u_correlation_id": "EPIC-PO-5001"})
    unknown_supplier = api("POST", path, json={"erp_po_number": "5002", "supplier_company_name": "Nobody",
                                               "u_correlation_id": "EPIC-PO-5002"})
    missing = api("POST", path, json={"supplier_company_name": "EPIC-V-9", "u_correlation_id": "EPIC-PO-5003"})
    bad_choice = api("POST", path, json={"erp_po_number": "5004", "supplier_company_name": "EPIC-V-9",
                                         "order_type": "Whatever", "u_correlation_id": "EPIC-PO-5004"})
    bad_date = api("POST", path, json={"erp_po_number": "5005", "supplier_company_name": "EPIC-V-9",
                                       "order_date": "05/01/2025", "u_correlation_id": "EPIC-PO-5005"})
    result = good.json()["result"][0]
    po = api("GET", f"/api/now/table/sn_shop_purchase_order/{result['sys_id']}",
             params={"sysparm_exclude_reference_link": "true"}).json()["result"]
    supplier = api("GET", "/api/now/table/sn_fin_supplier", params={"sysparm_query": "u_correlation_id=EPIC-V-9"}).json()
    assert result["status"] == "inserted" and po["total_amount"] == "99.50" and po["erp_number"] == "5001"
    assert po["supplier"] == supplier["result"][0]["sys_id"] and re.match(r"^PO\d{7}$", result["display_value"])
    for response, words in ((unknown_supplier, "Reference field value rejected: supplier"),
                            (missing, "Mandatory field(s) missing: erp_po_number"),
                            (bad_choice, "Choice field value rejected: order_type"),
                            (bad_date, "Invalid date")):
        entry = response.json()["result"][0]
        assert response.status_code == 201 and entry["status"] == "error" and words in entry["error_message"]
    orders = api("GET", "/api/now/table/sn_shop_purchase_order", params={"sysparm_query": "u_correlation_idSTARTSWITHEPIC-PO"})
    assert len(orders.json()["result"]) == 1


def test_import_into_an_unknown_staging_table_is_400(api: Api) -> None:
    response = api("POST", "/api/now/import/u_nowhere", json={"a": "b"})
    assert response.status_code == 400 and response.json()["error"]["message"] == "Invalid table u_nowhere"


def test_concurrent_imports_of_one_correlation_id_make_one_record(running: RunningSandbox, creds: dict[str, str]) -> None:
    api = Api(running.url, creds)
    statuses: list[str] = []

    def post(i: int) -> None:
        response = api("POST", "/api/now/import/sn_fcms_intg_imp_supplier",
                       json={"name": "Race Co.", "phone": str(i % 2), "u_correlation_id": "EPIC-RACE"})
        statuses.append(response.json()["result"][0]["status"])

    threads = [threading.Thread(target=post, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    found = api("GET", "/api/now/table/sn_fin_supplier", params={"sysparm_query": "u_correlation_id=EPIC-RACE"})
    assert len(found.json()["result"]) == 1 and statuses.count("inserted") == 1


def test_insert_multiple_transforms_asynchronously(api: Api) -> None:
    response = api("POST", "/api/now/import/sn_fcms_intg_imp_supplier/insertMultiple",
                   json={"records": [{"name": f"Bulk {i}", "u_correlation_id": f"EPIC-BULK-{i}"} for i in range(3)]})
    body = response.json()
    assert response.status_code == 201 and set(body) == {"import_set_id", "multi_import_set_id"}
    deadline = time.time() + 5
    while time.time() < deadline:
        found = api("GET", "/api/now/table/sn_fin_supplier", params={"sysparm_query": "u_correlation_idSTARTSWITHEPIC-BULK"})
        if len(found.json()["result"]) == 3:
            break
        time.sleep(0.02)
    assert len(found.json()["result"]) == 3
    iset = api("GET", f"/api/now/table/sys_import_set/{body['import_set_id']}").json()["result"]
    assert iset["mode"] == "asynchronous" and iset["state"] == "processed"
    assert api("POST", "/api/now/import/sn_fcms_intg_imp_supplier/insertMultiple", json={"rows": []}).status_code == 400


def test_a_custom_transform_map_from_the_control_api(running: RunningSandbox, api: Api) -> None:
    put(running, "transform_maps", {
        "name": "AP invoice staging", "source_table": "u_ap_invoice_staging", "target_table": "u_ap_invoice",
        "field_map": {"u_invoice_num": "u_number"}, "coalesce": ["u_correlation_id"], "required": ["u_invoice_num"],
    })
    path = "/api/now/import/u_ap_invoice_staging"
    first = api("POST", path, json={"u_invoice_num": "INV-1", "u_amount": "10.00", "u_correlation_id": "C-1"})
    second = api("POST", path, json={"u_invoice_num": "INV-1", "u_amount": "12.00", "u_correlation_id": "C-1"})
    invalid = api("POST", path, json={"u_amount": "1.00", "u_correlation_id": "C-2"})
    target = api("GET", "/api/now/table/u_ap_invoice").json()["result"]
    assert first.json()["result"][0]["status"] == "inserted" and second.json()["result"][0]["status"] == "updated"
    assert invalid.json()["result"][0]["status"] == "error"
    assert len(target) == 1 and target[0]["u_number"] == "INV-1" and target[0]["u_amount"] == "12.00"


def test_cleaned_up_staging_rows_answer_404(running: RunningSandbox, api: Api) -> None:
    result = api("POST", "/api/now/import/sn_fcms_intg_imp_supplier",
                 json={"name": "Short Lived", "u_correlation_id": "EPIC-V-3"}).json()["result"][0]
    staged = api("GET", "/api/now/table/sn_fcms_intg_imp_supplier",
                 params={"sysparm_query": f"sys_target_sys_id={result['sys_id']}"}).json()["result"][0]
    path = f"/api/now/import/sn_fcms_intg_imp_supplier/{staged['sys_id']}"
    assert api("GET", path).status_code == 200
    assert requests.post(f"{running.url}/_sandbox/import-cleanup").json()["removed"] >= 1
    assert api("GET", path).status_code == 404
    assert api("GET", f"/api/now/table/sn_fin_supplier/{result['sys_id']}").status_code == 200


# ---- a stock instance: unknown columns dropped, no customer columns, documented results ----------------

DOCUMENTED_RESULT = {"transform_map", "table", "display_name", "display_value", "record_link", "status", "sys_id"}


@pytest.fixture(scope="module")
def stock_sandbox() -> Iterator[RunningSandbox]:
    sandbox = start_sandbox(ServiceNowSandbox(SandboxOptions(records=5)))
    yield sandbox
    sandbox.stop()


@pytest.fixture
def stock(stock_sandbox: RunningSandbox) -> RunningSandbox:
    assert requests.post(f"{stock_sandbox.url}/_sandbox/reset").status_code == 200
    return stock_sandbox


def columns_of(api: Api, table: str) -> set[str]:
    """The table's columns as the instance's dictionary lists them."""
    rows = api("GET", "/api/now/table/sys_dictionary", params={"sysparm_query": f"name={table}"}).json()["result"]
    return {row["element"] for row in rows}


def test_stock_table_api_drops_unknown_columns_silently(stock: RunningSandbox) -> None:
    api = Api(stock.url, stock.info()["credentials"])
    path = "/api/now/table/sn_fin_supplier"
    created = api("POST", path, json={"name": "Stock Steel LLC", "u_correlation_id": "EPIC-V-1", "u_made_up": "x"})
    row = created.json()["result"]
    patched = api("PATCH", f"{path}/{row['sys_id']}", json={"city": "Chicago", "u_made_up": "y", "no_such": "z"})
    stored = api("GET", f"{path}/{row['sys_id']}").json()["result"]
    assert created.status_code == 201 and patched.status_code == 200
    assert stored["city"] == "Chicago" and stored["sys_mod_count"] == "1"
    for shown in (row, patched.json()["result"], stored):
        assert not {"u_correlation_id", "u_made_up", "no_such"} & set(shown)
    columns = columns_of(api, "sn_fin_supplier")
    assert {"name", "city", "sys_id"} <= columns and not {"u_correlation_id", "u_made_up", "no_such"} & columns


def test_stock_instance_has_no_customer_columns(stock: RunningSandbox) -> None:
    api = Api(stock.url, stock.info()["credentials"])
    dictionary = api("GET", "/api/now/table/sys_dictionary", params={"sysparm_query": "elementSTARTSWITHu_"}).json()
    assert dictionary["result"] == []
    for staging in ("sn_fcms_intg_imp_supplier", "sn_fcms_intg_imp_order", "sn_spend_intg_imp_invoice"):
        columns = columns_of(api, staging)
        assert "sys_import_set" in columns and "u_correlation_id" not in columns
    maps = requests.get(f"{stock.url}/_sandbox/entities/transform_maps").json()
    assert maps and all(m["coalesce"] == [] for m in maps)


def test_stock_import_set_drops_unknown_columns_and_coalesces_on_nothing(stock: RunningSandbox) -> None:
    api = Api(stock.url, stock.info()["credentials"])
    path = "/api/now/import/sn_fcms_intg_imp_supplier"
    row = {"name": "Twice Co.", "city": "Chicago", "u_correlation_id": "EPIC-V-2", "u_nope": "x"}
    first, second = api("POST", path, json=row), api("POST", path, json=row)
    results = [r.json()["result"][0] for r in (first, second)]
    assert first.status_code == second.status_code == 201
    assert [r["status"] for r in results] == ["inserted", "inserted"] and results[0]["sys_id"] != results[1]["sys_id"]
    staged = api("GET", "/api/now/table/sn_fcms_intg_imp_supplier").json()["result"]
    target = api("GET", f"/api/now/table/sn_fin_supplier/{results[0]['sys_id']}").json()["result"]
    assert len(staged) == 2 and all(s["name"] == "Twice Co." for s in staged)
    for shown in (*staged, target):
        assert "u_correlation_id" not in shown and "u_nope" not in shown
    assert target["city"] == "Chicago"
    assert not {"u_correlation_id", "u_nope"} & columns_of(api, "sn_fcms_intg_imp_supplier")


def test_import_set_results_carry_the_documented_fields_only(stock: RunningSandbox) -> None:
    api = Api(stock.url, stock.info()["credentials"])
    path = "/api/now/import/sn_fcms_intg_imp_supplier"
    inserted = api("POST", path, json={"name": "Documented Inc."}).json()["result"][0]
    failed = api("POST", path, json={"city": "Chicago"}).json()["result"][0]
    staged = api("GET", "/api/now/table/sn_fcms_intg_imp_supplier", params={"sysparm_query": "ORDERBYsys_import_row"})
    read = [api("GET", f"{path}/{row['sys_id']}").json()["result"][0] for row in staged.json()["result"]]
    assert set(inserted) == DOCUMENTED_RESULT and "staging_sys_id" not in inserted
    assert set(failed) == DOCUMENTED_RESULT | {"error_message", "status_message"} and failed["status"] == "error"
    assert set(read[0]) == DOCUMENTED_RESULT and read[0]["sys_id"] == inserted["sys_id"]
    assert read[0]["record_link"] == inserted["record_link"] and read[0]["display_value"] == "Documented Inc."
    assert set(read[1]) == DOCUMENTED_RESULT | {"error_message"} and read[1]["status"] == "error"


def test_a_control_route_adds_a_customer_column(stock: RunningSandbox) -> None:
    creds = stock.info()["credentials"]
    api = Api(stock.url, creds)
    for table in ("sn_fin_supplier", "sn_fcms_intg_imp_supplier"):
        entry = put(stock, "sys_dictionary", {"name": table, "element": "u_correlation_id"})
        assert entry["name"] == table and entry["element"] == "u_correlation_id"
        assert "u_correlation_id" in columns_of(api, table)
    put(stock, "transform_maps", {"name": "Supplier Inbound", "source_table": "sn_fcms_intg_imp_supplier",
                                  "target_table": "sn_fin_supplier", "coalesce": ["u_correlation_id"], "required": ["name"]})
    path = "/api/now/import/sn_fcms_intg_imp_supplier"
    first = api("POST", path, json={"name": "Custom Co.", "u_correlation_id": "EPIC-V-3"}).json()["result"][0]
    second = api("POST", path, json={"name": "Custom Co.", "city": "Detroit", "u_correlation_id": "EPIC-V-3"}).json()["result"][0]
    target = api("GET", f"/api/now/table/sn_fin_supplier/{first['sys_id']}").json()["result"]
    assert (first["status"], second["status"]) == ("inserted", "updated") and first["sys_id"] == second["sys_id"]
    assert target["u_correlation_id"] == "EPIC-V-3" and target["city"] == "Detroit"
    assert requests.post(f"{stock.url}/_sandbox/entities/sys_dictionary", json={"name": "sn_fin_supplier"}).status_code == 400
    requests.post(f"{stock.url}/_sandbox/reset")  # a reset restores the stock dictionary (and revokes tokens)
    assert "u_correlation_id" not in columns_of(Api(stock.url, creds), "sn_fin_supplier")


def test_auth_errors_are_the_documented_bodies(stock: RunningSandbox) -> None:
    creds = stock.info()["credentials"]
    for method, path in (("GET", "/api/now/table/sn_fin_supplier"), ("POST", "/api/now/import/sn_fcms_intg_imp_supplier")):
        response = requests.request(method, f"{stock.url}{path}", json={"name": "X"} if method == "POST" else None)
        assert response.status_code == 401 and response.headers["WWW-Authenticate"] == 'Basic realm="Service-now"'
        assert response.json() == {"error": {"message": "User is not authenticated",
                                             "detail": "Required to provide Auth information"}, "status": "failure"}
    wrong = requests.post(f"{stock.url}/oauth_token.do", data={"grant_type": "password", **creds, "password": "wrong"})
    assert wrong.status_code == 401 and wrong.json() == {"error_description": "access_denied", "error": "server_error"}


# ---- rate-limit rules and faults ------------------------------------------------------------------------


def test_rate_limit_rule_answers_429_with_the_documented_headers() -> None:
    with start_sandbox(ServiceNowSandbox(SandboxOptions(records=3, rate_limit=3), rate_window_seconds=1, custom_columns=CUSTOM)) as limited:
        api = Api(limited.url, limited.info()["credentials"])
        time.sleep(1 - time.time() % 1)  # start at the top of a window
        answers = [api("GET", "/api/now/table/sys_user") for _ in range(4)]
        other_resource = api("POST", "/api/now/import/sn_fcms_intg_imp_supplier",
                             json={"name": "Still Allowed", "u_correlation_id": "X-1"})
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        assert answers[0].headers["X-RateLimit-Limit"] == "3"
        assert SYS_ID.match(answers[0].headers["X-RateLimit-Rule"])
        assert int(answers[0].headers["X-RateLimit-Reset"]) >= int(time.time())
        refused = answers[3]
        assert refused.json()["error"]["message"] == "Rate limit exceeded"
        assert "3 requests per hour for Table API" in refused.json()["error"]["detail"]
        assert int(refused.headers["Retry-After"]) >= 1 and "X-RateLimit-Reset" in refused.headers
        assert other_resource.status_code == 201  # rules count per REST resource
        time.sleep(float(refused.headers["X-RateLimit-Reset"]) - time.time() + 0.01)
        assert api("GET", "/api/now/table/sys_user").status_code == 200
        assert requests.get(f"{limited.url}/_sandbox/stats").json()["rate_limited"] == 1


def test_no_rate_limit_headers_without_a_rule(api: Api) -> None:
    response = api("GET", "/api/now/table/sys_user")
    assert "X-RateLimit-Limit" not in response.headers


def test_burst_429_fault_answers_like_a_rate_rule(running: RunningSandbox, api: Api) -> None:
    requests.post(f"{running.url}/_sandbox/faults", json={"burst_429": 2, "retry_after": 3})
    answers = [api("GET", "/api/now/table/sys_user") for _ in range(3)]
    assert [a.status_code for a in answers] == [429, 429, 200]
    assert answers[0].headers["Retry-After"] == "3" and "X-RateLimit-Rule" in answers[0].headers
    assert answers[0].json()["status"] == "failure" and answers[0].json()["error"]["message"] == "Rate limit exceeded"


def test_fail_next_error_rate_and_path_filter(running: RunningSandbox, api: Api) -> None:
    requests.post(f"{running.url}/_sandbox/faults", json={"fail_next": 1, "error_status": 500})
    failed = api("GET", "/api/now/table/sys_user")
    assert failed.status_code == 500 and failed.json()["status"] == "failure"
    assert failed.json()["error"]["message"] == "Injected fault"
    assert api("GET", "/api/now/table/sys_user").status_code == 200
    requests.post(f"{running.url}/_sandbox/faults", json={"error_rate": 1.0, "error_status": 503, "path_contains": "/import/"})
    assert api("GET", "/api/now/table/sys_user").status_code == 200
    assert api("POST", "/api/now/import/sn_fcms_intg_imp_supplier", json={"name": "X"}).status_code == 503


def test_latency_fault_slows_vendor_calls(running: RunningSandbox, api: Api) -> None:
    requests.post(f"{running.url}/_sandbox/faults", json={"latency_ms": 150})
    started = time.perf_counter()
    assert api("GET", "/api/now/table/sys_user").status_code == 200
    assert time.perf_counter() - started >= 0.15


# ---- control API ------------------------------------------------------------------------------------


def test_info_shape(running: RunningSandbox) -> None:
    info = requests.get(f"{running.url}/_sandbox/info").json()
    assert set(info) == {"vendor", "api_base", "token_url", "credentials"}
    assert info["vendor"] == "servicenow" and info["api_base"] == running.url
    assert info["token_url"] == f"{running.url}/oauth_token.do"
    assert set(info["credentials"]) == {"client_id", "client_secret", "username", "password"}
    assert all(info["credentials"].values())


def test_stats_count_requests_and_reset(running: RunningSandbox, api: Api) -> None:
    api("GET", "/api/now/table/sys_user")
    api("GET", "/api/now/table/nope")
    stats = requests.get(f"{running.url}/_sandbox/stats").json()
    assert stats["by_endpoint"]["GET /api/now/table/<table_name>"] == {"200": 1, "400": 1}
    assert stats["tokens_issued"] == 1
    requests.post(f"{running.url}/_sandbox/stats/reset")
    assert requests.get(f"{running.url}/_sandbox/stats").json()["total"] == 0


def test_reset_reseeds_deterministically_and_drops_changes(running: RunningSandbox) -> None:
    before = requests.get(f"{running.url}/_sandbox/entities/suppliers").json()
    put(running, "suppliers", {"name": "Added Later"})
    requests.post(f"{running.url}/_sandbox/reset")
    after = requests.get(f"{running.url}/_sandbox/entities/suppliers").json()
    assert after == before and len(after) == RECORDS
    twin = ServiceNowSandbox(SandboxOptions(records=RECORDS), custom_columns=CUSTOM)
    assert twin.get_entities("suppliers") == before


def test_tick_changes_records_so_a_poll_sees_them(running: RunningSandbox) -> None:
    before = {r["sys_id"]: r for r in requests.get(f"{running.url}/_sandbox/entities/purchase_orders").json()}
    changed = requests.post(f"{running.url}/_sandbox/tick", json={"count": 10}).json()["changed"]
    assert len(changed) == 10
    now = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    for change in changed:
        assert change["sys_updated_on"] <= now and change["sys_updated_on"] > "2025-12-31"
        if change["table"] == "sn_shop_purchase_order":
            old = before[change["sys_id"]]
            assert int(change["sys_mod_count"]) == int(old["sys_mod_count"]) + 1


def test_entities_control_api(running: RunningSandbox) -> None:
    created = put(running, "cost_centers", {"name": "Tooling - Plant 9", "account_number": "6900-09",
                                            "sys_updated_on": "2025-02-01 00:00:00"})
    changed = put(running, "cost_centers", {"sys_id": created["sys_id"], "location": "Detroit"})
    rows = requests.get(f"{running.url}/_sandbox/entities/cmn_cost_center").json()
    assert created["sys_updated_on"] == "2025-02-01 00:00:00" and changed["location"] == "Detroit"
    assert [r["sys_id"] for r in rows].count(created["sys_id"]) == 1
    assert requests.get(f"{running.url}/_sandbox/entities/u_never_made").status_code == 404
    maps = requests.get(f"{running.url}/_sandbox/entities/transform_maps").json()
    assert {m["source_table"] for m in maps} >= {"sn_fcms_intg_imp_order", "sn_spend_intg_imp_invoice"}


def test_seed_has_near_duplicate_suppliers_and_multi_line_orders() -> None:
    sandbox = ServiceNowSandbox(SandboxOptions(records=200))
    suppliers = sandbox.get_entities("suppliers")
    lines = sandbox.get_entities("purchase_order_lines")
    orders = {o["sys_id"]: o for o in sandbox.get_entities("purchase_orders")}

    def stem(name: str) -> str:
        return re.sub(r"[^a-z ]", "", name.lower()).rsplit(" ", 1)[0].strip()

    stems = [stem(s["name"]) for s in suppliers]
    assert len(set(stems)) < len(stems)  # some suppliers differ only by case, punctuation or suffix
    per_order: dict[str, list[dict[str, str]]] = {}
    for line in lines:
        per_order.setdefault(line["purchase_order"], []).append(line)
    assert max(len(v) for v in per_order.values()) > 1
    for order_id, order_lines in per_order.items():
        assert abs(sum(float(l["amount"]) for l in order_lines) - float(orders[order_id]["total_amount"])) < 0.01
    assert all(c["vendor"] in ("true", "false") for c in sandbox.get_entities("companies"))
