"""Which source a stream's media is taken from (strict RTP), pure: packet facts and the
current time in, a verdict out.

Anyone who can reach an RTP port can send well-formed packets to it. Symmetric RTP
(RFC 4961) answers to where packets come from, so following every new source hands the
call's audio to whoever sends, and takes their audio and keys into the call. The rule
here borrows from Asterisk ``strictrtp`` (learn, then lock; probation in consecutive
sequence numbers), rtpengine's endpoint learning (a short window after signalling, with
the SDP address preferred) and ``strict-source`` (drop the rest), and FreeSWITCH's
auto-adjust threshold (a new source must send several packets before media follows it):

- **Learning.** Signalling names the peer (:meth:`SourcePolicy.expect`: the answer, a
  re-INVITE): its SDP address, and the IP the SIP messages came from. The peer is learnt
  from the first packet sent from the SDP address, the SDP's IP (another port) or the
  signalling IP (a NAT keeps the IP and picks a port). Nothing else is ever learnt.
  For ``learning_window`` seconds after :meth:`~SourcePolicy.expect`, a closer match
  takes over at once (exact SDP address > SDP IP > signalling IP > what signalling no
  longer names).
- **Moving.** Once learnt, another source on one of those IPs takes over only after
  ``probation`` consecutive in-sequence packets with one SSRC *and* ``silence`` seconds
  without a packet from the current source: a NAT mapping that really changed (the old
  port fell silent) is followed within about ``silence``; a second sender while the peer
  talks is not. A peer that moves to another IP says so in a re-INVITE.
- **Everything else** is dropped, counted per reason, and reported once per source per
  burst (``Verdict.report``) so that a log line per refusal cannot be flooded; what comes
  before signalling names anyone (``unnamed``: a callee's first packets racing its 200 OK)
  is counted only, as nothing of the call can leak or be injected then.

The defaults: ``silence = 0.5`` s is 25 packets at 20 ms and 8 at 60 ms, a gap that a
stream still running never shows short of a broken network, and it keeps the recovery
from a NAT rebinding near half a second (the probation runs during the silence);
``probation = 10`` packets is FreeSWITCH's threshold and pjmedia's NAT probation count;
``learning_window = 3`` s is rtpengine's learning period.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, fields

Address = tuple[str, int]

# Why a packet was dropped (counter names, and the ``reason`` of a report).
UNNAMED = "unnamed"  # signalling has named no peer yet
UNEXPECTED = "unexpected"  # not learnt yet, and not a source signalling named
FOREIGN_IP = "foreign_ip"  # learnt; an IP signalling never named
PROBATION = "probation"  # a named IP, not yet `probation` in-sequence packets
PEER_ACTIVE = "peer_active"  # passed probation, but the current peer is not silent
RTCP_FOREIGN = "rtcp_foreign"  # RTCP from another IP than the peer's
REASONS = (UNNAMED, UNEXPECTED, FOREIGN_IP, PROBATION, PEER_ACTIVE, RTCP_FOREIGN)

_UNSPECIFIED = {"0.0.0.0", "::", ""}  # c=0.0.0.0 (RFC 2543 hold): names nobody


@dataclass(frozen=True, slots=True)
class Verdict:
    accept: bool
    moved: bool = False  # accepted, and the peer is now this source: send here
    reason: str | None = None  # why it was dropped
    report: bool = False  # the first drop from this source in this burst


ACCEPT = Verdict(True)
MOVED = Verdict(True, moved=True)
_DROPS = {
    (r, report): Verdict(False, reason=r, report=report)
    for r in REASONS
    for report in (False, True)
}


@dataclass(slots=True)
class SourceCounters:
    learnt: int = 0  # a first peer taken
    moved: int = 0  # the peer changed source (closer match, or probation passed)
    unnamed: int = 0
    unexpected: int = 0
    foreign_ip: int = 0
    probation: int = 0
    peer_active: int = 0
    rtcp_foreign: int = 0

    @property
    def dropped(self) -> int:
        return sum(getattr(self, r) for r in REASONS)

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class BurstGate:
    """True for the first event from a source, then again only after ``gap`` seconds
    without one from it. Remembers at most ``capacity`` sources (the oldest forgotten)."""

    def __init__(self, gap: float = 10.0, capacity: int = 256) -> None:
        self.gap = gap
        self.capacity = capacity
        self._last: OrderedDict[Address, float] = OrderedDict()

    def __call__(self, source: Address, now: float) -> bool:
        last = self._last.pop(source, None)
        self._last[source] = now
        if len(self._last) > self.capacity:
            self._last.popitem(last=False)
        return last is None or now - last >= self.gap


@dataclass(slots=True)
class _Candidate:
    ssrc: int
    seq: int
    count: int


class SourcePolicy:
    """Decides, packet by packet, whether a source is the peer of one stream."""

    def __init__(
        self,
        *,
        learning_window: float = 3.0,
        probation: int = 10,
        silence: float = 0.5,
        burst_gap: float = 10.0,
        learn_unnamed: bool = True,
        max_candidates: int = 16,
    ) -> None:
        if probation < 1 or silence < 0 or learning_window < 0:
            raise ValueError("probation must be ≥ 1, silence and learning_window ≥ 0")
        self.learning_window = learning_window
        self.probation = probation
        self.silence = silence
        # Before any expect(): learn the first source (a bare session), or drop everything
        # (a PBX leg hears nobody before the SDP names its peer).
        self.learn_unnamed = learn_unnamed
        self.max_candidates = max_candidates
        self.expected: Address | None = None  # the SDP's address
        self.signalling: str | None = None  # the IP the SIP messages come from
        self.current: Address | None = None  # the learnt peer
        self.current_ssrc: int | None = None
        self.last_heard = float("-inf")  # when the current peer last sent
        self.learn_until = float("-inf")
        self.named = False
        self.counters = SourceCounters()
        self._report = BurstGate(burst_gap)
        self._candidates: OrderedDict[Address, _Candidate] = OrderedDict()

    # -- signalling ---------------------------------------------------------------------

    def expect(self, address: Address | None, signalling: str | None, now: float) -> Address | None:
        """Signalling named the peer (an answer, a re-INVITE). Opens the learning window;
        forgets a learnt source that signalling no longer names. Returns where to send:
        the learnt source if it stays, else the SDP address."""
        if address is not None and address[0] not in _UNSPECIFIED and address[1]:
            self.expected = address
        self.signalling = signalling or None
        self.named = self.expected is not None or self.signalling is not None
        self.learn_until = now + self.learning_window
        self._candidates.clear()
        if self.current is not None and not self.rank(self.current):
            self.current = None
            self.current_ssrc = None
        return self.current or self.expected

    def set_signalling(self, ip: str | None) -> None:
        """The signalling source became known after :meth:`expect` (no new window)."""
        self.signalling = ip or None
        self.named = self.expected is not None or self.signalling is not None

    def rank(self, source: Address) -> int:
        """How closely ``source`` matches what signalling named (0: not at all)."""
        expected = self.expected
        if expected is not None:
            if source == expected:
                return 3
            if source[0] == expected[0]:
                return 2
        if source[0] == self.signalling:
            return 1
        return 0 if self.named else int(self.learn_unnamed)

    def learning(self, now: float) -> bool:
        return now < self.learn_until

    # -- packets --------------------------------------------------------------------------

    def check(self, source: Address, ssrc: int, seq: int, now: float) -> Verdict:
        """The verdict on an RTP packet (well-formed) from ``source``."""
        current = self.current
        if source == current:
            self.last_heard = now
            self.current_ssrc = ssrc
            return ACCEPT
        rank = self.rank(source)
        if current is None:
            if rank:
                self._take(source, ssrc, now)
                self.counters.learnt += 1
                return MOVED
            if not self.named:  # a peer's first packets can beat its answer: no report
                return self._drop(source, UNNAMED, now, report=False)
            return self._drop(source, UNEXPECTED, now)
        if now < self.learn_until and rank > self.rank(current):
            self._take(source, ssrc, now)
            self.counters.moved += 1
            return MOVED
        if not rank:
            return self._drop(source, FOREIGN_IP, now)
        candidates = self._candidates
        candidate = candidates.pop(source, None)
        if candidate is not None and candidate.ssrc == ssrc and seq == (candidate.seq + 1) & 0xFFFF:
            candidate.seq = seq
            candidate.count += 1
        else:
            candidate = _Candidate(ssrc, seq, 1)
        candidates[source] = candidate  # the most recent last: the oldest goes first
        if len(candidates) > self.max_candidates:
            candidates.popitem(last=False)
        if candidate.count < self.probation:
            return self._drop(source, PROBATION, now)
        if now - self.last_heard < self.silence:
            return self._drop(source, PEER_ACTIVE, now)
        self._take(source, ssrc, now)
        self.counters.moved += 1
        return MOVED

    def check_rtcp(self, source: Address, now: float) -> Verdict:
        """RTCP is taken from the peer's IP (any port: NATs map port+1 anywhere). Before
        signalling names anyone, RTCP is dropped as ``unnamed`` without a report: a phone
        that answers sends its first report with its 200 OK, which may arrive first."""
        current = self.current
        allowed = source[0] == current[0] if current is not None else self.rank(source) > 0
        if allowed:
            return ACCEPT
        if current is None and not self.named:
            return self._drop(source, UNNAMED, now, report=False)
        return self._drop(source, RTCP_FOREIGN, now)

    def _take(self, source: Address, ssrc: int, now: float) -> None:
        self.current = source
        self.current_ssrc = ssrc
        self.last_heard = now
        self._candidates.clear()

    def _drop(self, source: Address, reason: str, now: float, *, report: bool = True) -> Verdict:
        setattr(self.counters, reason, getattr(self.counters, reason) + 1)
        return _DROPS[reason, report and self._report(source, now)]
