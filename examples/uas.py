"""An echo-test UAS: answers every INVITE with SDP and echoes the caller's RTP back.

    python examples/uas.py --listen 127.0.0.1:5080 [--transport udp,tcp]

Each call gets a UDP socket; packets that arrive on it are sent back to where they came
from (symmetric RTP), so a caller hears itself. ACK and BYE are handled by the stack.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from typing import cast

import sip


class Echo(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.packets = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.packets += 1
        self.transport.sendto(data, addr)


class EchoServer:
    def __init__(self, ua: sip.UserAgent) -> None:
        self.ua = ua
        self.calls = 0

    async def on_invite(self, call: sip.IncomingCall) -> None:
        self.calls += 1
        host = self.ua.local_host(call.incoming.source)
        try:
            offer = sip.parse_sdp(call.remote_sdp or b"")
        except sip.ParseError:
            call.reject(488, "Not Acceptable Here (no usable SDP offer)")
            return
        loop = asyncio.get_running_loop()
        transport, echo = await loop.create_datagram_endpoint(Echo, local_addr=(host, 0))
        port = transport.get_extra_info("sockname")[1]
        answer, stream = sip.answer(offer, host, port, (sip.PCMU, sip.PCMA, sip.G722))
        if stream is None:
            transport.close()
            call.reject(488)
            return
        call.ring()
        call.answer(bytes(answer))
        await call.ended.wait()
        transport.close()
        logging.debug("event=echo_done call_id=%s packets=%d", call.call_id, echo.packets)


async def serve(listen: str, transports: list[str]) -> None:
    host, _, port = listen.rpartition(":")
    specs = [f"{t}:{host}:{port}" for t in transports]
    async with sip.UserAgent(specs, user="echo") as ua:
        server = EchoServer(ua)
        ua.on_invite = server.on_invite
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        print(f"uas listening on {', '.join(specs)}", flush=True)
        await stop.wait()
        print(f"uas stopping after {server.calls} calls", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--listen", default="127.0.0.1:5080", help="host:port")
    ap.add_argument("--transport", default="udp,tcp", help="comma-separated: udp,tcp")
    ap.add_argument("--log-level", default="warning")
    args = ap.parse_args()
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s %(message)s")
    asyncio.run(serve(args.listen, args.transport.split(",")))


if __name__ == "__main__":
    main()
