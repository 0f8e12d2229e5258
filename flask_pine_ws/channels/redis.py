"""Channels across processes and hosts: Redis pub/sub, through redis-py.

This module owns the two Redis connections of one worker process: one to
publish, one to subscribe. Every worker that shares the Redis delivers what
Redis brings to its own members (:class:`~.local.Registry`), so a message
published anywhere (a request in another worker, a job, a cron script) reaches
every member on every host.

- Publishing: one connection (a blocking pool of one), with a socket timeout
  and one immediate retry (a connection left stale by a Redis restart is
  replaced at once). An unreachable Redis fails ``publish`` with
  :class:`~flask_pine_ws.ChannelError` at once instead of hanging a request.
- Subscribing: one thread per worker, not per socket, subscribed to one
  pattern (``pine-ws:*``); each message names its channel, and channels
  without a member here are skipped. The idle pub/sub connection has no read
  timeout (it would reconnect in a storm on every quiet period); redis-py's
  ``health_check_interval`` and a ping of our own after each quiet
  :data:`HEALTH_INTERVAL` find a dead connection, and the thread reconnects
  with backoff and subscribes again. It never ends on an error.

Redis pub/sub keeps nothing: what is published while a subscriber is
disconnected never reaches that subscriber's members.

Created lazily, in the process that first joins or publishes: after
gunicorn's fork, never before it (a thread does not survive a fork).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any, Literal

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..errors import ChannelError
from .local import Registry
from .message import Payload, from_wire, to_wire

#: Redis channel names are this prefix and the channel's name.
PREFIX = b"pine-ws:"
#: Seconds to open a connection to Redis before giving up.
CONNECT_TIMEOUT = 2.0
#: Seconds a publish may wait for Redis's reply (and for the publishing connection).
PUBLISH_TIMEOUT = 5.0
#: Seconds of silence on the subscriber connection before it is pinged; no
#: reply within twice this counts as a dead connection.
HEALTH_INTERVAL = 10.0
#: Reconnection backoff of the subscriber: first and largest delay, seconds.
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0
#: How long ``join`` waits for the subscriber's first subscription.
FIRST_SUBSCRIBE_TIMEOUT = CONNECT_TIMEOUT + 3.0

_log = logging.getLogger("flask_pine_ws.channels")

State = Literal["connecting", "subscribed", "down"]


class Subscriber:
    """The worker's one pub/sub connection and the thread that reads it."""

    def __init__(self, url: str, registry: Registry) -> None:
        self._client = redis.Redis.from_url(
            url, socket_connect_timeout=CONNECT_TIMEOUT, socket_keepalive=True,
            health_check_interval=HEALTH_INTERVAL, retry=Retry(NoBackoff(), 0))
        self._registry = registry
        self._cond = threading.Condition()
        self.state: State = "connecting"
        #: Times the connection was (re)established, for the logs and the tests.
        self.subscriptions = 0
        self._thread = threading.Thread(target=self._run, name="pine-ws-redis", daemon=True)
        self._thread.start()

    def wait_first(self, timeout: float) -> State:
        """Wait until the first connection attempt succeeded or failed."""
        with self._cond:
            self._cond.wait_for(lambda: self.state != "connecting", timeout)
            return self.state

    def _set_state(self, state: State) -> None:
        with self._cond:
            self.state = state
            self._cond.notify_all()

    def _run(self) -> None:
        delay = BACKOFF_FIRST
        while True:
            pubsub = self._client.pubsub()
            try:
                pubsub.psubscribe(PREFIX + b"*")
                self._listen(pubsub)
            except (redis.RedisError, OSError) as exc:
                if self.state != "down":
                    _log.warning("Redis subscriber disconnected (%s); reconnecting", exc)
            except Exception:  # noqa: BLE001 - never die silently: the worker would stop receiving
                _log.exception("Redis subscriber failed; reconnecting")
            finally:
                try:
                    pubsub.close()
                except (redis.RedisError, OSError):
                    pass
            if self.state == "subscribed":
                delay = BACKOFF_FIRST
            self._set_state("down")
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, BACKOFF_MAX)

    def _listen(self, pubsub: Any) -> None:
        """Read messages until the connection fails (raises)."""
        heard = time.monotonic()
        pinged = False
        deliver = self._registry.deliver
        prefix_len = len(PREFIX)
        while True:
            message = pubsub.get_message(timeout=HEALTH_INTERVAL)
            now = time.monotonic()
            if message is None:
                if now - heard < HEALTH_INTERVAL:
                    continue
                if pinged and now - heard > 3 * HEALTH_INTERVAL:
                    raise redis.ConnectionError("no reply from Redis to a ping")
                if not pinged:
                    pubsub.ping()
                    pinged = True
                continue
            heard, pinged = now, False
            kind = message["type"]
            if kind == "pmessage":
                payload = from_wire(message["data"])
                if payload is not None:
                    channel = message["channel"][prefix_len:].decode("utf-8", "replace")
                    deliver(channel, payload)
            elif kind == "psubscribe":
                self.subscriptions += 1
                if self.subscriptions > 1:
                    _log.warning("Redis subscriber reconnected")
                self._set_state("subscribed")


class RedisBackend:
    """``PINE_WS_MESSAGE_QUEUE`` set to a Redis URL: channels shared by every process using it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.registry = Registry()
        pool = redis.BlockingConnectionPool.from_url(
            url, max_connections=1, timeout=PUBLISH_TIMEOUT,
            socket_timeout=PUBLISH_TIMEOUT, socket_connect_timeout=CONNECT_TIMEOUT,
            socket_keepalive=True, retry=Retry(NoBackoff(), 1))
        self._publisher = redis.Redis(connection_pool=pool)
        self._subscriber: Subscriber | None = None
        self._lock = threading.Lock()

    @property
    def subscriber(self) -> Subscriber | None:
        """The subscriber, once a member joined in this process."""
        return self._subscriber

    def publish(self, channel: str, payload: Payload) -> None:
        try:
            self._publisher.publish(PREFIX + channel.encode("utf-8"), to_wire(payload))
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise ChannelError(f"cannot publish to channel {channel!r}: Redis at "
                               f"{_safe(self.url)} is unreachable ({exc})") from exc

    def joined(self, channel: str) -> None:
        """Start the subscriber on the first join; wait for its first subscription.

        Once the subscriber is subscribed, every message published after this
        returns reaches the member. If Redis cannot be reached, this returns
        after :data:`FIRST_SUBSCRIBE_TIMEOUT` at most (at once on later joins):
        the member is in place, and receives once the subscriber is back.
        """
        with self._lock:
            if self._subscriber is None:
                self._subscriber = Subscriber(self.url, self.registry)
            subscriber = self._subscriber
        subscriber.wait_first(FIRST_SUBSCRIBE_TIMEOUT)


def _safe(url: str) -> str:
    """``url`` without its password, for error messages."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = rest.rsplit("@", 1)[1]
    return scheme + sep + rest
