"""Answer calls, record what the caller sends, play a file to the caller.

    python examples/record_play.py --listen 127.0.0.1:5090 --play greeting.wav \\
        --record-dir recordings/ [--loop]

Built on the three lower layers: ``sip`` answers the INVITE (PCMU, PCMA or G.722 by
the caller's preference), ``rtp`` carries the audio (symmetric RTP, jitter buffer,
RTCP), ``media`` decodes, records to WAV (one file per call, named by Call-ID) and plays
the file, all driven by the process's 20 ms media clock. A file played once is followed
by no audio at all (the caller's meter then shows exactly the file's length).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import signal
from pathlib import Path

import sip
from media import codecs
from media.audio import Player, Recorder, load_audio
from media.clock import MediaClock
from media.stream import AudioStream
from rtp import PortAllocator, Session

log = logging.getLogger("record_play")


class RecordPlay:
    def __init__(
        self,
        ua: sip.UserAgent,
        play: Path | None,
        record_dir: Path | None,
        loop: bool,
        ports: PortAllocator,
    ) -> None:
        self.ua = ua
        self.play = play
        self.record_dir = record_dir
        self.loop = loop
        self.ports = ports
        self.clock = MediaClock()
        if play is not None:
            load_audio(play)  # refuse a bad file at start, not at the first call

    async def on_invite(self, call: sip.IncomingCall) -> None:
        try:
            offer = sip.parse_sdp(call.remote_sdp or b"")
        except sip.ParseError:
            call.reject(488, "Not Acceptable Here (no SDP offer)")
            return
        host = self.ua.local_host(call.incoming.source)
        session = Session(payload_type=0)
        try:
            port = (await session.open_from(self.ports, host))[1]
        except OSError:
            call.reject(503, "Service Unavailable (no RTP port)")
            return
        answer, stream = sip.answer(offer, host, port, (sip.PCMU, sip.PCMA, sip.G722))
        if stream is None:
            session.close()
            call.reject(488)
            return
        codec = codecs.codec(stream.codec.name)
        session.payload_type = stream.payload_type
        session.accepted_pts = {stream.payload_type}
        session.dtmf_pt = stream.dtmf_payload_type
        session.set_remote((stream.remote_address, stream.remote_port))
        audio = AudioStream(session, codec, stream.ptime)
        recorder = None
        if self.record_dir is not None:
            name = re.sub(r"[^A-Za-z0-9_.-]", "_", call.call_id)[:100]
            recorder = Recorder(self.record_dir / f"{name}.wav", codec.sample_rate)
        player = None
        if self.play is not None:
            player = Player(load_audio(self.play, codec.sample_rate), audio.samples, loop=self.loop)
        session.on_dtmf = lambda digit: log.info(
            "event=dtmf call_id=%s digit=%s", call.call_id, digit
        )

        def tick(_: int) -> None:
            frame = audio.read()
            if recorder is not None:
                recorder.write(frame)
            if player is not None and not player.done:
                audio.write(player.read())

        call.answer(bytes(answer))
        unsubscribe = self.clock.subscribe(tick)
        try:
            await call.ended.wait()
        finally:
            unsubscribe()
            session.close()
            c = session.counters
            print(
                f"call {call.call_id} done: codec {codec.name} rtp_sent {c.sent} "
                f"rtp_received {c.received} dtmf {c.dtmf_received}",
                flush=True,
            )
            if recorder is not None:
                recorder.close()
                log.info(
                    "event=recorded file=%s seconds=%.2f",
                    recorder.path,
                    recorder.frames * audio.samples / codec.sample_rate,
                )


async def serve(args: argparse.Namespace) -> None:
    host, _, port = args.listen.rpartition(":")
    record_dir = Path(args.record_dir) if args.record_dir else None
    if record_dir is not None:
        record_dir.mkdir(parents=True, exist_ok=True)
    specs = [f"udp:{host}:{port}", f"tcp:{host}:{port}"]
    async with sip.UserAgent(specs, user="recorder") as ua:
        app = RecordPlay(
            ua,
            Path(args.play) if args.play else None,
            record_dir,
            args.loop,
            PortAllocator(args.rtp_start, args.rtp_end),
        )
        ua.on_invite = app.on_invite
        app.clock.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        print(f"record_play listening on {', '.join(specs)}", flush=True)
        await stop.wait()
        await app.clock.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--listen", default="127.0.0.1:5090", help="host:port")
    ap.add_argument("--play", help="audio file to play to each caller (WAV, MP3, FLAC)")
    ap.add_argument("--loop", action="store_true", help="play the file in a loop")
    ap.add_argument("--record-dir", help="record each call to DIR/<call-id>.wav")
    ap.add_argument("--rtp-start", type=int, default=20000)
    ap.add_argument("--rtp-end", type=int, default=30000)
    ap.add_argument("--log-level", default="warning")
    args = ap.parse_args()
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s %(message)s")
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
