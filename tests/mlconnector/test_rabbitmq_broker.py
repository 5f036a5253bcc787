"""RabbitMQ as the fleet's broker: quorum queues on topic exchanges, retry countdowns carried
by Celery's native delayed delivery, and the queue-depth gauge read from the broker. The
end-to-end runs on RabbitMQ (a webhook delivered three times, a 429 storm with token expiry,
a worker killed mid-batch) are in tests/test_servicetitan_epicor_e2e.py."""

from __future__ import annotations

import subprocess
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
    out = subprocess.run(["rabbitmqctl", "-q", "list_queues", "-p", vhost, "name", "type"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return dict(line.split("\t")[:2] for line in out.splitlines() if "\t" in line and not line.startswith("name"))


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
    # A worker declares the delay exchanges and binds its queues to them (they stay), then goes.
    start_worker(env, queues=f"mlconnector,{PAIR_QUEUE}").stop()
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
