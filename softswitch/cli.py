"""The softswitch command line: run starts the PBX daemon, check validates a configuration,
status asks the running daemon what it is doing, reload makes it apply its edited file,
users lists the accounts, console-password sets a web console administrator's password.

The CLI only builds a Config (softswitch.config) and hands it to the Pbx (softswitch.pbx):
start, serve until SIGINT/SIGTERM, stop. Its --help texts are plain text: they are read in
a terminal, so they carry no markup.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import logging
import logging.handlers
import re
import signal
import socket
import sys
from dataclasses import replace
from pathlib import Path

from . import config as cfg
from .reload import ConfigFile

log = logging.getLogger("softswitch")

DEMO_DATA = Path("data")  # the demo's data directory unless --data-dir says otherwise
DEMO_CONSOLE = "127.0.0.1:8080"  # the demo's web console, moved when it is taken
DEPRECATED_FILE = "softswitch {command} FILE is deprecated: use softswitch {command} --config FILE"

DESCRIPTION = """\
softswitch: a small-office SIP PBX configured by one TOML file.

Without --config every command works on the demo office: the one its web console saved
(DATA/office.toml, DATA being data/ or --data-dir) when there is one, else the embedded
demo (extensions 100, 101 and 102 on 127.0.0.1:5060).
"""
EPILOG = "softswitch COMMAND --help describes a command and its options."
RUN = """\
Start the PBX daemon; it serves until Ctrl-C (SIGINT) or SIGTERM, and SIGHUP (or
softswitch reload) applies its edited configuration file without a restart.

Once it listens it prints a banner: where phones register, the logins, the numbers that
are not extensions (the conference bridge, voicemail, ring groups...) and the web
console's address.

Without --config it runs the demo office: the embedded demo or, once the web console
saved an edit, DATA/office.toml. Its banner shows the passwords, PINs and conference
codes, and the web console (http://127.0.0.1:8080/; another free port when 8080 is taken,
the banner says which) with a new password for admin at every start.

With --config FILE the banner leaves passwords, PINs and codes out (the daemon's output
ends up in system logs; --secrets shows them, softswitch users --config FILE --secrets
prints them). With a [console] table, the first start makes the administrator admin
and prints its password once; [console] demo = true makes a new one at every start and
prints it, as the demo does (for a trial, not for a real office).
"""
CHECK = """\
Validate a configuration as softswitch run would: the models, the audio files, every
destination. Each error names the file, the key (users[1] is the second [[users]] table)
and its line; warnings say what may not do what you meant. Exit status 0 when it is valid.
"""
STATUS = """\
Ask the running daemon, over DATA/control.sock, what it is doing: the registrations, the
calls and the conferences. The daemon is found by its data directory: --data-dir DIR,
the data_dir of --config FILE, or the demo's (data).
"""
RELOAD = """\
Make the running daemon read its configuration file again and apply it, as SIGHUP does,
without ending calls. An invalid file is refused with its errors and the running
configuration stays; keys read only at start (listen, data_dir...) need a restart, which
the answer names.
"""
USERS = """\
List the accounts of a configuration (each login, its name and the extension it rings),
then the numbers that are not extensions. With --secrets, and always for the demo, with
the passwords, the voicemail PINs and the conference codes: configured ones, else the
ones the daemon made at its first start (kept in DATA/conference-codes.json).
"""
PASSWORD = """\
Set the password of a web console administrator (made when missing) in the daemon's data
directory (DATA/console.sqlite). The password is asked for twice, or read from standard
input with --password-stdin.
"""


def _listen_specs(listen: str) -> list[str]:
    """``HOST:PORT`` means UDP and TCP there; ``udp:HOST:PORT`` one transport."""
    if listen.split(":", 1)[0].lower() in ("udp", "tcp", "tls", "ws", "wss"):
        return [listen]
    return [f"udp:{listen}", f"tcp:{listen}"]


def _listen(value: str) -> str:
    """``--listen``: checked as a [server] listen entry is, before it becomes two."""
    try:
        return cfg.listen_entry(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _host_port(value: str) -> str:
    """``--console-listen``: HOST:PORT (an IPv6 host in brackets)."""
    if not re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[^:\[\]\s]+):[0-9]{1,5}", value) or not (
        0 <= int(value.rpartition(":")[2]) <= 65535
    ):
        raise argparse.ArgumentTypeError(f"{value!r}: expected HOST:PORT, e.g. 127.0.0.1:8081")
    return value


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("softswitch")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


async def _serve(
    config: cfg.Config,
    demo: bool,
    stats_file: Path | None = None,
    *,
    quiet: bool = False,
    secrets: bool = False,
    source: ConfigFile | None = None,
    console_note: str | None = None,
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
        raise SystemExit(_human(exc, source) if source else str(exc)) from None
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
        text = banner.render(
            config,
            pbx.registry,
            listen,
            codes,
            secrets=shown,
            title=title,
            tls_fingerprint=pbx.tls_fingerprint(),
        )
        console = banner.console_lines(pbx.registry, demo=demo, note=console_note)
        print(text + ("\n\n" + "\n".join(console) if console else ""))
        print("softswitch running (Ctrl-C stops; `softswitch status` shows what it does)")
        sys.stdout.flush()
    await stop.wait()
    log.info("event=stopping")
    await collections.stop()
    await control.close()
    await pbx.stop()


def _subparser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help: str, text: str
) -> argparse.ArgumentParser:
    return sub.add_parser(
        name, help=help, description=text, formatter_class=argparse.RawDescriptionHelpFormatter
    )


def _daemon_options(parser: argparse.ArgumentParser) -> None:
    """--config FILE or --data-dir DIR: which running daemon (its data directory)."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--config", type=Path, metavar="FILE", help="the daemon's TOML file (for its data dir)"
    )
    where.add_argument(
        "--data-dir", type=Path, metavar="DIR", help="the daemon's data dir (default: data)"
    )


