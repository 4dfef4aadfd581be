"""Codec policy: which codecs a leg offers or accepts, in which order, and no transcoding
when the two legs of a bridge share a codec.

Preference comes from the configuration, most specific first: a user's device (matched
by a User-Agent substring), the user, the trunk, the server default. Codecs whose library
does not load here (Opus without libopus) are left out. The rule for a bridge: the leg
set up second is offered the codecs the first leg can use before the others, and a leg
answered after its partner gets the partner's codec when its offer has it; only when the
two phones have nothing in common is the call transcoded.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

import sip
from media import codecs

from .config import Config, Trunk, User

# What we put in SDP. Opus: we decode at 16 kHz (maxplaybackrate), send at most that
# (sprop-maxcapturerate) and decode in-band FEC (useinbandfec) - RFC 7587 §6.1.
OPUS_FMTP = "maxplaybackrate=16000;sprop-maxcapturerate=16000;useinbandfec=1"
OPUS_SDP = replace(sip.OPUS, fmtp=OPUS_FMTP)
SIP_CODECS: dict[str, sip.Codec] = {
    "PCMU": sip.PCMU,
    "PCMA": sip.PCMA,
    "G722": sip.G722,
    "OPUS": OPUS_SDP,
}
DEFAULT = ("G722", "PCMU", "PCMA", "OPUS")


def usable(names: Iterable[str]) -> list[str]:
    """``names`` (media's names) that this process can encode and decode, each once."""
    out: list[str] = []
    for name in names:
        canonical = name.upper()
        codec = codecs.CODECS.get(canonical)
        if codec is not None and codec.available and canonical not in out:
            out.append(canonical)
    return out


def preference(
    config: Config,
    *,
    user: User | None = None,
    trunk: Trunk | None = None,
    user_agent: str | None = None,
) -> list[str]:
    """The codecs of a leg toward ``user``'s device (or ``trunk``), best first."""
    if user is not None:
        agent = (user_agent or "").lower()
        for pattern, names in user.device_codecs.items():
            if agent and pattern.lower() in agent:
                return usable(names)
        if user.codecs:
            return usable(user.codecs)
    if trunk is not None and trunk.codecs:
        return usable(trunk.codecs)
    return usable(config.server.codecs)


def offered(offer: sip.SessionDescription | None) -> list[str]:
    """The codecs (media's names) of the first audio stream of ``offer``, in its order."""
    if offer is None:
        return []
    for media in offer.media:
        if media.media != "audio" or media.port == 0:
            continue
        maps = media.rtpmaps
        out: list[str] = []
        for fmt in media.formats:
            if not fmt.isdigit() or int(fmt) > 127:
                continue
            pt = int(fmt)
            for name, codec in SIP_CODECS.items():
                if codec.matches(pt, maps.get(pt)) and name not in out:
                    out.append(name)
        return out
    return []


def fmtp_of(offer: sip.SessionDescription | None, name: str) -> str | None:
    """The fmtp ``offer``'s first audio stream gives for codec ``name``."""
    if offer is None:
        return None
    codec = SIP_CODECS[name.upper()]
    for media in offer.media:
        if media.media != "audio" or media.port == 0:
            continue
        maps = media.rtpmaps
        for pt, fmtp in media.fmtps.items():
            if codec.matches(pt, maps.get(pt)):
                return fmtp
        return None
    return None


def sdp_codecs(names: Iterable[str], max_bitrate: int | None = None) -> list[sip.Codec]:
    """Our SDP codecs for ``names``. ``max_bitrate`` (the partner's maxaveragebitrate) is
    passed on in our Opus fmtp: a stream relayed from this leg to the partner then keeps
    within what the partner asked for (RFC 7587 §6.1)."""
    out = [SIP_CODECS[name] for name in usable(names)]
    if max_bitrate is not None:
        opus = replace(OPUS_SDP, fmtp=f"{OPUS_FMTP};maxaveragebitrate={max_bitrate}")
        out = [opus if c is OPUS_SDP else c for c in out]
    return out


def offer_codecs(
    mine: Sequence[str], partner: Sequence[str] = (), max_bitrate: int | None = None
) -> list[sip.Codec]:
    """What to offer a new leg whose partner can use ``partner``: the codecs both can use
    first (in this leg's order: the answerer takes one, and nothing is transcoded), then
    this leg's others (the call is transcoded if the phone takes one of those)."""
    shared = [name for name in mine if name in partner]
    return sdp_codecs([*shared, *mine], max_bitrate)


def answer_codecs(
    mine: Sequence[str],
    offer: sip.SessionDescription,
    partner: str | None = None,
    max_bitrate: int | None = None,
) -> list[sip.Codec]:
    """The codec to answer ``offer`` with, as a one-element list for :func:`sip.answer`
    (empty: nothing acceptable, answer 488): the partner leg's codec when the offer has
    it, else the first of ``mine`` that the offer has."""
    names = offered(offer)
    allowed = usable(mine)
    if partner is not None and partner.upper() in names and partner.upper() in allowed:
        return sdp_codecs([partner], max_bitrate)
    for name in allowed:
        if name in names:
            return sdp_codecs([name], max_bitrate)
    return []
