"""The connection's protocol in-process: a real Conn on socket.socketpair() and a wsproto client.

The fast tier: the send path under concurrency and partial writes, close
codes, the bounded inbound queue, the feeds' try-send, deflate bombs
and the shutdown's parallel close. wsproto's client checks every frame the
server writes, so an interleaved or partial frame fails the test.
"""

from __future__ import annotations

import random
import resource
import socket
import ssl
import subprocess
import threading
import time
import zlib

import pytest
from wspeer import client_frame, conn_pair
from wsproto.events import BytesMessage, CloseConnection, Message, Ping, Pong, TextMessage
from wsproto.extensions import PerMessageDeflate

from flask_pine_ws import Config, ConnectionClosed, shutdown
from flask_pine_ws.protocol import server_frame


def test_messages_both_ways_with_and_without_deflate() -> None:
    for deflate in (False, True):
        with conn_pair(deflate=deflate) as (conn, peer):
            peer.send(TextMessage(data="héllo"))
            peer.send(BytesMessage(data=b"\x00\x01"))
            assert conn.receive(5) == "héllo"
            assert conn.receive(5) == b"\x00\x01"
            conn.send("ünïcode " * 1000)
            conn.send(b"\xff" * 70_000)
            assert peer.message() == "ünïcode " * 1000
            assert peer.message() == b"\xff" * 70_000
            assert peer.accepted is not None
            extensions = peer.accepted.extensions
            assert [type(e) for e in extensions] == ([PerMessageDeflate] if deflate else [])


def test_compression_off_is_not_negotiated_though_offered() -> None:
    with conn_pair(Config(enable_compression=False), deflate=True) as (conn, peer):
        conn.send("x" * 1000)
        assert peer.message() == "x" * 1000
        assert peer.accepted is not None and peer.accepted.extensions == []


def test_subprotocol_is_the_clients_first_the_route_allows() -> None:
    with conn_pair(Config(subprotocols=["b", "a"]), subprotocols=["x", "a", "b"]) as (conn, _):
        assert conn.subprotocol == "a"


def test_concurrent_sends_pings_and_feed_frames_never_interleave() -> None:
    """8 threads sending, a feed's try-send and the peer's pings, through small buffers."""
    frame = server_frame("text", b"feed " * 500)
    with conn_pair(buffer=4096, ping_interval=0) as (conn, peer):
        stop = threading.Event()

        def sender(n: int) -> None:
            rnd = random.Random(n)
            for i in range(60):
                size = rnd.choice((1, 100, 5000, 40_000))
                conn.send(f"{n}:{i}:" + "x" * size if i % 2 else f"{n}:{i}:".encode() * size)

        def feed() -> None:
            while not stop.is_set():
                conn.try_send_frame(frame)
                time.sleep(0.001)

        threads = [threading.Thread(target=sender, args=(n,)) for n in range(8)]
        threads.append(threading.Thread(target=feed))
        for t in threads:
            t.start()
        seen: dict[int, int] = {}
        feed_frames = pongs = pings = events = 0
        deadline = time.monotonic() + 60
        try:
            while sum(seen.values()) < 8 * 60 and time.monotonic() < deadline:
                # a few pings, not one per event: a client that only writes
                # while the server waits for it to read would fill its own
                # buffer (TCP, not the server)
                events += 1
                if events % 20 == 0 and pings < 40:
                    peer.send(Ping(payload=b"p"))
                    pings += 1
                event = peer.next_event()
                if isinstance(event, Pong):
                    pongs += 1
                elif isinstance(event, (TextMessage, BytesMessage)):
                    data = event.data if isinstance(event.data, str) else event.data.decode()
                    if data.startswith("feed "):
                        assert data == "feed " * 500
                        feed_frames += 1
                    else:
                        n, i = (int(x) for x in data.split(":")[:2])
                        assert seen.get(n, 0) == i, "messages of one thread out of order"
                        seen[n] = i + 1
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert seen == {n: 60 for n in range(8)}
        while conn.try_send_frame(frame) == 0:
            time.sleep(0.01)
        while pongs < pings or not feed_frames:
            event = peer.next_event()
            if isinstance(event, Pong):
                pongs += 1
            elif isinstance(event, TextMessage):
                assert event.data == "feed " * 500
                feed_frames += 1
        assert pings > 0 and pongs == pings