def _config_options(parser: argparse.ArgumentParser) -> None:
    """--config FILE (or the deprecated positional FILE), or the demo's office."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--config", type=Path, metavar="FILE", help="TOML file (default: the demo office)"
    )
    where.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help="the demo's data dir, whose office.toml is used when it exists (default: data)",
    )
    # `check FILE`, `users FILE`: the form of older versions, kept for scripts
    parser.add_argument("file", type=Path, nargs="?", help=argparse.SUPPRESS)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="softswitch",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"softswitch {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND")
    run = _subparser(sub, "run", "start the PBX daemon", RUN)
    run.add_argument(
        "--config", type=Path, metavar="FILE", help="TOML file (default: the demo office)"
    )
    run.add_argument(
        "--listen",
        type=_listen,
        metavar="HOST:PORT",
        help="HOST:PORT (UDP and TCP) or udp:/tcp:/tls:/ws:/wss:HOST:PORT, instead of"
        " [server] listen; 0.0.0.0:5060 lets LAN phones in",
    )
    run.add_argument(
        "--console-listen",
        type=_host_port,
        metavar="HOST:PORT",
        help="the web console's address, instead of [console] listen (without a [console]"
        " table: the console there); the demo's is 127.0.0.1:8080, or a free port when it"
        " is taken",
    )
    run.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help="voicemail, recordings, state (default: data)",
    )
    run.add_argument(
        "--log-level", default="info", metavar="LEVEL", help="debug, info (default), warning, error"
    )
    run.add_argument(
        "--log-file",
        type=Path,
        metavar="FILE",
        help="append the log here too (for fail2ban; reopened when logrotate moves it)",
    )
    run.add_argument(
        "--stats-file", type=Path, metavar="FILE", help="write counters here (JSON) every second"
    )
    run.add_argument("--quiet", action="store_true", help="print no banner (logs only)")
    run.add_argument(
        "--secrets",
        action="store_true",
        help="show passwords, PINs and conference codes in the banner (the demo always does)",
    )
    check = _subparser(sub, "check", "validate a configuration file", CHECK)
    _config_options(check)
    status = _subparser(sub, "status", "what the running daemon is doing", STATUS)
    _daemon_options(status)
    status.add_argument("--json", action="store_true", help="the daemon's answer as JSON")
    reload_cmd = _subparser(
        sub, "reload", "make the running daemon apply its edited configuration file", RELOAD
    )
    _daemon_options(reload_cmd)
    password = _subparser(
        sub,
        "console-password",
        "set a web console administrator's password (asked for)",
        PASSWORD,
    )
    _daemon_options(password)
    password.add_argument(
        "--user", default="admin", metavar="NAME", help="the administrator (default: admin)"
    )
    password.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    users = _subparser(sub, "users", "list the accounts of a configuration", USERS)
    _config_options(users)
    users.add_argument(
        "--secrets", action="store_true", help="with passwords, PINs and conference codes"
    )
    return parser


def _demo_file(data_dir: Path | None, overrides: dict[str, object] | None = None) -> ConfigFile:
    """The demo office as ``run`` runs it: saved in its data directory once edited
    (``office.toml`` there, used from then on), with the web console on."""
    from .features.console.settings import ConsoleSettings

    data = Path(data_dir or DEMO_DATA)
    return ConfigFile(
        None,
        {**(overrides or {}), "data_dir": data},
        save_to=data / "office.toml",
        default_sections={"console": ConsoleSettings(demo=True)},
    )


def _source(path: Path | None, overrides: dict[str, object]) -> ConfigFile:
    """The file the daemon runs (and the console saves to)."""
    if path is not None:
        return ConfigFile(path, overrides)
    data_dir = overrides.get("data_dir")
    return _demo_file(data_dir if isinstance(data_dir, Path) else None, overrides)


def _config_file(args: argparse.Namespace) -> ConfigFile:
    """What ``check`` and ``users`` read: --config FILE (or the old positional FILE), else
    the demo office as ``run`` would run it."""
    path: Path | None = args.config
    if args.file is not None:
        print(DEPRECATED_FILE.format(command=args.command), file=sys.stderr)
        path = args.file
    return ConfigFile(path) if path is not None else _demo_file(args.data_dir)


def _name(file: ConfigFile) -> str:
    """The name errors give the file (as ConfigFile.parse does)."""
    if file.path is not None:
        return str(file.path)
    saved = file.save_to
    return str(saved) if saved is not None and saved.exists() else "<embedded demo>"


def _human(exc: cfg.ConfigError, file: ConfigFile) -> str:
    """The error with positions a person counts (``users[1] is the second [[users]]
    table, line 14``)."""
    try:
        text = file.text()
    except cfg.ConfigError:
        return str(exc)
    return cfg.human_errors(str(exc), _name(file), text)


def _load(file: ConfigFile) -> cfg.Config | None:
    """The validated configuration, or None after printing why it is not."""
    try:
        return file.load()
    except cfg.ConfigError as exc:
        print(_human(exc, file), file=sys.stderr)
        return None


def _check(args: argparse.Namespace) -> int:
    from .features import builtin
    from .plugins import Registry

    file = _config_file(args)
    config = _load(file)
    if config is None:
        return 1
    registry = Registry(config, builtin())  # valid: ConfigFile.load built it already
    for warning in registry.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    groups = len(config.section("ring_groups") or [])
    queues = len(config.section("queues") or [])
    print(
        f"{_name(file)}: OK ({_plural(len(config.users), 'user')}, "
        f"{_plural(len(config.trunks), 'trunk')}, {_plural(groups, 'ring group')}, "
        + (f"{_plural(queues, 'queue')}, " if queues else "")
        + f"{_plural(len(registry.numbers), 'number')})"
    )
    return 0


def _data_dir(args: argparse.Namespace) -> Path | None:
    """The data directory named by --config FILE or --data-dir (None: the file is invalid).
    Without either, the demo's: its saved office lives there too."""
    if args.config is not None:
        file = ConfigFile(args.config)
        try:
            return cfg.load(args.config).server.data_dir
        except cfg.ConfigError as exc:
            print(_human(exc, file), file=sys.stderr)
            return None
    return Path(args.data_dir or DEMO_DATA)


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

    file = _config_file(args)
    config = _load(file)
    if config is None:
        return 1
    registry = Registry(config, builtin())
    # the codes a running bridge uses: configured, else kept in the data directory
    found = banner.accounts(config, banner.stored_codes(config))
    lines = banner.account_lines(found, secrets=args.secrets or file.demo)
    numbers = banner.numbers(config, registry)
    if numbers:
        lines += ["", *banner.columns([list(n) for n in numbers])]
    print("\n".join(lines))
    return 0


