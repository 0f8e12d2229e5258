"""The per-message compression choice: the rule itself, and the wire it produces.

The fast tier: :func:`compress_wins` and :class:`Chooser` on their inputs
alone, then a real :class:`Protocol` on ``socket.socketpair()`` (and on a
loopback TCP pair, for the kernel's figures) read by wsproto's client, which
inflates every compressed message with the context the earlier ones built:
any message compressed past the peer's back, or a plain one fed to the
compressor, breaks every later message.
"""

from __future__ import annotations

import random
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from wspeer import FrameReader, Peer, accept, environ_from, handshake
from wsproto import ConnectionType, WSConnection
from wsproto.events import Request
from wsproto.extensions import PerMessageDeflate

from flask_pine_ws import tcpinfo
from flask_pine_ws.compression import (
    MIN_SIZE,
    PROBE_EVERY,
    Chooser,
    Meter,
    compress_wins,
    parse_choice,
)
from flask_pine_ws.protocol import Protocol, Settings

MB = 1e6
ZLIB = 150 * MB  # zlib level 1 on log text, roughly, on the machines here


# -- the rule ---------------------------------------------------------------------

@pytest.mark.parametrize(("size", "link", "queued", "wins"), [
    (65536, 1.25 * MB, 0, True),  # 10 Mbit/s
    (65536, 12.5 * MB, 0, True),  # 100 Mbit/s
    (65536, 10_000 * MB, 0, False),  # loopback
    (65536, 200 * MB, 0, False),  # faster than zlib x (1 - ratio) ...
    (65536, 200 * MB, 1_000_000, True),  # ... unless the socket holds 5 ms of bytes
    (65536, 0.0, 0, True),  # no figure for the link: it may be slow
    (MIN_SIZE - 1, 1.25 * MB, 0, False),  # too small to bother
    (MIN_SIZE, 1.25 * MB, 0, True),
])
def test_compress_when_it_reaches_the_peer_sooner(size: int, link: float, queued: int,
                                                   wins: bool) -> None:
    assert compress_wins(size, zlib_rate=ZLIB, ratio=0.12, link_rate=link,
                         queued=queued) is wins


def test_the_threshold_is_zlib_times_what_it_saves() -> None:
    """On an idle socket: compress exactly when the link is slower than zlib x (1 - ratio)."""
    for ratio in (0.05, 0.3, 0.9):
        edge = ZLIB * (1 - ratio)
        assert compress_wins(65536, zlib_rate=ZLIB, ratio=ratio, link_rate=edge * 0.99)
        assert not compress_wins(65536, zlib_rate=ZLIB, ratio=ratio, link_rate=edge * 1.01)
    assert not compress_wins(65536, zlib_rate=ZLIB, ratio=1.0, link_rate=1.0)


def _info(link: float, notsent: int = 0) -> tcpinfo.TcpInfo:
    return tcpinfo.TcpInfo(bytes_acked=0, bytes_received=0, rtt=0.0, min_rtt=0.0,
                           cwnd_bytes=0, delivery_rate=link, app_limited=False,
                           notsent=notsent)


def test_the_chooser_is_deterministic_given_its_inputs() -> None:
    rnd = random.Random(7)
    inputs = [(rnd.choice((10, 200, 65536)), rnd.choice((1e6, 1e7, 1e8, 1e10)),
               rnd.choice((0, 10**6)), rnd.uniform(0.02, 1.0)) for _ in range(500)]

    def run() -> list[bool]:
        chooser = Chooser("auto", Meter())
        out = []
        for size, link, queued, ratio in inputs:
            decided = chooser.decide(size, lambda: _info(link, queued))  # noqa: B023
            if decided:
                chooser.record(size, int(size * ratio), size / ZLIB)
            out.append(decided)
        return out

    first = run()
    assert first == run()
    assert any(first) and not all(first)


def test_fixed_choices_and_the_kernel_read_only_when_needed() -> None:
    reads = []

    def read() -> tcpinfo.TcpInfo | None:
        reads.append(1)
        return _info(1e6)

    assert Chooser("always", Meter()).decide(1, read)
    assert not Chooser("always", Meter()).decide(0, read)
    assert not Chooser("never", Meter()).decide(65536, read)
    assert not Chooser("auto", Meter()).decide(MIN_SIZE - 1, read)
    assert not reads
    assert Chooser("auto", Meter()).decide(MIN_SIZE, read)
    assert reads == [1]
    assert Chooser("auto", Meter()).decide(65536, lambda: None)  # no TCP_INFO: compress


def test_content_that_does_not_compress_is_probed_now_and_then() -> None:
    chooser = Chooser("auto", Meter())
    slow = _info(1.25e6)
    assert chooser.decide(65536, lambda: slow)
    for _ in range(100):  # random bytes: the ratio climbs past 1
        chooser.record(65536, 65600, 65536 / ZLIB)
    decisions = [chooser.decide(65536, lambda: slow) for _ in range(3 * PROBE_EVERY)]
    assert decisions.count(True) == 3
    assert decisions[PROBE_EVERY - 1] and decisions[2 * PROBE_EVERY - 1]
    # on a fast link the ratio is not what says no: nothing to probe
    fast = _info(1e10)
    assert not any(chooser.decide(65536, lambda: fast) for _ in range(3 * PROBE_EVERY))


