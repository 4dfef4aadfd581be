from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from media.dtmf_detect import DtmfDetector
from media.tones import dtmf_tone, sine_mix
from rtp import DtmfReceiver, DtmfSender, parse_event


def send_all(digits: str, duration_ms: int = 100) -> list[tuple[int, bytes, bool]]:
    """(rtp timestamp, payload, marker) of every event packet, frame by frame."""
    sender = DtmfSender()
    sender.queue(digits, duration_ms)
    out: list[tuple[int, bytes, bool]] = []
    timestamp = event_ts = 0
    while sender.active:
        packet, starting = sender.next_packet()
        if packet is not None:
            if starting:
                event_ts = timestamp
            out.append((event_ts, packet.payload, packet.marker))
        timestamp += 160
    return out


def test_rfc4733_packet_sequence() -> None:
    packets = send_all("5", 100)
    events = [parse_event(p) for _, p, _ in packets]
    assert {ts for ts, _, _ in packets} == {0}  # one timestamp for the whole event
    assert [m for _, _, m in packets] == [True] + [False] * (len(packets) - 1)
    assert [e.end for e in events] == [False] * 4 + [True] * 3  # three end packets
    assert [e.duration for e in events] == [160, 320, 480, 640, 800, 800, 800]
    assert all(e.digit == "5" for e in events)


@given(st.text("0123456789*#ABCD", min_size=1, max_size=6), st.data())
def test_events_survive_loss_of_any_single_packet(digits: str, data: st.DataObject) -> None:
    packets = send_all(digits)
    lost = data.draw(st.integers(0, len(packets) - 1))
    receiver = DtmfReceiver()
    got = [
        d
        for i, (ts, payload, _) in enumerate(packets)
        if i != lost and (d := receiver.receive(1, ts, payload)) is not None
    ]
    assert "".join(got) == digits


def test_duplicates_reported_once() -> None:
    receiver = DtmfReceiver()
    packets = send_all("7")
    got = [receiver.receive(1, ts, p) for ts, p, _ in packets + packets]
    assert [g for g in got if g] == ["7"]


def feed(detector: DtmfDetector, signal: np.ndarray) -> list[str]:
    out: list[str] = []
    for i in range(0, len(signal) - 159, 160):
        out += detector.feed(signal[i : i + 160])
    return out


def test_inband_all_digits() -> None:
    keys = "0123456789*#ABCD"
    signal = np.concatenate([dtmf_tone(k, 60, 60) for k in keys])
    assert "".join(feed(DtmfDetector(), signal)) == keys


@pytest.mark.parametrize("offset", [0.985, 1.015])
def test_inband_accepts_within_1_5_percent(offset: float) -> None:
    signal = sine_mix((770 * offset, 1336 * offset), 1600, 8000, -10)
    assert feed(DtmfDetector(), signal) == ["5"]


@pytest.mark.parametrize("offset", [0.965, 1.035])
def test_inband_rejects_beyond_3_5_percent(offset: float) -> None:
    signal = sine_mix((770 * offset, 1336 * offset), 1600, 8000, -10)
    assert feed(DtmfDetector(), signal) == []


def test_inband_twist_duration_and_speech() -> None:
    # high group 6 dB above low group: accepted (normal twist up to 8 dB)
    twisted = sine_mix((852,), 1600, 8000, -16) + sine_mix((1477,), 1600, 8000, -10)
    assert feed(DtmfDetector(), twisted) == ["9"]
    # low group 6 dB above high group: refused (reverse twist limit 4 dB)
    reverse = sine_mix((852,), 1600, 8000, -10) + sine_mix((1477,), 1600, 8000, -16)
    assert feed(DtmfDetector(), reverse) == []
    # 20 ms of tone is too short (Q.24: 40 ms)
    assert feed(DtmfDetector(), dtmf_tone("1", 20, 100)) == []
    # a single tone or noise is not DTMF
    assert feed(DtmfDetector(), sine_mix((697,), 1600, 8000, -10)) == []
    noise = np.random.default_rng(1).normal(0, 3000, 8000).astype(np.int16)
    assert feed(DtmfDetector(), noise) == []
    # a digit held long is one digit; a pause separates repeats
    assert feed(DtmfDetector(), np.concatenate([dtmf_tone("3", 500, 100)] * 2)) == ["3", "3"]
