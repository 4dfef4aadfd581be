"""Addresses as the user agent takes them: ``(transport, host, port)`` destinations, checked
at the API's edge so a mistake is named there, and listen addresses that cannot be bound.

A destination is where a request goes, bypassing the Request-URI and Route: a
``(transport, host, port)`` tuple with an IP literal, e.g. ``("udp", "127.0.0.1", 5060)``.
A name must be resolved first (``await ua.resolve(sip.parse_uri("sip:pbx.example"))``).
"""

from __future__ import annotations

import errno
import functools
import ipaddress
from typing import Any

from .errors import BindError, SipUsageError
from .transaction import Address
from .uri import URI

TRANSPORTS = ("udp", "tcp", "tls", "ws", "wss")  # ws/wss: RFC 7118, listen only
_EXAMPLE = "e.g. ('udp', '127.0.0.1', 5060)"


def checked_destination(value: Any) -> Address:
    """``value`` as an :data:`Address`, or :class:`SipUsageError` saying what is wrong."""
    if not isinstance(value, tuple | list) or len(value) != 3:
        raise SipUsageError(
            f"destination must be (transport, host, port), {_EXAMPLE}; got {value!r}"
        )
    transport, host, port = value
    if not isinstance(transport, str) or transport.lower() not in TRANSPORTS:
        raise SipUsageError(
            f"destination {tuple(value)!r}: transport must be one of"
            f" {', '.join(TRANSPORTS)} ({_EXAMPLE})"
        )
    if not isinstance(host, str):
        raise SipUsageError(f"destination {tuple(value)!r}: host must be a str ({_EXAMPLE})")
    if not is_ip(host.strip("[]")):
        raise SipUsageError(
            f"destination {tuple(value)!r}: host must be an IP address; resolve a name "
            "first: await ua.resolve(sip.parse_uri('sip:HOST'))"
        )
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise SipUsageError(f"destination {tuple(value)!r}: port must be an int in 1-65535")
    if isinstance(value, tuple) and transport.islower() and "[" not in host:
        return value  # already canonical: the common case costs no copy
    return (transport.lower(), host.strip("[]"), port)


def bind_error(spec: str, exc: OSError) -> BindError:
    """What went wrong binding ``spec`` (``udp:HOST:PORT``), in words that name the fix."""
    if exc.errno == errno.EADDRINUSE:
        why = "is already in use"
    elif exc.errno == errno.EADDRNOTAVAIL:
        why = "is not an address of this machine"
    elif exc.errno == errno.EACCES:
        why = "needs privileges (ports below 1024: root or CAP_NET_BIND_SERVICE)"
    else:
        why = f"cannot be bound ({exc.strerror or exc})"
    error = BindError(f"{spec} {why}")
    error.errno = exc.errno
    return error


@functools.lru_cache(maxsize=4096)  # the same few peers, checked at every send
def is_ip(host: str) -> bool:
    """Whether ``host`` is an IPv4 or IPv6 address (no brackets), not a name."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def parse_listen(spec: str) -> Address:
    """A listen address: ``udp:127.0.0.1:5060``, ``tcp:[::1]:5060`` (the host without
    its brackets), ``127.0.0.1:5060`` (UDP)."""
    transport = "udp"
    rest = spec
    head, sep, tail = spec.partition(":")
    if sep and head.lower() in TRANSPORTS:
        transport, rest = head.lower(), tail
    if rest.startswith("["):
        host, _, port = rest[1:].partition("]:")
    else:
        host, _, port = rest.rpartition(":")
    if not host or not port.isdigit():
        raise SipUsageError(f"listen address {spec!r}: expected [transport:]host:port")
    return transport, host, int(port)


def transport_of(uri: URI) -> str:
    """The transport a request to ``uri`` takes (RFC 3263 without NAPTR): its
    ``transport`` parameter, else TLS for ``sips:``, else UDP."""
    return uri.transport or ("tls" if uri.scheme == "sips" else "udp")
