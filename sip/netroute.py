"""Which local address the kernel would use toward a peer (for Via, Contact and SDP).

A phone must be told an address it can reach: the source address of the route toward
it, not a wildcard. The route is asked of the kernel through netlink (pyroute2); where
netlink is not available, a connected UDP socket gives the same answer.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import socket

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1024)
def source_address_for(destination: str) -> str:
    """The preferred source address for packets to ``destination`` (an IP literal)."""
    ip = ipaddress.ip_address(destination)
    if ip.is_loopback:
        return str(ip)
    try:
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            routes = ipr.route("get", dst=str(ip))
        for route in routes:
            src = route.get_attr("RTA_PREFSRC")
            if src:
                return str(src)
    except Exception as exc:  # netlink refused (sandbox) or no route: fall back
        log.debug("event=route_lookup_failed destination=%s error=%s", destination, exc)
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect((str(ip), 9))
            return str(sock.getsockname()[0])
        except OSError:
            return "::1" if ip.version == 6 else "127.0.0.1"
