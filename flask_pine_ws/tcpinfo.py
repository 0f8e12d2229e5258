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

#: ``struct tcp_info`` up to ``tcpi_delivery_rate`` (Linux 4.9); longer kernels append.
_SIZE = 256

# Offsets in struct tcp_info (x86-64 and every Linux ABI: fixed-size fields).
_FLAGS = 7  # tcpi_delivery_rate_app_limited:1 is the low bit of this byte
_SND_MSS = struct.Struct("=I")  # at 16
_RTT_CWND = struct.Struct("=IIII")  # tcpi_rtt, rttvar, snd_ssthresh, snd_cwnd at 68
_BYTES = struct.Struct("=QQ")  # tcpi_bytes_acked, tcpi_bytes_received at 120
_NOTSENT = struct.Struct("=II")  # tcpi_notsent_bytes, tcpi_min_rtt at 144
_DELIVERY = struct.Struct("=Q")  # tcpi_delivery_rate at 160

_HAS_TCP_INFO = hasattr(socket, "TCP_INFO")


@dataclass(frozen=True)
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
    if len(raw) < 136:  # older than the byte counters (Linux 4.1)
        return None
    (mss,) = _SND_MSS.unpack_from(raw, 16)
    rtt, _, _, cwnd = _RTT_CWND.unpack_from(raw, 68)
    acked, received = _BYTES.unpack_from(raw, 120)
    notsent = min_rtt = 0
    delivery = 0
    if len(raw) >= 152:
        notsent, min_rtt = _NOTSENT.unpack_from(raw, 144)
    if len(raw) >= 168:
        (delivery,) = _DELIVERY.unpack_from(raw, 160)
    return TcpInfo(bytes_acked=int(acked), bytes_received=int(received),
                   rtt=rtt / 1e6, min_rtt=min_rtt / 1e6, cwnd_bytes=int(cwnd) * int(mss),
                   delivery_rate=float(delivery), app_limited=bool(raw[_FLAGS] & 1),
                   notsent=int(notsent))


__all__ = ["TcpInfo", "read"]
