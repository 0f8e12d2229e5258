"""A gunicorn worker class: ``gthread`` with a deadline for the request line and headers.

gunicorn's ``gthread`` worker gives a connection a thread of its pool as soon
as its first byte arrives, and that thread then reads the request line and
headers with blocking reads and no time limit. A client that sends one byte
and nothing more holds a thread for good: 100 such connections, from one
script, take every thread of a worker, and every other client waits
(Slowloris). gunicorn's ``--timeout`` does not help (the worker's main
thread keeps it alive), nor ``--keep-alive`` (it covers connections between
requests, in the poller, not a request being read).

:class:`ThreadWorker` is ``gthread`` with three changes:

- A new plain-TCP connection gets no thread to *wait* for its headers: the
  thread reads what has arrived without blocking, and while the end of the
  headers (a blank line) is not there, the connection goes back to
  gunicorn's poller (as gunicorn does with a connection that sent nothing),
  the bytes kept; the thread is free at once. Only a complete head goes to
  gunicorn's parser (through its own ``unread``, as gunicorn does with an
  HTTP/2 preface). A client silent for gunicorn's ``--keep-alive`` in the
  meantime is dropped by gunicorn; one whose bytes came while the worker's
  loop was busy elsewhere is not (gunicorn drops a waiting connection when
  its timer has run out without looking whether it became readable
  meanwhile: in a burst of a thousand connections at once, a few percent
  were closed during their handshake).
- A deadline: the request line and every header must be in within
  ``PINE_WS_HEADER_TIMEOUT`` seconds (an environment variable of the
  gunicorn process, default 10) of the connection's first look, else the
  worker answers ``408 Request Timeout`` and closes it. The deadline is a
  whole-request bound, not one per read: a client trickling a byte a second
  is cut off as well. For what still reads headers in a thread (TLS, whose
  handshake comes first; a second request on a kept-alive connection;
  HTTP/2 prior knowledge) a thread per worker shuts the socket down at the
  deadline (a heap; it sleeps until the earliest), which ends the blocked
  read at once. Once the headers are in, the deadline is lifted: a
  WebSocket then lives as long as it likes.
- Its ``--threads`` threads are all started when the worker boots
  (:class:`.threadpool.WarmPool`), not one by one as connections come: a
  WebSocket holds its thread for good, so a crowd connecting at once would
  otherwise start hundreds of threads while being served.

Use it with any gunicorn configuration::

    gunicorn -k flask_pine_ws.worker.ThreadWorker --threads 32 app:app

or ``worker_class = "flask_pine_ws.worker.ThreadWorker"`` in a config file.
Behind nginx, its ``client_header_timeout`` does the same for the proxy's
side (see the deployment notes).
"""

from __future__ import annotations

import heapq
import itertools
import os
import select
import socket
import threading
import time
from typing import Any

import gunicorn
from gunicorn.workers import gthread as _gthread
from gunicorn.workers.gthread import ThreadWorker as _GThreadWorker

from .threadpool import WarmPool

try:
    from gunicorn.http2.negotiation import prior_knowledge_allowed as _h2_prior_knowledge
except ImportError:  # gunicorn < 24: no HTTP/2
    _h2_prior_knowledge = None

#: What ``handle`` returns to put a connection back in gunicorn's poller until it is readable:
#: gunicorn >= 24 has a marker for it; before, a kept-alive connection went back the same way.
_BACK_TO_POLLER: Any = getattr(_gthread, "_DEFER", True)

#: gunicorn 23's gthread loop, which 24 rewrote: its main thread calls ``conn.init()`` (a
#: blocking socket, the parser) before a connection gets a thread, ``handle`` returns
#: ``(keepalive, conn)``, and a connection back in the poller is one of its ``_keep``.
_GUNICORN_23 = gunicorn.version_info < (24,)

#: Bytes of request head read ahead before the rest is left to gunicorn's parser (its own
#: limits then apply: ``limit_request_line``, ``limit_request_fields``, ...).
HEAD_READ_AHEAD = 64 * 1024

#: The deadline's default, in seconds (nginx's ``client_header_timeout`` is 60; 10 is ample
#: for any real client, and short enough that a flood of stalled ones frees threads quickly).
DEFAULT_HEADER_TIMEOUT = 10.0

#: What a client too slow with its headers is told before its socket is shut down.
TIMEOUT_RESPONSE = (b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n"
                    b"Content-Type: text/plain\r\nContent-Length: 30\r\n\r\n"
                    b"Request headers took too long\n")


