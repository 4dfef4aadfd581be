"""Codecs' two rates, Opus through libopus, the codec policy and the two-band mixer."""

from __future__ import annotations

import numpy as np
import pytest

import sip
from media import codecs
from media.mixer import Mixer
from rtp import Session
from softswitch import codec_policy
from softswitch import config as cfg

from .audio import burst_signal, check_bursts, dominant_frequency


def test_audio_rate_and_rtp_clock_are_apart() -> None:
    g722, opus = codecs.codec("g722"), codecs.codec("opus")
    assert (g722.sample_rate, g722.rtp_clock) == (16000, 8000)
    assert (g722.samples_per_frame(20), g722.rtp_ticks(20)) == (320, 160)
    assert (opus.sample_rate, opus.rtp_clock) == (16000, 48000)
    assert (opus.samples_per_frame(20), opus.rtp_ticks(20)) == (320, 960)
    assert codecs.PCMU.rtp_ticks(30) == codecs.PCMU.samples_per_frame(30) == 240
    assert opus.available and "OPUS" in codecs.available()


@pytest.mark.parametrize("name", ["PCMU", "PCMA", "G722", "OPUS"])
def test_each_codec_keeps_pitch_and_duration(name: str) -> None:
    codec = codecs.codec(name)
    rate, n = codec.sample_rate, codec.samples_per_frame()
    signal = burst_signal(1000.0, rate, 3.0)
    enc, dec = codec.encoder(), codec.decoder()
    out = np.concatenate(
        [dec.decode(enc.encode(signal[i : i + n])) for i in range(0, len(signal), n)]
    )
    assert len(out) == len(signal)  # one frame of audio per frame sent, at the audio rate
    check_bursts(out, rate, 1000.0, name)


def test_opus_honours_maxaveragebitrate_and_fec() -> None:
    opus = codecs.codec("OPUS")
    options = codecs.Options.from_fmtp(
        "maxplaybackrate=16000; maxaveragebitrate=12000;useinbandfec=1"
    )
    assert options == codecs.Options(12000, True)
    assert codecs.Options.from_fmtp("maxaveragebitrate=1") == codecs.Options(6000, False)
    assert codecs.Options.from_fmtp(None) == codecs.Options()
    rng = np.random.default_rng(1)
    speechy = (burst_signal(300.0, 16000, 2.0) + rng.normal(0, 2000, 32000)).astype(np.int16)
    sizes = {}
    for bitrate in (12000, 32000):
        enc = opus.encoder(codecs.Options(bitrate, False))
        frames = [enc.encode(speechy[i : i + 320]) for i in range(0, 32000, 320)]
        sizes[bitrate] = 8 * 50 * np.mean([len(f) for f in frames[10:]])
    assert sizes[12000] <= 1.1 * 12000 < sizes[32000]  # capped at 24 kbit/s by default
    assert sizes[32000] <= 1.1 * codecs.OPUS_BITRATE
    # with FEC, a lost packet comes back from the next one
    enc, dec = opus.encoder(codecs.Options(24000, True)), opus.decoder()
    tone = burst_signal(700.0, 16000, 2.0, on=2.0, off=0.0)
    packets = [enc.encode(tone[i : i + 320]) for i in range(0, 32000, 320)]
    out = [dec.decode(p) for p in packets[:50]]
    assert isinstance(dec, codecs.Concealer)
    out.append(dec.conceal(packets[51]))  # packet 50 lost
    out += [dec.decode(p) for p in packets[51:]]
    recovered = np.concatenate(out)[50 * 320 : 51 * 320]
    assert abs(dominant_frequency(recovered, 16000) - 700) < 20
    assert np.sqrt(np.mean(recovered.astype(float) ** 2)) > 1000


def test_a_corrupt_payload_is_refused_not_fatal() -> None:
    dec = codecs.codec("OPUS").decoder()
    with pytest.raises(codecs.CodecError, match="Opus"):
        dec.decode(b"\xff" * 3)
    from media.stream import AudioStream

    session = Session(payload_type=96, rtcp=False)
    stream = AudioStream(session, codecs.codec("OPUS"))
    assert (session.clock_rate, session.frame_ticks) == (48000, 960)
    for seq, payload in enumerate((b"\xff" * 3, b"x" * 5000)):
        session.jitter.put(seq, seq * 960, payload)
    frames = [stream.read() for _ in range(6)]
    assert stream.refused == 2 and all(len(f) == 320 for f in frames)


