"""Which calls carry SRTP: the configured policy of a user, device or trunk, and what it
means on the transport a call's SIP travels over.

SDES keys are in the SDP, so they are only ever sent and taken over TLS: over UDP or TCP
an "optional" policy means plain RTP, and a "required" one means no call at all (every
offer is refused with 488; a callee reached only over UDP is not rung).
"""

from __future__ import annotations

from dataclasses import dataclass

import sip

from .config import Config, Trunk, User

ALL_CODECS = (sip.PCMU, sip.PCMA, sip.G722, sip.OPUS)  # what the engine can take
DRY_KEY = bytes(30)  # stands for a leg's key in a test answer that is never sent


@dataclass(frozen=True, slots=True)
class Encryption:
    """What offer/answer may do for one party (:mod:`sip.offer_answer`): ``policy`` is
    ``"off"``, ``"optional"`` or ``"required"``; ``keys``: SRTP keys may be exchanged (the
    signalling is TLS). Required without keys accepts nothing."""

    policy: str = "off"
    keys: bool = False

    @property
    def impossible(self) -> bool:
        """Required, but the keys could not be sent: no media can be agreed."""
        return self.policy == "required" and not self.keys


PLAIN = Encryption()


def configured(
    config: Config,
    user: User | None = None,
    device: str | None = None,
    trunk: Trunk | None = None,
) -> str:
    """The policy that applies: a device's, else its user's, else a trunk's, else the
    server's."""
    if user is not None:
        found = next((d for d in user.devices if d.name == device), None) if device else None
        if found is not None and found.media_encryption is not None:
            return found.media_encryption
        if user.media_encryption is not None:
            return user.media_encryption
    if trunk is not None and trunk.media_encryption is not None:
        return trunk.media_encryption
    return config.server.media_encryption


def effective(policy: str, transport: str) -> Encryption:
    """``policy`` on a call whose SIP goes over ``transport``."""
    secure = transport.lower() == "tls"
    if policy == "off" or (policy == "optional" and not secure):
        return PLAIN
    return Encryption(policy, secure)


def srtp_check(offer: sip.SessionDescription, encryption: Encryption) -> bool:
    """Whether some audio line of ``offer`` is acceptable under ``encryption`` (codecs
    aside): the early test that refuses an offer with 488 before anything rings."""
    key = DRY_KEY if encryption.keys else None
    # a browser's line is always encrypted (DTLS-SRTP), whatever the policy and transport
    browser = sip.webrtc.Local("dry", "d" * 22, ("sha-256", "00:00"))
    _, stream = sip.answer(
        offer, "0.0.0.0", 9, ALL_CODECS, encryption=encryption.policy, key=key, browser=browser
    )
    return stream is not None
