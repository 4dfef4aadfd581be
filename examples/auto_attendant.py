"""A standalone auto-attendant: answers, speaks a greeting, transfers by REFER on a key.

    python examples/auto_attendant.py --listen 127.0.0.1:5080 \\
        --greeting "For sales press 1. For support press 2." \\
        --key 1=sip:sales@192.0.2.10 --key 2=sip:support@192.0.2.11

No PBX: ``sip`` answers the INVITE and sends the REFER, ``rtp`` + ``media`` carry the
audio on the 20 ms media clock, and ``ivr`` runs the menu (a :class:`ivr.MenuMachine`
with barge-in, retries and a default key) and speaks the greeting with espeak-ng
(rendered once into ``--cache``). The caller is told where to go with REFER (RFC 3515)
and the attendant hangs up once the caller's phone reports the transfer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from pathlib import Path

import numpy as np

import ivr
import sip
from media import codecs
from media.audio import Player, load_audio
from media.clock import MediaClock
from media.stream import AudioStream
from rtp import PortAllocator, Session

log = logging.getLogger("auto_attendant")
Samples = np.ndarray


class CallChannel:
    """An answered call as an :class:`ivr.PromptChannel`: keys in (RFC 4733 and SIP
    INFO), prompts out, driven by the media clock."""

    def __init__(self, audio: AudioStream) -> None:
        self.audio = audio
        self.dtmf: asyncio.Queue[str] = asyncio.Queue(maxsize=64)
        self._player: Player | None = None
        self._played: asyncio.Event | None = None

    def key(self, digit: str) -> None:
        if not self.dtmf.full():
            self.dtmf.put_nowait(digit)

    def tick(self, _: int) -> None:
        self.audio.read()
        player = self._player
        if player is None:
            self.audio.session.skip()
            return
        self.audio.write(player.read())
        if player.done:
            self.stop_playing()

    async def play_samples(self, samples: Samples) -> None:
        self.stop_playing()
        self._player = Player(samples, self.audio.samples, loop=False)
        self._played = done = asyncio.Event()
        await done.wait()

    def stop_playing(self) -> None:
        self._player = None
        if self._played is not None:
            self._played.set()


class Attendant:
    def __init__(
        self, ua: sip.UserAgent, menu: ivr.Menu, speech: ivr.Speech, ports: PortAllocator
    ) -> None:
        self.ua, self.menu, self.speech, self.ports = ua, menu, speech, ports
        self.clock = MediaClock()

    def samples(self, prompt: ivr.Prompt, rate: int) -> Samples:
        if prompt.kind == "text":
            return load_audio(self.speech.render(prompt.value), rate)
        if prompt.kind == "file":
            return load_audio(prompt.value, rate)
        return np.zeros(rate // 2, np.int16)  # no built-in prompts here: a short pause

    async def on_invite(self, call: sip.IncomingCall) -> None:
        try:
            offer = sip.parse_sdp(call.remote_sdp or b"")
        except sip.ParseError:
            call.reject(488, "Not Acceptable Here (no SDP offer)")
            return
        host = self.ua.local_host(call.incoming.source)
        session = Session(payload_type=0)
        port = (await session.open_from(self.ports, host))[1]
        answer, stream = sip.answer(offer, host, port, (sip.PCMU, sip.PCMA, sip.G722))
        if stream is None:
            session.close()
            call.reject(488)
            return
        codec = codecs.codec(stream.codec.name)
        session.payload_type = stream.payload_type
        session.dtmf_pt = stream.dtmf_payload_type
        session.set_remote(
            (stream.remote_address, stream.remote_port), signalling=call.incoming.source[1]
        )
        channel = CallChannel(AudioStream(session, codec, stream.ptime))
        session.on_dtmf = channel.key
        call.on_dtmf.add(channel.key)
        call.answer(bytes(answer))
        unsubscribe = self.clock.subscribe(channel.tick)
        try:
            machine = ivr.MenuMachine({"main": self.menu}, "main")
            menu = asyncio.ensure_future(
                ivr.run_menu(machine, channel, lambda p: self.samples(p, codec.sample_rate))
            )
            gone = asyncio.ensure_future(call.ended.wait())
            await asyncio.wait({menu, gone}, return_when=asyncio.FIRST_COMPLETED)
            gone.cancel()
            if not menu.done():
                menu.cancel()
                return
            result = menu.result()
            if isinstance(result, ivr.Connect):
                log.info("event=transfer call_id=%s to=%s", call.call_id, result.destination)
                response = await call.refer(result.destination)
                print(f"REFER to {result.destination}: {response.status}", flush=True)
                if response.status == 202:  # the phone calls the target; we are done
                    with contextlib.suppress(TimeoutError):
                        await call.wait_ended(10)
        finally:
            unsubscribe()
            await call.hangup()
            session.close()


async def serve(args: argparse.Namespace) -> None:
    host, _, port = args.listen.rpartition(":")
    keys: dict[str, ivr.menu.Action] = {}
    for spec in args.key:
        key, _, target = spec.partition("=")
        keys[key] = ivr.Transfer(target)
    default = keys.get(args.default, ivr.Hangup()) if args.default else ivr.Hangup()
    menu = ivr.Menu("main", ivr.Prompt("text", args.greeting), keys, default=default)
    speech = ivr.Speech(Path(args.cache))
    speech.render(args.greeting)  # a missing espeak-ng stops us here, not at a call
    async with sip.UserAgent(f"udp:{host}:{port}", user="attendant") as ua:
        attendant = Attendant(ua, menu, speech, PortAllocator(args.rtp_start, args.rtp_end))
        ua.on_invite = attendant.on_invite
        attendant.clock.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        print(f"auto_attendant listening on udp:{host}:{port}", flush=True)
        await stop.wait()
        await attendant.clock.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--listen", default="127.0.0.1:5080", help="host:port")
    ap.add_argument("--greeting", default="Welcome. For sales press 1. For support press 2.")
    ap.add_argument("--key", action="append", default=[], help="KEY=sip:target (repeat)")
    ap.add_argument("--default", help="the key whose target takes callers who press nothing")
    ap.add_argument("--cache", default="tts-cache", help="where spoken text is kept")
    ap.add_argument("--rtp-start", type=int, default=20000)
    ap.add_argument("--rtp-end", type=int, default=30000)
    ap.add_argument("--log-level", default="warning")
    args = ap.parse_args()
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s %(message)s")
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
