"""Whatever a client sends the receiver, the answer is a defined 4xx or a stored event, never a 5xx.

Bodies, signature headers and integration ids are generated, signed or not, and posted at
the receiver on PostgreSQL. Each answer must be a JSON 4xx naming the problem, or a 200/202
for an event that was stored as sent.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from mlconnector.webhook_signature import sign_for_tests
from tests.mlconnector.test_receiver import KEY, client  # noqa: F401  (the fixture)

EXAMPLES = 1000  # about 10 s on PostgreSQL; every refusal path is reached many times

# Characters a client can put in JSON text or a test request: any code point, with the
# ones that break storage (NUL, lone surrogates) and line breaks drawn often.
ANY_CHAR = st.one_of(
    st.characters(codec="utf-8"),
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
    st.sampled_from(["\x00", "\n", "\r", "\u2028", "\ufeff", "é", " "]),
)
ANY_TEXT = st.text(ANY_CHAR, max_size=230)  # past the 64-, 100- and 200-character columns


@st.composite
def _weighted(draw: st.DrawFn, *choices: tuple[int, st.SearchStrategy[Any]]) -> Any:
    """One of `choices`, drawn in proportion to its weight (one_of would weigh them evenly)."""
    ticket = draw(st.integers(min_value=1, max_value=sum(weight for weight, _ in choices)))
    for weight, strategy in choices:
        ticket -= weight
        if ticket <= 0:
            return draw(strategy)
    raise AssertionError("unreachable")


SCALARS = _weighted((1, st.none()), (1, st.booleans()), (1, st.integers()), (1, st.floats()),
                    (3, st.text(max_size=40)), (2, ANY_TEXT))
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                             st.dictionaries(ANY_TEXT, inner, max_size=4)),
                           max_leaves=16)
EVENT_TYPES = _weighted((3, st.sampled_from(["inventory-bill.created", "vendor.updated", "item.created"])),
                        (1, JSON_VALUES))
EVENT_IDS = _weighted((3, st.uuids().map(str)), (2, JSON_VALUES), (1, st.text("ab", min_size=195, max_size=205)))
RECORD_IDS = _weighted((3, st.one_of(st.integers(), st.text(min_size=1, max_size=30))), (2, JSON_VALUES),
                       (1, st.text("7", min_size=195, max_size=205)))
DATA = _weighted((4, st.fixed_dictionaries({"id": RECORD_IDS}, optional={"name": JSON_VALUES, "lines": JSON_VALUES})),
                 (1, JSON_VALUES))
ENVELOPE = {"eventId": EVENT_IDS, "eventType": EVENT_TYPES, "tenantId": JSON_VALUES, "data": DATA}
EVENTS = _weighted((4, st.fixed_dictionaries(ENVELOPE)),  # whole envelopes, odd values inside
                   (1, st.fixed_dictionaries({}, optional=ENVELOPE)),  # envelopes missing parts
                   (1, st.dictionaries(ANY_TEXT, JSON_VALUES, max_size=5)))  # any object at all


def _encode(envelope: dict[str, Any], ascii_only: bool) -> bytes:
    """As a sender would put it on the wire: escaped, or raw UTF-8 (lone surrogates as their bytes)."""
    return json.dumps(envelope, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def _nested(depth: int) -> bytes:
    return b'{"eventType": "item.created", "data": {"id": 1, "n": ' + b"[" * depth + b"]" * depth + b"}}"


BODIES = _weighted(
    (14, st.builds(_encode, EVENTS, st.booleans())),
    (2, st.binary(max_size=400)),
    (3, st.integers(min_value=1, max_value=2_100).map(_nested)),  # past MAX_NESTING, and past 4096 bytes
    (1, st.just(b"x" * 5000)),  # over the 4096 bytes the fixture allows
)
INTEGRATIONS = _weighted((6, st.just("acme")), (2, st.just("b64")), (1, st.just("nobody")), (3, ANY_TEXT))
SIGNED = _weighted((3, st.just(True)), (1, st.just(False)))  # unsigned ones all stop at the signature
# Header values a request can carry at all (the test client refuses line breaks).
HEADER_TEXT = st.text(ANY_CHAR, max_size=120).filter(lambda value: "\n" not in value and "\r" not in value)


@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(body=BODIES, integration=INTEGRATIONS, signed=SIGNED, signature=st.one_of(st.none(), HEADER_TEXT),
       content_type=st.one_of(st.just("application/json"), HEADER_TEXT))
def test_no_input_gets_a_5xx(client, body: bytes, integration: str, signed: bool,  # noqa: F811
                             signature: str | None, content_type: str) -> None:
    headers = {"Content-Type": content_type}
    if signed:
        headers["X-ServiceTitan-Signature"] = sign_for_tests(body, KEY)
        headers["X-Sig"] = sign_for_tests(body, KEY, "base64")
    elif signature is not None:
        headers["X-ServiceTitan-Signature"] = signature
    path = "/webhooks/servicetitan/" + quote(integration.encode("utf-8", "surrogatepass"), safe="")
    response = client.post(path, data=body, headers=headers)
    response.close()
    event(f"{response.status_code} {'signed' if signed else 'unsigned'}")  # shown by --hypothesis-show-statistics
    assert response.status_code < 500, (response.status_code, response.get_data(as_text=True))
    answer = response.get_json(silent=True)
    assert isinstance(answer, dict), response.get_data(as_text=True)
    if response.status_code >= 400:
        assert answer.get("error"), answer
    else:
        assert response.status_code in (200, 202) and signed
        _assert_stored(integration, answer, body if response.status_code == 202 else None)


def _assert_stored(integration: str, answer: dict[str, Any], new_body: bytes | None) -> None:
    """The event is stored under its id; a new one (202) exactly as it was sent."""
    from sqlalchemy import select

    from mlconnector.db.models import InboundEvent
    from mlconnector.db.session import session_scope

    with session_scope() as session:
        stored = session.scalars(select(InboundEvent).where(InboundEvent.integration_id == integration,
                                                            InboundEvent.source_event_id == answer["eventId"])).one()
        if new_body is not None:
            payload = json.loads(new_body)
            assert stored.id == answer["id"] and stored.status == "pending"
            assert stored.event_type == payload["eventType"] and stored.payload == payload