def test_a_frame_written_in_part_is_committed_and_finished_first() -> None:
    frame = server_frame("bytes", b"F" * 400_000)
    with conn_pair(buffer=4096) as (conn, peer):
        taken = conn.try_send_frame(frame)
        assert 0 < taken < len(frame)  # the socket took part of it: committed
        assert conn.viewed_bytes == 0  # a connection counts no file bytes by itself
        assert conn.try_send_frame(server_frame("bytes", b"second")) == 0  # rest not out
        sender = threading.Thread(target=conn.send, args=("after",))
        sender.start()
        assert peer.message() == b"F" * 400_000
        assert peer.message() == "after"
        sender.join()
        conn.flush()  # nothing left: returns at once


def test_flush_writes_the_rest_alone() -> None:
    frame = server_frame("text", b"y" * 300_000)
    with conn_pair(buffer=4096) as (conn, peer):
        assert conn.try_send_frame(frame) > 0
        flusher = threading.Thread(target=conn.flush)
        flusher.start()
        assert peer.message() == "y" * 300_000
        flusher.join()
        assert conn.try_send_frame(server_frame("text", b"next")) > 0
        assert peer.message() == "next"


def test_try_send_frame_writes_nothing_after_a_close() -> None:
    with conn_pair() as (conn, peer):
        conn.close(4001, "done")
        assert conn.try_send_frame(server_frame("text", b"late")) == 0
        assert peer.closed() == (4001, "done")
        with pytest.raises(ConnectionClosed) as info:
            conn.send("x")
        assert (info.value.code, info.value.reason) == (4001, "done")


@pytest.mark.parametrize(("code", "reason"), [(1000, ""), (1001, "bye"), (4999, "ü" * 40)])
def test_close_codes_as_the_peer_sees_them(code: int, reason: str) -> None:
    with conn_pair() as (conn, peer):
        conn.close(code, reason)
        assert peer.closed() == (code, reason)
        assert (conn.close_code, conn.close_reason) == (code, reason)
        assert not conn.connected


def test_the_peers_close_is_answered_and_kept() -> None:
    with conn_pair() as (conn, peer):
        peer.send(CloseConnection(code=4002, reason="client done"))
        assert peer.closed() == (4002, "client done")  # the echo
        with pytest.raises(ConnectionClosed):
            conn.receive(5)
        assert (conn.close_code, conn.close_reason) == (4002, "client done")


def test_a_peer_that_vanishes_is_1006_and_every_call_raises() -> None:
    with conn_pair() as (conn, peer):
        peer.sock.shutdown(socket.SHUT_RDWR)
        with pytest.raises(ConnectionClosed) as info:
            conn.receive(5)
        assert info.value.code == 1006 and conn.close_code == 1006
        with pytest.raises(ConnectionClosed):
            conn.send("x")


def test_message_too_big_is_1009_counting_fragments() -> None:
    with conn_pair(Config(max_message_size=1000)) as (conn, peer):
        peer.send(Message(data=b"a" * 600, message_finished=False))
        peer.send(Message(data=b"a" * 600, message_finished=True))
        assert peer.closed() == (1009, "Message is too big")
        with pytest.raises(ConnectionClosed) as info:
            conn.receive(5)
        assert (info.value.code, info.value.reason) == (1009, "Message is too big")


