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
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import sip

from . import codec_policy
from .authguard import AuthGuard, Report, Verdict
from .binding_store import StoredBinding
from .config import Config, Device, User
from .feature import Fork, Target
from .registrar import Binding, Registrar

if TYPE_CHECKING:
    from .calls import Party

log = logging.getLogger("softswitch")


@dataclass(frozen=True, slots=True)
class Login:
    """A SIP login that a feature manages (a hot-desk phone): its password, and the user
    and device it acts as now."""

    password: str
    user: User
    device: Device | None = None


# Features add logins the configuration does not list (by username), and addresses of
# record where a user also rings (each with the device name its forks carry).
LoginSource = Callable[[str], Login | None]
AorSource = Callable[[User], list[tuple[str, str | None]]]


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
            max_unanswered=server.unanswered_challenge_limit,
        )
        self._registered = emit_registered
        self._unregistered = emit_unregistered
        self._spawn = spawn
        self.auth_failures = 0
        self._expiry: asyncio.TimerHandle | None = None
        self.logins: list[LoginSource] = []
        self.aor_sources: list[AorSource] = []

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
        login = self._login(username)
        return (login.user, login.device) if login is not None else None

    def _login(self, username: str) -> Login | None:
        for source in self.logins:
            login = source(username)
            if login is not None:
                return login
        return None

    def password(self, username: str) -> str | None:
        config = self.config
        user = config.user(username)
        if user is not None:
            return user.password
        for user in config.users:
            device = user.device(username)
            if device is not None:
                return device.password
        login = self._login(username)
        return login.password if login is not None else None

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
        for source in self.aor_sources:
            for aor, name in source(user):
                if device is None or name == device:
                    out += [(b, name) for b in self.registrar.lookup(aor, now)]
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
                codecs=codec_policy.preference(
                    self.config, user=user, user_agent=binding.user_agent
                ),
            )
            for binding, name in self.bindings(user, device)
        ]

    # -- authentication ---------------------------------------------------------------------

    def authenticate(self, incoming: sip.IncomingRequest, *, proxy: bool = False) -> Verdict:
        """The guard's verdict on ``incoming`` (see :mod:`softswitch.authguard`); failures
        and throttles go to the security log with the source address and port."""
        _, host, port = incoming.source
        verdict = self.guard.check(incoming.request, host, self.ua.now(), proxy=proxy, port=port)
        if verdict.status == 403:
            self.auth_failures += 1
        self._report(verdict.reports)  # (an answer may also have lifted a throttle)
        return verdict

    def _report(self, reports: Iterable[Report]) -> None:
        for r in reports:
            self.ua.security.event(
                r.event,
                (r.source, r.port),
                self.ua.now(),
                user=r.user,
                method=r.method,
                reason=r.reason,
            )
        deadline = self.guard.deadline
        if deadline is None or (self._expiry is not None and self._expiry.when() <= deadline):
            return
        if self._expiry is not None:
            self._expiry.cancel()
        self._expiry = asyncio.get_running_loop().call_at(deadline, self._expire)

    def _expire(self) -> None:
        """A throttle's time is up: its end (and the refusals it counted) is logged."""
        self._expiry = None
        self._report(self.guard.expire(self.ua.now()))

    def close(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None

    # -- REGISTER ---------------------------------------------------------------------------

    def on_register(self, incoming: sip.IncomingRequest) -> None:
        request, now = incoming.request, self.ua.now()
        verdict = self.authenticate(incoming)
        if verdict.user is None:
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

    def restore(self, rows: Iterable[StoredBinding]) -> int:
        """Bindings stored before a restart (``rows``, loaded from the registrar's store),
        back in the table with their remaining lifetime; each contact is asked with
        OPTIONS at once and dropped if silent."""
        restored = self.registrar.restore(self.ua.now(), rows)
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
        caller_id = self.caller_id(caller)
        if user.caller_id_display == "dialled" and target.shown is not None:
            name, number = target.shown
            caller_id = sip.NameAddr(sip.URI("sip", number, host=self.devices.domain), name)
        return self.devices.forks_to(user, caller_id)


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
