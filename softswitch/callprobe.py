"""A call's RTP and the daemon's SIP answers, measured from outside: what a benchmark or a
test watches while something else (an attack, a load) runs.

Two ends of a call (sockets whose packets the daemon relays to each other) and an OPTIONS
prober, on threads of their own so that nothing here waits for an event loop: one thread
sends each end's PCMU packet and one OPTIONS every tick against absolute deadlines (never a
burst to catch up), the other receives on every socket, the kernel stamping each
datagram's arrival (``SO_TIMESTAMPNS``), so a late wake-up of this process (two shared
cores, an attacker at full speed) is not counted as the daemon's delay.
:meth:`Probe.window` gives the worst gap between relayed packets and the OPTIONS round
trips of a time window.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import secrets
import selectors
import socket
import statistics
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any

HOST = "127.0.0.1"
TICK = 0.02  # one RTP packet per end and one OPTIONS per tick
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)


@dataclass(eq=False)
class End:
    """One end of the call: its RTP socket, where the daemon wants its packets, and the
    arrival time of every packet the daemon relayed to it."""

    sock: socket.socket
    ssrc: int
    remote: tuple[str, int] | None = None
    seq: int = 0
    arrivals: list[float] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])


class Probe:
    """Two threads: one sends each end's packet and an OPTIONS every tick (absolute
    deadlines, never a burst to catch up), one receives on every socket and timestamps."""

    def __init__(self, sip_port: int) -> None:
        self.sip = (HOST, sip_port)
        self.ends = [End(self._bound(), 0x5A110000 + i) for i in range(2)]
        self.options = self._bound()
        self.sent: dict[int, float] = {}  # OPTIONS CSeq -> when sent
        self.answered: dict[int, float] = {}  # CSeq -> round trip (s)
        # (due, how late it went out) per tick: a gap the sender made is not the daemon's
        self.late: list[tuple[float, float]] = []
        self._tag = secrets.token_hex(4)
        self._realtime_offset = time.time() - time.monotonic()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._send, daemon=True),
            threading.Thread(target=self._receive, daemon=True),
        ]

    @staticmethod
    def _bound() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((HOST, 0))
        s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        return s

    def _arrival(self, ancillary: list[tuple[int, int, bytes]]) -> float:
        """The kernel's arrival stamp (real time) on the monotonic clock."""
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
                seconds, nanoseconds = struct.unpack("qq", data[:16])
                return float(seconds + nanoseconds / 1e9 - self._realtime_offset)
        return time.monotonic()

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(2)
        for end in self.ends:
            end.sock.close()
        self.options.close()

    def _options(self, cseq: int) -> bytes:
        port = self.options.getsockname()[1]
        target = f"sip:{self.sip[0]}:{self.sip[1]}"
        return (
            f"OPTIONS {target} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {HOST}:{port};branch=z9hG4bK{self._tag}{cseq};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:probe@{HOST}>;tag={self._tag}\r\n"
            f"To: <{target}>\r\n"
            f"Call-ID: stall-{self._tag}-{cseq}\r\n"
            f"CSeq: {cseq} OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()

    def _send(self) -> None:
        payload = b"\xff" * 160  # PCMU silence
        start = time.monotonic()
        n = 0
        cseq = 0
        while not self._stop.is_set():
            due = start + n * TICK
            delay = due - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            elif delay < -5 * TICK:  # this process was not scheduled: skip, do not burst
                n = int((time.monotonic() - start) / TICK)
            self.late.append((due, time.monotonic() - due))
            for end in self.ends:
                if end.remote is not None:
                    header = struct.pack("!BBHII", 0x80, 0, end.seq, end.seq * 160, end.ssrc)
                    end.seq = (end.seq + 1) & 0xFFFF
                    with contextlib.suppress(OSError):
                        end.sock.sendto(header + payload, end.remote)
            n += 1
            cseq += 1
            self.sent[cseq] = time.monotonic()
            with contextlib.suppress(OSError):
                self.options.sendto(self._options(cseq), self.sip)

    def _receive(self) -> None:
        cseq = re.compile(rb"\r\nCSeq: *(\d+) +OPTIONS", re.IGNORECASE)
        with selectors.DefaultSelector() as sel:
            for end in self.ends:
                sel.register(end.sock, selectors.EVENT_READ, (end.sock, end))
            sel.register(self.options, selectors.EVENT_READ, (self.options, None))
            while not self._stop.is_set():
                for key, _ in sel.select(0.1):
                    sock, end = key.data
                    try:
                        data, ancillary, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(16))
                    except OSError:
                        continue
                    now = self._arrival(ancillary)
                    if end is not None:
                        if len(data) > 12 and data[1] & 0x7F == 0:
                            end.arrivals.append(now)
                    elif (m := cseq.search(data)) is not None:
                        n = int(m[1])
                        if n in self.sent and n not in self.answered:
                            self.answered[n] = now - self.sent[n]

    def flowing(self, packets: int) -> bool:
        """Each end has received ``packets`` relayed packets."""
        return all(len(end.arrivals) >= packets for end in self.ends)

    def asked(self, t0: float, t1: float) -> list[int]:
        """The OPTIONS (CSeq) sent from ``t0`` to ``t1``."""
        return [n for n, t in self.sent.copy().items() if t0 <= t <= t1]

    def recent_rtt_ms(self, last: int = 10) -> float | None:
        """The worst round trip of the last ``last`` OPTIONS sent at least 0.1 s ago
        (None if one is unanswered)."""
        now = time.monotonic()
        old = [n for n, t in self.sent.copy().items() if now - t > 0.1][-last:]
        if len(old) < last or any(n not in self.answered for n in old):
            return None
        return max(self.answered[n] for n in old) * 1000

    def window(self, t0: float, t1: float) -> dict[str, Any]:
        """RTP and OPTIONS figures for the time from ``t0`` to ``t1``."""
        worst = 0.0
        packets = 0
        for end in self.ends:
            inside = [t for t in list(end.arrivals) if t0 < t < t1]
            packets += len(inside)
            points = [t0, *inside, t1]
            worst = max(worst, max(b - a for a, b in itertools.pairwise(points)))
        asked = self.asked(t0, t1)
        rtts = [self.answered[n] * 1000 for n in asked if n in self.answered]
        return {
            "seconds": round(t1 - t0, 2),
            "worst_gap_ms": round(worst * 1000, 1),
            "packets": packets,
            "expected_packets": round((t1 - t0) / TICK) * len(self.ends),
            "probe_late_max_ms": round(
                max((late for due, late in list(self.late) if t0 <= due <= t1), default=0) * 1000,
                1,
            ),
            "options_sent": len(asked),
            "options_lost": len(asked) - len(rtts),
            "options_rtt_median_ms": round(statistics.median(rtts), 2) if rtts else None,
            "options_rtt_max_ms": round(max(rtts), 1) if rtts else None,
        }
