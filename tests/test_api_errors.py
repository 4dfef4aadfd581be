"""Library mistakes get errors that name the fix: destination tuples, names that do not
resolve, taken listen addresses, a media clock nobody started, audio that is not audio,
unknown configuration keys."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import sip
from media import clock as media_clock
from media.audio import AudioFileError, load_audio
from softswitch import config as cfg

from .netutil import free_port

# An ID3 tag, one MPEG frame header and nothing after it: libmpg123 complains on fd 2.
JUNK_MP3 = b"ID3\x03\x00\x00\x00\x00\x00\x0a" + b"\x00" * 10 + b"\xff\xfb\x90\x64" + b"\x00" * 2000


@pytest.mark.parametrize(
    ("destination", "message"),
    [
        (("127.0.0.1", 5060), r"destination must be \(transport, host, port\), e\.g\."),
        ("udp:127.0.0.1:5060", r"destination must be \(transport, host, port\)"),
        (("sctp", "127.0.0.1", 5060), "transport must be one of udp, tcp, tls, ws, wss"),
        (("udp", "pbx.example.com", 5060), r"host must be an IP address; resolve a name first"),
        (("udp", "127.0.0.1", "5060"), "port must be an int in 1-65535"),
        (("udp", "127.0.0.1", 70000), "port must be an int in 1-65535"),
    ],
)
async def test_destination_must_be_transport_host_port(destination: object, message: str) -> None:
    async with sip.UserAgent("udp:127.0.0.1:0") as ua:
        with pytest.raises(sip.SipUsageError, match=message):
            await ua.invite("sip:101@127.0.0.1", destination=destination)  # type: ignore[arg-type]
        with pytest.raises(sip.SipUsageError, match=message):
            await ua.request("OPTIONS", "sip:101@127.0.0.1", destination=destination)  # type: ignore[arg-type]
        assert not ua.calls  # nothing was started


async def test_a_good_destination_is_used_as_given() -> None:
    async with (
        sip.UserAgent(["udp:127.0.0.1:0", "tcp:127.0.0.1:0"], user="a") as a,
        sip.UserAgent("tcp:127.0.0.1:0", user="b") as b,
    ):
        port = b.listeners[0].port
        # the Request-URI names another port: destination= wins (and TCP is upper case)
        loose: object = ["TCP", "127.0.0.1", port]
        reply = await a.request("OPTIONS", "sip:b@127.0.0.1:9", destination=loose)  # type: ignore[arg-type]
        assert reply.status == 200


async def test_names_that_do_not_resolve_raise_resolve_error() -> None:
    async with sip.UserAgent("udp:127.0.0.1:0") as ua:
        with pytest.raises(sip.ResolveError, match=r"cannot resolve 'pbx\.nosuch\.invalid'"):
            await ua.request("OPTIONS", "sip:100@pbx.nosuch.invalid")
        with pytest.raises(OSError):  # what callers caught before still catches it
            await ua.invite("sip:100@pbx.nosuch.invalid", wait=False)
        assert not ua.calls


async def test_a_taken_listen_address_is_named_and_nothing_stays_bound() -> None:
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        ua = sip.UserAgent([f"udp:127.0.0.1:{port}", f"tcp:127.0.0.1:{port}"])
        with pytest.raises(sip.BindError, match=rf"^tcp:127\.0\.0\.1:{port} is already in use$"):
            await ua.start()
    assert not ua.listeners
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", port))  # the UDP listener bound first was closed again


async def test_a_clock_that_is_never_started_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(media_clock, "NOT_STARTED_AFTER", 0.05)
    forgotten = media_clock.MediaClock()
    with pytest.warns(RuntimeWarning, match=r"never started.*clock\.start\(\)"):
        forgotten.subscribe(lambda tick: None)
        await asyncio.sleep(0.2)

    started = media_clock.MediaClock()
    ticks: list[int] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        started.subscribe(ticks.append)  # subscribe first, start soon after: no warning
        started.start()
        await asyncio.sleep(0.2)
        await started.stop()
    assert ticks


def test_junk_mp3_says_so_without_decoder_noise(tmp_path: Path) -> None:
    junk = tmp_path / "music.mp3"
    junk.write_bytes(JUNK_MP3)
    raw = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import soundfile\ntry: soundfile.read({str(junk)!r})\nexcept Exception: pass",
        ],
        capture_output=True,
        text=True,
    )
    assert "Illegal Audio-MPEG-Header" in raw.stderr  # the noise this test keeps away
    ours = subprocess.run(
        [sys.executable, "-c", f"from media.audio import load_audio\nload_audio({str(junk)!r})"],
        capture_output=True,
        text=True,
    )
    assert "music.mp3: not an MP3/WAV/FLAC file we can read" in ours.stderr
    assert "Illegal" not in ours.stderr and "possibly a pipe" not in ours.stderr
    with pytest.raises(AudioFileError, match="unknown or damaged data"):
        load_audio(junk)
    print("stderr still works")  # fd 2 and 1 are restored after a decode


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server]\nlisten_on = 1\n", "server.listen_on: unknown key (did you mean 'listen'?)"),
        (
            '[[users]]\nextension = "100"\nname = "a"\npassword = "abcd"\npin = "1234"\n'
            '[users.forward]\nbussy = "hangup"\n',
            "users[0].forward.bussy: unknown key (did you mean 'busy'?)",
        ),
        (
            '[[users]]\nextension = "100"\nname = "a"\npassword = "abcd"\npin = "1234"\n'
            'conference_cod = "1234"\n',
            "users[0].conference_cod: unknown key (did you mean 'conference_code'?)",
        ),
        (
            '[[ring_groups]]\nextension = "600"\nname = "s"\n'
            'steps = [{ targets = ["100"], ring_secs = 5 }]\n',
            "ring_groups[0].steps[0].ring_secs: unknown key (did you mean 'ring_seconds'?)",
        ),
        (
            '[[ivr]]\nextension = "500"\nname = "R"\ngreeting = "hi"\n'
            '[ivr.after_hours]\ngreting = "x"\n',
            "greting: unknown key (did you mean 'greeting'?)",
        ),
        (
            '[[trunks]]\nname = "t"\nproxy = "sip:x"\nregistr = true\n',
            "trunks[0].registr: unknown key (did you mean 'register'?)",
        ),
        (
            "[features]\nzzz = 1\n",
            "features.zzz: unknown key (known: conference_bridge, transfer_audio, "
            "voicemail_access, voicemail_any)",
        ),
        ("[smtp]\nsender = 'a@b.c'\nhots = 'x'\n", "smtp.hots: unknown key (did you mean 'host'?)"),
        ("[sever]\n", "sever: unknown section (did you mean 'server'?)"),
    ],
)
def test_unknown_keys_get_did_you_mean(text: str, message: str) -> None:
    with pytest.raises(cfg.ConfigError) as info:
        cfg.parse(text, "office.toml")
    assert message in str(info.value)
