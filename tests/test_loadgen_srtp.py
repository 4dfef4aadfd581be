"""The load generator's SRTP (softswitch.loadgen): legs protect their packets in the send
batch's rows and verify and decrypt what a recorded leg receives, with no PBX between two
generators: one talks to the other, keys crossed as offer/answer would cross them."""

from __future__ import annotations

import asyncio

import numpy as np

import sip
from sip.sdes import new_key
from softswitch.loadgen import TALKER_TONES, ConferenceLoad


def dominant_hz(samples: np.ndarray, rate: int = 8000) -> float:
    x = samples[-rate:].astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum[5:]) + 5) * rate / len(x)


async def _talk(wrong_key: bool) -> tuple[ConferenceLoad, ConferenceLoad]:
    talker = ConferenceLoad("sip:unused@127.0.0.1", user="a", password="x", legs=1, talkers=1)
    listener = ConferenceLoad(
        "sip:unused@127.0.0.1", user="b", password="x", legs=1, talkers=0, record=(0,)
    )
    a, b = talker.legs[0], listener.legs[0]
    suite = "AES_CM_128_HMAC_SHA1_80"
    ka, kb = new_key()[:30], new_key()[:30]
    a.secure(sip.SrtpKeys(suite, ka, kb))
    b.secure(sip.SrtpKeys(suite, kb, new_key()[:30] if wrong_key else ka))
    a.remote, b.remote = (b.ip, b.port), (a.ip, a.port)
    await talker.start()
    await listener.start()
    try:
        await asyncio.sleep(1.5)
    finally:
        await talker.stop()
        await listener.stop()
    return talker, listener


async def test_srtp_legs_hear_each_other_through_protect_and_unprotect() -> None:
    talker, listener = await _talk(wrong_key=False)
    assert listener.srtp_verified > 40 and listener.srtp_failed == 0
    assert talker.srtp_failed == 0
    assert abs(dominant_hz(listener.heard(0)) - TALKER_TONES[0]) < 40


async def test_srtp_packets_under_another_key_are_dropped() -> None:
    _, listener = await _talk(wrong_key=True)
    assert listener.srtp_verified == 0 and listener.srtp_failed > 40
    assert len(listener.heard(0)) == 0


async def test_an_srtp_load_offers_rtp_savp_with_keys_over_tls() -> None:
    load = ConferenceLoad(
        "sip:800@127.0.0.1;transport=tls", user="a", password="x", legs=1, srtp=True
    )
    await load.start()
    try:
        assert sorted(lst.transport for lst in load.ua.listeners) == ["tls", "udp"]
        media = load.offer(load.legs[0], (sip.PCMU,)).media[0]
    finally:
        await load.stop()
    assert media.proto == "RTP/SAVP"
    assert len(media.attribute_values("crypto")) == 3
