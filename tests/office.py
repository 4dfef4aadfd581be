"""A PBX daemon (``softswitch run``) started by a test, and baresip phones registered to it."""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import soundfile

from media.tones import sine_mix
from softswitch import config as cfg
from softswitch.feature import FeatureType
from softswitch.features import sections_of
from softswitch.features.voicemail import Voicemail, VoicemailStore
from softswitch.pbx import Pbx

from .audio import active, dominant_frequency
from .baresip import Phone
from .netutil import ROOT, Daemon, daemon, free_port, rtp_base, worker_rtp

USERS = {
    "100": ("Alice Martin", "alice100", "1100"),
    "101": ("Bob Durand", "bob101", "1101"),
    "102": ("Carol Dupont", "carol102", "1102"),
    "103": ("Dave Caller", "dave103", "1103"),
}


@dataclass
class Office:
    tmp: Path
    extra: str = ""
    user_extra: dict[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ()  # more options for `softswitch run`
    port: int = 0
    rtp: int = 0
    tls: bool = False  # listen on TLS too (tls_port), with the demo's self-signed certificate
    tls_port: int = 0
    ws: bool = False  # listen on SIP over WebSocket too (ws_port): the browser phone
    ws_port: int = 0
    proc: Daemon | None = None
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    @property
    def data_dir(self) -> Path:
        return self.tmp / "data"

    @property
    def config_path(self) -> Path:
        return self.tmp / "office.toml"

    def write_config(self) -> None:
        tls = f', "tls:127.0.0.1:{self.tls_port}"' if self.tls else ""
        tls += f', "ws:127.0.0.1:{self.ws_port}"' if self.ws else ""
        text = f"""
[server]
listen = ["udp:127.0.0.1:{self.port}", "tcp:127.0.0.1:{self.port}"{tls}]
domain = "office.test"
data_dir = "{self.data_dir}"
rtp_ports = [{self.rtp}, {self.rtp + 400}]
"""
        text += self.extra
        for ext, (name, password, pin) in USERS.items():
            text += f"""
[[users]]
extension = "{ext}"
name = "{name}"
password = "{password}"
pin = "{pin}"
permission = "national"
{self.user_extra.get(ext, "")}
"""
        self.config_path.write_text(text)

    def start(self) -> Daemon:
        if not self.port:
            self.port = free_port()
            self.tls_port = free_port() if self.tls else 0
            self.ws_port = free_port() if self.ws else 0
            self.rtp = rtp_base()
            self.write_config()
        check = subprocess.run(
            [sys.executable, "-m", "softswitch.cli", "check", str(self.config_path)],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        assert check.returncode == 0, check.stderr
        self.proc = self._stack.enter_context(
            daemon(
                [
                    "-m",
                    "softswitch.cli",
                    "run",
                    "--config",
                    str(self.config_path),
                    "--log-level",
                    "info",
                    *self.args,
                ],
                "softswitch running",
            )
        )
        return self.proc

    async def start_inprocess(self, wallclock: Callable[[], datetime] | None = None) -> Pbx:
        """The same office as :meth:`start`, but in this process (an injected clock)."""
        self.port = free_port()
        self.rtp = rtp_base()
        self.write_config()
        pbx = Pbx(cfg.load(self.config_path), wallclock=wallclock)
        await pbx.start()
        return pbx

    def stop(self) -> None:
        self._stack.close()
        self._stack = contextlib.ExitStack()
        self.proc = None

    def restart(self) -> Daemon:
        self.stop()
        return self.start()

    def phone(
        self,
        name: str,
        ext: str,
        tone_hz: float,
        *,
        answer: str = "auto",
        mwi: bool = False,
        password: str | None = None,
        codecs: str = "PCMU,PCMA",
        srate: int = 8000,
        signal_of: Callable[[int], np.ndarray] | None = None,
        tls: bool = False,
        mediaenc: str | None = None,
    ) -> Phone:
        """A baresip phone registered as ``ext`` (a user's extension, or a device's
        username with its ``password``) that sends ``tone_hz`` (a file at ``srate``) and
        offers ``codecs`` (SDP names, e.g. ``G722,PCMU`` or ``opus``); ``signal_of(rate)``
        replaces the tone. ``tls``: registered over TLS; ``mediaenc``: baresip's media
        encryption (``srtp``: SDES when offered, ``srtp-mand``: RTP/SAVP only)."""
        password = password or USERS[ext][1]
        where = f"127.0.0.1:{self.tls_port};transport=tls" if tls else f"127.0.0.1:{self.port}"
        account = (
            f"<sip:{ext}@{where}>;auth_pass={password};regint=300;"
            f"answermode={answer};audio_codecs={baresip_codecs(codecs)}"
            + (f";mediaenc={mediaenc}" if mediaenc else "")
        )
        directory = self.tmp / f"phone-{name}"
        directory.mkdir(parents=True, exist_ok=True)
        source = directory / f"tone{int(tone_hz)}-{srate}.wav"
        signal = (signal_of or (lambda rate: sine_mix((tone_hz,), rate * 60, rate, -12)))(srate)
        if "opus" in codecs.lower():  # baresip's Opus is stereo: its source must be too
            signal = np.stack([signal, signal], axis=1)
        soundfile.write(source, signal, srate, subtype="PCM_16")
        sip_port = free_port()
        names = codecs.lower()
        modules = tuple(
            module for codec, module in (("g722", "g722.so"), ("opus", "opus.so")) if codec in names
        ) + (("srtp.so",) if mediaenc else ())
        return Phone(
            name,
            directory,
            account,
            source,
            sip_port,
            free_port(),
            rtp_base(low=40000, high=50000),
            mwi=mwi,
            srate=srate,
            modules=modules,
        )


BARESIP_CODECS = {"G722": "G722/16000/1", "OPUS": "opus/48000/2"}


def baresip_codecs(codecs: str) -> str:
    """baresip's account syntax: a codec without a rate is taken at 8000 Hz."""
    return ",".join(BARESIP_CODECS.get(c.strip().upper(), c.strip()) for c in codecs.split(","))


def segment(path: Path, start: float, end: float | None = None) -> tuple[np.ndarray, int]:
    audio, rate = soundfile.read(path, dtype="int16")
    if audio.ndim > 1:  # a stereo recording (baresip's Opus): its mono mix
        audio = audio.mean(axis=1).astype(np.int16)
    stop = None if end is None else int(end * rate)
    return audio[int(start * rate) : stop], rate


async def demo_pbx(
    tmp_path: Path,
    *,
    server: str = "",
    settings: str = "",
    extra: str = "",
    rtp: int = 33000,
    features: Sequence[FeatureType] | None = None,
    tls: bool = False,
    ws: bool = False,
) -> Pbx:
    """The embedded demo office, in this process, on a free port, started.

    ``server`` adds lines to its [server] table, ``settings`` to its [features] table,
    ``extra`` whole tables; ``features``
    replaces the built-in feature modules; ``tls`` listens on TLS too (its listener
    last, the demo certificate made in the data directory), ``ws`` on ws: and wss:."""
    port = free_port()
    tls_listen = f', "tls:127.0.0.1:{free_port()}"' if tls else ""
    if ws:  # SIP over WebSocket, plain and secure (the demo certificate)
        tls_listen += f', "ws:127.0.0.1:{free_port()}", "wss:127.0.0.1:{free_port()}"'
    rtp = worker_rtp(rtp)
    text = (
        re.sub(
            r"^listen = \[.*\]$",
            f'listen = ["udp:127.0.0.1:{port}", "tcp:127.0.0.1:{port}"{tls_listen}]\n'
            f"rtp_ports = [{rtp}, {rtp + 400}]\n{server}".replace("\\", "\\\\"),
            cfg.DEMO,
            count=1,
            flags=re.M,
        ).replace("[features]\n", f"[features]\n{settings}\n")
        + extra
    )
    config = cfg.parse(text, "test", sections_of(features) if features is not None else None)
    config = config.model_copy(
        update={"server": config.server.model_copy(update={"data_dir": tmp_path / "data"})}
    )
    pbx = Pbx(config, features=features)
    await pbx.start()
    return pbx


def voicemail_store(pbx: Pbx) -> VoicemailStore | None:
    """The voicemail feature's message store."""
    feature = pbx.registry.feature("voicemail")
    assert isinstance(feature, Voicemail)
    return feature.store


async def started(*phones: Phone) -> None:
    """Start baresip phones and wait until each has registered."""
    for p in phones:
        await p.start()
    for p in phones:
        await p.wait_event("REGISTER_OK")


async def stop_all(*phones: Phone) -> None:
    for p in phones:
        await p.stop()


def frequency(path: Path, start: float, end: float | None = None) -> float:
    """The dominant frequency of a recording from ``start`` (to ``end``) seconds."""
    audio, rate = segment(path, start, end)
    return dominant_frequency(active(audio), rate)
