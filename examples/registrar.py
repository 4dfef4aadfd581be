"""A registrar with digest authentication (SHA-256 and MD5), in memory.

    python examples/registrar.py --listen 127.0.0.1:5070 --user 100:secret --user 101:pw

REGISTER without credentials gets a 401 challenge; a wrong password or an unknown user
gets 403 (the same answer for both); 10 wrong passwords in a minute for a user from one
address refuse that user from there, 10 unknown users refuse the address, without digest
work, until the minute has passed (softswitch.authguard). OPTIONS and REGISTER queries work.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

import sip
from softswitch.authguard import AuthGuard
from softswitch.registrar import Registrar


class RegistrarService:
    def __init__(
        self, ua: sip.UserAgent, realm: str, users: dict[str, str], algorithms: tuple[str, ...]
    ) -> None:
        self.ua = ua
        self.realm = realm
        self.guard = AuthGuard(realm, users.get, algorithms=algorithms)
        self.registrar = Registrar()

    def on_register(self, incoming: sip.IncomingRequest) -> None:
        request, now = incoming.request, self.ua.now()
        verdict = self.guard.check(request, incoming.source[1], now)
        if verdict.user is None:
            incoming.respond(verdict.status, verdict.reason, headers=list(verdict.headers))
            return
        if verdict.user != request.to.uri.user:
            incoming.respond(403, "Forbidden (credentials do not match the To user)")
            return
        aor = f"sip:{request.to.uri.user}@{self.realm}"
        result = self.registrar.process(request, aor, incoming.source, now)
        incoming.respond(result.status, result.reason, headers=result.headers)
        logging.info(
            "event=register aor=%s status=%d bindings=%d", aor, result.status, len(result.bindings)
        )


async def serve(
    listen: str, realm: str, users: dict[str, str], algorithms: tuple[str, ...]
) -> None:
    host, _, port = listen.rpartition(":")
    specs = [f"udp:{host}:{port}", f"tcp:{host}:{port}"]
    async with sip.UserAgent(specs, user="registrar", domain=realm) as ua:
        service = RegistrarService(ua, realm, users, algorithms)
        ua.handlers["REGISTER"] = service.on_register
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        print(f"registrar listening on {', '.join(specs)} realm {realm}", flush=True)
        await stop.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--listen", default="127.0.0.1:5070", help="host:port")
    ap.add_argument("--realm", default=None, help="digest realm (default: the listen host)")
    ap.add_argument("--user", action="append", default=[], help="name:password (repeatable)")
    ap.add_argument(
        "--algorithms",
        default="MD5,SHA-256",
        help="digest challenges in order of preference (MD5-only clients take the first)",
    )
    ap.add_argument("--log-level", default="warning")
    args = ap.parse_args()
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s %(message)s")
    users = dict(u.split(":", 1) for u in args.user)
    realm = args.realm or args.listen.rpartition(":")[0]
    asyncio.run(serve(args.listen, realm, users, tuple(args.algorithms.split(","))))


if __name__ == "__main__":
    main()
