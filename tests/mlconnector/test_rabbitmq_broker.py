"""RabbitMQ as the fleet's broker: quorum queues on topic exchanges, retry countdowns carried
by Celery's native delayed delivery, and the queue-depth gauge read from the broker. The
end-to-end runs on RabbitMQ (a webhook delivered three times, a 429 storm with token expiry,
a worker killed mid-batch) are in tests/test_servicetitan_epicor_e2e.py."""

from __future__ import annotations

import time
from typing import Any

import pytest
from tests.conftest import wait_until

PAIR_QUEUE = "counter-test"  # tests.fleet_pair's queue


def _queues() -> dict[str, Any]:
    from mlconnector.celery_app import broker_queues

    return {queue.name: queue for queue in broker_queues()}


def test_on_rabbitmq_every_queue_is_a_quorum_queue_on_its_own_topic_exchange(configure: Any, redis_url: str) -> None:
    configure(None, "amqp://guest:guest@127.0.0.1:5672/x", REDIS_URL=redis_url)
    from mlconnector.flows import all_pairs

    queues = _queues()
    assert set(queues) == {"mlconnector", PAIR_QUEUE, *(pair.queue for pair in all_pairs().values())}
    for name, queue in queues.items():
        assert queue.queue_arguments == {"x-queue-type": "quorum"}
        assert (queue.exchange.name, queue.exchange.type, queue.routing_key) == (name, "topic", name)


def test_classic_queues_on_rabbitmq_are_a_setting_and_redis_queues_take_no_arguments(configure: Any,
                                                                                      redis_url: str) -> None:
    configure(None, "amqp://guest:guest@127.0.0.1:5672/x", REDIS_URL=redis_url, MLCONNECTOR_AMQP_QUEUE_TYPE="classic")
    assert {q.queue_arguments["x-queue-type"] for q in _queues().values()} == {"classic"}
    configure(None, redis_url)
    assert all(not q.queue_arguments for q in _queues().values())


def test_a_wrong_queue_type_is_refused_naming_its_setting(configure: Any, redis_url: str) -> None:
    from mlconnector.settings import SettingsError

    with pytest.raises(SettingsError, match="MLCONNECTOR_AMQP_QUEUE_TYPE: Input should be 'quorum' or 'classic'"):
        configure(None, "amqp://guest:guest@127.0.0.1:5672/x", REDIS_URL=redis_url, MLCONNECTOR_AMQP_QUEUE_TYPE="stream")


def _declared_types(vhost: str) -> dict[str, str]:
    from benchmarks import rabbitmq

    return {name: queue["type"] for name, queue in rabbitmq.queues(vhost).items()}


def test_the_queue_depth_gauge_counts_messages_waiting_in_rabbitmq(configure: Any, redis_url: str,
                                                                   rabbitmq_url: str) -> None:
    from mlconnector.fleet_metrics import queue_depths
    from mlconnector.tasks import process_record

    configure(None, rabbitmq_url, REDIS_URL=redis_url)
    assert set(queue_depths().values()) == {0}  # not declared yet: nothing waits
    for record_id in (1, 2, 3):
        process_record.apply_async(args=(record_id,), queue=PAIR_QUEUE)
    assert wait_until(lambda: queue_depths()[PAIR_QUEUE] == 3, timeout=10)
    assert sum(queue_depths().values()) == 3
    assert _declared_types(rabbitmq_url.rsplit("/", 1)[1])[PAIR_QUEUE] == "quorum"


def test_a_countdown_waits_in_rabbitmqs_delay_queues_not_in_a_worker(configure: Any, redis_url: str,
                                                                      rabbitmq_url: str, start_worker: Any) -> None:
    """Quorum queues cannot let a worker hold a delayed message by raising its prefetch, so a
    retry's countdown must travel through the broker's delay exchanges: sent with a 3 s
    countdown while no worker runs, the message reaches the pair's queue 3 s later."""
    from mlconnector.fleet_metrics import queue_depths
    from mlconnector.tasks import process_record

    env = configure(None, rabbitmq_url, REDIS_URL=redis_url)
    _bind_delay_exchanges(env, start_worker)
    sent = time.time()
    process_record.apply_async(args=(1,), queue=PAIR_QUEUE, countdown=3)
    arrived = wait_until(lambda: queue_depths()[PAIR_QUEUE] == 1 and time.time(), timeout=20, interval=0.1)
    assert 2.5 <= arrived - sent <= 15, arrived - sent
    assert any(name.startswith("celery_delayed_") for name in _declared_types(rabbitmq_url.rsplit("/", 1)[1]))


