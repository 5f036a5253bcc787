"""Fleet-wide session slots: at most N holders at once, in Redis or in memory; a dead
holder's slot frees itself when its lease ends; waiting too long is retriable."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest

from mlconnector.http import RetriableError
from mlconnector.http.slots import SessionSlots


@pytest.fixture(params=["memory", "redis"])
def slots(request: Any, redis_url: str) -> SessionSlots:
    if request.param == "memory":
        return SessionSlots()
    import redis

    return SessionSlots(redis.Redis.from_url(redis_url), prefix=f"test-slots-{uuid.uuid4().hex[:8]}:")


def test_no_more_than_the_limit_hold_a_slot_at_once(slots: SessionSlots) -> None:
    inside, most = [0], [0]
    lock = threading.Lock()

    def work() -> None:
        with slots.hold("erp", 2, wait=10):
            with lock:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            time.sleep(0.05)
            with lock:
                inside[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert most[0] == 2 and slots.in_use("erp") == 0


def test_a_full_cap_is_a_retriable_wait_and_a_dead_holders_lease_ends(slots: SessionSlots) -> None:
    assert slots._try("erp", 1, "a-worker-that-died", lease=0.3)
    with pytest.raises(RetriableError, match="stayed in use"):
        with slots.hold("erp", 1, wait=0.1):
            pass
    with slots.hold("erp", 1, wait=2):  # the dead holder's lease ran out
        assert slots.in_use("erp") == 1
    assert slots.in_use("erp") == 0


def test_no_limit_takes_no_slot(slots: SessionSlots) -> None:
    with slots.hold("erp", None):
        assert slots.in_use("erp") == 0
