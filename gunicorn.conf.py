"""gunicorn settings for the webhook receiver (`gunicorn -c gunicorn.conf.py 'mlconnector.web:create_app()'`).

Slow clients must not delay other senders. Synchronous workers give each connection a whole
process: two clients that connect and send nothing held both workers and a signed delivery
waited 31 s. gunicorn's own gthread worker is not enough either: it hands each new connection
to a thread that waits up to 5 s for a first byte and then blocks reading the rest (8 idle
sockets delayed a delivery 9.7 s on one worker with 4 threads). So the receiver runs
`ReadAheadThreadWorker`: the worker's main loop reads every request, head and body, without
blocking (answering Expect: 100-continue itself), closes a connection that has not delivered
a whole request within REQUEST_READ_SECONDS, refuses a head or body too large to buffer, and
hands a thread only a request it can answer at once. Silent and trickling clients cost a
socket and a buffer, never a thread.

Values come from the environment so a bigger host scales without editing this file. TLS is
terminated in front of gunicorn (the read-ahead reads plain HTTP/1.1). The worker builds on
gthread's poller and pending-connection deadline as gunicorn 27 has them; the slow-client
tests (tests/mlconnector/test_slow_clients.py) fail if an upgrade changes them.
"""

from __future__ import annotations

import errno
import json
import os
import re
import selectors
import socket
import time
from functools import partial
from typing import Any

from gunicorn.workers.gthread import TConn, ThreadWorker

bind = os.environ.get("GUNICORN_BIND", f"0.0.0.0:{os.environ.get('PORT', '8000')}")
# A request is mostly Python: one process per core.
workers = int(os.environ.get("WEB_CONCURRENCY", str(os.cpu_count() or 2)))
# Threads overlap one request's database and broker waits with another's Python. bench_ingest on
# 2 cores: 2 threads matched sync workers (394 vs 365 events/s, paced p99 11 vs 19 ms); 4 raised
# p99 (threads queue on the GIL). No thread ever waits on a client, so few are needed.
threads = int(os.environ.get("GUNICORN_THREADS", "2"))
worker_connections = 250  # per worker, idle ones included; each may buffer a request of up to BODY_MAX_BYTES
keepalive = 5  # a sender reusing its connection skips a handshake; idle, it costs a socket, not a thread
timeout = 30  # a worker whose main loop stops answering this long is replaced
graceful_timeout = 20  # on restart, requests in hand get this long to finish
accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-") or None  # empty: no access log

# A whole request must arrive within this, or the connection is closed; a sender posts one in milliseconds.
REQUEST_READ_SECONDS = float(os.environ.get("GUNICORN_REQUEST_READ_SECONDS", "10"))
HEAD_MAX_BYTES = 32 * 1024  # a webhook's request line and headers are under 2 KB; a longer head is refused with 431
# Above the receiver's own limit (which answers 413 itself); a larger body is refused unread, with 413.
BODY_MAX_BYTES = max(2 * 1024 * 1024, int(os.environ.get("MLCONNECTOR_WEBHOOK_MAX_BYTES", "0")))
READ_CHUNK_BYTES = 64 * 1024  # one non-blocking recv per readable event

_HEAD_END = b"\r\n\r\n"
_CONTENT_LENGTH = re.compile(rb"^content-length[ \t]*:[ \t]*([^\r\n]*?)[ \t]*\r?$", re.IGNORECASE | re.MULTILINE)
_CHUNKED = re.compile(rb"^transfer-encoding[ \t]*:[^\r\n]*chunked", re.IGNORECASE | re.MULTILINE)
_EXPECT_CONTINUE = re.compile(rb"\r\nexpect[ \t]*:[ \t]*100-continue[ \t]*(?=\r\n)", re.IGNORECASE)

WAIT, READY, CONTINUE, HEAD_TOO_LARGE, BODY_TOO_LARGE = "wait", "ready", "continue", "head too large", "body too large"
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_REFUSALS = {
    HEAD_TOO_LARGE: (431, "Request Header Fields Too Large", f"request head over {HEAD_MAX_BYTES} bytes"),
    BODY_TOO_LARGE: (413, "Content Too Large", f"body over {BODY_MAX_BYTES} bytes"),
}


def read_ahead_step(data: bytes | bytearray) -> str:
    """What the bytes of a request read so far call for: WAIT for more, hand a READY request
    to a thread, answer 100 CONTINUE for the body, or refuse a head or body too large.

    A head that frames its body oddly (two lengths, a length that is not a number) is READY
    once it is in: gunicorn's parser then refuses it in a thread as usual.
    """
    end = data.find(_HEAD_END)
    if end < 0 or end > HEAD_MAX_BYTES:
        return HEAD_TOO_LARGE if max(end, len(data)) > HEAD_MAX_BYTES else WAIT
    head, received = bytes(data[:end]), len(data) - end - len(_HEAD_END)
    if _CHUNKED.search(head):
        if received > BODY_MAX_BYTES + HEAD_MAX_BYTES:  # the allowance covers the chunks' framing
            return BODY_TOO_LARGE
        return READY if _chunked_body_complete(bytes(data[end + len(_HEAD_END):])) else WAIT
    lengths = _CONTENT_LENGTH.findall(head)
    if len(lengths) != 1 or not lengths[0].isdigit():
        return READY  # no body, or one the parser refuses
    if int(lengths[0]) > BODY_MAX_BYTES:
        return BODY_TOO_LARGE
    if received == 0 and int(lengths[0]) > 0 and _EXPECT_CONTINUE.search(head + b"\r\n"):
        return CONTINUE
    return READY if received >= int(lengths[0]) else WAIT