def test_a_deflate_bomb_is_1009_and_never_inflated_past_the_limit() -> None:
    # one read takes the whole bomb: wsproto alone would inflate it in one call
    config = Config(max_message_size=64 * 1024, read_buffer_size=1 << 20)
    with conn_pair(config, deflate=True) as (conn, peer):
        # a block that inflates to 1 MiB of zeros on its own (a full flush
        # cuts every back-reference): repeated, a 64 MiB bomb in 64 kB
        compress = zlib.compressobj(9, zlib.DEFLATED, -15)
        block = compress.compress(bytes(1 << 20)) + compress.flush(zlib.Z_FULL_FLUSH)
        bomb = block * 64
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        # the frame by hand: RSV1 set (compressed), masked as a client's must be
        peer.sock.sendall(client_frame(0x2, bomb[:-4], rsv1=True))
        assert peer.closed(30) == (1009, "Message is too big")
        with pytest.raises(ConnectionClosed):
            conn.receive(5)
        # inflated whole, the bomb would have raised the peak by 64 MiB
        grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        assert grown_kib < 32 * 1024


def test_a_compressed_message_within_the_limit_arrives_whole() -> None:
    with conn_pair(Config(max_message_size=200_000), deflate=True) as (conn, peer):
        peer.send(TextMessage(data="z" * 200_000))
        assert conn.receive(10) == "z" * 200_000
        peer.send(TextMessage(data="z" * 200_001))
        assert peer.closed() == (1009, "Message is too big")


def test_a_handler_that_does_not_read_stops_the_reading_and_tcp_pushes_back() -> None:
    with conn_pair(buffer=4096, max_queued_messages=8, max_queued_bytes=1 << 20) as (conn, peer):
        peer.sock.setblocking(False)
        sent = 0
        message = peer.ws.send(BytesMessage(data=b"m" * 1000))
        stalled_at = None
        for _ in range(2000):
            try:
                peer.sock.sendall(message)
                sent += 1
            except BlockingIOError:
                stalled_at = sent
                break
        # the server read 8 messages (plus at most one read's worth), then
        # stopped: the socket buffers fill and the client can write no more
        assert stalled_at is not None and stalled_at < 200
        peer.sock.setblocking(True)
        assert conn.receive(5) == b"m" * 1000


def test_the_queue_resumes_when_the_handler_reads_and_nothing_is_lost() -> None:
    with conn_pair(max_queued_messages=4, max_queued_bytes=10_000) as (conn, peer):
        total = 500
        writer = threading.Thread(
            target=lambda: [peer.send(TextMessage(data=f"{i}:" + "q" * 200)) for i in range(total)])
        writer.start()
        for i in range(total):
            assert conn.receive(10) == f"{i}:" + "q" * 200
        writer.join()


def test_discard_inbound_drops_messages_and_keeps_reading() -> None:
    with conn_pair(buffer=4096, max_queued_messages=2) as (conn, peer):
        conn.discard_inbound()
        for _ in range(3000):  # far past the bound and the socket buffers
            peer.send(BytesMessage(data=b"d" * 1000))
        assert conn.receive(0.2) is None  # nothing held
        peer.send(Ping(payload=b"still"))
        event = peer.next_event()
        assert isinstance(event, Pong) and event.payload == b"still"
        peer.send(CloseConnection(code=1000))
        assert peer.closed() == (1000, "")
        with pytest.raises(ConnectionClosed):
            conn.receive(5)


def test_pings_go_out_and_an_unanswered_one_drops_the_peer() -> None:
    with conn_pair(ping_interval=0.2, pong_timeout=0.5) as (conn, peer):
        event = peer.next_event(5)
        assert isinstance(event, Ping)
        # never answered: 1008 after the pong timeout
        code, reason = peer.closed(10)
        assert (code, reason) == (1008, "Ping/Pong timeout")
        assert conn.close_code == 1008


