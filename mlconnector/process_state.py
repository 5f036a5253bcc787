"""What a process keeps between records, and how to drop it all at once.

Engines, pooled HTTP sessions, built connectors and webhook settings are per process for
speed. A forked worker must not share its parent's sockets, and a test or benchmark that
points the process at another database must not see the previous one's integrations.
"""

from __future__ import annotations


def reset_process_state(*, settings: bool = True) -> None:
    from mlconnector.db.session import dispose_engines
    from mlconnector.flows import reload_pairs
    from mlconnector.http.runtime import set_runtime
    from mlconnector.integrations import clear_connector_cache
    from mlconnector.receiver import forget_webhook_settings
    from mlconnector.settings import reset_settings_cache

    if settings:
        reset_settings_cache()
    dispose_engines()
    set_runtime(None)
    clear_connector_cache()
    forget_webhook_settings()
    reload_pairs()