def _chunked_body_complete(body: bytes) -> bool:
    position = 0
    while True:
        line_end = body.find(b"\r\n", position)
        if line_end < 0:
            return False
        try:
            size = int(body[position:line_end].split(b";", 1)[0], 16)
        except ValueError:
            return True  # malformed: the parser refuses it
        if size == 0:
            return body.find(_HEAD_END, line_end) >= 0  # the last chunk, then trailers up to an empty line
        position = line_end + 2 + size + 2
        if position > len(body):
            return False


def _refusal(step: str) -> bytes:
    status, reason, problem = _REFUSALS[step]
    body = json.dumps({"error": problem}).encode()
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n\r\n").encode() + body


class ReadAheadConn(TConn):
    """A connection and the bytes of its next request read so far."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.received = bytearray()
        self.refused = False  # answered already; what still arrives is read and dropped
        self.complete = False  # `received` holds a whole request, ready for a thread


class ReadAheadThreadWorker(ThreadWorker):
    """gthread whose threads only ever see a request that has fully arrived (see the module doc).

    New connections, and kept-alive ones once their next request starts, wait in the main
    loop's poller among gunicorn's pending connections, whose deadline closes them. An
    Expect: 100-continue is answered here, so its body is read ahead like any other.
    """

    quitting = False

    def handle_quit(self, sig: int, frame: Any) -> None:
        """Once only. Ctrl+C in a terminal reaches the whole process group, so a worker gets the
        SIGINT and then its master's SIGQUIT; a second gthread quit re-entered the thread pool's
        shutdown from inside the first, under its lock, and hung until the master killed it."""
        if self.quitting:
            return
        self.quitting = True
        super().handle_quit(sig, frame)

    def accept(self, listener: Any) -> None:
        if self.cfg.is_ssl:  # TLS bytes cannot be read ahead as HTTP; serve as plain gthread
            return super().accept(listener)
        try:
            sock, client = listener.accept()
        except OSError as error:
            if error.errno in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                return None
            raise
        self.nr_conns += 1
        self._read_ahead(ReadAheadConn(self.cfg, sock, client, listener.getsockname()))
        return None

    def on_client_socket_readable(self, conn: Any, client: Any) -> None:
        if not isinstance(conn, ReadAheadConn):
            return super().on_client_socket_readable(conn, client)
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._read_ahead(conn)
        return None

    def _read_ahead(self, conn: ReadAheadConn) -> None:
        conn.sock.setblocking(False)
        conn.timeout = time.monotonic() + REQUEST_READ_SECONDS  # murder_pending closes it after this
        self.pending_conns.append(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_request_bytes, conn))

    def _on_request_bytes(self, conn: ReadAheadConn, sock: Any) -> None:
        try:
            chunk = sock.recv(READ_CHUNK_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:  # the client went away, or has read a refusal and closed
            self._stop_reading(conn)
            return
        if not conn.refused:
            conn.received += chunk
            self._advance(conn)

    def _advance(self, conn: ReadAheadConn) -> None:
        step = read_ahead_step(conn.received)
        if step == CONTINUE:
            # Answered here, and the header dropped so the parser does not answer it again.
            conn.received[:] = _EXPECT_CONTINUE.sub(b"", bytes(conn.received), count=1)
            self._send_quietly(conn, _CONTINUE)
        elif step in _REFUSALS:
            self._refuse(conn, _refusal(step))
        elif step == READY:
            self.poller.unregister(conn.sock)
            self.pending_conns.remove(conn)
            conn.data_ready = True
            conn.complete = True
            self.enqueue_req(conn)

    def enqueue_req(self, conn: Any) -> None:
        """gthread also hands a kept-alive connection straight to a thread when its parser holds
        the start of a next, pipelined request; that start is read ahead here like any other."""
        if isinstance(conn, ReadAheadConn) and not conn.complete:
            conn.received[:0] = conn.parser.unreader.take_buffered() if conn.parser is not None else b""
            self._read_ahead(conn)
            self._advance(conn)
            return
        conn.complete = False
        super().enqueue_req(conn)

    def _refuse(self, conn: ReadAheadConn, answer: bytes) -> None:
        """Answer, then keep draining until the client closes or the deadline: closing a socket
        with unread bytes resets it, and the client could lose the answer."""
        self._send_quietly(conn, answer)
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        conn.refused = True
        conn.received.clear()

    def _stop_reading(self, conn: ReadAheadConn) -> None:
        self.poller.unregister(conn.sock)
        self.pending_conns.remove(conn)
        self.nr_conns -= 1
        conn.close()

    @staticmethod
    def _send_quietly(conn: ReadAheadConn, data: bytes) -> None:
        """A few bytes on a socket whose buffer is empty: they fit, and a peer gone is no error."""
        try:
            conn.sock.send(data)
        except OSError:
            pass

    def handle(self, conn: Any) -> Any:
        """In the thread: give the parser the request read ahead, then serve it as gthread does."""
        received = getattr(conn, "received", None)
        if received:
            conn.sock.setblocking(True)
            conn.init()
            conn.parser.unreader.unread(bytes(received))
            received.clear()
        return super().handle(conn)


worker_class = ReadAheadThreadWorker


def child_exit(server: Any, worker: Any) -> None:
    """A worker that ends drops its live gauges from the host's metrics; its counts stay summed
    (prometheus_client multiprocess mode, when PROMETHEUS_MULTIPROC_DIR is set)."""
    from mlconnector.fleet_metrics import mark_process_dead

    mark_process_dead(worker.pid)