def test_answered_pings_keep_the_connection() -> None:
    with conn_pair(ping_interval=0.1, pong_timeout=0.3) as (conn, peer):
        deadline = time.monotonic() + 0.9  # three pong timeouts
        while time.monotonic() < deadline:
            event = peer.next_event(5)
            if isinstance(event, Ping):
                peer.send(event.response())
        assert conn.connected


def test_shutdown_closes_healthy_peers_at_once_whatever_the_stalled_ones_do() -> None:
    """Stalled handlers block in send on peers that never read; the others get 1001 at once."""
    from contextlib import ExitStack

    with ExitStack() as stack:
        healthy = [stack.enter_context(conn_pair()) for _ in range(5)]
        stalled = [stack.enter_context(conn_pair(buffer=4096, send_timeout=30.0))
                   for _ in range(10)]
        senders = []
        for conn, _ in stalled:
            def flood(c=conn) -> None:  # type: ignore[no-untyped-def]
                try:
                    while True:
                        c.send(b"s" * 100_000)
                except ConnectionClosed:
                    pass
            senders.append(threading.Thread(target=flood))
        for t in senders:
            t.start()
        time.sleep(0.3)  # every stalled sender now blocks holding its send lock
        for conn, _ in healthy + stalled:
            shutdown.register(conn)
        started = time.monotonic()
        try:
            shutdown.close_all()
            for _, peer in healthy:
                assert peer.closed(5) == (1001, "server shutting down")
            took = time.monotonic() - started
            # one by one, the 10 stalled ones would take 1 s each first: the
            # bound says the healthy ones never waited for them (measured: ms)
            assert took < 3.0, f"healthy peers waited {took:.2f}s"
            for t in senders:
                t.join(10)
                assert not t.is_alive()
        finally:
            for conn, _ in healthy + stalled:
                shutdown.unregister(conn)
            shutdown.stopping.clear()
            for t in threading.enumerate():
                if t.name == "pine-ws-shutdown":
                    t.join(5)


def test_over_tls_messages_and_buffered_records_are_all_read(tmp_path) -> None:
    """TLS holds decrypted bytes the fd does not show: the reader must not wait on them."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE
    raw_server, raw_client = socket.socketpair()
    tls_server = server_ctx.wrap_socket(raw_server, server_side=True, do_handshake_on_connect=False)
    tls_client = client_ctx.wrap_socket(raw_client, do_handshake_on_connect=False)
    shaker = threading.Thread(target=tls_server.do_handshake)
    shaker.start()
    tls_client.do_handshake()
    shaker.join()
    with conn_pair(pair=(tls_server, tls_client)) as (conn, peer):
        assert not conn.shares_frames
        assert conn.try_send_frame(server_frame("text", b"no")) == 0
        # many messages in one write: one TLS record, read in small pieces
        peer.sock.sendall(b"".join(peer.ws.send(TextMessage(data=f"m{i}")) for i in range(2000)))
        assert [conn.receive(5) for _ in range(2000)] == [f"m{i}" for i in range(2000)]
        conn.send("big " * 50_000)
        assert peer.message() == "big " * 50_000
        conn.close(4003, "tls done")
        assert peer.closed() == (4003, "tls done")



def test_listeners_hear_messages_and_the_end_but_not_discarded_messages() -> None:
    with conn_pair() as (conn, peer):
        heard = threading.Event()
        calls: list[int] = []

        def listener() -> None:
            calls.append(1)
            heard.set()

        conn.add_listener(listener)
        peer.send(TextMessage(data="one"))
        assert heard.wait(5) and conn.receive(5) == "one"
        conn.discard_inbound()
        heard.clear()
        peer.send(TextMessage(data="dropped"))
        peer.send(Ping(payload=b"sync"))  # answered after the message was handled
        assert isinstance(peer.next_event(), Pong)
        assert not heard.is_set()
        peer.send(CloseConnection(code=1000))
        assert heard.wait(5) and not conn.connected
        conn.remove_listener(listener)
        conn.remove_listener(listener)  # a second time: ignored
