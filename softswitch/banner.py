"""What ``softswitch run`` prints once it listens, and what ``softswitch users`` lists.

Enough to register a phone and try every number at once: where to point a phone, each
login with its password, voicemail PIN and conference codes, and the numbers that are
not extensions (the bridge, voicemail, receptionists, ring groups). Passwords, PINs and
codes are shown for the demo only: a real office's daemon output ends up in system logs,
so there they appear only on request (``softswitch users --config FILE --secrets``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .config import Config
from .plugins import Registry

Listen = tuple[str, str, int]  # transport, host, port (as bound)
WILDCARDS = ("0.0.0.0", "::", "")


KINDS = {"virtual": " (virtual)", "message_only": " (messages only)"}


@dataclass(frozen=True, slots=True)
class Account:
    """One login a phone can register with: an extension or one of its SIP devices."""

    login: str
    name: str
    password: str
    pin: str  # the extension's voicemail PIN
    host_code: str | None  # conference codes of the extension's room (None: not made yet)
    participant_code: str | None
    extension: str  # the extension it rings with (its own login for an extension)


def accounts(config: Config, codes: Mapping[str, tuple[str | None, str | None]]) -> list[Account]:
    out: list[Account] = []
    for user in config.users:
        host, guest = codes.get(user.extension, (None, None))
        name = user.name + KINDS.get(user.kind, "")
        out.append(
            Account(user.extension, name, user.password, user.pin, host, guest, user.extension)
        )
        for device in user.devices:
            if device.username is not None and device.password is not None:
                out.append(
                    Account(
                        device.username,
                        f"{user.name} ({device.name})",
                        device.password,
                        user.pin,
                        host,
                        guest,
                        user.extension,
                    )
                )
    return out


def stored_codes(config: Config) -> dict[str, tuple[str | None, str | None]]:
    """Conference codes without a running bridge: configured or kept in the data dir."""
    from .features.conference.codes import known_codes

    return known_codes(config.users, Path(config.server.data_dir))


# what the numbers of the built-in features do; "+ext": a code followed by an extension
DESCRIPTIONS = {
    ("pickup", ""): "pickup: answer a call ringing in your pickup group",
    ("pickup", "+ext"): "pickup: answer the call ringing at that extension",
    ("intercom", "+ext"): "intercom: that phone answers itself, on its speaker",
    ("hot_desk", ""): "hot desk: then an extension and its PIN to log in; again to log out",
}
ORDER = {"conference": 0, "voicemail": 1, "receptionist": 2, "ring_groups": 3}


def numbers(config: Config, registry: Registry) -> list[tuple[str, str]]:
    """(number, what it is) for every number that is not a user's extension; codes made
    of a prefix and every extension (``*8100``, ``*8101``, ...) are shown once, ``*8 + ext``."""
    features = config.features
    extensions = {user.extension for user in config.users}
    described: dict[str, tuple[int, str]] = {}
    for number in registry.numbers:
        owner = registry.owners.get(f"number {number}", "")
        if owner == "extensions":
            continue
        rank = ORDER.get(owner, 9)
        prefix = next(
            (
                number[: -len(e)]
                for e in sorted(extensions, key=len, reverse=True)  # the longest that fits
                if len(number) > len(e) and number.endswith(e)
            ),
            "",
        )
        if prefix.startswith("*") and (owner, "+ext") in DESCRIPTIONS:
            described[f"{prefix} + ext"] = (rank, DESCRIPTIONS[owner, "+ext"])
            continue
        feature = registry.feature(owner)
        told = feature.describe(number) if feature is not None else None
        if told is not None:
            what = told
        elif owner == "conference":
            what = "conference bridge: then a host or participant code and # (it picks the room)"
        elif number == features.voicemail_access:
            what = "voicemail: your own mailbox, then your PIN"
        elif number == features.voicemail_any:
            what = "voicemail: any mailbox, then its PIN"
        elif owner == "receptionist":
            what = "receptionist " + _name_of(config.section("ivr"), number)
        elif owner == "ring_groups":
            what = "ring group " + _name_of(config.section("ring_groups"), number)
        else:
            what = DESCRIPTIONS.get((owner, ""), owner or "feature")
        described[number] = (rank, what)
    return [
        (number, what)
        for number, (_, what) in sorted(described.items(), key=lambda i: (i[1][0], i[0]))
    ]


def _name_of(section: Iterable[object] | None, number: str) -> str:
    for entry in section or ():
        if getattr(entry, "extension", None) == number:
            return str(getattr(entry, "name", ""))
    return ""


def columns(rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    """Rows as aligned columns (two spaces between), trailing blanks trimmed."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        (indent + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))).rstrip()
        for row in rows
    ]


