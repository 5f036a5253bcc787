"""The one retry decision at the engine's edge, by error class.

- Transient (`RetriableError`: 429, 5xx, timeouts, resets) retries with backoff.
- Permanent (`PermanentError` and a vendor's refusal, `ConnectorError` that is not
  retriable: a validation 400, a 404 on a write, credentials refused after a refresh;
  missing credentials; a config that cannot be used) fails at once: retrying cannot help,
  a person must act, and the record says what to do.
- Anything else is ours (a `KeyError`, a `TypeError`, a database hiccup): it retries until
  the delivery limit, so a fixed bug or a recovered database finishes the work, and a bug
  that always fails still ends `failed` with its error kept.
"""

from __future__ import annotations

from typing import Literal

from mlconnector.http.errors import ConnectorError, RetriableError

Verdict = Literal["transient", "permanent", "internal"]


class PermanentError(Exception):
    """A problem in the data or the setup that no retry can fix (a person must act)."""


class MappingError(PermanentError, ValueError):
    """Source data the mapping cannot turn into a target document (e.g. 'not an amount')."""


def verdict(error: BaseException) -> Verdict:
    from pydantic import ValidationError

    from mlconnector.config import ConfigError
    from mlconnector.vault import VaultError

    if isinstance(error, RetriableError):
        return "transient"
    if isinstance(error, (ConnectorError, PermanentError, VaultError, ConfigError, ValidationError)):
        return "permanent"
    return "internal"
