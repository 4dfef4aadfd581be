"""The media engine: every anchored RTP leg of the daemon, on shared ports, batched per tick.

A leg is a row of numpy columns, not an object on the event loop. Each 20 ms tick:

1. *receive*: every shared port is drained by one ``recvmmsg`` (:mod:`rtp.batch`), headers
   parsed as columns (:mod:`rtp.columns`), packets matched to legs by source address
   (vectorised), audio queued in one jitter row per leg (:mod:`rtp.jitter_rows`), RFC
   4733 events turned into digits;
2. *pop*: one frame per leg from the jitter rows; nothing is decoded yet;
3. *listen*: legs with taps (recording) or in-band DTMF detection decode theirs;
4. *send*: a bridged leg whose partner has its codec and packet time gets the partner's
   payload copied into its row (a relay: no Python per packet, no decode); listeners of
   hold music or a tone on a stateless codec get the tick's one shared encoding in one
   assignment per group; every other leg (a prompt, a transcoded bridge, wideband music,
   a key being played) is asked for its packet by its :class:`Source`; then headers are
   written as columns and every port's packets leave in one ``sendmmsg``;
5. RTCP: reports per leg at the RFC 3550 interval, peers' reports kept.

Which leg a packet belongs to is never guessed. A packet is its leg's when it comes
from the address that leg latched or that its SDP named; otherwise from an IP that one
leg alone claims on that port (its SDP's, its SIP messages'): strict RTP
(:mod:`rtp.source_policy`) then decides within it — learning, probation, NAT
rebinding. A leg that would have to learn its port from an IP another learning leg
claims (two phones behind one NAT calling at once) gets a port of its own. Packets
nobody owns are counted and dropped, reported once per source per burst.

Rates: a leg works at its codec's audio rate (``leg.rate``: 8000 for G.711, 16000 for
G.722 and Opus), never at the RTP clock (:mod:`media.codecs` keeps the two apart). Every
source gives frames at the rate of the leg that asks, converting at most once: a bridge
of an 8 kHz and a 16 kHz leg resamples in :class:`LegSource`, a shared source keeps one
player per rate. G.722 and Opus listeners of a shared source keep their own encoder: a
phone's decoder follows the state of the encoder whose stream it gets.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import random
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

import sip
from media import g711
from media.audio import load_audio
from media.clock import MediaClock
from media.conceal import MAX_REPEATS
from media.tones import tone
from rtp import PortAllocator
from rtp.batch import Batch, address_text
from rtp.columns import Headers, gather, parse, write_headers
from rtp.dtls_srtp import Identity
from rtp.ice_lite import local_ufrag
from rtp.jitter_rows import FRAME, LOST, JitterRows, Popped
from rtp.packet import (
    PacketError,
    ReceiverReport,
    ReportBlock,
    RtcpPacket,
    SenderReport,
    build_compound,
    parse_rtcp,
    report_packets,
)
from rtp.source_policy import REASONS, UNEXPECTED, BurstGate
from rtp.srtp import REASONS as SRTP_REASONS
from rtp.srtp import TRAILER, protect_rows, reason, unprotect_rows
from rtp.stats import ntp_timestamp, report_block, rtcp_interval
from sip import entropy

from .media_leg import LegCounters, LegStream, MediaLeg
from .media_ports import AFTERLIFE, ENDED, Poller, PortPair, behind_nat, ip16
from .media_sources import (
    Groups,
    GroupSource,
    LegSource,
    PlayerSource,
    SharedSource,
    Singles,
    Source,
)

__all__ = [
    "MAX_PAYLOAD",
    "PCMA_ID",
    "PCMU_ID",
    "SOUNDS",
    "GroupSource",
    "Groups",
    "LegCounters",
    "LegSource",
    "LegStream",
    "MediaEngine",
    "MediaLeg",
    "Mixing",
    "PlayerSource",
    "SharedSource",
    "Singles",
    "Source",
    "behind_nat",
    "offer_peers",
    "prompt_path",
]

log = logging.getLogger(__name__)
Samples = npt.NDArray[np.int16]
Ints = npt.NDArray[np.int64]
Address = tuple[str, int]
SOUNDS = Path(__file__).resolve().parent / "sounds"
MAX_PAYLOAD = 480  # bytes of audio per packet kept (60 ms of G.711); longer is refused
# bytes per received datagram: a path MTU's worth (a browser's DTLS ClientHello, with its
# post-quantum key share, comes in fragments of about 1200 bytes; RTP is far smaller)
SLOT = 1500
FRAME_WIDTH = 960  # samples of a leg's frame kept per tick (60 ms at 16 kHz)
AMBIGUOUS = "ambiguous"  # a stray's reason: its IP is claimed by several legs
REFUSED = -5  # the row of a packet refused by its leg's SRTP (see MediaEngine._decrypt)
CONSUMED = -6  # the row of a browser leg's STUN, DTLS or muxed RTCP: handled, not RTP
BROWSER_REASONS = ("stun_unknown", "stun_refused", "dtls_foreign", "dtls_refused")


def offer_peers(source: str, offer: sip.SessionDescription | None) -> set[str | Address]:
    """Where an incoming call's RTP may come from, for :meth:`MediaEngine.new_leg`: its
    offer's audio addresses, and the IP its SIP came from when the offer's address is
    behind a NAT (or missing)."""
    peers: set[str | Address] = set()
    natted = True
    for media in offer.media if offer is not None else ():
        connection = media.connection or (offer.connection if offer else None)
        if connection is not None and media.media == "audio":
            peers |= {connection.address, (connection.address, media.port)}
            natted = natted and behind_nat(connection.address, source)
    if natted or not peers:
        peers.add(source)
    return peers


def prompt_path(name: str, language: str = "en") -> Path:
    """A built-in prompt in ``language`` (English when it has no translation)."""
    path = SOUNDS / language / f"{name}.flac"
    return path if language != "en" and path.exists() else SOUNDS / f"{name}.flac"


# -- the engine --------------------------------------------------------------------------------

# how a leg's packet is made each tick
NOTHING, RELAY, GROUP, PYTHON = 0, 1, 2, 3


class Mixing(Protocol):
    """What mixes the legs' decoded audio each tick (a conference room)."""

    def mix(self, tick: int) -> None: ...


_COLUMNS = {  # name: (dtype, fill)
    "pt": (np.int64, 0),
    "seq": (np.int64, 0),
    "ts": (np.int64, 0),
    "step": (np.int64, 160),
    "ssrc": (np.int64, 0),
    "sending": (np.bool_, False),
    "received": (np.int64, 0),
    "sent": (np.int64, 0),
    "sent_octets": (np.int64, 0),
    "dst_port": (np.int64, 0),
    "cur_port": (np.int64, -1),
    "last_heard": (np.float64, -np.inf),
    "relay_from": (np.int64, -1),
    "status": (np.int8, 0),
    "pindex": (np.int64, -1),
    "audio_pt": (np.int64, -1),
    "key_pt": (np.int64, -1),
    # while another call's phone is told to move off this leg's address: the only SSRC
    # taken from it (-1: any)
    "ssrc_guard": (np.int64, -1),
    "pair_id": (np.int64, -1),  # the port pair the leg sends from (MediaEngine._pair_by_id)
    "in_use": (np.bool_, False),  # a leg holds the row (the tick's rows: where this is set)
    "contest_flag": (np.bool_, False),  # another leg contests an address this one holds
    "srtp": (np.bool_, False),  # SRTP: packets verified and decrypted in, protected out
    "mux": (np.bool_, False),  # a browser's leg: STUN, DTLS and RTCP on its RTP port too
    # RFC 3550 receiver statistics
    "base": (np.int64, -1),
    "stats_ssrc": (np.int64, -1),
    "audio_in": (np.int64, 0),
    "jitter_ts": (np.float64, 0.0),
    "transit": (np.float64, np.nan),
    "rtp_rate": (np.int64, 8000),
    "last_sr": (np.int64, 0),
    "last_sr_at": (np.float64, np.nan),
    "rtcp_due": (np.float64, np.inf),
    # decoding: who needs audio, what was decoded this tick
    "codec_id": (np.int64, 2),
    "decode_flag": (np.bool_, False),
    "decoded_at": (np.int64, -1),
    "heard": (np.bool_, False),
    "repeats": (np.int64, 0),
}
PCMU_ID, PCMA_ID, OTHER_ID = 0, 1, 2  # codec_id: table-decoded 20 ms G.711, or a decoder
_TABLES = {PCMU_ID: g711.ULAW_DECODE, PCMA_ID: g711.ALAW_DECODE}


