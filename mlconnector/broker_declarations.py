"""A worker's queues checked against what RabbitMQ already holds, before the worker starts.

RabbitMQ refuses to re-declare a queue or exchange with other arguments (PRECONDITION_FAILED),
and Celery then stops the worker with a traceback. That happens on a real upgrade: queues
first declared classic on direct exchanges, now quorum queues on topic exchanges (see
celery_app.broker_queues), or `MLCONNECTOR_AMQP_QUEUE_TYPE` changed. The check makes the same
declarations Celery would, each on a channel of its own, and turns a refusal into one line
naming the queue, what differs and what to do."""

from __future__ import annotations

from collections.abc import Iterable

from kombu import Connection, Queue


def declaration_problem(url: str, queues: Iterable[Queue]) -> str | None:
    """None when every queue (with its exchange and binding) can be declared as configured;
    else why not and the next step. Declaring is idempotent: a queue that matches is left as
    it is, one that is missing is created, as the worker would."""
    from amqp.exceptions import PreconditionFailed

    with Connection(url, connect_timeout=10) as connection:
        for queue in queues:
            channel = connection.channel()
            try:
                queue(channel).declare()
            except PreconditionFailed as refusal:
                detail = str(getattr(refusal, "reply_text", "") or refusal).removeprefix("PRECONDITION_FAILED - ")
                return (f"RabbitMQ already holds queue {queue.name!r} or its exchange declared otherwise ({detail}); "
                        f"this fleet declares {queue.queue_arguments.get('x-queue-type', 'classic')} queues on "
                        f"{queue.exchange.type} exchanges (MLCONNECTOR_AMQP_QUEUE_TYPE). Next step: stop the workers "
                        f"on it, let it drain, delete the queue and its exchange '{queue.exchange.name}' "
                        f"(management UI or rabbitmqadmin), then start the workers again")
            finally:
                try:
                    channel.close()
                except Exception:  # closed by the broker's refusal
                    pass
    return None