def account_lines(found: Sequence[Account], *, secrets: bool) -> list[str]:
    if not found:
        return ["  (no users: add [[users]] to the configuration)"]
    if not secrets:
        rows = [["login", "name", "rings as"]]
        rows += [[a.login, a.name, a.extension] for a in found]
        return columns(rows)
    rows = [["login", "name", "password", "PIN", "bridge: host code", "participant code"]]
    rows += [
        [
            a.login,
            a.name,
            a.password,
            a.pin,
            a.host_code or "(made at start)",
            a.participant_code or "(made at start)",
        ]
        for a in found
    ]
    return columns(rows)


def provisioning_line(config: Config) -> list[str]:
    """Where Polycom phones fetch their configuration, when ``[provisioning]`` is on."""
    settings = config.section("provisioning")
    listen = getattr(settings, "listen", None)
    if not isinstance(listen, str):
        return []
    host, _, port = listen.rpartition(":")
    if host.strip("[]") in WILDCARDS:
        host = config.server.public_address or _lan_address(host.strip("[]")) or host
    host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return [f"  Polycom phones provision from http://{host}:{port}/ (user {settings.username})"]


def console_lines(registry: Registry, *, demo: bool, note: str | None = None) -> list[str]:
    """The web console's address, and an administrator's password when one was just made
    (the first start; the demo, or ``[console] demo = true``, makes a new one at every
    start). ``note``: why the address is not the usual one (the demo's 8080 was taken)."""
    console = registry.feature("console")
    url, password = getattr(console, "url", None), getattr(console, "admin_password", None)
    problem = getattr(console, "problem", None)
    if problem:
        fix = " (choose another with --console-listen HOST:PORT)" if "listen" in problem else ""
        return [f"  web console: {problem}{fix}"]
    if not url:
        return []
    lines = [f"  web console {url}" + (f" ({note})" if note else "")]
    if password:
        once = "" if demo else " (shown once: change it in the console)"
        if not demo and getattr(getattr(console, "options", None), "demo", False):
            once = " (a new one at every start: [console] demo = true)"
        lines.append(f"  console login: admin / {password}{once}")
    lines.append("  users log in there with their extension and phone password")
    return lines


def where_phones_register(listen: Sequence[Listen], public_address: str | None) -> list[str]:
    """The server address (and transports) to type into a phone."""
    by_port: dict[tuple[str, int], list[str]] = {}
    for transport, host, port in listen:
        by_port.setdefault((host, port), []).append(transport.upper())
    lines: list[str] = []
    loopback_only = True
    for (host, port), transports in by_port.items():
        shown = host
        if public_address:
            shown = public_address
        elif host in WILDCARDS:
            shown = _lan_address(host) or host
        if not _is_loopback(host):
            loopback_only = False
        address = f"[{shown}]:{port}" if ":" in shown else f"{shown}:{port}"
        lines.append(f"  phones register to {address} ({' or '.join(transports)})")
    if loopback_only:
        lines.append(
            '  this machine only; for phones on the LAN: make run ARGS="--listen 0.0.0.0:5060"'
        )
    return lines


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _lan_address(wildcard: str) -> str | None:
    """This machine's address on its default route (what LAN phones can reach)."""
    from sip.netroute import source_address_for

    try:
        found = source_address_for("2001:db8::1" if wildcard == "::" else "192.0.2.1")
    except Exception:  # no route at all: the wildcard is the best we can say
        return None
    return None if _is_loopback(found) else found


def render(
    config: Config,
    registry: Registry,
    listen: Sequence[Listen],
    codes: Mapping[str, tuple[str | None, str | None]],
    *,
    secrets: bool,
    title: str,
    tls_fingerprint: str | None = None,
) -> str:
    server = config.server
    lines = [f"{title}: domain {server.domain}, data in {server.data_dir}"]
    lines += where_phones_register(listen, server.public_address)
    if tls_fingerprint is not None:
        which = "configured" if server.tls_certificate else "self-signed (demo)"
        lines.append(f"  TLS certificate, {which}: SHA-256 {tls_fingerprint}")
    lines += provisioning_line(config)
    lines.append("")
    lines += account_lines(accounts(config, codes), secrets=secrets)
    if not secrets and config.users:
        source = config.source or "office.toml"
        lines.append(f"  passwords, PINs and codes: softswitch users --config {source} --secrets")
    found = numbers(config, registry)
    if found:
        lines.append("")
        lines += columns([[number, what] for number, what in found])
    return "\n".join(lines)


def print_demo_accounts(config: Config, listen: str) -> None:
    """The short list older callers print (``render`` is the banner ``softswitch run``
    prints)."""
    lines = [f"softswitch demo office on {listen} (domain {config.server.domain})"]
    for user in config.users:
        lines.append(
            f"  extension {user.extension:>4}  {user.name:<16} password {user.password:<10}"
            f" voicemail PIN {user.pin}"
        )
    lines.append(f"  voicemail: dial {config.features.voicemail_access}")
    print("\n".join(lines), flush=True)
