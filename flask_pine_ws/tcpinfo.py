"""What the kernel knows of one TCP connection: Linux's ``TCP_INFO``, parsed in one place.

This module owns the layout of ``struct tcp_info`` (``linux/tcp.h``) as far as
the package reads it: the byte counters the access log reports, and the
figures the send path weighs compression with (how fast the connection
delivers, its round trip, what still waits in the socket). Everything is
read with one ``getsockopt`` call (~1 us); a socket that has none (a Unix
socket, a socket pair, another system) or a kernel older than a field gives
``None`` for the whole or that field.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

#: Bytes asked for: more than any kernel's ``struct tcp_info`` so far (it grows at its end).
_SIZE = 256

# struct tcp_info up to tcpi_delivery_rate, in one unpack: the flags byte at 7
# (tcpi_delivery_rate_app_limited is its low bit), tcpi_snd_mss at 16,
# tcpi_rtt at 68, tcpi_snd_cwnd at 80, tcpi_bytes_acked and
# tcpi_bytes_received at 120, tcpi_notsent_bytes and tcpi_min_rtt at 144,
# tcpi_delivery_rate at 160 (fixed-size fields: the same on every Linux ABI).
_FIELDS = struct.Struct("=7xB8xI48xI8xI36xQQ8xII8xQ")
# Kernels before 4.9 end earlier: the byte counters (4.1) are the least read.
_BYTES = struct.Struct("=QQ")
_BYTES_AT = 120

_HAS_TCP_INFO = hasattr(socket, "TCP_INFO")


@dataclass(frozen=True, slots=True)
class TcpInfo:
    """One reading of a connection's ``TCP_INFO`` (rates in bytes a second, times in seconds).

    :ivar bytes_acked: bytes sent and acknowledged by the peer.
    :ivar bytes_received: bytes received.
    :ivar rtt: the smoothed round trip; ``min_rtt``: the smallest seen.
    :ivar cwnd_bytes: the congestion window in bytes (segments x MSS).
    :ivar delivery_rate: the kernel's latest sample of the rate data reached
        the peer; 0 until something was acknowledged. With ``app_limited``
        the sender had too little to send: the link may be faster.
    :ivar notsent: bytes written to the socket and not yet sent.
    """

    bytes_acked: int
    bytes_received: int
    rtt: float
    min_rtt: float
    cwnd_bytes: int
    delivery_rate: float
    app_limited: bool
    notsent: int

    @property
    def link_rate(self) -> float:
        """Bytes a second the connection can carry now, as far as the kernel can tell.

        The larger of the last delivery rate and a congestion window per
        round trip: on a fresh connection only the handshake was delivered
        (a small, application-limited sample), and the window per round trip
        is then what TCP will send at first; once data flows, the two agree
        with the bottleneck's rate. 0: nothing known.
        """
        window = self.cwnd_bytes / self.rtt if self.rtt > 0 else 0.0
        return max(self.delivery_rate, window)


def read(sock: socket.socket | None) -> TcpInfo | None:
    """``sock``'s ``TCP_INFO`` now, or ``None`` where there is none."""
    if sock is None or not _HAS_TCP_INFO:
        return None
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _SIZE)
    except OSError:
        return None  # not TCP (a Unix socket, a socket pair), or closed
    if len(raw) >= _FIELDS.size:
        flags, mss, rtt, cwnd, acked, received, notsent, min_rtt, delivery = \
            _FIELDS.unpack_from(raw)
        return TcpInfo(bytes_acked=acked, bytes_received=received, rtt=rtt / 1e6,
                       min_rtt=min_rtt / 1e6, cwnd_bytes=cwnd * mss,
                       delivery_rate=float(delivery), app_limited=bool(flags & 1),
                       notsent=notsent)
    if len(raw) < _BYTES_AT + _BYTES.size:
        return None  # older than the byte counters (Linux 4.1)
    acked, received = _BYTES.unpack_from(raw, _BYTES_AT)
    return TcpInfo(bytes_acked=acked, bytes_received=received, rtt=0.0, min_rtt=0.0,
                   cwnd_bytes=0, delivery_rate=0.0, app_limited=False, notsent=0)

__all__ = ["TcpInfo", "read"]
