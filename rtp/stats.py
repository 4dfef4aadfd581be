"""RFC 3550 receiver statistics and the RTCP report interval, pure (time passed in).

Loss (expected vs received, cumulative and per interval), interarrival jitter (§6.4.1,
A.8) in timestamp units, and the randomised transmission interval of §6.3.1 / A.7.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from .packet import ReportBlock, SequenceWrap

MAX_DROPOUT = 3000
MAX_MISORDER = 100
MIN_SEQUENTIAL = 2


@dataclass
class ReceiverStats:
    """Statistics of one source, fed every RTP packet with its arrival time."""

    clock_rate: int
    ssrc: int | None = None
    received: int = 0
    base_seq: int | None = None
    jitter: float = 0.0  # timestamp units
    _wrap: SequenceWrap = field(default_factory=SequenceWrap)
    _transit: int | None = None
    _expected_prior: int = 0
    _received_prior: int = 0
    last_sr: int = 0  # middle 32 bits of the last SR's NTP time
    last_sr_at: float | None = None

    @property
    def highest(self) -> int:
        return self._wrap.highest if self._wrap.highest is not None else 0

    @property
    def expected(self) -> int:
        return 0 if self.base_seq is None else self.highest - self.base_seq + 1

    @property
    def lost(self) -> int:
        return self.expected - self.received

    def update(self, sequence: int, timestamp: int, arrival: float, ssrc: int) -> None:
        if self.ssrc != ssrc:  # a new source (SSRC change): start over
            self.reset(ssrc)
        extended = self._wrap.extend(sequence)
        if self.base_seq is None:
            self.base_seq = extended
        self.received += 1
        # interarrival jitter: J += (|D| - J) / 16 (RFC 3550 §6.4.1)
        transit = int(arrival * self.clock_rate) - timestamp
        if self._transit is not None:
            d = abs(transit - self._transit)
            if d < 2**31:  # ignore timestamp jumps (a new talk spurt after wrap)
                self.jitter += (d - self.jitter) / 16.0
        self._transit = transit

    def reset(self, ssrc: int) -> None:
        self.ssrc, self.received, self.base_seq, self.jitter = ssrc, 0, None, 0.0
        self._wrap = SequenceWrap()
        self._transit = None
        self._expected_prior = self._received_prior = 0

    def on_sender_report(self, ntp_timestamp: int, now: float) -> None:
        self.last_sr = (ntp_timestamp >> 16) & 0xFFFFFFFF
        self.last_sr_at = now

    def report_block(self, now: float) -> ReportBlock:
        """A reception report, closing the current interval (RFC 3550 A.3)."""
        block = report_block(
            self.ssrc or 0,
            self.expected,
            self.received,
            (self._expected_prior, self._received_prior),
            self.highest,
            self.jitter,
            self.last_sr,
            None if self.last_sr_at is None else now - self.last_sr_at,
        )
        self._expected_prior, self._received_prior = self.expected, self.received
        return block


def report_block(
    ssrc: int,
    expected: int,
    received: int,
    prior: tuple[int, int],
    highest: int,
    jitter: float,
    last_sr: int,
    since_sr: float | None,
) -> ReportBlock:
    """The reception report block of RFC 3550 §6.4.1 / A.3 from a source's counts:
    ``prior`` is (expected, received) at the last report, ``since_sr`` the seconds since
    its last sender report (None: none yet)."""
    interval_expected = expected - prior[0]
    lost_interval = interval_expected - (received - prior[1])
    fraction = 0
    if interval_expected > 0 and lost_interval > 0:
        fraction = min(255, (lost_interval << 8) // interval_expected)
    cumulative = max(-0x800000, min(0x7FFFFF, expected - received))
    dlsr = int(since_sr * 65536) & 0xFFFFFFFF if since_sr is not None else 0
    return ReportBlock(
        ssrc & 0xFFFFFFFF,
        fraction,
        cumulative,
        highest & 0xFFFFFFFF,
        int(jitter),
        last_sr,
        dlsr,
    )


def rtcp_interval(
    members: int,
    senders: int,
    rtcp_bandwidth: float,
    we_sent: bool,
    avg_rtcp_size: float,
    initial: bool,
    rng: random.Random | None = None,
) -> float:
    """RFC 3550 A.7: seconds until the next report (randomised, compensated)."""
    minimum = 2.5 if initial else 5.0
    n = members
    bandwidth = rtcp_bandwidth
    if senders <= members * 0.25:
        if we_sent:
            bandwidth *= 0.25
            n = senders
        else:
            bandwidth *= 0.75
            n = members - senders
    interval = max(minimum, avg_rtcp_size * max(n, 1) / bandwidth) if bandwidth > 0 else minimum
    r = rng or random
    return interval * (r.random() + 0.5) / 1.21828  # e - 3/2


def ntp_timestamp(unix_time: float) -> int:
    """64-bit NTP timestamp for a Unix time."""
    seconds = int(unix_time) + 2208988800
    fraction = int((unix_time % 1) * 2**32)
    return ((seconds & 0xFFFFFFFF) << 32) | fraction
