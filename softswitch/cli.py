"""``softswitch`` command line: ``run`` starts the PBX daemon, ``check`` validates a config,
``status`` asks the running daemon what it is doing, ``reload`` makes it apply its edited
configuration file, ``users`` lists the accounts, ``console-password`` sets a web console
administrator's password.

The CLI only builds a :class:`~softswitch.config.Config` and hands it to the
:class:`~softswitch.pbx.Pbx` (start, serve until SIGINT/SIGTERM, stop).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import logging.handlers
import signal
import sys
from pathlib import Path

from . import config as cfg
from .reload import ConfigFile

log = logging.getLogger("softswitch")


def _listen_specs(listen: str) -> list[str]:
    """``HOST:PORT`` means UDP and TCP there; ``udp:HOST:PORT`` one transport."""
    if listen.split(":", 1)[0].lower() in ("udp", "tcp", "tls"):
        return [listen]
    return [f"udp:{listen}", f"tcp:{listen}"]


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


async def _serve(
    config: cfg.Config,
    demo: bool,
    stats_file: Path | None = None,
    *,
    quiet: bool = False,
    secrets: bool = False,
    source: ConfigFile | None = None,
) -> None:
    import sip

    from . import banner
    from .collector import FullCollections
    from .control import ControlServer, reload, socket_path
    from .pbx import Pbx

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        pbx = Pbx(config, stats_file=stats_file)
    except cfg.ConfigError as exc:
        raise SystemExit(str(exc)) from None
    pbx.svc.config_file = source
    # SIGHUP: the edited file again, applied live (an invalid one is refused and logged)
    loop.add_signal_handler(signal.SIGHUP, lambda: pbx.spawn(reload(pbx)))
    try:
        await pbx.start()
    except sip.BindError as exc:  # the UA closed what it had bound
        raise SystemExit(
            f"softswitch: cannot start: {exc} (another softswitch? choose the address with"
            " --listen HOST:PORT)"
        ) from None
    except OSError as exc:
        raise SystemExit(f"softswitch: cannot start: {exc}") from None
    control = ControlServer(pbx, socket_path(pbx.data_dir))
    await control.start()
    collections = FullCollections(lambda: bool(pbx.ua.calls))  # a pause would be heard
    collections.start()
    if not quiet:
        service = pbx.conference
        codes = dict(service.codes.of_user) if service else banner.stored_codes(config)
        listen = [(x.transport, x.host, x.port) for x in pbx.ua.listeners]
        title = "softswitch demo office" if demo else f"softswitch: {config.source}"
        shown = demo or secrets
        text = banner.render(config, pbx.registry, listen, codes, secrets=shown, title=title)
        console = banner.console_lines(pbx.registry, demo=demo)
        print(text + ("\n\n" + "\n".join(console) if console else ""))
        print("softswitch running (Ctrl-C stops; `softswitch status` shows what it does)")
        sys.stdout.flush()
    await stop.wait()
    log.info("event=stopping")
    await collections.stop()
    await control.close()
    await pbx.stop()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="softswitch", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="start the PBX daemon")
    run.add_argument("--config", type=Path, help="TOML file (default: the embedded demo office)")
    run.add_argument(
        "--listen",
        help="HOST:PORT (UDP and TCP) or udp:/tcp:HOST:PORT; 0.0.0.0:5060 lets LAN phones in",
    )
    run.add_argument("--data-dir", type=Path, help="voicemail, recordings, state")
    run.add_argument("--log-level", default="info", help="debug, info, warning, error")
    run.add_argument(
        "--log-file",
        type=Path,
        help="append the log here too (for fail2ban; reopened when logrotate moves it)",
    )
    run.add_argument("--stats-file", type=Path, help="write counters here (JSON) every second")
    run.add_argument("--quiet", action="store_true", help="print no banner (logs only)")
    run.add_argument(
        "--secrets",
        action="store_true",
        help="show passwords, PINs and conference codes in the banner (the demo always does)",
    )
    check = sub.add_parser("check", help="validate a configuration file")
    check.add_argument("file", type=Path)
    status = sub.add_parser("status", help="what the running daemon is doing")
    where = status.add_mutually_exclusive_group()
    where.add_argument("--config", type=Path, help="the daemon's TOML file (for its data dir)")
    where.add_argument("--data-dir", type=Path, help="the daemon's data dir (default: data)")
    status.add_argument("--json", action="store_true", help="the daemon's answer as JSON")
    reload_cmd = sub.add_parser(
        "reload", help="make the running daemon apply its edited configuration file"
    )
    where = reload_cmd.add_mutually_exclusive_group()
    where.add_argument("--config", type=Path, help="the daemon's TOML file (for its data dir)")
    where.add_argument("--data-dir", type=Path, help="the daemon's data dir (default: data)")
    password = sub.add_parser(
        "console-password", help="set a web console administrator's password (asked for)"
    )
    where = password.add_mutually_exclusive_group()
    where.add_argument("--config", type=Path, help="the daemon's TOML file (for its data dir)")
    where.add_argument("--data-dir", type=Path, help="the daemon's data dir (default: data)")
    password.add_argument("--user", default="admin", help="the administrator (default: admin)")
    password.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    users = sub.add_parser("users", help="list the accounts of a configuration")
    users.add_argument("file", type=Path, nargs="?", help="TOML file (default: the demo office)")
    users.add_argument(
        "--secrets", action="store_true", help="with passwords, PINs and conference codes"
    )
    return parser


def _load(path: Path | None) -> cfg.Config:
    return cfg.load(path) if path else cfg.demo()


def _check(file: Path) -> int:
    from .features import builtin
    from .plugins import Registry

    try:
        config = cfg.load(file)
        registry = Registry(config, builtin())  # numbers, codes and destinations resolve
    except cfg.ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    for warning in registry.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    groups = len(config.section("ring_groups") or [])
    print(
        f"{file}: OK ({_plural(len(config.users), 'user')}, "
        f"{_plural(len(config.trunks), 'trunk')}, {_plural(groups, 'ring group')}, "
        f"{_plural(len(registry.numbers), 'number')})"
    )
    return 0


def _data_dir(args: argparse.Namespace) -> Path | None:
    """The data directory named by --config FILE or --data-dir (None: the file is invalid)."""
    if args.config is not None:
        try:
            return cfg.load(args.config).server.data_dir
        except cfg.ConfigError as exc:
            print(exc, file=sys.stderr)
            return None
    return Path(args.data_dir or cfg.demo().server.data_dir)


def _reload(args: argparse.Namespace) -> int:
    from .control import ControlError, query

    data_dir = _data_dir(args)
    if data_dir is None:
        return 1
    try:
        answer = query(data_dir, "reload", timeout=60.0)
    except ControlError as exc:
        print(f"softswitch reload: {exc}", file=sys.stderr)
        return 1
    restart = answer.get("restart_needed") or []
    print("softswitch reload: applied" + (f"; restart for {', '.join(restart)}" if restart else ""))
    return 0


def _console_password(args: argparse.Namespace) -> int:
    import getpass

    from .features.console.accounts import Accounts, PasswordError

    data_dir = _data_dir(args)
    if data_dir is None:
        return 1
    if args.password_stdin:
        secret = sys.stdin.readline().rstrip("\n")
    else:
        secret = getpass.getpass(f"new password for {args.user}: ")
        if getpass.getpass("again: ") != secret:
            print("softswitch console-password: the two differ", file=sys.stderr)
            return 1
    accounts = Accounts(Path(data_dir))
    try:
        accounts.set_admin(args.user, secret)
    except PasswordError as exc:
        print(f"softswitch console-password: {exc}", file=sys.stderr)
        return 1
    finally:
        accounts.close()
    print(f"softswitch console-password: {args.user} updated in {data_dir}")
    return 0


def _status(args: argparse.Namespace) -> int:
    from .control import ControlError, query, render

    data_dir = _data_dir(args)
    if data_dir is None:
        return 1
    try:
        status = query(data_dir)
    except ControlError as exc:
        print(
            f"softswitch status: {exc}\n  is `softswitch run` running with this data dir?"
            " (--data-dir DIR or --config FILE names another)",
            file=sys.stderr,
        )
        return 1
    print(json.dumps(status, indent=2) if args.json else render(status))
    return 0


def _users(args: argparse.Namespace) -> int:
    from . import banner
    from .features import builtin
    from .plugins import Registry

    try:
        config = _load(args.file)
        registry = Registry(config, builtin())
    except cfg.ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    secrets = args.secrets or args.file is None
    found = banner.accounts(config, banner.stored_codes(config))
    lines = banner.account_lines(found, secrets=secrets)
    numbers = banner.numbers(config, registry)
    if numbers:
        lines += ["", *banner.columns([list(n) for n in numbers])]
    print("\n".join(lines))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check":
        return _check(args.file)
    if args.command == "status":
        return _status(args)
    if args.command == "users":
        return _users(args)
    if args.command == "reload":
        return _reload(args)
    if args.command == "console-password":
        return _console_password(args)

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
    updates: dict[str, object] = {}
    if args.listen:
        updates["listen"] = _listen_specs(args.listen)
    if args.data_dir:
        updates["data_dir"] = args.data_dir
    source = _source(args.config, updates)
    try:
        config = source.load()
    except cfg.ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    asyncio.run(
        _serve(
            config,
            demo=args.config is None,
            stats_file=args.stats_file,
            quiet=args.quiet,
            secrets=args.secrets,
            source=source,
        )
    )
    return 0


def _source(path: Path | None, overrides: dict[str, object]) -> ConfigFile:
    """The file the daemon runs (and the console saves to). The embedded demo runs with
    the web console on, and its edits are saved in its data directory (``office.toml``
    there, used from then on)."""
    if path is not None:
        return ConfigFile(path, overrides)
    from .features.console.settings import ConsoleSettings

    data_dir = Path(str(overrides.get("data_dir") or cfg.demo().server.data_dir))
    return ConfigFile(
        None,
        {"data_dir": data_dir, **overrides},
        save_to=data_dir / "office.toml",
        default_sections={"console": ConsoleSettings(demo=True)},
    )


if __name__ == "__main__":
    sys.exit(main())