def header_timeout() -> float:
    """``PINE_WS_HEADER_TIMEOUT`` from the environment, or the default.

    :raises ValueError: not a number > 0.
    """
    raw = os.environ.get("PINE_WS_HEADER_TIMEOUT", "")
    value = float(raw) if raw.strip() else DEFAULT_HEADER_TIMEOUT
    if not value > 0:
        raise ValueError(f"PINE_WS_HEADER_TIMEOUT must be > 0, not {raw!r}")
    return value


class HeaderDeadlines:
    """Connections whose request headers are due, and the thread that cuts off the late ones.

    :meth:`arm` before reading a request, :meth:`disarm` once its headers
    are in (or the connection is given up). Disarmed, a connection is never
    touched again: both happen under one lock, so the cut-off cannot hit a
    connection already serving its request. A connection is anything with a
    ``sock`` attribute (gunicorn's ``TConn``), read when the deadline passes:
    TLS replaces the socket once the handshake is done.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._lock = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, Any]] = []
        self._armed: dict[Any, int] = {}  # connection -> its entry's sequence number
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._stopped = False
        #: Connections cut off since the start (for logs and tests).
        self.expired = 0

    def arm(self, conn: Any) -> None:
        with self._lock:
            seq = next(self._seq)
            self._armed[conn] = seq
            due = time.monotonic() + self.timeout
            # The thread sleeps until the earliest deadline: wake it only for
            # an earlier one, which with one timeout for all is only the first
            # in an empty heap (a wake per request cost the crowd a thread
            # switch per connection).
            earlier = not self._heap or due < self._heap[0][0]
            heapq.heappush(self._heap, (due, seq, conn))
            if self._thread is None and not self._stopped:
                self._thread = threading.Thread(target=self._run, name="pine-ws-header-deadline",
                                                daemon=True)
                self._thread.start()
            elif earlier:
                self._lock.notify()

    def disarm(self, conn: Any) -> None:
        with self._lock:
            self._armed.pop(conn, None)

    def stop(self, timeout: float | None = None) -> None:
        """End the thread (no connection is cut off after this); wait for it up to ``timeout``."""
        with self._lock:
            self._stopped = True
            self._lock.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _run(self) -> None:
        with self._lock:
            while not self._stopped:
                now = time.monotonic()
                while self._heap and (self._heap[0][0] <= now
                                      or self._armed.get(self._heap[0][2]) != self._heap[0][1]):
                    _, seq, conn = heapq.heappop(self._heap)
                    if self._armed.get(conn) == seq:
                        del self._armed[conn]
                        self.expired += 1
                        _cut_off(conn.sock)
                wait = self._heap[0][0] - now if self._heap else None
                self._lock.wait(wait)


def _readable(sock: socket.socket) -> bool:
    """Bytes (or the peer's end) wait on ``sock`` now; a closed socket is not."""
    try:
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return False


def _read_available(sock: socket.socket, head: bytearray) -> bool | None:
    """Append what ``sock`` has now to ``head``, without blocking.

    :returns: whether the head is complete (a blank line, or more than
        :data:`HEAD_READ_AHEAD` bytes: the parser decides), ``None`` when the
        peer closed.
    """
    while True:
        try:
            chunk = sock.recv(HEAD_READ_AHEAD, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        if not chunk:
            return None
        start = max(0, len(head) - 3)
        head += chunk
        if b"\r\n\r\n" in head[start:] or b"\n\n" in head[start:] or len(head) > HEAD_READ_AHEAD:
            return True


def _cut_off(sock: socket.socket) -> None:
    """Tell the client 408 (if its buffer takes it at once) and end the blocked read."""
    try:
        sock.send(TIMEOUT_RESPONSE, socket.MSG_DONTWAIT)
    except (OSError, ValueError):
        pass  # a full buffer, or TLS (no flags allowed): just end it
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # gone already


class ThreadWorker(_GThreadWorker):  # type: ignore[misc]  # gunicorn is untyped
    """gunicorn's ``gthread`` worker with a deadline for each request's line and headers.

    See the module docstring. The deadline is read from ``PINE_WS_HEADER_TIMEOUT``
    when the worker starts.
    """

    def init_process(self) -> None:
        self.header_deadlines = HeaderDeadlines(header_timeout())
        super().init_process()

    def get_thread_pool(self) -> WarmPool:
        # Every thread started now, none while a crowd connects (see .threadpool).
        return WarmPool(self.cfg.threads, name="pine-ws-request")

    def handle(self, conn: Any) -> Any:
        deadlines: HeaderDeadlines = self.header_deadlines
        if not getattr(conn, "initialized", True) and self._reads_head_itself(conn):
            head: bytearray | None = getattr(conn, "pine_head", None)
            if head is None:
                head = conn.pine_head = bytearray()
                conn.pine_due = time.monotonic() + deadlines.timeout
            try:
                ended = _read_available(conn.sock, head)
            except OSError:
                return self._result(False, conn)  # reset: gunicorn closes it
            if ended is None:
                return self._result(False, conn)  # closed by the client before its headers were in
            if not ended:
                if time.monotonic() >= conn.pine_due:
                    deadlines.expired += 1
                    _cut_off(conn.sock)
                    return self._result(False, conn)
                return self._result(_BACK_TO_POLLER, conn)  # no thread waits for the rest
            conn.init()  # the parser, on a blocking socket
            conn.parser.unreader.unread(bytes(head))
            conn.pine_head = None
            conn.data_ready = True  # gunicorn must not wait for more before parsing
        deadlines.arm(conn)
        try:
            return super().handle(conn)
        finally:
            deadlines.disarm(conn)

    @staticmethod
    def _result(value: Any, conn: Any) -> Any:
        """What ``handle`` returns for ``value`` in this gunicorn: gunicorn 23 wants the pair."""
        return (value, conn) if _GUNICORN_23 else value

    def enqueue_req(self, conn: Any) -> None:
        if _GUNICORN_23 and not conn.initialized and self._reads_head_itself(conn):
            # gunicorn 23 calls conn.init() here, before the thread: the socket
            # would turn blocking and handle() would take the connection for
            # one whose head gunicorn reads, so one byte would hold a thread.
            # Its own submit, without init().
            self._wrap_future(self.tpool.submit(self.handle, conn), conn)
            return
        super().enqueue_req(conn)

    def on_client_socket_readable(self, conn: Any, client: Any) -> None:
        if _GUNICORN_23 and not conn.initialized and getattr(conn, "pine_head", None) is not None:
            # A head still coming, back in gunicorn 23's poller as a kept-alive
            # connection is: it is in _keep, which gunicorn leaves it in for a
            # connection not initialized, and its keep-alive timer would then
            # close it while a thread reads it.
            with self._lock:
                self.poller.unregister(client)
                try:
                    self._keep.remove(conn)
                except ValueError:
                    return  # its timer ran out meanwhile: gunicorn closed it
            self.enqueue_req(conn)
            return
        super().on_client_socket_readable(conn, client)

    def murder_pending(self) -> None:
        # gunicorn's loop handles the readable sockets its last select saw, then
        # drops the waiting connections whose timer ran out. A busy loop (a
        # thousand handshakes at once, one GIL) can take seconds between the
        # two: a connection whose request came meanwhile would be dropped.
        # Look at the expired ones first.
        pending = getattr(self, "pending_conns", None)
        if pending:
            now = time.monotonic()
            for conn in [c for c in pending if c.timeout <= now]:
                if _readable(conn.sock):
                    self.on_pending_socket_readable(conn, conn.sock)
        super().murder_pending()

    def _reads_head_itself(self, conn: Any) -> bool:
        """A new plain HTTP/1 connection: read its head here (see the module docstring)."""
        if self.cfg.is_ssl:
            return False  # the TLS handshake comes first, in gunicorn's conn.init()
        if _h2_prior_knowledge is not None and _h2_prior_knowledge(self.cfg, conn.client):
            return False  # gunicorn sniffs the HTTP/2 preface from the socket itself
        return True

    def handle_request(self, req: Any, conn: Any) -> Any:
        # The request line and headers are in: from here the app decides how long it takes.
        self.header_deadlines.disarm(conn)
        return super().handle_request(req, conn)

    # HTTP/2 (gunicorn >= 24): a connection lives on with its own streams.
    def handle_http2(self, conn: Any) -> Any:
        self.header_deadlines.disarm(conn)
        return super().handle_http2(conn)

    def handle_h2c_upgrade(self, conn: Any, req: Any, settings: Any) -> Any:
        self.header_deadlines.disarm(conn)
        return super().handle_h2c_upgrade(conn, req, settings)
