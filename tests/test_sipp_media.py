"""RTP audio interop with SIPp: what SIPp plays we record; what we play SIPp receives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

from media.g711 import ulaw_encode
from media.tones import sine_mix

from .audio import active, best_correlation, dominant_frequency
from .netutil import daemon, free_port
from .pcap import write_rtp_pcap
from .test_sipp import SCENARIOS, counts, run_sipp

pytestmark = pytest.mark.interop


def one_call(port: int, scenario: Path, *extra: str) -> None:
    """One SIPp call of ``scenario`` to record_play on ``port``; it must succeed."""
    result = run_sipp(
        [
            f"127.0.0.1:{port}",
            "-sf",
            str(scenario),
            "-i",
            "127.0.0.1",
            "-p",
            str(free_port()),
            "-mp",
            str(free_port() & ~1),
            *extra,
            "-m",
            "1",
        ]
    )
    assert result.returncode == 0 and counts(result.stdout) == (1, 0), result.stdout[-2000:]


def recordings(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.wav"))


def test_sipp_plays_a_1khz_pcap_we_record_1khz(tmp_path: Path) -> None:
    tone = sine_mix((1000.0,), 8000 * 3, 8000, -10)
    pcap = tmp_path / "tone1k.pcap"
    write_rtp_pcap(
        pcap, [ulaw_encode(tone[i : i + 160]).tobytes() for i in range(0, len(tone), 160)], 0
    )
    scenario = tmp_path / "uac.xml"
    scenario.write_text(
        (SCENARIOS / "uac_pcap.xml")
        .read_text()
        .replace("PCAP_FILE", str(pcap))
        .replace("HOLD_MS", "3500")
    )
    port, rec = free_port(), tmp_path / "rec"
    with daemon(
        ["examples/record_play.py", "--listen", f"127.0.0.1:{port}", "--record-dir", str(rec)],
        "record_play listening",
    ):
        one_call(port, scenario)
    [wav] = recordings(rec)
    audio, rate = soundfile.read(wav, dtype="int16")
    heard = active(audio)
    assert len(heard) / rate > 2.5  # most of the 3 s arrived
    assert abs(dominant_frequency(heard, rate) - 1000.0) <= 10.0


def test_we_play_a_file_sipp_receives_its_duration(tmp_path: Path) -> None:
    """SIPp runs with -rtp_echo: every RTP packet it receives goes back to its sender, so
    the packets (and audio) that come back are what SIPp received."""
    music = sine_mix((440.0,), 8000, 8000, -10)
    music = np.concatenate([music, sine_mix((660.0,), 8000, 8000, -10), music])  # 3 s
    played = tmp_path / "play.wav"
    soundfile.write(played, music, 8000, subtype="PCM_16")
    scenario = tmp_path / "uac.xml"
    scenario.write_text((SCENARIOS / "uac_echo.xml").read_text().replace("HOLD_MS", "4500"))
    port, rec = free_port(), tmp_path / "rec"
    with daemon(
        [
            "examples/record_play.py",
            "--listen",
            f"127.0.0.1:{port}",
            "--play",
            str(played),
            "--record-dir",
            str(rec),
        ],
        "record_play listening",
    ) as server:
        one_call(port, scenario, "-rtp_echo")
        done = server.wait_for(r"rtp_sent (\d+) rtp_received (\d+)")
    sent, echoed = int(done.group(1)), int(done.group(2))
    assert sent == 150  # 3 s of 20 ms frames, then nothing
    assert echoed == sent  # SIPp received (and echoed) every one
    [wav] = recordings(rec)
    audio, rate = soundfile.read(wav, dtype="int16")
    heard = active(audio)
    assert abs(len(heard) / rate - 3.0) < 0.05
    assert best_correlation(heard, music[4000:12000]) > 0.9
