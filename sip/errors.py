"""Exceptions of the SIP layer.

Like h11, errors carry a direction: :class:`ParseError` means the peer sent something
malformed and carries the status to answer with; :class:`SipUsageError` means this
program misused the API.
"""

from __future__ import annotations


class ParseError(ValueError):
    """The input is not a valid SIP message, URI, header or SDP body.

    ``status`` is the response a server should send (400 unless the RFC says otherwise,
    e.g. 505 for an unknown SIP version).
    """

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class SipUsageError(RuntimeError):
    """This program used the API in a way that cannot work (not the peer's fault)."""


class ResolveError(OSError):
    """A host name in a URI that does not resolve (DNS gave no address)."""


class BindError(OSError):
    """A listen address that cannot be bound; the message names it (``udp:HOST:PORT``)."""
