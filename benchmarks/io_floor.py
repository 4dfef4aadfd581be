"""The I/O floor: a bare batched receiver that answers the load generator's calls and
echoes every RTP packet back to where it came from, one ``recvmmsg`` and one ``sendmmsg``
per 20 ms tick (rtp.batch), nothing else: what moving the packets costs in this process
on this machine, the baseline the engine's CPU is compared with in the same run.

    python benchmarks/io_floor.py --listen 127.0.0.1:5070 --rtp-port 40000
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sip
from rtp.batch import Batch, BatchSocket


async def serve(host: str, port: int, rtp_port: int, capacity: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, rtp_port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    rtp = BatchSocket(sock)
    batch = Batch(capacity, 512)
    codecs = (sip.PCMU, sip.PCMA, sip.G722)

    def on_invite(call: sip.IncomingCall) -> None:
        offer = sip.parse_sdp(call.invite.body or b"")
        answer, _ = sip.answer(offer, host, rtp_port, codecs)
        call.answer(bytes(answer))

    async with sip.UserAgent(f"udp:{host}:{port}", user="floor") as ua:
        ua.on_invite = on_invite
        print("floor running", flush=True)
        loop = asyncio.get_running_loop()
        start, n = loop.time(), 0
        while True:
            delay = start + n * 0.02 - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            batch.count = 0
            rtp.receive(batch)
            if batch.count:
                rtp.send(batch)
            n += 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--listen", required=True, help="HOST:PORT for SIP")
    ap.add_argument("--rtp-port", type=int, required=True)
    ap.add_argument("--capacity", type=int, default=8192, help="packets per call at most")
    args = ap.parse_args()
    host, port = args.listen.rsplit(":", 1)
    asyncio.run(serve(host, int(port), args.rtp_port, args.capacity))


if __name__ == "__main__":
    main()
