"""B2BUA calls: parties with anchored media, bridging, hold, transfer.

A :class:`Party` is one side of a call as the PBX sees it: a SIP dialog (incoming or
outgoing) and the RTP leg anchored for it. Two bridged parties hear each other; a party
that puts its peer on hold (a re-INVITE with sendonly/inactive) gets no media from us
while its peer hears the hold music; resuming reconnects them. A REFER moves a party's
peer to a new party (blind) or to the peer of another of its calls (attended, Replaces).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sip
from media.codecs import CODECS, Options

from . import codec_policy
from .config import User
from .encryption import PLAIN, Encryption
from .media_engine import LegSource, MediaLeg, Source

log = logging.getLogger(__name__)

SIP_CODECS = {"PCMU": sip.PCMU, "PCMA": sip.PCMA, "G722": sip.G722}


def codec_preference(first: str | None = None) -> list[sip.Codec]:
    """Our codecs for an offer or answer, ``first`` (the other leg's codec) leading so
    that a bridge rarely needs transcoding."""
    order = ["PCMU", "PCMA", "G722"]
    if first in order:
        order.remove(first)
        order.insert(0, first)
    return [SIP_CODECS[name] for name in order if name in CODECS]


@dataclass(eq=False)
class Party:
    call: sip.Call
    leg: MediaLeg
    user: User | None = None
    label: str = ""
    device: str | None = None  # which of the user's devices (its name), when known
    offer: sip.SessionDescription | None = None  # an incoming party's SDP offer
    peer: Party | None = None
    holding: bool = False  # this party has put its peer on hold
    hold_source: Callable[[Party], Source] | None = None
    on_gone: list[Callable[[Party], None]] = field(default_factory=list)
    # called once when a destination takes this party's call (answers it or connects it):
    # a blind transfer reports success to the transferor then
    on_taken: list[Callable[[], None]] = field(default_factory=list)
    # codecs this party's phone or trunk may use, best first (softswitch.codec_policy)
    codecs: list[str] = field(default_factory=lambda: codec_policy.usable(codec_policy.DEFAULT))
    partner_codec: str | None = None  # the codec of the leg it is about to be bridged to
    partner_max_bitrate: int | None = None  # and what that leg's phone may receive (Opus)
    started: float = field(default_factory=time.time)  # wall clock: the call's "Time"
    encryption: Encryption = PLAIN  # SRTP with this party's phone (softswitch.encryption)

    @property
    def ended(self) -> bool:
        return self.call.state is sip.CallState.ENDED

    @property
    def host(self) -> str:
        return self.leg.local[0]

    def usable_codecs(self) -> list[str]:
        """The codecs this party can take without transcoding: the one in use once its
        media is set up, else those of its offer that its policy allows."""
        if self.leg.codec is not None:
            return [self.leg.codec.name]
        offered = codec_policy.offered(self.offer)
        return [name for name in self.codecs if name in offered]

    def max_bitrate(self) -> int | None:
        """The bitrate this party's phone asked not to exceed (Opus maxaveragebitrate)."""
        if self.leg.stream is not None:
            return self.leg.stream.options.max_bitrate
        return Options.from_fmtp(codec_policy.fmtp_of(self.offer, "OPUS")).max_bitrate

    def expect_partner(self, leg: MediaLeg) -> None:
        """Note the set-up leg this party is about to be bridged to, so that its answer
        takes the same codec (no transcoding) and passes on the leg's limits."""
        if leg.stream is not None:
            self.partner_codec = leg.stream.codec.name
            self.partner_max_bitrate = leg.stream.options.max_bitrate

    def answer_sdp(
        self, offer: sip.SessionDescription
    ) -> tuple[sip.SessionDescription, sip.AudioStream | None]:
        # the codec in use (a re-INVITE keeps it), else the partner's: no transcoding
        keep = self.leg.codec.name if self.leg.codec else self.partner_codec
        limit = self.partner_max_bitrate
        if self.peer is not None and self.peer.leg.stream is not None:
            limit = self.peer.leg.stream.options.max_bitrate
        chosen = codec_policy.answer_codecs(self.codecs, offer, keep, limit)
        browser = self.leg.browser_terms() if from_browser(offer) else None
        return sip.answer(
            offer, self.host, self.leg.local[1], chosen, browser=browser, **self.srtp_terms()
        )

    def srtp_terms(self) -> dict[str, Any]:
        """The ``encryption`` and ``key`` arguments of :func:`sip.answer` and
        :func:`sip.make_offer` for this party."""
        return srtp_terms(self.encryption, self.leg)

    def __repr__(self) -> str:
        return f"<Party {self.label} {self.call.call_id}>"


def from_browser(offer: sip.SessionDescription | None) -> bool:
    """Whether ``offer`` is a browser's (a WebRTC line: ICE, DTLS-SRTP, sip.webrtc)."""
    return offer is not None and any(m.proto.upper() == sip.webrtc.PROFILE for m in offer.media)


def srtp_terms(encryption: Encryption, leg: MediaLeg) -> dict[str, Any]:
    """Offer/answer arguments for ``encryption`` on ``leg``: our key only where keys may
    be exchanged (the leg's key is made on first use)."""
    if encryption.policy == "off":
        return {}
    return {"encryption": encryption.policy, "key": leg.key if encryption.keys else None}


def refresh_media(party: Party) -> None:
    """Set what ``party`` and its peer hear, from who holds whom."""
    peer = party.peer
    if peer is None:
        return
    for listener, talker in ((party, peer), (peer, party)):
        if talker.holding and listener.hold_source is not None:
            listener.leg.source = listener.hold_source(talker)
        elif listener.holding:
            listener.leg.source = None  # it asked us not to send (recvonly from us)
        else:
            listener.leg.source = LegSource(talker.leg)


def bridge(a: Party, b: Party) -> None:
    a.peer, b.peer = b, a
    a.leg.dtmf_peer, b.leg.dtmf_peer = b.leg, a.leg  # keys pass through (RFC 4733 or tones)
    refresh_media(a)
    log.info(  # which codecs meet (a transcoded bridge shows here): kept at INFO
        "event=bridged a=%s b=%s codec_a=%s codec_b=%s",
        a.label,
        b.label,
        a.leg.codec.name if a.leg.codec else None,
        b.leg.codec.name if b.leg.codec else None,
    )


def unbridge(party: Party) -> Party | None:
    peer = party.peer
    party.peer = None
    party.leg.dtmf_peer = party.leg.key_filter = None
    if peer is not None and peer.peer is party:
        peer.peer = None
        peer.leg.dtmf_peer = peer.leg.key_filter = None
    return peer


async def on_reinvite(party: Party, request: sip.Request) -> bytes | None:
    """A re-INVITE from ``party``: answer from its leg, follow hold/resume."""
    if not request.body:
        return None  # no offer: we keep our SDP (the peer answers in the ACK)
    try:
        offer = sip.parse_sdp(request.body)
    except sip.ParseError as exc:
        raise sip.RequestRefused(488, f"Not Acceptable Here ({exc})") from None
    answer, stream = party.answer_sdp(offer)
    if stream is None:
        raise sip.RequestRefused(488)
    party.leg.configure(stream)
    was = party.holding
    party.holding = stream.remote_hold
    if was != party.holding:
        log.info("event=%s party=%s", "hold" if party.holding else "resume", party.label)
    refresh_media(party)
    return bytes(answer)


def sipfrag(status: int, reason: str | None = None) -> str:
    return f"SIP/2.0 {status} {reason or sip.REASONS.get(status, '')}"
