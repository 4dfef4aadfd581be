"""Devices: who may register, REGISTER handling, keep-alive, and where a user rings.

A user registers with its extension and password; each of its SIP devices (``[[users.devices]]``
with a username) registers as itself and rings as part of its user, so that call flip can
ring one device alone. Bindings live in the pure :class:`~softswitch.registrar.Registrar`;
this module is its adapter to the user agent, and the core's ``user`` and ``device``
endpoints (the forks that ring a user or one of its devices).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import sip

from .authguard import AuthGuard
from .config import Config, Device, User
from .feature import Fork, Target
from .registrar import Binding, Registrar

if TYPE_CHECKING:
    from .calls import Party

log = logging.getLogger("softswitch")


class Devices:
    def __init__(
        self,
        config: Callable[[], Config],
        ua: sip.UserAgent,
        registrar: Registrar,
        *,
        emit_registered: Callable[[Binding], None],
        emit_unregistered: Callable[[Binding], None],
        spawn: Callable[..., asyncio.Task[object]],
    ) -> None:
        self._config = config
        self.ua = ua
        self.registrar = registrar
        server = config().server
        self.guard = AuthGuard(
            server.domain,
            self.password,
            algorithms=tuple(server.auth_algorithms),
            max_failures=server.failed_auth_limit,
        )
        self._registered = emit_registered
        self._unregistered = emit_unregistered
        self._spawn = spawn
        self.auth_failures = 0

    @property
    def config(self) -> Config:
        return self._config()

    @property
    def domain(self) -> str:
        return self.config.server.domain

    def aor(self, username: str) -> str:
        return f"sip:{username}@{self.domain}"

    # -- identities -----------------------------------------------------------------------

    def identity(self, username: str) -> tuple[User, Device | None] | None:
        """The user a login name belongs to (its extension, or one of its devices)."""
        config = self.config
        user = config.user(username)
        if user is not None:
            return user, None
        for user in config.users:
            device = user.device(username)
            if device is not None:
                return user, device
        return None

    def password(self, username: str) -> str | None:
        found = self.identity(username)
        if found is None:
            return None
        user, device = found
        return device.password if device is not None else user.password

    def owner_of(self, aor: str) -> User | None:
        """The user whose extension or device ``aor`` is."""
        username = aor.removeprefix("sip:").partition("@")[0]
        found = self.identity(username)
        return found[0] if found else None

    # -- where a user is ------------------------------------------------------------------

    def bindings(self, user: User, device: str | None = None) -> list[tuple[Binding, str | None]]:
        """Live bindings of ``user`` (its own and its SIP devices'), each with the device
        name; only those of ``device`` when given."""
        now = self.ua.now()
        out: list[tuple[Binding, str | None]] = []
        if device is None:
            out += [(b, None) for b in self.registrar.lookup(self.aor(user.extension), now)]
        for d in user.devices:
            if d.username is not None and (device is None or d.name == device):
                out += [(b, d.name) for b in self.registrar.lookup(self.aor(d.username), now)]
        return out

    def registered(self, user: User) -> bool:
        return bool(self.bindings(user))

    def forks_to(
        self, user: User, caller_id: sip.NameAddr, device: str | None = None
    ) -> list[Fork]:
        return [
            Fork(
                binding.contact,
                binding.source,
                to=f"<{self.aor(user.extension)}>",
                from_=caller_id,
                label=user.extension if name is None else f"{user.extension}/{name}",
                user=user,
                device=name,
            )
            for binding, name in self.bindings(user, device)
        ]

    # -- REGISTER ---------------------------------------------------------------------------

    def on_register(self, incoming: sip.IncomingRequest) -> None:
        request, now = incoming.request, self.ua.now()
        verdict = self.guard.check(request, incoming.source[1], now)
        if verdict.user is None:
            if verdict.status == 403:
                self.auth_failures += 1
            # a challenge or refusal costs no transaction: nothing kept, nothing repeated
            incoming.respond_stateless(
                verdict.status, verdict.reason, headers=list(verdict.headers)
            )
            return
        if verdict.user != request.to.uri.user:
            incoming.respond(403, "Forbidden (credentials do not match the To user)")
            return
        aor = self.aor(verdict.user)
        result = self.registrar.process(request, aor, incoming.source, now)
        incoming.respond(result.status, result.reason, headers=result.headers)
        for binding in result.added:
            log.info(
                "event=registered aor=%s contact=%s source=%s:%d ua=%r",
                aor,
                binding.contact,
                binding.source[1],
                binding.source[2],
                binding.user_agent,
            )
            self._registered(binding)
        for binding in result.removed:
            log.info("event=unregistered aor=%s contact=%s", aor, binding.contact)
            self._unregistered(binding)

    def registered_source(self, incoming: sip.IncomingRequest) -> str | None:
        """The login whose live registration came from this very source address and who
        asks about its own address: already authenticated by that REGISTER. (baresip 1.0
        loops on a challenged SUBSCRIBE now and then; desk phones are spared a round trip.)"""
        user = incoming.request.to.uri.user or ""
        for binding in self.registrar.lookup(self.aor(user), self.ua.now()):
            if binding.source == incoming.source:
                return user
        return None

    def restore(self) -> int:
        """Bindings stored before a restart, back in the table with their remaining
        lifetime; each contact is asked with OPTIONS at once and dropped if silent."""
        restored = self.registrar.restore(self.ua.now())
        for binding in restored:
            self._spawn(self._ping(binding))
        if restored:
            log.info("event=bindings_restored count=%d", len(restored))
        return len(restored)

    async def keepalive(self, interval: float) -> None:
        """OPTIONS to every registered contact; a silent one is dropped."""
        while True:
            await asyncio.sleep(interval)
            now = self.ua.now()
            for aor in self.registrar.aors():
                for binding in self.registrar.lookup(aor, now):
                    self._spawn(self._ping(binding))

    async def _ping(self, binding: Binding) -> None:
        response = await self.ua.request("OPTIONS", binding.contact, destination=binding.source)
        if response.status in (408, 503):
            self.registrar.remove(binding)
            log.info("event=contact_unreachable aor=%s contact=%s", binding.aor, binding.contact)
            self._unregistered(binding)


class UserEndpoint:
    """``user:101`` rings every device of extension 101."""

    def __init__(self, devices: Devices, caller_id: Callable[[Party], sip.NameAddr]) -> None:
        self.devices = devices
        self.caller_id = caller_id

    async def forks(self, target: Target, caller: Party) -> list[Fork]:
        user = self.devices.config.user(target.value)
        if user is None:
            return []
        return self.devices.forks_to(user, self.caller_id(caller))


class DeviceEndpoint:
    """``device:101`` with ``device=name``: one SIP device of a user (call flip)."""

    def __init__(self, devices: Devices, caller_id: Callable[[Party], sip.NameAddr]) -> None:
        self.devices = devices
        self.caller_id = caller_id

    async def forks(self, target: Target, caller: Party) -> list[Fork]:
        user = self.devices.config.user(target.value)
        if user is None or target.device is None:
            return []
        return self.devices.forks_to(user, self.caller_id(caller), target.device)
