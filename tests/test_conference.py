"""The conference bridge with 50 real RTP legs (this project's load generator) and a baresip
leg: what each leg hears proves talkers, N-1, mute, listening modes, entry tones, lock,
recording and limits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import soundfile

from softswitch.loadgen import ConferenceLoad
from softswitch.pbx import Pbx

from .netutil import free_port
from .office import demo_pbx

HOST_CODE, CODE = "1001", "2001"
TALKERS = {0: 400.0, 1: 1000.0, 2: 1700.0}  # leg 0 is the host


def level(audio: np.ndarray, freq: float) -> float:
    """Relative level of ``freq`` in ``audio`` (peak magnitude near it / total RMS)."""
    if len(audio) < 800:
        return 0.0
    x = audio.astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    freqs = np.fft.rfftfreq(len(x), 1 / 8000)
    near = spectrum[(freqs > freq - 15) & (freqs < freq + 15)]
    return float(near.max() / (np.sqrt(np.mean(x * x)) * len(x) + 1e-9))


def present(audio: np.ndarray, freq: float) -> bool:
    return level(audio, freq) > 0.05


async def make_pbx(tmp_path: Path, extra: str = "") -> Pbx:
    return await demo_pbx(tmp_path, extra=extra, rtp=34000)


@pytest.fixture
async def pbx(tmp_path: Path) -> AsyncIterator[Pbx]:
    p = await make_pbx(tmp_path)
    yield p
    await p.stop()


def bridge(pbx: Pbx) -> str:
    return f"sip:800@127.0.0.1:{pbx.ua.listeners[0].port}"


async def settle(seconds: float = 1.2) -> None:
    await asyncio.sleep(seconds)


async def members(pbx: Pbx, count: int, timeout: float = 15.0) -> None:
    """Wait until the demo user 100's conference has ``count`` members."""
    for _ in range(int(timeout / 0.1)):
        room = pbx.conference.rooms.get("100")
        if room is not None and len(room.members) == count:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the room never had {count} members")


async def test_fifty_legs(pbx: Pbx) -> None:
    load = ConferenceLoad(
        bridge(pbx), user="101", password="bob101", legs=54, talkers=3, record=(1, 10)
    )
    await load.start()
    try:
        await load.join_all(CODE, {0: HOST_CODE}, indexes=list(range(50)))
        assert sum(1 for leg in load.legs if leg.call) == 50
        await members(pbx, 50)
        await settle(1.0)
        room = pbx.conference.rooms["100"]
        assert len(room.members) == 50 and room.hosts == 1
        heard = load.heard(10, 1.0)  # a silent listener hears every talker
        assert all(present(heard, f) for f in TALKERS.values())
        talker = load.heard(1, 1.0)  # a talker hears the others, not itself (N-1)
        assert present(talker, 400) and present(talker, 1700) and not present(talker, 1000)

        # a participant mutes its own line: its tone leaves everyone's audio
        load.press(2, "*6")
        await settle()
        heard = load.heard(10, 0.8)
        assert present(heard, 400) and present(heard, 1000) and not present(heard, 1700)

        # entry tone (1400 Hz) when someone joins, with the default "both" tones
        mark = load.mark(10)
        await load.join_all(CODE, indexes=[50])
        await settle(1.0)
        assert present(load.heard_since(10, mark), 1400)
        # the host turns tones off (*4 once, then the window closes): no entry tone
        load.press(0, "*4")
        await settle(2.8)
        assert room.tones == 1
        mark = load.mark(10)
        await load.join_all(CODE, indexes=[51])
        await settle(1.0)
        assert not present(load.heard_since(10, mark), 1400)

        # listening mode 1 (host: *2 once): callers muted, one unmutes itself with *#6
        load.press(0, "*2")
        await settle(3.0)
        assert room.mode == 1
        heard = load.heard(10, 0.6)
        assert present(heard, 400) and not present(heard, 1000)
        load.press(1, "*#6")
        await settle()
        assert present(load.heard(10, 0.6), 1000)

        # recording: the host starts and stops it; the file holds the talkers
        load.press(0, "*9")
        await settle(2.0)
        load.press(0, "*9")
        await settle(0.5)
        [recording] = list((pbx.data_dir / "recordings").glob("conf-100-*.wav"))
        audio, _ = soundfile.read(recording, dtype="int16")
        assert len(audio) > 8000 and present(audio, 400) and present(audio, 1000)

        # lock (*5): a new caller with the right code is refused and hung up
        load.press(0, "*5")
        await settle()
        assert room.locked
        await load.join_all(CODE, indexes=[52])
        call = load.legs[52].call
        assert call is not None
        await asyncio.wait_for(call.ended.wait(), 15)
        assert len(room.members) == 52
    finally:
        await load.stop()


