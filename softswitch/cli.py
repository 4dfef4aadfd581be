"""``softswitch`` command line: ``run`` starts the daemon, ``check`` validates a config."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

log = logging.getLogger("softswitch")


async def _serve(listen: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("event=listening address=%s", listen)
    await stop.wait()
    log.info("event=stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="softswitch", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="start the PBX daemon")
    run.add_argument("--listen", default="127.0.0.1:5060", help="SIP address (host:port)")
    run.add_argument("--log-level", default="info", help="debug, info, warning, error")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    if args.command == "run":
        asyncio.run(_serve(args.listen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
