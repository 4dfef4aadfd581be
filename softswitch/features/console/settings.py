"""The ``[console]`` table: where the web console listens, HTTPS, sessions, throttling."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, IPvAnyAddress, IPvAnyNetwork, model_validator

from ...model import Strict

LISTEN_PATTERN = r"^(\[[0-9A-Fa-f:.]+\]|[^:\[\]]+):[0-9]{1,5}$"


class ConsoleSettings(Strict):
    enabled: bool = True
    listen: str = Field("127.0.0.1:8080", pattern=LISTEN_PATTERN)
    # HTTPS with this certificate chain and key (PEM); without them plain HTTP, for a
    # console on loopback or behind a TLS proxy
    certificate: Path | None = None
    key: Path | None = None
    session_minutes: int = Field(480, ge=5, le=7 * 24 * 60)  # idle time before a new login
    # failed logins per source address, and per account, within login_window seconds
    # before that source or account is refused until the window has passed
    login_attempts: int = Field(5, ge=1, le=100)
    login_window: int = Field(300, ge=10, le=86400)
    # addresses of reverse proxies whose X-Forwarded-For / X-Forwarded-Proto are believed
    # (none by default: the client is the address that connected)
    trusted_proxies: list[IPvAnyAddress | IPvAnyNetwork] = Field(
        default_factory=list, max_length=64
    )
    # the embedded demo: a new administrator password at every start, shown in the banner
    demo: bool = False

    @model_validator(mode="after")
    def _tls(self) -> ConsoleSettings:
        if (self.certificate is None) != (self.key is None):
            raise ValueError("certificate and key go together (HTTPS needs both)")
        return self