async def test_wrong_codes_end_the_call_politely(pbx: Pbx) -> None:
    load = ConferenceLoad(bridge(pbx), user="101", password="bob101", legs=1, talkers=0)
    await load.start()
    try:
        await load.join_all("9999")
        leg = load.legs[0]
        assert leg.call is not None
        for _ in range(2):
            await asyncio.sleep(4.5)  # "That code is not valid." then the code prompt again
            load.press(0, "9999#")
        await asyncio.wait_for(leg.call.ended.wait(), 20)
        assert leg.call.end_reason == "remote BYE"
    finally:
        await load.stop()


async def test_limits_are_explicit(tmp_path: Path) -> None:
    pbx = await make_pbx(
        tmp_path, "\n[conference]\nmax_legs = 3\nmax_legs_total = 5\njoin_before_host = true\n"
    )
    load = ConferenceLoad(bridge(pbx), user="101", password="bob101", legs=7, talkers=0)
    await load.start()
    try:
        await load.join_all(CODE, indexes=[0, 1, 2])
        await members(pbx, 3)
        await load.join_all(CODE, indexes=[3])  # the room is full: told so, hung up
        call = load.legs[3].call
        assert call is not None
        await asyncio.wait_for(call.ended.wait(), 15)
        # the room's refusal freed its bridge leg: legs 4 and 5 make five on the bridge
        await load.join_all(CODE, indexes=[4, 5])
        assert load.legs[4].call is not None and load.legs[5].call is not None
        await load.join_all(CODE, indexes=[6])  # a sixth: 503 before answering
        assert load.legs[6].call is None and "503" in (load.legs[6].failed or "")
        assert len(pbx.conference.rooms["100"].members) == 3
    finally:
        await load.stop()
        await pbx.stop()


async def test_a_users_own_conference_settings(tmp_path: Path) -> None:
    """User 100's conference goes on after its host leaves (a per-conference setting)."""
    pbx = await make_pbx(tmp_path, "")
    users = [
        u.model_copy(update={"conference_end_with_host": False}) if u.extension == "100" else u
        for u in pbx.config.users
    ]
    pbx.config = pbx.config.model_copy(update={"users": users})
    load = ConferenceLoad(
        bridge(pbx), user="101", password="bob101", legs=3, talkers=2, record=(2,)
    )
    await load.start()
    try:
        await load.join_all(CODE, {0: HOST_CODE})
        await members(pbx, 3)
        await load.hangup(0)
        await members(pbx, 2)
        await settle(1.0)
        assert present(load.heard(2, 0.8), 1000)  # the others go on talking
    finally:
        await load.stop()
        await pbx.stop()


async def test_participants_wait_for_the_host_with_music(pbx: Pbx) -> None:
    load = ConferenceLoad(
        bridge(pbx), user="101", password="bob101", legs=3, talkers=2, record=(2,)
    )
    await load.start()
    try:
        await load.join_all(CODE, indexes=[1, 2])  # participants only
        for _ in range(100):
            room = pbx.conference.rooms.get("100")
            if room is not None and len(room.waiting) == 2:
                break
            await asyncio.sleep(0.1)
        await settle(2.0)
        room = pbx.conference.rooms["100"]
        assert len(room.waiting) == 2 and not room.members
        assert not present(load.heard(2, 1.0), 1000)  # waiting: music, not each other
        await load.join_all(HOST_CODE, indexes=[0])
        await members(pbx, 3)
        await settle(1.0)
        assert present(load.heard(2, 0.8), 1000) and present(load.heard(2, 0.8), 400)
        await load.hangup(0)  # the host leaves: the conference ends for everyone
        call = load.legs[1].call
        assert call is not None
        await asyncio.wait_for(call.ended.wait(), 15)
    finally:
        await load.stop()


