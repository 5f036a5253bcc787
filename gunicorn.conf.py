"""gunicorn settings for the webhook receiver (`gunicorn -c gunicorn.conf.py 'mlconnector.web:create_app()'`).

Plain synchronous workers, one process per core: measured with `benchmarks.bench_ingest`,
a request's time is mostly Python (signature, JSON, SQLAlchemy, the Celery publish), so
threads inside a worker only queue on its interpreter lock (4 threads per worker cut
throughput and multiplied p99 at 200 events/s). Values come from the environment so a
bigger host scales without editing this file.
"""

from __future__ import annotations

import os

bind = os.environ.get("GUNICORN_BIND", f"0.0.0.0:{os.environ.get('PORT', '8000')}")
workers = int(os.environ.get("WEB_CONCURRENCY", str(os.cpu_count() or 2)))
worker_class = "sync"
timeout = 30  # a request stuck this long is killed and its worker replaced
graceful_timeout = 20
accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-") or None  # empty: no access log