def test_a_worker_meeting_queues_declared_otherwise_stops_with_one_line_and_the_next_step(
        configure: Any, redis_url: str, rabbitmq_url: str, start_worker: Any) -> None:
    """An upgrade from queues declared classic on direct exchanges: RabbitMQ refuses the new
    declaration, and the worker says so in one line naming the queue instead of a traceback."""
    from kombu import Connection, Exchange, Queue

    env = configure(None, rabbitmq_url, REDIS_URL=redis_url)
    with Connection(rabbitmq_url) as connection:
        Queue(PAIR_QUEUE, Exchange(PAIR_QUEUE, type="direct"), routing_key=PAIR_QUEUE)(connection.channel()).declare()
    with pytest.raises(RuntimeError, match="worker exited") as stopped:
        start_worker(env, queues=f"mlconnector,{PAIR_QUEUE}")
    log = str(stopped.value)
    assert f"RabbitMQ already holds queue '{PAIR_QUEUE}'" in log and "received 'topic' but current is 'direct'" in log
    assert "Next step: stop the workers" in log and "Traceback" not in log


def _bind_delay_exchanges(env: dict[str, str], start_worker: Any) -> None:
    """A worker declares the delay exchanges and binds its queues to them (they stay), then goes."""
    start_worker(env, queues=f"mlconnector,{PAIR_QUEUE}").stop()


DELAYED_KEY = ".".join("0" * 27 + "1") + f".{PAIR_QUEUE}"  # as a message that waited 1 s arrives


@pytest.mark.parametrize("delivered", [{"routing_key": PAIR_QUEUE, "exchange": PAIR_QUEUE},
                                       {"routing_key": DELAYED_KEY, "exchange": "celery_delayed_delivery"}],
                         ids=["sent", "retried-before"])
def test_a_retry_shorter_than_a_second_comes_back_to_its_own_queue(configure: Any, redis_url: str, rabbitmq_url: str,
                                                                  start_worker: Any, delivered: dict[str, str]) -> None:
    """A record briefly locked retries in 0.25 s. RabbitMQ's delay queues count whole seconds
    and Celery refuses a shorter countdown (inside a retry: the message rejected and dropped),
    so the fleet rounds it up to a second; and a retry names no queue, so Celery would put it
    on the default queue: it goes back to the pair's queue it was delivered from, also when
    that delivery itself came through the delay queues."""
    from mlconnector.fleet_metrics import queue_depths
    from mlconnector.tasks import process_record

    env = configure(None, rabbitmq_url, REDIS_URL=redis_url)
    _bind_delay_exchanges(env, start_worker)
    process_record.push_request(id="retried-task", args=(7,), kwargs={}, retries=1, called_directly=False,
                                delivery_info=delivered)
    try:
        sent = time.time()
        process_record.retry(countdown=0.25, throw=False)
    finally:
        process_record.pop_request()
    arrived = wait_until(lambda: queue_depths()[PAIR_QUEUE] == 1 and time.time(), timeout=20, interval=0.1)
    assert 0.9 <= arrived - sent <= 15, arrived - sent
    assert sum(queue_depths().values()) == 1, queue_depths()


def test_countdowns_are_whole_seconds_only_where_the_broker_delays_them(configure: Any, redis_url: str) -> None:
    from mlconnector.celery_app import broker_countdown

    configure(None, "amqp://guest:guest@127.0.0.1:5672/x", REDIS_URL=redis_url)
    assert [broker_countdown(s) for s in (None, 0, 0.25, 1.0, 1.2, 59.5)] == [None, 0, 1.0, 1.0, 2.0, 60.0]
    configure(None, "amqp://guest:guest@127.0.0.1:5672/x", REDIS_URL=redis_url, MLCONNECTOR_AMQP_QUEUE_TYPE="classic")
    assert broker_countdown(0.25) == 0.25  # a classic queue's worker holds the delayed message itself
    configure(None, redis_url)
    assert broker_countdown(0.25) == 0.25