async def test_keys_from_a_baresip_leg(pbx: Pbx, tmp_path: Path) -> None:
    """baresip (not ours) joins by typing the code, talks, and mutes itself with *6."""
    from media.tones import sine_mix

    from .baresip import Phone

    port = pbx.ua.listeners[0].port
    tone = tmp_path / "tone600.wav"
    soundfile.write(tone, sine_mix((600.0,), 8000 * 60, 8000, -12), 8000, subtype="PCM_16")
    phone = Phone(
        "conf",
        tmp_path / "baresip",
        f"<sip:102@127.0.0.1:{port}>;auth_pass=carol102;regint=0;audio_codecs=PCMU",
        tone,
        free_port(),
        free_port(),
        47000,
    )
    load = ConferenceLoad(
        bridge(pbx), user="101", password="bob101", legs=2, talkers=1, record=(1,)
    )
    await load.start()
    await phone.start()
    try:
        await load.join_all(CODE, {0: HOST_CODE})
        await members(pbx, 2)
        await phone.command("dial", bridge(pbx))
        await phone.wait_event("CALL_ESTABLISHED")
        await settle(0.5)
        for key in CODE + "#":
            await phone.command("sndcode", key)
            await asyncio.sleep(0.25)
        await members(pbx, 3)
        await settle(1.5)
        assert present(load.heard(1, 0.8), 600)  # the listener hears baresip
        for key in "*6":
            await phone.command("sndcode", key)
            await asyncio.sleep(0.25)
        await settle(1.5)
        assert not present(load.heard(1, 0.8), 600)  # muted by its own key
        assert present(load.heard(1, 0.8), 400)  # the host still talks
    finally:
        await phone.stop()
        await load.stop()


async def test_keys_by_sip_info_and_inband_and_a_g722_leg(pbx: Pbx) -> None:
    """Keys by SIP INFO and by in-band tones (on a PCMA leg) work like RFC 4733; a G.722
    (16 kHz) leg hears the room and is heard."""
    import numpy as np

    import sip
    from media import codecs
    from media.stream import AudioStream
    from media.tones import dtmf_tone, sine_mix
    from rtp import Session

    load = ConferenceLoad(
        bridge(pbx), user="101", password="bob101", legs=2, talkers=1, record=(1,)
    )
    await load.start()
    async with sip.UserAgent("udp:127.0.0.1:0", user="102") as ua:

        async def phone(codec: sip.Codec, dtmf: bool) -> tuple[sip.OutgoingCall, AudioStream]:
            session = Session(payload_type=codec.static_pt or 0, rtcp=False)
            local = await session.open("127.0.0.1")
            offer = bytes(sip.make_offer("127.0.0.1", local[1], (codec,), dtmf=dtmf))
            call = await ua.invite(bridge(pbx), offer, credentials=("102", "carol102"))
            answer = sip.process_answer(sip.parse_sdp(offer), sip.parse_sdp(call.remote_sdp or b""))
            session.set_remote((answer.remote_address, answer.remote_port))
            return call, AudioStream(session, codecs.codec(codec.name))

        info_call, info_audio = await phone(sip.PCMU, dtmf=True)
        _band_call, band_audio = await phone(sip.PCMA, dtmf=False)  # PCMA beside PCMU
        wide_call, wide_audio = await phone(sip.G722, dtmf=True)
        heard_wide: list[np.ndarray] = []
        talk = sine_mix((2300.0,), 16000 * 30, 16000, -12)  # the G.722 leg talks at 2300 Hz
        keys = np.concatenate([dtmf_tone(k, 100, 80) for k in CODE + "#"])
        n = 0

        async def media() -> None:
            nonlocal n
            while True:
                await asyncio.sleep(0.02)
                silence = np.zeros(160, np.int16)
                info_audio.write(silence)
                band_audio.write(
                    keys[n * 160 : (n + 1) * 160] if (n + 1) * 160 <= len(keys) else silence
                )
                wide_audio.write(talk[(n * 320) % len(talk) :][:320])
                heard_wide.append(wide_audio.read())
                info_audio.read()
                band_audio.read()
                n += 1

        task = asyncio.create_task(media())
        try:
            await load.join_all(CODE, {0: HOST_CODE})
            for key in CODE + "#":  # SIP INFO keys
                await info_call.send_dtmf(key)
                await wide_call.send_dtmf(key)
            await members(pbx, 5)  # in-band keys arrived too
            await settle(1.5)
            assert present(load.heard(1, 0.8), 2300)  # the wideband leg is heard
            wide = np.concatenate(heard_wide[-40:])
            spectrum = np.abs(np.fft.rfft(wide.astype(float)))
            freqs = np.fft.rfftfreq(len(wide), 1 / 16000)
            assert abs(freqs[int(np.argmax(spectrum))] - 400) < 10  # and hears the host
            room = pbx.conference.rooms["100"]
            assert room.size == 5
        finally:
            task.cancel()
            await load.stop()