class MediaEngine:
    """Every leg of the daemon; ``clock`` ticks it, ``ports`` gives its port pairs."""

    # columns, a row per leg (see _COLUMNS)
    pt: Ints
    seq: Ints
    ts: Ints
    step: Ints
    ssrc: Ints
    sending: npt.NDArray[np.bool_]
    received: Ints
    sent: Ints
    sent_octets: Ints
    dst_port: Ints
    cur_port: Ints
    last_heard: npt.NDArray[np.float64]
    relay_from: Ints
    status: npt.NDArray[np.int8]
    pindex: Ints
    audio_pt: Ints
    key_pt: Ints
    ssrc_guard: Ints
    pair_id: Ints
    contest_flag: npt.NDArray[np.bool_]
    in_use: npt.NDArray[np.bool_]
    base: Ints
    stats_ssrc: Ints
    audio_in: Ints
    jitter_ts: npt.NDArray[np.float64]
    transit: npt.NDArray[np.float64]
    rtp_rate: Ints
    last_sr: Ints
    last_sr_at: npt.NDArray[np.float64]
    rtcp_due: npt.NDArray[np.float64]
    dst_ip: npt.NDArray[np.uint8]
    cur_ip: npt.NDArray[np.uint8]
    codec_id: Ints
    decode_flag: npt.NDArray[np.bool_]
    decoded_at: Ints
    heard: npt.NDArray[np.bool_]
    repeats: Ints
    srtp: npt.NDArray[np.bool_]
    mux: npt.NDArray[np.bool_]
    frames: npt.NDArray[np.int16]  # this tick's audio per leg

    def __init__(
        self,
        clock: MediaClock,
        ports: PortAllocator,
        country: str = "us",
        language: str = "en",
        *,
        capacity: int = 64,
    ) -> None:
        self.clock = clock
        self.ports = ports
        self.country = country
        self.language = language
        self.legs: set[MediaLeg] = set()
        self.tick_count = 0
        self.stats: dict[str, int] = {
            "received": 0,
            "sent": 0,
            "malformed": 0,
            "strays": 0,
            "dropped": 0,
            "foreign_pt": 0,
            "rtcp_sent": 0,
            "rtcp_received": 0,
            "own_ports": 0,
            "srtp_refused": 0,
        }
        reasons = (*REASONS, *SRTP_REASONS, AMBIGUOUS, "ended", "contested", *BROWSER_REASONS)
        self.stats.update({f"strays_{reason}": 0 for reason in reasons})
        # a source no leg owns (address, reason), at most once per source per burst
        self.on_rejected_source: Callable[[Address, str], None] | None = None
        self._strays = BurstGate()
        self._prompts: dict[tuple[str, int], Samples] = {}
        self._shared: dict[str, SharedSource] = {}
        self._pairs: dict[str, PortPair] = {}  # the shared pair of each host
        # the pairs of legs with ports of their own, by RTP and by RTCP socket descriptor
        self._own_rtp: dict[int, PortPair] = {}
        self._own_rtcp: dict[int, PortPair] = {}
        self._pair_by_id: dict[int, PortPair] = {}
        self._pair_ids = itertools.count()
        self._closed_drops = 0  # kernel drops counted on own pairs since closed
        # addresses (ip16, port) another leg holds, and the legs whose SDP named them too
        self._contesting: dict[tuple[bytes, int], set[MediaLeg]] = {}
        # the own ports' sockets, asked once a tick which have packets (a call whose far
        # end sends no RTP costs nothing but that one poll)
        self._poller = Poller()
        self._ready: set[int] = set()
        self._by_row: list[MediaLeg | None] = []
        self._free: list[int] = []
        self.capacity = 0
        self.rows = np.zeros(0, dtype=np.int64)
        self._rows_dirty = False
        self.jitter = JitterRows(1, payload=MAX_PAYLOAD)
        self._grow(max(1, capacity))
        self._popped: Popped | None = None
        # how each leg is served: relays and shared groups as row arrays, the rest by hand
        self._kind: dict[MediaLeg, int] = {}
        self._relays: set[MediaLeg] = set()
        self._relay_rows = np.zeros(0, dtype=np.int64)
        self._groups: dict[GroupSource, dict[MediaLeg, None]] = {}
        self._group_rows: dict[GroupSource, Ints] = {}
        self._mixers: dict[Mixing, None] = {}
        self._audio_users: set[MediaLeg] = set()
        self._decode_rows = np.zeros(0, dtype=np.int64)
        self._decode_dirty = False
        self._python: dict[MediaLeg, None] = {}  # ordered: served in the order they came
        self._plan_dirty = False
        self._listeners: dict[MediaLeg, None] = {}
        self.rx = Batch(256, SLOT)
        self._rtcp_rx = Batch(64, SLOT)
        # browsers' legs: by the ufrag of our ICE-lite agent; those still in DTLS
        self._ice_legs: dict[str, MediaLeg] = {}
        self._handshaking: set[MediaLeg] = set()
        self._identity: Identity | None = None
        self._rng = random.Random()
        self._unsubscribe = clock.subscribe(self._tick, priority=50, idle=self.idle)

    # -- rows --------------------------------------------------------------------------------------

    def _grow(self, capacity: int) -> None:
        old = self.capacity
        for name, (dtype, fill) in _COLUMNS.items():
            column: npt.NDArray[np.generic] = np.full(capacity, fill, dtype=dtype)
            if old:
                column[:old] = getattr(self, name)
            setattr(self, name, column)
        for name, width, kind in (
            ("dst_ip", 16, np.uint8),
            ("cur_ip", 16, np.uint8),
            ("frames", FRAME_WIDTH, np.int16),
        ):
            block: npt.NDArray[np.generic] = np.zeros((capacity, width), dtype=kind)
            if old:
                block[:old] = getattr(self, name)
            setattr(self, name, block)
        prior = np.zeros((capacity, 2), dtype=np.int64)  # expected, received at last report
        if old:
            prior[:old] = self._prior
        self._prior: Ints = prior
        self.jitter = (
            self.jitter.resized(capacity) if old else JitterRows(capacity, payload=MAX_PAYLOAD)
        )
        self._by_row += [None] * (capacity - old)
        self._free = list(range(capacity - 1, old - 1, -1)) + self._free
        self.capacity = capacity
        self.tx = Batch(capacity, 12 + MAX_PAYLOAD + TRAILER)
        self._has = np.zeros(capacity, dtype=bool)
        self._size = np.zeros(capacity, dtype=np.int64)
        self._marker = np.zeros(capacity, dtype=bool)
        self._pt_out = np.zeros(capacity, dtype=np.int64)
        self._ts_out = np.zeros(capacity, dtype=np.int64)

    @property
    def identity(self) -> Identity:
        """Our DTLS certificate for browsers' legs (made once, on first use: an EC key)."""
        if self._identity is None:
            self._identity = Identity()
        return self._identity

    def idle(self) -> bool:
        """No leg: the media clock may sleep."""
        return not self.legs and not self._mixers

    async def new_leg(self, host: str, peers: Iterable[str | Address] = ()) -> MediaLeg:
        """A leg whose SDP will name ``host``. ``peers``: where its phone's RTP may come
        from, when known (IPs, or an offer's exact address). It gets a port of its own
        when the shared port could not tell its packets from another leg's: an IP another
        leg there is still learning its port at, or an address another leg there expects
        (a peer that sends several calls from one port, as SIPp does). A call we place
        learns its peer's address from the answer: see :meth:`move_to_own_port`."""
        pair = self._shared_pair(host)
        for peer in peers:
            ip, port = (peer, None) if isinstance(peer, str) else peer
            key = ip16(ip)
            if key is None:
                continue
            taken = (key, port) in pair.exact if port else False
            if taken or any(not leg.latched for leg in pair.claims.get(key, ())):
                return self._add(self._own_pair(host, f"shared_source peer={ip}:{port or '*'}"))
        return self._add(pair)

    def _shared_pair(self, host: str) -> PortPair:
        pair = self._pairs.get(host)
        if pair is None:
            pair = self._pairs[host] = PortPair(host, self.ports, shared=True)
            self._identify(pair)
        return pair

    def _identify(self, pair: PortPair) -> None:
        pair.id = next(self._pair_ids)
        self._pair_by_id[pair.id] = pair

    def _own_pair(self, host: str, reason: str) -> PortPair:
        pair = PortPair(host, self.ports, shared=False)
        self._own_rtp[pair.rtp.sock.fileno()] = pair
        self._own_rtcp[pair.rtcp.sock.fileno()] = pair
        self._identify(pair)
        self._poller.add(pair.rtp.sock.fileno(), pair.rtcp.sock.fileno())
        self.stats["own_ports"] += 1
        log.debug("event=rtp_own_port port=%d reason=%s", pair.port, reason)
        return pair

    def _add(self, pair: PortPair) -> MediaLeg:
        if not self._free:
            self._grow(self.capacity * 2)
        row = self._free.pop()
        leg = MediaLeg(self, row, pair)
        self._by_row[row] = leg
        pair.legs.add(leg)
        self.legs.add(leg)
        for name, (_, fill) in _COLUMNS.items():
            getattr(self, name)[row] = fill
        self.dst_ip[row] = 0
        self.cur_ip[row] = 0
        self.frames[row] = 0  # nothing of the row's last leg is concealed into this one
        self._prior[row] = 0
        self.jitter.clear(np.array([row]))
        self.seq[row] = entropy.randbits(16)
        self.ts[row] = entropy.randbits(32)
        self.ssrc[row] = leg.ssrc
        self.pair_id[row] = pair.id
        self.sending[row] = False
        self.in_use[row] = True
        self._rows_dirty = True
        self._decode_dirty = True
        self.clock.wake()
        return leg

    def _remove(self, leg: MediaLeg) -> None:
        if leg not in self.legs:
            return
        now = time.monotonic()
        if leg.remote_rtcp is not None and leg.stream is not None:
            self._send_rtcp(leg, now, bye=True)
        self.legs.discard(leg)
        pair = leg.ports
        pair.legs.discard(leg)
        sources = [k for k, owner in pair.exact.items() if owner is leg]
        if pair.shared:
            pair.bury(sources, now + AFTERLIFE)
        self._unclaim(leg)
        self.contest_flag[leg.row] = False
        if leg.moved_from is not None:  # its phone's stream from there has ended too
            self.settled(leg, leg.moved_from)
        for source in sources:  # an address this leg held is another's now
            for other in list(self._contesting.get(source, ())):
                self._claim(other)
        if not pair.shared:
            self._pair_by_id.pop(pair.id, None)
            self._own_rtp.pop(pair.rtp.sock.fileno(), None)
            self._own_rtcp.pop(pair.rtcp.sock.fileno(), None)
            self._poller.remove(pair.rtp.sock.fileno(), pair.rtcp.sock.fileno())
            self._closed_drops += pair.kernel_drops()
            pair.close()
        self._unplan(leg)
        self._listeners.pop(leg, None)
        self._by_row[leg.row] = None
        self.rtcp_due[leg.row] = np.inf
        self.status[leg.row] = 0
        self._audio_users.discard(leg)
        self.decode_flag[leg.row] = False
        self._decode_dirty = True
        self.in_use[leg.row] = False
        self._free.append(leg.row)
        self._rows_dirty = True

    # -- who may be heard --------------------------------------------------------------------------

    def _claim(self, leg: MediaLeg) -> None:
        """Index where ``leg``'s packets may come from on its port."""
        if leg.closed:
            return
        self._unclaim(leg)
        pair = leg.ports
        policy = leg.policy
        natted = leg.expected is not None and behind_nat(leg.expected[0], policy.signalling)
        leg.contested = None
        for address in (policy.current, None if natted else leg.expected):
            if address is None:
                continue
            key = ip16(address[0])
            if key is None:
                continue
            owner = pair.exact.get((key, address[1]))
            if owner is not None and owner is not leg and not owner.closed:
                # another call here expects this very address (a peer answering several
                # calls from one port): its packets stay that call's; this leg needs a
                # port of its own, told to its phone (move_to_own_port, then a re-INVITE)
                leg.contested = address
                self._contesting.setdefault((key, address[1]), set()).add(leg)
                self.contest_flag[owner.row] = True
                known = int(self.jitter.ssrc[owner.row])
                if known >= 0 and address == owner.policy.current:
                    self.ssrc_guard[owner.row] = known  # the latched stream's own
                continue
            pair.exact[key, address[1]] = leg
        ips = set()
        if leg.expected is not None:
            ips.add(leg.expected[0])
        if policy.signalling and (natted or leg.expected is None):
            ips.add(policy.signalling)  # its RTP comes from its NAT, at a port to learn
        if policy.current is not None:
            ips.add(policy.current[0])
        for ip in ips:
            key = ip16(ip)
            if key is not None:
                pair.claims.setdefault(key, set()).add(leg)
        pair.reindex()

    def _streams_meet(self, rx: Batch, row: Ints) -> None:
        """RTP from an address a contested leg shares with another call: the two calls'
        streams now meet on the shared port, and the contested leg is told to move
        (``on_contested``, once). A peer that never sends from there (SIPp's uas sends
        no RTP) is never asked for a re-INVITE it would not answer."""
        held = np.flatnonzero((row >= 0) & self.contest_flag[np.maximum(row, 0)])
        for i in held[:64].tolist():  # the holders' packets (a few addresses at most)
            for leg in list(self._contesting.get((rx.ip[i].tobytes(), int(rx.port[i])), ())):
                hook, leg.on_contested = leg.on_contested, None
                if hook is not None:
                    hook()

    def move_to_own_port(self, leg: MediaLeg) -> None:
        """Put ``leg`` on a port pair of its own, its row (streams, counters, source)
        kept: for a leg whose phone's address another leg on the shared port expects
        (``leg.contested``). Its phone sends to the shared port until told the new one."""
        old = leg.ports
        if not old.shared or leg.closed:
            return
        leg.moved_from = leg.contested
        reason = f"contested peer={leg.contested[0]}:{leg.contested[1]}" if leg.contested else ""
        self._unclaim(leg)
        old.legs.discard(leg)
        pair = self._own_pair(old.host, reason or "moved")
        pair.legs.add(leg)
        leg.ports = pair
        self.pair_id[leg.row] = pair.id
        self._claim(leg)

    def settled(self, leg: MediaLeg, address: Address) -> None:
        """``leg``'s phone now sends elsewhere than ``address`` (its re-INVITE was
        answered): the leg that kept ``address`` takes any stream from it again."""
        leg.moved_from = None
        key = ip16(address[0])
        if key is None or (key, address[1]) in self._contesting:
            return  # another leg still shares it: the holder keeps its guard
        for pair in self._pairs.values():
            owner = pair.exact.get((key, address[1]))
            if owner is not None:
                self.ssrc_guard[owner.row] = -1

    def _unclaim(self, leg: MediaLeg) -> None:
        pair = leg.ports
        contested = leg.contested
        key = ip16(contested[0]) if contested is not None else None
        if contested is not None and key is not None:
            at = (key, contested[1])
            others = self._contesting.get(at)
            if others is not None:
                others.discard(leg)
                if not others:
                    del self._contesting[at]
                    holder = pair.exact.get(at)
                    if holder is not None:
                        self.contest_flag[holder.row] = False
        for k in [k for k, owner in pair.exact.items() if owner is leg]:
            del pair.exact[k]
        for key in [k for k, legs in pair.claims.items() if leg in legs]:
            pair.claims[key].discard(leg)
            if not pair.claims[key]:
                del pair.claims[key]
        pair.reindex()

    # -- how each leg is served --------------------------------------------------------------------

    def _configured(self, leg: MediaLeg) -> None:
        stream = leg.stream
        assert stream is not None
        row = leg.row
        self.pt[row] = leg.payload_type
        self.step[row] = stream.codec.rtp_ticks(stream.ptime)
        self.rtp_rate[row] = stream.codec.rtp_clock
        table = {"PCMU": PCMU_ID, "PCMA": PCMA_ID}.get(stream.codec.name, OTHER_ID)
        self.codec_id[row] = table if stream.samples == 160 else OTHER_ID
        current = leg.policy.current  # a re-INVITE may have forgotten the latched source
        if current is None:
            self.cur_port[row] = -1
        self.audio_pt[row] = leg.payload_type
        self.key_pt[row] = leg.dtmf_pt if leg.dtmf_pt is not None else -1
        self._set_destination(leg)
        self._claim(leg)
        if leg.remote_rtcp is not None and not np.isfinite(self.rtcp_due[row]):
            self.rtcp_due[row] = time.monotonic() + self._interval(initial=True)
        self._classify(leg)
        self._listening(leg)
        for other in list(leg.dependents):
            self._classify(other)

    def _set_destination(self, leg: MediaLeg) -> None:
        row = leg.row
        remote = leg.remote
        key = ip16(remote[0]) if remote is not None else None
        if remote is None or key is None:
            self.dst_port[row] = 0  # nowhere to send until the phone is heard
            return
        self.dst_ip[row] = np.frombuffer(key, dtype=np.uint8)
        self.dst_port[row] = remote[1]

    def _classify(self, leg: MediaLeg) -> None:
        """Put ``leg`` where this tick's packet for it is made."""
        if leg.closed or leg not in self.legs:
            return
        self._unplan(leg)
        source = leg.source
        kind = NOTHING
        # a browser's leg sends nothing until DTLS has given its keys
        ready = leg.dtls is None or leg.srtp_out is not None
        self.sending[leg.row] = leg.sending and leg.stream is not None and ready
        if leg.stream is None or source is None or not leg.sending:
            kind = PYTHON if leg.key_active and leg.stream is not None else NOTHING
        elif leg.key_active:
            kind = PYTHON
        elif isinstance(source, LegSource) and source.relays(leg) and not source.other.closed:
            kind = RELAY
            self.relay_from[leg.row] = source.other.row
        elif isinstance(source, GroupSource):
            kind = GROUP
        else:
            kind = PYTHON
        self._kind[leg] = kind
        if kind == RELAY:
            self._relays.add(leg)
        elif kind == GROUP:
            assert isinstance(source, GroupSource)
            self._groups.setdefault(source, {})[leg] = None
            self._group_rows.pop(source, None)
        elif kind == PYTHON:
            self._python[leg] = None
        if isinstance(source, LegSource):  # a transcoded bridge decodes its talker
            self._refresh_decode(source.other)
        self._plan_dirty = True

    def _unplan(self, leg: MediaLeg) -> None:
        kind = self._kind.pop(leg, NOTHING)
        if kind == RELAY:
            self._relays.discard(leg)
            self.relay_from[leg.row] = -1
        elif kind == GROUP:
            for source, legs in list(self._groups.items()):
                if legs.pop(leg, 0) is None:
                    self._group_rows.pop(source, None)
                    if not legs:
                        del self._groups[source]
        elif kind == PYTHON:
            self._python.pop(leg, None)
        self._plan_dirty = True

    def _listening(self, leg: MediaLeg) -> None:
        if not leg.closed and (leg.taps or (leg.listen_dtmf and leg._inband)):
            self._listeners[leg] = None
        else:
            self._listeners.pop(leg, None)
        self._refresh_decode(leg)

    def need_audio(self, leg: MediaLeg, needed: bool) -> None:
        """Decode ``leg``'s audio every tick, with every other such leg's, into
        :attr:`frames` (a conference member feeding a mixer), or stop."""
        if needed:
            self._audio_users.add(leg)
        else:
            self._audio_users.discard(leg)
        self._refresh_decode(leg)

    def _refresh_decode(self, leg: MediaLeg) -> None:
        """Whether ``leg``'s frames are decoded in the tick's batch: something listens to
        it (taps, key detection, a mixer) or a leg that hears it transcodes."""
        if leg.closed or leg not in self.legs:
            return
        needed = (
            leg in self._listeners
            or leg in self._audio_users
            or any(self._kind.get(d) == PYTHON for d in leg.dependents)
        )
        self.decode_flag[leg.row] = needed
        self._decode_dirty = True

    def add_mixer(self, mixer: Mixing) -> None:
        """``mixer.mix(tick)`` runs every tick once its inputs are decoded."""
        self._mixers[mixer] = None
        self.clock.wake()

    def remove_mixer(self, mixer: Mixing) -> None:
        self._mixers.pop(mixer, None)

    def kernel_drops(self) -> int:
        """RTP and RTCP packets the kernel dropped on the engine's ports (buffers full)."""
        pairs = (*self._pairs.values(), *self._own_rtp.values())
        return self._closed_drops + sum(pair.kernel_drops() for pair in pairs)

    def leg_at(self, row: int) -> MediaLeg | None:
        return self._by_row[row]

    # -- the tick ---------------------------------------------------------------------------------

    def _tick(self, tick: int) -> None:
        if self._rows_dirty:  # legs came or went: the tick's rows, remade once
            self.rows = np.flatnonzero(self.in_use)
            self._rows_dirty = False
            self._decode_dirty = True
        if not len(self.rows) and not self._mixers:
            return
        self.tick_count += 1
        now = time.monotonic()
        self._receive(now)
        self._pop()
        if self._decode_dirty:
            self._decode_rows = self.rows[self.decode_flag[self.rows]]
            self._decode_dirty = False
        if len(self._decode_rows):
            self.decode(self._decode_rows)
        for leg in list(self._listeners):
            leg._listen()
        for mixer in list(self._mixers):
            mixer.mix(tick)
        self._send(tick)
        self._rtcp_tick(now)
        if self._handshaking:
            self._retransmit()

    def _pairs_to_read(self, rtcp: bool) -> list[PortPair]:
        """The shared pairs, and the own pairs whose socket has packets (looked up by
        descriptor: hundreds of own ports are not walked every tick)."""
        pairs = [p for p in self._pairs.values() if p.legs]
        by_fd = self._own_rtcp if rtcp else self._own_rtp
        for fd in self._ready:
            pair = by_fd.get(fd)
            if pair is not None:
                pairs.append(pair)
        return pairs

    def _drain(self, batch: Batch, rtcp: bool) -> list[tuple[PortPair, int, int]]:
        """Every pending packet of the ports to read into ``batch``: (pair, first row,
        end row) per pair that had some."""
        batch.count = 0
        spans: list[tuple[PortPair, int, int]] = []
        for pair in self._pairs_to_read(rtcp):
            first = batch.count
            if (pair.rtcp if rtcp else pair.rtp).receive(batch):
                spans.append((pair, first, batch.count))
            if batch.count >= batch.capacity:
                break
        return spans

    def _receive(self, now: float) -> None:
        if self.rx.count >= self.rx.capacity and self.rx.capacity < 8192:
            # the last tick filled the batch (more legs than rows): widen it now, before
            # reading; never during a tick, whose steps all read this tick's packets
            self.rx = Batch(min(8192, self.rx.capacity * 2), SLOT)
        rx = self.rx
        self._ready = self._poller.ready() if self._own_rtp else set()
        spans = self._drain(rx, rtcp=False)
        n = rx.count
        if not n:
            return
        self.stats["received"] += n
        row = np.full(n, -1, dtype=np.int64)
        for pair, first, last in spans:
            if pair.shared:
                pair.expire(now)
                row[first:last] = pair.owners(rx.ip[first:last], rx.port[first:last])
                several = np.flatnonzero(row[first:last] == -2) + first
                if len(several):
                    row[several] = self._resolve(pair, rx.ip[several], now)
            else:
                (leg,) = pair.legs
                row[first:last] = leg.row
        # STUN and DTLS (RFC 7983); an empty datagram is nothing (malformed RTP below)
        special = np.flatnonzero((rx.data[:n, 0] < 64) & (rx.length[:n] > 0))
        if len(special):
            self._browser_packets(special, spans, row, now)
        owned = np.flatnonzero(row >= 0)
        if self._ice_legs and len(owned):  # RTCP muxed on browsers' RTP ports
            muxed = owned[self.mux[row[owned]]]
            second = rx.data[muxed, 1]
            muxed = muxed[(second >= 192) & (second <= 223)]
            for k in muxed.tolist():
                owner = self._by_row[int(row[k])]
                if owner is not None:
                    source = (address_text(rx.ip[k].tobytes()), int(rx.port[k]))
                    self._rtcp_data(owner, rx.data[k, : rx.length[k]].tobytes(), source, now)
                row[k] = CONSUMED
            owned = np.flatnonzero(row >= 0)
        secure = owned[self.srtp[row[owned]]]
        if len(secure):  # SRTP legs' packets: verified and decrypted in their rows
            self._decrypt(secure, row, now)
        h = parse(rx.data[:n], rx.length[:n])
        handled = (row == REFUSED) | (row == CONSUMED)
        self.stats["malformed"] += int(np.count_nonzero(~h.valid & ~handled))
        if self._contesting:
            self._streams_meet(rx, row)
        tail = row == ENDED
        if tail.any():  # an ended call's last packets: dropped, not reported
            self.stats["strays_ended"] += int(np.count_nonzero(tail))
            row[tail] = -4
        bad = h.valid & (row < 0) & (row != -4) & ~handled
        if bad.any():
            self._strays_unowned(np.flatnonzero(bad), row, now)
        take = np.flatnonzero(h.valid & (row >= 0))
        if not len(take):
            return
        r = row[take]
        # from the latched source: accepted as is; anything else asks the leg's policy
        # addresses compared as two 64-bit words each (exact, and 8x fewer operations)
        words = np.ascontiguousarray(rx.ip[take]).view(np.uint64)
        latched = self.cur_ip.view(np.uint64)[r]
        current = (self.cur_port[r] == rx.port[take]) & (latched == words).all(1)
        guard = self.ssrc_guard[r]
        if (guard >= 0).any():  # another call's stream from a contested address: not ours
            other = (guard >= 0) & (h.ssrc[take] != guard)
            if other.any():
                self._count_strays("contested", int(np.count_nonzero(other)))
                take, r, current = take[~other], r[~other], current[~other]
        self.last_heard[r[current]] = now
        if not current.all():
            keep = self._check_sources(take[~current], r[~current], h, now)
            accepted = np.ones(len(take), dtype=bool)
            accepted[~current] = keep
            take, r = take[accepted], r[accepted]
        np.add.at(self.received, r, 1)
        pt = h.pt[take]
        audio = pt == self.audio_pt[r]
        keys = ~audio & (pt == self.key_pt[r])
        foreign = ~audio & ~keys
        if foreign.any():
            self.stats["foreign_pt"] += int(np.count_nonzero(foreign))
            for fr in r[foreign].tolist():
                other = self._by_row[fr]
                if other is not None:
                    other.counters.foreign += 1
        if keys.any():
            self._keys(take[keys], r[keys], h)
        if audio.any():
            self._queue(take[audio], r[audio], h, now)

    def _browser_packets(
        self, packets: Ints, spans: list[tuple[PortPair, int, int]], row: Ints, now: float
    ) -> None:
        """STUN and DTLS on the shared ports, one by one (a few per call set-up, then a
        consent check every few seconds): a connectivity check goes to the leg whose ufrag
        it names and is answered from the port it came to; DTLS goes to the leg its
        source is latched to. Neither is ever taken for RTP."""
        rx = self.rx
        for k in packets.tolist():
            pair = next(p for p, first, last in spans if first <= k < last)
            source = (address_text(rx.ip[k].tobytes()), int(rx.port[k]))
            data = rx.data[k, : rx.length[k]].tobytes()
            owner = int(row[k])
            row[k] = CONSUMED
            if data[0] < 4:
                ufrag = local_ufrag(data)
                leg = self._ice_legs.get(ufrag) if ufrag else None
                if leg is None or leg.ice is None or leg.ports is not pair:
                    self._count_strays("stun_unknown")
                    if self._strays(source, now):
                        self._report(None, source, "stun_unknown")
                    continue
                verdict = leg.ice.answer(data, source)
                if verdict.reply is None:
                    self._count_strays("stun_refused")
                    if self._strays(source, now):
                        self._report(leg, source, verdict.refused or "stun_refused")
                    continue
                self._reply(pair, verdict.reply, source)
                if verdict.nominated or (leg.remote != source and leg.policy.current is None):
                    self._ice_reached(leg, source, now)
                continue
            if owner == ENDED:  # an ended call's last DTLS (its close_notify): quietly
                self.stats["strays_ended"] += 1
                continue
            leg = self._by_row[owner] if owner >= 0 else None
            if leg is None or leg.dtls is None:
                self._count_strays("dtls_foreign")
                if self._strays(source, now):
                    self._report(None, source, "dtls_foreign")
                continue
            for out in leg.dtls.receive(data):
                self._reply(pair, out, source)
            self._dtls_progress(leg, source)

    def _reply(self, pair: PortPair, data: bytes, target: Address) -> None:
        with contextlib.suppress(OSError):
            pair.rtp.sock.sendto(data, target)

    def _ice_reached(self, leg: MediaLeg, source: Address, now: float) -> None:
        """A browser's checks reach ``leg`` from ``source`` (nominated, or the first that
        authenticated): its media, DTLS and RTCP come from there and go there."""
        leg.policy.expect(source, source[0], now)
        leg.remote = leg.remote_rtcp = source
        self._set_destination(leg)
        self._claim(leg)
        if not np.isfinite(self.rtcp_due[leg.row]):
            self.rtcp_due[leg.row] = now + self._interval(initial=True)
        log.debug("event=ice_reached local=%s remote=%s:%d", leg.local, *source)

    def _dtls_progress(self, leg: MediaLeg, source: Address) -> None:
        dtls = leg.dtls
        if dtls is None:
            return
        if dtls.keys is not None and leg.srtp is None:
            self._handshaking.discard(leg)
            leg.dtls_keys(dtls.keys)
            log.info("event=dtls_srtp local=%s suite=%s", leg.local, dtls.keys[0])
        elif dtls.failed is not None and leg in self._handshaking:
            self._handshaking.discard(leg)
            self._count_strays("dtls_refused")
            self._report(leg, source, dtls.failed.split(":", 1)[0])

    def _retransmit(self) -> None:
        """Lost DTLS flights of the handshakes under way, sent again when due."""
        for leg in list(self._handshaking):
            if leg.dtls is None or leg.remote is None:
                continue
            for out in leg.dtls.retransmit():
                self._reply(leg.ports, out, leg.remote)
            self._dtls_progress(leg, leg.remote)

    def _decrypt(self, packets: Ints, row: Ints, now: float) -> None:
        """Verify and decrypt SRTP packets in place; one that does not verify (forged,
        replayed, another key) is dropped (its row set to REFUSED), counted on its leg,
        and reported once per source per burst. Nothing of it is parsed or decoded, and
        it cannot move the leg's latched source."""
        rx, by_row = self.rx, self._by_row
        contexts = [by_row[r].srtp_in for r in row[packets].tolist()]
        failed, status = unprotect_rows(contexts, rx.data, packets, rx.length)
        if not failed:
            return
        for k, rc in zip(failed, status, strict=True):
            source = (address_text(rx.ip[k].tobytes()), int(rx.port[k]))
            self._srtp_refused(by_row[int(row[k])], source, reason(rc), now)
            row[k] = REFUSED

    def _srtp_refused(self, leg: MediaLeg | None, source: Address, why: str, now: float) -> None:
        """An SRTP or SRTCP packet that did not verify: counted (engine, leg, reason) and
        reported once per source and burst."""
        self._count_strays(why)
        self.stats["srtp_refused"] += 1
        if leg is not None:
            leg.counters.srtp_refused += 1
            if self._strays(source, now):
                self._report(leg, source, why)

    def _resolve(self, pair: PortPair, ips: npt.NDArray[np.uint8], now: float) -> Ints:
        """Rows for packets from an IP several legs claim, at a port none of them latched
        or named: the one leg still learning its phone's port there, else the one whose
        latched source fell silent (a NAT rebinding); any other case is ambiguous (-2) and
        dropped (never guessed)."""
        out = np.full(len(ips), -2, dtype=np.int64)
        decided: dict[bytes, int] = {}
        for i, raw in enumerate(ips):
            key = raw.tobytes()
            row = decided.get(key)
            if row is None:
                legs = pair.claims.get(key, set())
                learning = [leg for leg in legs if not leg.latched]
                if not learning:
                    learning = [
                        leg
                        for leg in legs
                        if now - float(self.last_heard[leg.row]) > leg.policy.silence
                    ]
                row = decided[key] = learning[0].row if len(learning) == 1 else -2
            out[i] = row
        return out

    def _strays_unowned(self, packets: Ints, row: Ints, now: float) -> None:
        rx = self.rx
        seen: set[tuple[bytes, int, int]] = set()
        for i in packets[:64].tolist():
            seen.add((rx.ip[i].tobytes(), int(rx.port[i]), int(row[i])))
        ambiguous = int(np.count_nonzero(row[packets] == -2))
        self._count_strays(AMBIGUOUS, ambiguous)
        self._count_strays(UNEXPECTED, len(packets) - ambiguous)
        for ip, port, owner in seen:  # the burst gate is asked once per source per tick
            source = (address_text(ip), port)
            if self._strays(source, now):
                self._report(None, source, AMBIGUOUS if owner == -2 else UNEXPECTED)

    def _count_strays(self, reason: str, count: int = 1) -> None:
        self.stats["strays"] += count
        self.stats[f"strays_{reason}"] += count

    def _report(self, leg: MediaLeg | None, source: Address, reason: str) -> None:
        log.info(
            "event=rtp_source_rejected local=%s source=%s:%d reason=%s peer=%s",
            leg.local if leg is not None else None,
            source[0],
            source[1],
            reason,
            leg.policy.current if leg is not None else None,
        )
        hook = leg.on_rejected_source if leg is not None else self.on_rejected_source
        if hook is not None:
            hook(source, reason)

    def _check_sources(
        self, take: Ints, rows: Ints, h: Headers, now: float
    ) -> npt.NDArray[np.bool_]:
        """Packets from other sources than the latched one, one by one through each leg's
        policy (the first packets of a leg, a NAT that moved, strangers at its IP)."""
        rx = self.rx
        keep = np.zeros(len(take), dtype=bool)
        for i, (k, row) in enumerate(zip(take.tolist(), rows.tolist(), strict=True)):
            leg = self._by_row[row]
            if leg is None:
                continue
            source = (address_text(rx.ip[k].tobytes()), int(rx.port[k]))
            policy = leg.policy
            policy.last_heard = float(self.last_heard[row])
            verdict = policy.check(source, int(h.ssrc[k]), int(h.seq[k]), now)
            self.last_heard[row] = policy.last_heard
            if not verdict.accept:
                leg.counters.foreign += 1
                self._count_strays(verdict.reason or UNEXPECTED)
                if verdict.report:
                    self._report(leg, source, verdict.reason or UNEXPECTED)
                continue
            keep[i] = True
            if verdict.moved:
                self.cur_ip[row] = rx.ip[k]
                self.cur_port[row] = source[1]
                leg.remote = source
                leg.remote_rtcp = (source[0], source[1] + 1)
                self._set_destination(leg)
                self._claim(leg)
        return keep

    def _keys(self, take: Ints, rows: Ints, h: Headers) -> None:
        data = self.rx.data
        for k, row in zip(take.tolist(), rows.tolist(), strict=True):
            leg = self._by_row[row]
            if leg is None:
                continue
            payload = data[k, h.start[k] : h.end[k]].tobytes()
            digit = leg._dtmf_receiver.receive(int(h.ssrc[k]), int(h.ts[k]), payload)
            if digit is not None:
                leg.counters.dtmf_received += 1
                leg.push_dtmf(digit)

    def _queue(self, take: Ints, rows: Ints, h: Headers, now: float) -> None:
        start, end = h.start[take], h.end[take]
        size = end - start
        fits = size <= MAX_PAYLOAD
        if not fits.all():
            self.stats["malformed"] += int(np.count_nonzero(~fits))
            take, rows, start, size = take[fits], rows[fits], start[fits], size[fits]
        width = int(size.max()) if len(size) else 0  # copy no more than the tick's widest
        payload = gather(self.rx.data, take, start, width)
        ssrc, seq, ts = h.ssrc[take], h.seq[take], h.ts[take]
        changes = self.jitter.ssrc_changes[rows].sum()
        self.jitter.put(rows, ssrc, seq, payload, size)
        if self.jitter.ssrc_changes[rows].sum() != changes:
            for row in np.unique(rows).tolist():
                leg = self._by_row[row]
                if leg is not None:
                    leg.counters.ssrc_changes = int(self.jitter.ssrc_changes[row])
        self._receiver_stats(rows, ssrc, seq, ts, now)

    def _receiver_stats(self, rows: Ints, ssrc: Ints, seq: Ints, ts: Ints, now: float) -> None:
        """RFC 3550 counts and interarrival jitter (arrival times are the tick's: the
        jitter is measured to a tick, what this engine's playout can follow anyway)."""
        new = self.stats_ssrc[rows] != ssrc
        if new.any():
            fresh = rows[new]
            self.stats_ssrc[fresh] = ssrc[new]
            self.audio_in[fresh] = 0
            self._prior[fresh] = 0
            self.jitter_ts[fresh] = 0.0
            self.transit[fresh] = np.nan
            self.base[fresh] = self.jitter.highest[fresh]
        np.add.at(self.audio_in, rows, 1)
        self.base[rows] = np.minimum(self.base[rows], self.jitter.highest[rows])
        transit = np.floor(now * self.rtp_rate[rows]) - ts
        d = np.abs(transit - self.transit[rows])
        ok = np.isfinite(d) & (d < 2**31)
        self.jitter_ts[rows[ok]] += (d[ok] - self.jitter_ts[rows[ok]]) / 16.0
        self.transit[rows] = transit

    def _pop(self) -> None:
        rows = self.rows
        out = self.jitter.pop(rows)
        self._popped = out
        self.status[rows] = out.status
        index = np.full(len(rows), -1, dtype=np.int64)
        frames = out.status == FRAME
        index[frames] = np.arange(int(np.count_nonzero(frames)))
        self.pindex[rows] = index

    def decode(self, rows: Ints) -> None:
        """This tick's audio of ``rows`` into :attr:`frames` (``heard`` where there is
        some): 20 ms G.711 in one table look-up for all, lost frames concealed as
        :mod:`media.conceal` does (the last frame at half level, three times, then
        silence); other codecs by each leg's decoder."""
        out = self._popped
        self.heard[rows] = False
        self.decoded_at[rows] = self.tick_count
        if out is None:
            return
        status = self.status[rows]
        table_rows = self.codec_id[rows] != OTHER_ID
        got = rows[(status == FRAME) & table_rows]
        if len(got):
            index = self.pindex[got]
            lengths = out.length[index]
            codec = self.codec_id[got]
            plain = lengths == 160
            for cid, table in _TABLES.items():
                pick = plain & (codec == cid)
                if pick.any():
                    codes = out.payload[index[pick], :160]
                    self.frames[got[pick], :160] = g711.decode_rows(table, codes)
            for i in np.flatnonzero(~plain).tolist():  # a peer with another packet time
                n = int(lengths[i])
                decoded = _TABLES[int(codec[i])][out.payload[index[i], :n]]
                self.frames[got[i], :160] = np.resize(decoded, 160) if n else 0
            self.repeats[got] = 0
            self.heard[got] = True
        lost = rows[(status == LOST) & table_rows]
        if len(lost):
            conceal = lost[self.repeats[lost] < MAX_REPEATS]
            self.repeats[conceal] += 1
            self.frames[conceal, :160] //= 2  # a table row's frame is its last one heard
            self.heard[conceal] = True
        for row, state in zip(
            rows[~table_rows].tolist(), status[~table_rows].tolist(), strict=True
        ):
            leg = self._by_row[row]
            frame = leg._decode_own(state) if leg is not None else None
            if frame is not None:
                n = min(len(frame), FRAME_WIDTH)
                self.frames[row, :n] = frame[:n]
                self.heard[row] = True

    def _payload(self, row: int) -> bytes | None:
        out = self._popped
        i = int(self.pindex[row])
        if out is None or i < 0 or self.status[row] != FRAME:
            return None
        return out.payload[i, : out.length[i]].tobytes()

    def _plan(self) -> None:
        self._relay_rows = np.flatnonzero(self.relay_from >= 0)
        self._plan_dirty = False

    def _send(self, tick: int) -> None:
        if self._plan_dirty:
            self._plan()
        tx, has, size = self.tx, self._has, self._size
        rows = self.rows
        has[rows] = False
        self._marker[rows] = False
        self._pt_out[rows] = self.pt[rows]
        self._ts_out[rows] = self.ts[rows]
        out = self._popped
        relay = self._relay_rows
        if len(relay) and out is not None:
            index = self.pindex[self.relay_from[relay]]
            ok = index >= 0
            if ok.any():
                target, index = relay[ok], index[ok]
                tx.data[target, 12 : 12 + out.payload.shape[1]] = out.payload[index]
                size[target] = out.length[index]
                has[target] = True
        sending = self.sending
        for source, legs in list(self._groups.items()):
            cached = self._group_rows.get(source)
            if cached is None:
                cached = self._group_rows[source] = np.array(
                    sorted(leg.row for leg in legs), dtype=np.int64
                )
            target = cached
            groups, singles = source.payloads(self, target[sending[target]], tick)
            for rows_of, payload in groups:
                n = len(payload)
                if n > MAX_PAYLOAD:
                    continue
                tx.data[rows_of, 12 : 12 + n] = np.frombuffer(payload, dtype=np.uint8)
                size[rows_of] = n
                has[rows_of] = True
            for row, single in singles:
                if single is not None and len(single) <= MAX_PAYLOAD:
                    n = len(single)
                    tx.data[row, 12 : 12 + n] = np.frombuffer(single, dtype=np.uint8)
                    size[row] = n
                    has[row] = True
        for leg in list(self._python):
            packet = leg._packet(tick)
            if packet is None:
                continue
            payload, pt, marker, ts = packet
            row, n = leg.row, len(payload)
            if n > MAX_PAYLOAD:
                continue
            tx.data[row, 12 : 12 + n] = np.frombuffer(payload, dtype=np.uint8)
            size[row] = n
            has[row] = True
            self._pt_out[row] = pt
            self._marker[row] = marker
            if ts is not None:
                self._ts_out[row] = ts
        sendable = rows[has[rows] & self.sending[rows] & (self.dst_port[rows] > 0)]
        if len(sendable):
            s = sendable
            tx.length[s] = 12 + size[s]
            write_headers(
                tx.data,
                s,
                self._pt_out[s],
                self.seq[s],
                self._ts_out[s],
                self.ssrc[s],
                self._marker[s],
            )
            tx.ip[s] = self.dst_ip[s]
            tx.port[s] = self.dst_port[s]
            secure = s[self.srtp[s]]
            if len(secure):
                s = self._encrypt(s, secure)
            sent = 0
            if len(self._pair_by_id) == 1:  # one shared port: every row goes out there
                (only,) = self._pair_by_id.values()
                sent = only.rtp.send(tx, s)
            else:  # rows grouped by the pair they leave from: one sendmmsg per pair
                ids = self.pair_id[s]
                order = np.argsort(ids, kind="stable")
                ids, grouped = ids[order], s[order]
                starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
                ends = np.r_[starts[1:], len(ids)]
                for first, end in zip(starts.tolist(), ends.tolist(), strict=True):
                    pair = self._pair_by_id.get(int(ids[first]))
                    if pair is not None:
                        sent += pair.rtp.send(tx, grouped[first:end])  # still ascending
            self.sent[s] += 1
            self.sent_octets[s] += size[s]
            self.seq[s] = (self.seq[s] + 1) & 0xFFFF
            self.stats["sent"] += sent
            self.stats["dropped"] += len(s) - sent
        self.ts[rows] = (self.ts[rows] + self.step[rows]) & 0xFFFFFFFF

    def _encrypt(self, rows: Ints, secure: Ints) -> Ints:
        """Protect the SRTP legs' packets of ``rows`` in place (one libsrtp call each, on
        the row); a packet libsrtp refuses (a key used up) is not sent."""
        by_row = self._by_row
        contexts = [by_row[r].srtp_out for r in secure.tolist()]
        failed = protect_rows(contexts, self.tx.data, secure, self.tx.length)
        if failed:
            self.stats["srtp_refused"] += len(failed)
            rows = rows[~np.isin(rows, failed)]
        return rows

    # -- RTCP --------------------------------------------------------------------------------

    def _interval(self, *, initial: bool = False) -> float:
        return rtcp_interval(2, 1, 500.0, True, 100.0, initial, self._rng)

    def _rtcp_tick(self, now: float) -> None:
        self._rtcp_receive(now)
        rows = self.rows
        due = rows[self.rtcp_due[rows] <= now]
        for row in due.tolist()[:16]:  # a few per tick: reports are spread over time
            leg = self._by_row[row]
            if leg is None:
                continue
            self.rtcp_due[row] = now + self._interval()
            self._send_rtcp(leg, now)

    def report_block(self, leg: MediaLeg, now: float) -> ReportBlock | None:
        """``leg``'s reception report on its phone's stream (closes the interval)."""
        row = leg.row
        if self.audio_in[row] == 0:
            return None
        highest = int(self.jitter.highest[row])
        expected = highest - int(self.base[row]) + 1
        received = int(self.audio_in[row])
        prior_expected, prior_received = (int(x) for x in self._prior[row])
        self._prior[row] = (expected, received)
        last_sr_at = float(self.last_sr_at[row])
        return report_block(
            int(self.stats_ssrc[row]),
            expected,
            received,
            (prior_expected, prior_received),
            highest,
            float(self.jitter_ts[row]),
            int(self.last_sr[row]),
            now - last_sr_at if np.isfinite(last_sr_at) else None,
        )

    def rtcp_packets(self, leg: MediaLeg, now: float, *, bye: bool = False) -> list[RtcpPacket]:
        row = leg.row
        block = self.report_block(leg, now)
        sent = int(self.sent[row])
        counts = (ntp_timestamp(time.time()), int(self.ts[row]), sent, int(self.sent_octets[row]))
        blocks = (block,) if block is not None else ()
        return report_packets(leg.ssrc, leg.cname, blocks, counts if sent else None, bye=bye)

    def _send_rtcp(self, leg: MediaLeg, now: float, *, bye: bool = False) -> None:
        target = leg.remote_rtcp
        if target is None:
            return
        if leg.dtls is not None and leg.srtp_out is None:
            return  # a browser's leg before its keys: nothing in the clear
        packet = build_compound(self.rtcp_packets(leg, now, bye=bye))
        if leg.srtp_out is not None:
            packet = leg.srtp_out.protect_rtcp(packet)
        sock = leg.ports.rtp.sock if leg.browser is not None else leg.ports.rtcp.sock
        try:
            sock.sendto(packet, target)
        except OSError:
            return
        leg.counters.rtcp_sent += 1
        self.stats["rtcp_sent"] += 1

    def _rtcp_receive(self, now: float) -> None:
        batch = self._rtcp_rx
        spans = self._drain(batch, rtcp=True)
        if not batch.count:
            return
        for pair, first, last in spans:
            if pair.shared:  # RTCP comes from the RTP port + 1, or from the RTP IP alone
                ports = batch.port[first:last] - 1
                owners = pair.owners(batch.ip[first:last], ports).tolist()
            else:
                (only,) = pair.legs
                owners = [only.row] * (last - first)
            for i, owner in zip(range(first, last), owners, strict=True):
                if owner != ENDED:  # an ended call's last report: dropped quietly
                    self._rtcp_one(i, self._by_row[owner] if owner >= 0 else None, now)

    def _rtcp_one(self, i: int, leg: MediaLeg | None, now: float) -> None:
        batch = self._rtcp_rx
        source = (address_text(batch.ip[i].tobytes()), int(batch.port[i]))
        if leg is None:
            self._count_strays("rtcp_foreign")
            if self._strays(source, now):
                self._report(None, source, "rtcp_foreign")
            return
        verdict = leg.policy.check_rtcp(source, now)
        if not verdict.accept:
            leg.counters.foreign += 1
            if verdict.report:
                self._report(leg, source, verdict.reason or "rtcp_foreign")
            return
        self._rtcp_data(leg, batch.data[i, : batch.length[i]].tobytes(), source, now)

    def _rtcp_data(self, leg: MediaLeg, data: bytes, source: Address, now: float) -> None:
        """An RTCP (or SRTCP) packet ``leg``'s policy accepted, or muxed on a browser's
        RTP port from its latched address."""
        if leg.srtp_in is not None:
            plain = leg.srtp_in.unprotect_rtcp(data)
            if plain is None:
                self._srtp_refused(leg, source, "srtp_auth", now)
                return
            data = plain
        try:
            packets = parse_rtcp(data)
        except PacketError:
            leg.counters.malformed += 1
            self.stats["malformed"] += 1
            return
        leg.counters.rtcp_received += 1
        self.stats["rtcp_received"] += 1
        leg.remote_rtcp = source
        for packet in packets:
            if isinstance(packet, SenderReport):
                self.last_sr[leg.row] = (packet.ntp_timestamp >> 16) & 0xFFFFFFFF
                self.last_sr_at[leg.row] = now
            if isinstance(packet, SenderReport | ReceiverReport):
                for block in packet.reports:
                    if block.ssrc == leg.ssrc:
                        leg.peer_report = block

    # -- shared audio ---------------------------------------------------------------------------

    def prompt(self, name: str, rate: int = 8000) -> Samples:
        key = (name, rate)
        samples = self._prompts.get(key)
        if samples is None:
            samples = self._prompts[key] = load_audio(prompt_path(name, self.language), rate)
        return samples

    def shared(self, name: str, make: Callable[[int], Samples]) -> SharedSource:
        """The shared source ``name`` (created on first use); ``make(rate)`` gives its
        audio at ``rate``, called once per rate that some leg needs."""
        source = self._shared.get(name)
        if source is None:
            source = self._shared[name] = SharedSource(make)
        return source

    def tone_source(self, name: str) -> SharedSource:
        return self.shared(f"tone:{name}", lambda rate: tone(name, self.country, rate)[0])

    def close(self) -> None:
        self._unsubscribe()
        for leg in list(self.legs):
            leg.close()
        for pair in self._pairs.values():
            pair.close()
        self._pairs.clear()
        self._poller.close()
