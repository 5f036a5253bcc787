"""Start Flower only with HTTP basic authentication.

Flower without credentials shows every task's arguments and the broker, and its API can
revoke tasks and shut workers down. This launcher refuses to start it unless
FLOWER_BASIC_AUTH holds `user:password[,user2:password2]`, then replaces itself with
`celery -A mlconnector.celery_app flower`. The credentials stay in the environment, where
Flower reads them itself, instead of on the command line, where `ps` would show them.

    FLOWER_BASIC_AUTH=ops:s3cret python -m mlconnector.flower_launch --port 5555
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

ENV_VAR = "FLOWER_BASIC_AUTH"
DEFAULT_PORT = 5555
DEFAULT_ADDRESS = "127.0.0.1"  # loopback unless told otherwise (a container sets 0.0.0.0)
EXIT_REFUSED = 2


class RefusedError(ValueError):
    """FLOWER_BASIC_AUTH is missing or malformed; the message says which, never the secret."""


def check_basic_auth(value: str | None) -> list[str]:
    """The `user:password` entries, or RefusedError: Flower must never run without them."""
    if value is None or not value.strip():
        raise RefusedError(f"{ENV_VAR} is not set; set it to user:password[,user2:password2]")
    entries = value.split(",")
    for number, entry in enumerate(entries, start=1):
        user, sep, password = entry.partition(":")
        if not sep or not user or not password:
            raise RefusedError(
                f"{ENV_VAR}: entry {number} is not user:password (both parts non-empty)"
            )
        if entry != entry.strip():
            # Flower compares the whole entry byte for byte; a stray space locks everyone out.
            raise RefusedError(f"{ENV_VAR}: entry {number} has leading or trailing whitespace")
    return entries


def flower_argv(port: int, address: str) -> list[str]:
    """The Flower command; same interpreter, so the launcher and Flower share one venv."""
    return [
        sys.executable, "-m", "celery", "-A", "mlconnector.celery_app", "flower",
        f"--port={port}", f"--address={address}",
    ]


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port")
    return port


def _default_port() -> int:
    """FLOWER_PORT, checked here so a bad value is named instead of raising a traceback."""
    try:
        return _port(os.environ.get("FLOWER_PORT") or str(DEFAULT_PORT))
    except argparse.ArgumentTypeError as error:
        raise RefusedError(f"FLOWER_PORT: {error}") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mlconnector.flower_launch",
        description=f"Start Flower with HTTP basic auth from {ENV_VAR} (user:password[,...]).",
    )
    parser.add_argument(
        "--port", type=_port, default=_default_port(),
        help="port to listen on (default: $FLOWER_PORT or 5555)",
    )
    parser.add_argument(
        "--address", default=os.environ.get("FLOWER_ADDRESS") or DEFAULT_ADDRESS,
        help="address to listen on (default: $FLOWER_ADDRESS or 127.0.0.1)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Refuse with one line and status 2, or exec Flower (never returns then)."""
    try:
        args = _parser().parse_args(argv)
        check_basic_auth(os.environ.get(ENV_VAR))
    except RefusedError as error:
        print(f"flower: refusing to start: {error}", file=sys.stderr)
        return EXIT_REFUSED
    command = flower_argv(args.port, args.address)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(command[0], command)
    return 0  # pragma: no cover - execv does not return


if __name__ == "__main__":
    sys.exit(main())
