"""The office's desk phones: ``[[phones]]``, one table per phone, by MAC address.

A phone belongs to a user (``user = "100"``: it registers as that extension) or is a
shared hot-desk phone (``hot_desk = true``: it registers with its own login, ``username``
— its MAC by default — and ``password``, and rings as whoever logged in with ``*90``).
``blf`` lists the extensions its busy-lamp keys watch. Provisioning and hot desk read
this table; this module only owns and checks it.
"""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from ..config import Config, Extension
from ..feature import BaseFeature
from ..model import Strict

MAX_BLF_KEYS = 48  # a VVX with expansion modules


class Phone(Strict):
    mac: str = Field(pattern=r"^[0-9A-Fa-f]{12}$")
    model: str = Field("VVX 450", min_length=1, max_length=32)
    user: Extension | None = None
    hot_desk: bool = False
    username: str | None = Field(None, pattern=r"^[A-Za-z0-9._-]{1,64}$")  # hot desk login
    password: str | None = Field(None, min_length=8, max_length=128)  # hot desk login
    blf: list[Extension] = Field([], max_length=MAX_BLF_KEYS)
    label: str | None = Field(None, max_length=32)
    # its own provisioning password ([provisioning] credentials = "per_phone")
    provisioning_password: str | None = Field(None, min_length=8, max_length=128)

    @field_validator("mac")
    @classmethod
    def _lower(cls, mac: str) -> str:
        return mac.lower()

    @model_validator(mode="after")
    def _kind(self) -> Phone:
        if (self.user is None) == (not self.hot_desk):
            raise ValueError('a phone has either user = "NNN" or hot_desk = true')
        if self.hot_desk and self.password is None:
            raise ValueError("a hot-desk phone needs a password (its own SIP login)")
        if not self.hot_desk and (self.username or self.password):
            raise ValueError("username/password are for hot-desk phones (others use the user's)")
        return self

    @property
    def login(self) -> str:
        """The SIP username a hot-desk phone registers with."""
        return self.username or self.mac


class Phones(BaseFeature):
    name = "phones"
    section = "phones"
    config_model = list[Phone]

    def __post_init__(self) -> None:
        phones: list[Phone] = self.settings() or []
        macs: set[str] = set()
        logins = {u.extension for u in self.config.users}
        logins |= {d.username for u in self.config.users for d in u.devices if d.username}
        for i, phone in enumerate(phones):
            if phone.mac in macs:
                raise ValueError(f"phones[{i}].mac: {phone.mac} is listed twice")
            macs.add(phone.mac)
            if phone.user is not None and self.config.user(phone.user) is None:
                raise ValueError(f"phones[{i}].user: no extension {phone.user}")
            if phone.hot_desk:
                if phone.login in logins:
                    raise ValueError(f"phones[{i}].username: {phone.login} is already a login")
                logins.add(phone.login)
            for j, key in enumerate(phone.blf):
                if self.config.user(key) is None:
                    raise ValueError(f"phones[{i}].blf[{j}]: no extension {key}")


def phones_of(config: Config) -> list[Phone]:
    """The ``[[phones]]`` of a configuration (empty when the section is absent)."""
    return list(config.section("phones") or [])
