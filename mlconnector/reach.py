"""Can this machine reach a vendor's host at all? DNS, TCP and TLS, each timed, each failure
named with the host and port: the first line of `mlconnector check`, so a wrong URL or a
firewall is one plain verdict in seconds instead of an authentication error after retries.
"""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

REACH_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class Reach:
    ok: bool
    where: str  # host:port
    detail: str
    latency_ms: float


def reach(url: str, timeout: float = REACH_TIMEOUT_SECONDS) -> Reach:
    """Resolve the host, open a TCP connection and, for https, complete a TLS handshake
    (certificate and host name verified as the connector's requests will)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    where = f"{host}:{port}"
    started = time.perf_counter()

    def elapsed() -> float:
        return round((time.perf_counter() - started) * 1000, 1)

    if not host:
        return Reach(False, where, f"no host in {url!r}", 0.0)
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        return Reach(False, where, f"DNS: {host} does not resolve ({error.strerror})", elapsed())
    dns_ms = elapsed()
    try:
        connection = socket.create_connection((host, port), timeout=timeout)
    except socket.timeout:
        return Reach(False, where, f"TCP: no answer from {where} within {timeout:.0f} s (firewall or wrong port?)", elapsed())
    except OSError as error:
        return Reach(False, where, f"TCP: {where} refused the connection ({error.strerror or error})", elapsed())
    tcp_ms = elapsed()
    try:
        if parts.scheme == "https":
            try:
                with ssl.create_default_context().wrap_socket(connection, server_hostname=host):
                    pass
            except ssl.SSLError as error:
                return Reach(False, where, f"TLS: handshake with {where} failed ({error.reason or error})", elapsed())
            except (OSError, socket.timeout) as error:
                return Reach(False, where, f"TLS: {where} closed the handshake ({error})", elapsed())
    finally:
        connection.close()
    tls = f", TLS {elapsed():.0f} ms" if parts.scheme == "https" else ""
    return Reach(True, where, f"{len(addresses)} address(es); DNS {dns_ms:.0f} ms, TCP {tcp_ms:.0f} ms{tls}", elapsed())
