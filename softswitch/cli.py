"""``softswitch`` command line: ``run`` starts the PBX daemon, ``check`` validates a config.

The CLI only builds a :class:`~softswitch.config.Config` and hands it to the
:class:`~softswitch.pbx.Pbx` (start, serve until SIGINT/SIGTERM, stop).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import logging.handlers
import signal
import sys
from pathlib import Path

from . import config as cfg

log = logging.getLogger("softswitch")


def _listen_specs(listen: str) -> list[str]:
    """``HOST:PORT`` means UDP and TCP there; ``udp:HOST:PORT`` one transport."""
    if listen.split(":", 1)[0].lower() in ("udp", "tcp", "tls"):
        return [listen]
    return [f"udp:{listen}", f"tcp:{listen}"]


async def _serve(config: cfg.Config, demo: bool, stats_file: Path | None = None) -> None:
    from .pbx import Pbx, print_demo_accounts

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        pbx = Pbx(config, stats_file=stats_file)
    except cfg.ConfigError as exc:
        raise SystemExit(str(exc)) from None
    try:
        await pbx.start()
    except OSError as exc:
        raise SystemExit(f"softswitch: cannot start: {exc}") from None
    if demo:
        print_demo_accounts(config, ", ".join(config.server.listen))
    print("softswitch running", flush=True)
    await stop.wait()
    log.info("event=stopping")
    await pbx.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="softswitch", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="start the PBX daemon")
    run.add_argument("--config", type=Path, help="TOML file (default: the embedded demo office)")
    run.add_argument("--listen", help="HOST:PORT (UDP and TCP) or udp:/tcp:HOST:PORT")
    run.add_argument("--data-dir", type=Path, help="voicemail, recordings, state")
    run.add_argument("--log-level", default="info", help="debug, info, warning, error")
    run.add_argument(
        "--log-file",
        type=Path,
        help="append the log here too (for fail2ban; reopened when logrotate moves it)",
    )
    run.add_argument("--stats-file", type=Path, help="write counters here (JSON) every second")
    check = sub.add_parser("check", help="validate a configuration file")
    check.add_argument("file", type=Path)
    args = parser.parse_args(argv)

    if args.command == "check":
        from .features import builtin
        from .plugins import Registry

        try:
            config = cfg.load(args.file)
            registry = Registry(config, builtin())  # numbers, codes and destinations resolve
        except cfg.ConfigError as exc:
            print(exc, file=sys.stderr)
            return 1
        for warning in registry.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        groups = len(config.section("ring_groups") or [])
        print(
            f"{args.file}: OK ({len(config.users)} users, {len(config.trunks)} trunks, "
            f"{groups} ring groups, {len(registry.numbers)} numbers)"
        )
        return 0

    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if args.log_file:
        try:
            handlers.append(logging.handlers.WatchedFileHandler(args.log_file))
        except OSError as exc:
            print(f"softswitch: --log-file: {exc}", file=sys.stderr)
            return 1
    # deploy/fail2ban/filter.d/softswitch.conf matches this format's security lines
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        handlers=handlers,
    )
    try:
        config = cfg.load(args.config) if args.config else cfg.demo()
    except cfg.ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    server = config.server
    updates: dict[str, object] = {}
    if args.listen:
        updates["listen"] = _listen_specs(args.listen)
    if args.data_dir:
        updates["data_dir"] = args.data_dir
    if updates:
        config = config.model_copy(update={"server": server.model_copy(update=updates)})
    asyncio.run(_serve(config, demo=args.config is None, stats_file=args.stats_file))
    return 0


if __name__ == "__main__":
    sys.exit(main())
