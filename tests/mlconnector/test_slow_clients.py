"""Slow or silent clients must not delay other senders on the production gunicorn settings.

A real gunicorn, started with the repository's gunicorn.conf.py and two workers, is held
busy by connections that send nothing and by ones trickling a partial request, while a
signed delivery must still be answered at once. Requests the worker reads ahead in any
framing (in pieces, chunked, after 100-continue, kept alive, pipelined) are still served,
and ones too large to read ahead are refused without a thread.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from typing import Any, Iterator
from urllib.parse import urlparse

import pytest
import requests

from mlconnector.webhook_signature import sign_for_tests
from tests.conftest import start_gunicorn

KEY = "slow-client-key-0123456789abcdef012345"
IDLE_CONNECTIONS = 12  # more than the workers' processes and threads together
ANSWER_WITHIN_SECONDS = 2.0
READ_DEADLINE_SECONDS = 3  # the receiver's whole-request deadline, shortened for the test


@pytest.fixture
def receiver(configure, fresh_pg: str, redis_url: str, start_service) -> str:  # type: ignore[no-untyped-def]
    from mlconnector import vault
    from mlconnector.config import WEBHOOK_SECRETS
    from mlconnector.db.models import Integration
    from mlconnector.db.session import session_scope

    env = configure(fresh_pg, redis_url, GUNICORN_REQUEST_READ_SECONDS=str(READ_DEADLINE_SECONDS))
    with session_scope() as session:
        session.add(Integration(id="acme", pair="servicetitan-epicor", name="acme", config={"systems": {}}))
        session.flush()
        vault.store(session, "acme", WEBHOOK_SECRETS, {"hmac_key": KEY})
    return start_gunicorn(start_service, env, workers=2)


@pytest.fixture
def held_open(receiver: str) -> Iterator[list[socket.socket]]:
    """Idle connections; one stopping in its headers, one mid-body, one after asking to continue."""
    address = urlparse(receiver)
    sockets = [socket.create_connection((address.hostname, address.port)) for _ in range(IDLE_CONNECTIONS)]
    partial_head = socket.create_connection((address.hostname, address.port))
    partial_head.sendall(b"POST /webhooks/servicetitan/acme HTTP/1.1\r\nHost: x\r\nContent-")
    partial_body = socket.create_connection((address.hostname, address.port))
    partial_body.sendall(b"POST /webhooks/servicetitan/acme HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 500\r\n\r\n{\"eventType\": ")
    awaiting_continue = socket.create_connection((address.hostname, address.port))
    awaiting_continue.sendall(b"POST /webhooks/servicetitan/acme HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n"
                              b"Expect: 100-continue\r\n\r\n")  # then never sends the body
    sockets += [partial_head, partial_body, awaiting_continue]
    time.sleep(0.5)  # accepted by the workers before the real delivery arrives
    yield sockets
    for sock in sockets:
        sock.close()


def _deliver(receiver: str) -> tuple[int, float]:
    body = json.dumps({"eventId": str(uuid.uuid4()), "eventType": "inventory-bill.created",
                       "data": {"id": 42}}).encode()
    started = time.monotonic()
    response = requests.post(f"{receiver}/webhooks/servicetitan/acme", data=body, timeout=10,
                             headers={"Content-Type": "application/json",
                                      "X-ServiceTitan-Signature": sign_for_tests(body, KEY)})
    return response.status_code, time.monotonic() - started


def test_a_signed_delivery_is_answered_while_slow_clients_hold_connections(receiver: str,
                                                                           held_open: list[socket.socket]) -> None:
    # Fresh connections each time, so both worker processes take some.
    answers = [_deliver(receiver) for _ in range(6)]
    assert [status for status, _ in answers] == [202] * 6
    assert max(seconds for _, seconds in answers) < ANSWER_WITHIN_SECONDS, answers


def test_a_connection_that_does_not_finish_its_request_in_time_is_closed(receiver: str,
                                                                         held_open: list[socket.socket]) -> None:
    started = time.monotonic()
    for sock in held_open:
        sock.settimeout(READ_DEADLINE_SECONDS + 5)
        assert _closed_by_server(sock), "the server kept a stalled connection open"
    assert time.monotonic() - started < READ_DEADLINE_SECONDS + 3
    assert _deliver(receiver)[0] == 202


def _closed_by_server(sock: socket.socket) -> Any:
    """True once the server closes the connection (a 100 Continue it sent first is skipped)."""
    try:
        answer = sock.recv(1024)
        if answer == b"HTTP/1.1 100 Continue\r\n\r\n":
            answer = sock.recv(1024)
        return answer == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def _signed_event() -> tuple[bytes, str]:
    body = json.dumps({"eventId": str(uuid.uuid4()), "eventType": "inventory-bill.created",
                       "data": {"id": 42}}).encode()
    return body, sign_for_tests(body, KEY)


def _exchange(receiver: str, pieces: list[bytes], pause: float = 0.2,
              interim: bytes | None = None) -> bytes:
    """Send a request in pieces over one raw connection; the server's whole answer. With
    `interim`, wait for that interim response (100 Continue) before the last piece."""
    address = urlparse(receiver)
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        for index, piece in enumerate(pieces):
            if interim is not None and index == len(pieces) - 1:
                assert sock.recv(len(interim)) == interim
            sock.sendall(piece)
            time.sleep(pause)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


def _head(signature: str, framing: str) -> bytes:
    return (f"POST /webhooks/servicetitan/acme HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nX-ServiceTitan-Signature: {signature}\r\n{framing}\r\n").encode()


def test_requests_arriving_in_pieces_chunked_or_after_100_continue_are_served(receiver: str) -> None:
    body, signature = _signed_event()
    head = _head(signature, f"Content-Length: {len(body)}\r\n")
    pieces = [head[:20], head[20:], body[:10], body[10:]]
    assert _exchange(receiver, pieces).startswith(b"HTTP/1.1 202")

    body, signature = _signed_event()
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:15], body[15:])) + b"0\r\n\r\n"
    answer = _exchange(receiver, [_head(signature, "Transfer-Encoding: chunked\r\n"), chunked[:9], chunked[9:]])
    assert answer.startswith(b"HTTP/1.1 202"), answer

    body, signature = _signed_event()
    head = _head(signature, f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n")
    answer = _exchange(receiver, [head, body], interim=b"HTTP/1.1 100 Continue\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 202"), answer  # continued once, not again by the parser


def test_a_head_or_body_too_large_to_read_ahead_is_refused_at_once(receiver: str) -> None:
    started = time.monotonic()
    body, signature = _signed_event()
    declared = _head(signature, f"Content-Length: {64 * 1024 * 1024}\r\n")  # past any receiver limit
    answer = _exchange(receiver, [declared, body], pause=0)
    assert answer.startswith(b"HTTP/1.1 413") and b'"error"' in answer, answer
    endless_head = b"POST /webhooks/servicetitan/acme HTTP/1.1\r\n" + b"X-Filler: yyyyyyyy\r\n" * 4000
    answer = _exchange(receiver, [endless_head], pause=0)
    assert answer.startswith(b"HTTP/1.1 431"), answer
    assert time.monotonic() - started < ANSWER_WITHIN_SECONDS


def test_a_kept_alive_connection_serves_its_next_request(receiver: str) -> None:
    with requests.Session() as session:
        for _ in range(3):
            body, signature = _signed_event()
            response = session.post(f"{receiver}/webhooks/servicetitan/acme", data=body, timeout=5,
                                    headers={"Content-Type": "application/json", "X-ServiceTitan-Signature": signature})
            assert response.status_code == 202 and response.headers.get("Connection", "").lower() != "close"


@pytest.fixture(scope="module")
def read_ahead_step() -> Any:
    import runpy

    from tests.conftest import ROOT

    return runpy.run_path(str(ROOT / "gunicorn.conf.py"))["read_ahead_step"]


HEAD = b"POST /webhooks/servicetitan/acme HTTP/1.1\r\nHost: x\r\n"


@pytest.mark.parametrize(("received", "step"), [
    (HEAD, "wait"),  # the head has not ended
    (HEAD + b"Content-Length: 5\r\n\r\nabc", "wait"),
    (HEAD + b"Content-Length: 5\r\n\r\nabcde", "ready"),
    (HEAD + b"content-length:5\r\n\r\nabcde", "ready"),
    (HEAD + b"\r\n", "ready"),  # no body
    (HEAD + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\n", "ready"),  # the parser refuses it
    (HEAD + b"Content-Length: five\r\n\r\n", "ready"),
    (HEAD + b"Content-Length: 5\r\nExpect: 100-continue\r\n\r\n", "continue"),
    (HEAD + b"Content-Length: 5\r\nExpect: 100-continue\r\n\r\nabcde", "ready"),
    (HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n", "wait"),
    (HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n0\r\n\r\n", "ready"),
    (HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n0\r\nX-Trailer: 1\r\n", "wait"),
    (HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n", "ready"),  # the parser refuses it
    (HEAD + b"Content-Length: 99999999999\r\n\r\n", "body too large"),
    (HEAD + b"X: " + b"y" * 40_000, "head too large"),
])
def test_read_ahead_steps(read_ahead_step: Any, received: bytes, step: str) -> None:
    assert read_ahead_step(received) == step


def test_a_pipelined_partial_request_waits_without_a_thread(receiver: str) -> None:
    """A signed request followed on the same connection by the start of another: the first is
    answered, and the unfinished second must not keep a thread reading it."""
    address = urlparse(receiver)
    pipelined = []
    for _ in range(IDLE_CONNECTIONS // 2):  # more than the workers' threads together
        body, signature = _signed_event()
        sock = socket.create_connection((address.hostname, address.port), timeout=10)
        sock.sendall(_head(signature, f"Content-Length: {len(body)}\r\n").replace(b"Connection: close\r\n", b"")
                     + body + b"POST /webhooks/servicetitan/acme HTTP/1.1\r\nHost: x\r\nContent-Le")
        pipelined.append(sock)
    try:
        for sock in pipelined:
            assert sock.recv(4096).startswith(b"HTTP/1.1 202")
        answers = [_deliver(receiver) for _ in range(4)]
        assert [status for status, _ in answers] == [202] * 4
        assert max(seconds for _, seconds in answers) < ANSWER_WITHIN_SECONDS, answers
    finally:
        for sock in pipelined:
            sock.close()
