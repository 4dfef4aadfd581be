"""Failed logins over HTTP (the console, provisioning), counted per source address and
account over a sliding window (pure: times come in).

``limit`` failures refuse that account to that source, and ``SOURCE_FACTOR`` times as
many over any names refuse the source, until the oldest failure leaves the window. Never
per account alone: failures from one address must not lock an account (the
administrator's included) for every other address, so the right password from a source
that has not failed still gets in; a guesser spread over addresses is slowed by each of
them instead. An IPv6 source counts as its /64, the block one host usually has. At most
``MAX_TRACKED`` sources and pairs are followed, the stalest forgotten first.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict, deque
from dataclasses import dataclass

MAX_TRACKED = 4096  # sources and (source, account) pairs the throttle follows
# a source may fail this many times the per-account limit, over all the names it tries,
# so a few colleagues behind one NAT mistyping do not lock each other out
SOURCE_FACTOR = 4


@dataclass(frozen=True, slots=True)
class Refusal:
    """A login refused by the throttle: by ``scope`` (``source``: the address, whatever
    the account; ``account``: this account from this address) until ``until``;
    ``started``: this failure started the throttle."""

    scope: str
    until: float
    started: bool = False


def source_key(source: str) -> str:
    """The address a source is counted as: IPv4 as it is, IPv6 as its /64."""
    try:
        address = ipaddress.ip_address(source)
    except ValueError:
        return source
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class LoginThrottle:
    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.get(key)
        if times is None:
            return deque()
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]
        return times

    def _keys(self, source: str, account: str) -> tuple[tuple[str, str, int], ...]:
        """(scope, key, limit), the wider scope first."""
        src = source_key(source)
        return (
            ("source", f"src:{src}", self.limit * SOURCE_FACTOR),
            ("account", f"pair:{src}\0{account}", self.limit),
        )

    def refused(self, source: str, account: str, now: float) -> Refusal | None:
        """Is a login from ``source`` to ``account`` refused now (before its password
        is looked at)?"""
        for scope, key, limit in self._keys(source, account):
            times = self._recent(key, now)
            if len(times) >= limit:
                return Refusal(scope, times[0] + self.window)
        return None

    def failed(self, source: str, account: str, now: float) -> Refusal | None:
        """Count a failure; the refusal it starts, if it starts one."""
        started: Refusal | None = None
        for scope, key, limit in self._keys(source, account):
            times = self._recent(key, now)
            if not times:
                times = self._failures[key] = deque(maxlen=limit)
            times.append(now)
            self._failures.move_to_end(key)
            if len(times) >= limit and started is None:
                started = Refusal(scope, times[0] + self.window, started=True)
        while len(self._failures) > MAX_TRACKED:
            self._failures.popitem(last=False)
        return started

    def succeeded(self, account: str, source: str | None = None) -> None:
        """A login to ``account`` succeeded: its failures from ``source`` are forgotten
        (without ``source``: from every source). A source's own count stays: logging
        in to an account of one's own must not buy more guesses at the others."""
        if source is not None:
            self._failures.pop(f"pair:{source_key(source)}\0{account}", None)
            return
        for key in [
            k for k in self._failures if k.startswith("pair:") and k.partition("\0")[2] == account
        ]:
            del self._failures[key]