def _taken(host: str, port: int) -> bool:
    """Whether a TCP server could not listen on ``host:port`` now (SO_REUSEADDR, as the
    web server binds: a closing connection does not count)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def _free_port(host: str, near: int) -> int:
    """A port a TCP server can listen on: one of the next few after ``near`` (easy to
    type), else any the kernel gives."""
    for port in range(near + 1, near + 20):
        if not _taken(host, port):
            return port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        found: int = probe.getsockname()[1]
        return found


def _demo_console(config: cfg.Config) -> str | None:
    """The demo's console address when its default one is taken: another free port (the
    demo should just work); None when it is free, moved or off."""
    settings = config.section("console")
    if settings is None or not settings.enabled or settings.listen != DEMO_CONSOLE:
        return None
    host, _, port = DEMO_CONSOLE.rpartition(":")
    if not _taken(host, int(port)):
        return None
    return f"{host}:{_free_port(host, int(port))}"


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if getattr(args, "file", None) is not None and (args.config or args.data_dir):
        parser.error("give --config FILE only (FILE alone is the old form)")
    if args.command == "check":
        return _check(args)
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
    if args.console_listen:
        source = replace(source, section_overrides={"console": {"listen": args.console_listen}})
    if source.demo:
        # a file saved by an older version gets its data_dir corrected; an invalid one is
        # left as it is, and loading it says what is wrong
        with contextlib.suppress(cfg.ConfigError):
            source.repair()
    config = _load(source)
    if config is None:
        return 1
    note = None
    if source.demo and not args.console_listen and (moved := _demo_console(config)):
        source = replace(source, section_overrides={"console": {"listen": moved}})
        config = _load(source)
        if config is None:
            return 1
        note = f"{DEMO_CONSOLE} is taken"
    asyncio.run(
        _serve(
            config,
            demo=source.demo,
            stats_file=args.stats_file,
            quiet=args.quiet,
            secrets=args.secrets,
            source=source,
            console_note=note,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