def test_meter_figures_follow_what_was_measured() -> None:
    meter = Meter(rate=100 * MB, ratio=0.5)
    assert meter.rate == pytest.approx(100 * MB)
    assert meter.ratio == pytest.approx(0.5)
    for _ in range(200):
        meter.record(65536, 6554, 65536 / (400 * MB))
    assert meter.rate == pytest.approx(400 * MB, rel=0.01)
    assert meter.ratio == pytest.approx(0.1, rel=0.01)


def test_the_setting_takes_three_values() -> None:
    assert [parse_choice(v) for v in ("auto", "always", "never")] == ["auto", "always", "never"]
    for bad in ("yes", True, None):
        with pytest.raises(ValueError, match="PINE_WS_DEFLATE_CHOICE"):
            parse_choice(bad)


# -- the wire ---------------------------------------------------------------------

def _tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    return server, client


@contextmanager
def protocol_pair(*, tcp: bool = False, choice: str = "auto",
                  no_context_takeover: bool = False) -> Iterator[tuple[Protocol, FrameReader]]:
    """A server Protocol that negotiated permessage-deflate, and its reading client."""
    server_sock, client_sock = _tcp_pair() if tcp else socket.socketpair()
    try:
        if no_context_takeover:
            client = WSConnection(ConnectionType.CLIENT)
            request = client.send(Request(host="peer.test", target="/", extensions=[
                PerMessageDeflate(server_no_context_takeover=True)]))
            environ = environ_from(request, server_sock)
        else:
            client, environ = handshake(server_sock, deflate=True)
        proto = Protocol(environ, Settings(compression=True, deflate_choice=parse_choice(choice),
                                           send_timeout=10.0),
                         lambda: None)
    except BaseException:
        server_sock.close()
        client_sock.close()
        raise
    try:
        peer = Peer(client_sock, client)
        accept(peer)  # the 101: whatever came after it stays in the client's buffer
        assert proto.compressing
        yield proto, FrameReader(client_sock, client)
    finally:
        client_sock.close()
        proto.abort()
        proto.join(5)
        server_sock.close()


def _nbytes(payload: str | bytes) -> int:
    return len(payload.encode() if isinstance(payload, str) else payload)


@contextmanager
def sending(send: Callable[[], object]) -> Iterator[None]:
    """Run ``send`` on a thread while the body reads; fail with what it raised."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            send()
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        yield
    finally:
        thread.join(30)
    assert not thread.is_alive()
    if errors:
        raise errors[0]


def _payloads(rnd: random.Random, count: int) -> list[str | bytes]:
    words = ["GET", "/api/orders", "200", "INFO", "ERROR", "café ☕", "retrying", "\n"]
    out: list[str | bytes] = []
    for i in range(count):
        size = rnd.choice((0, 1, 50, MIN_SIZE, 300, 4000, 65536, 200_000))
        text = " ".join(rnd.choice(words) for _ in range(size // 5 + 1))[:size]
        if i % 3 == 0:
            out.append(text.encode() if rnd.random() < 0.7 else rnd.randbytes(size))
        else:
            out.append(text)
    return out


@pytest.mark.parametrize("no_context_takeover", [False, True], ids=["context", "no-context"])
def test_plain_and_compressed_messages_interleaved_arrive_whole(
        no_context_takeover: bool) -> None:
    """300 messages of random sizes, each forced one way or the other at random."""
    rnd = random.Random(42)
    payloads = _payloads(rnd, 300)
    forced = [rnd.choice(("always", "never")) for _ in payloads]
    with protocol_pair(no_context_takeover=no_context_takeover) as (proto, reader):
        def send() -> None:
            for payload, choice in zip(payloads, forced, strict=True):
                proto.chooser.choice = choice  # type: ignore[assignment]
                proto.send_message(payload)

        with sending(send):
            assert reader.read_messages(len(payloads)) == payloads
        expected = [c == "always" and len(p) > 0 for p, c in zip(payloads, forced, strict=True)]
        assert reader.rsv1 == expected


def test_the_same_messages_whichever_way_they_were_sent() -> None:
    rnd = random.Random(3)
    payloads = _payloads(rnd, 120)
    received = {}
    for choice in ("always", "never", "auto"):
        with protocol_pair(choice=choice) as (proto, reader):
            with sending(lambda: [proto.send_message(p) for p in payloads]):
                received[choice] = list(reader.read_messages(len(payloads)))
            if choice == "never":
                assert not any(reader.rsv1)
            elif choice == "always":
                assert reader.rsv1 == [len(p) > 0 for p in payloads]
            else:  # a socket pair: no TCP_INFO, so each message big enough is compressed
                assert reader.rsv1 == [_nbytes(p) >= MIN_SIZE for p in payloads]
    assert received["always"] == received["never"] == received["auto"] == payloads


def test_loopback_tcp_sends_big_messages_plain_and_a_slow_link_would_not() -> None:
    """The kernel's figures for a loopback connection put it far above zlib: plain."""
    with protocol_pair(tcp=True) as (proto, reader):
        info = tcpinfo.read(proto._sock)  # the kernel's view of this socket
        assert info is not None and info.link_rate > 1e9
        blob = b"2026-11-29 14:00:00.000 INFO  [http] GET /api/orders/1 200 3ms\n" * 1024
        with sending(lambda: [proto.send_message(blob) for _ in range(40)]):
            assert reader.read_messages(40) == [blob] * 40
        assert reader.rsv1 == [False] * 40
        # the same connection, told the link were 10 Mbit/s, compresses
        assert proto.chooser.decide(len(blob), lambda: _info(1.25e6))