def offer_of(*codecs_: sip.Codec) -> sip.SessionDescription:
    return sip.parse_sdp(bytes(sip.make_offer("127.0.0.1", 4000, list(codecs_))))


def test_policy_orders_and_never_transcodes_shared_codecs() -> None:
    config = cfg.parse(
        """
[server]
codecs = ["G722", "PCMU", "PCMA"]
[[users]]
extension = "100"
name = "A"
password = "secret1"
pin = "1234"
codecs = ["PCMA", "G722"]
device_codecs = { "VVX" = ["G722", "PCMU"] }
[[trunks]]
name = "provider"
proxy = "sip:192.0.2.1"
codecs = ["PCMA", "PCMU"]
""",
        "t.toml",
    )
    user, trunk = config.users[0], config.trunks[0]
    pref = codec_policy.preference
    assert pref(config) == ["G722", "PCMU", "PCMA"]
    assert pref(config, user=user) == ["PCMA", "G722"]
    assert pref(config, user=user, user_agent="PolycomVVX-VVX_400-UA/6.3") == ["G722", "PCMU"]
    assert pref(config, trunk=trunk) == ["PCMA", "PCMU"]
    # the second leg is offered what the first can use first
    names = [c.name for c in codec_policy.offer_codecs(["G722", "PCMU", "PCMA"], ["PCMA"])]
    assert names == ["PCMA", "G722", "PCMU"]
    # an answer takes the partner's codec when offered, else our first that is offered
    offer = offer_of(sip.PCMU, sip.G722)
    assert codec_policy.offered(offer) == ["PCMU", "G722"]
    assert [c.name for c in codec_policy.answer_codecs(["G722", "PCMU"], offer, "PCMU")] == ["PCMU"]
    assert [c.name for c in codec_policy.answer_codecs(["G722", "PCMU"], offer)] == ["G722"]
    assert codec_policy.answer_codecs(["PCMA"], offer) == []  # the policy says no: 488
    opus = codec_policy.answer_codecs(["OPUS"], offer_of(codec_policy.OPUS_SDP), None, 9000)
    assert opus[0].fmtp is not None and "maxaveragebitrate=9000" in opus[0].fmtp
    with pytest.raises(cfg.ConfigError, match=r"users\[0\].codecs: unknown codec 'G729'"):
        cfg.parse(
            '[[users]]\nextension = "10"\nname = "x"\npassword = "yyyy"\npin = "1234"\n'
            'codecs = ["G729"]\n',
            "t.toml",
        )


def test_two_band_mixer() -> None:
    """A narrowband and a wideband talker: each hears the other (N-1 in its own band); a
    wideband listener hears both at 16 kHz, a narrowband one both at 8 kHz."""
    mixer = Mixer(8)
    nb, wb = mixer.add(), mixer.add(wide=True)
    nb_listener, wb_listener = mixer.add(), mixer.add(wide=True)
    assert mixer.wideband
    nb_voice = burst_signal(600.0, 8000, 2.0, on=2.0, off=0.0)
    wb_voice = burst_signal(1500.0, 16000, 2.0, on=2.0, off=0.0)
    heard: dict[int, list[np.ndarray]] = {r: [] for r in (nb, wb, nb_listener, wb_listener)}
    for tick in range(100):
        mixer.put(nb, nb_voice[tick * 160 : (tick + 1) * 160])
        mixer.put(wb, wb_voice[tick * 320 : (tick + 1) * 320])
        out = mixer.mix()
        assert out.full_wide is not None and len(out.full_wide) == 320
        for row in heard:
            rate = 16000 if mixer.wide[row] else 8000
            heard[row].append(out.frame_for(row) if out.is_talker(row) else out.full_for(rate))

    def spectrum_peaks(x: np.ndarray, rate: int) -> set[int]:
        s = np.abs(np.fft.rfft(x[len(x) // 4 :].astype(float)))
        freqs = np.fft.rfftfreq(len(x[len(x) // 4 :]), 1 / rate)
        return {int(round(freqs[i] / 100) * 100) for i in np.argsort(s)[-2:]}

    assert dominant_frequency(np.concatenate(heard[nb])[4000:], 8000) == pytest.approx(1500, 0.01)
    assert dominant_frequency(np.concatenate(heard[wb])[8000:], 16000) == pytest.approx(600, 0.01)
    assert spectrum_peaks(np.concatenate(heard[nb_listener]), 8000) == {600, 1500}
    assert spectrum_peaks(np.concatenate(heard[wb_listener]), 16000) == {600, 1500}
