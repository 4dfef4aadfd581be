"""Trunks: external numbers through the provider, outbound permissions, registration.

The ``tel`` destination kind takes a call to an external number (``tel:+33...`` or a bare
number the dialplan classifies as national / international / emergency), on behalf of an
authenticated user whose permission covers it (emergency numbers: every user); the ``tel``
endpoint turns such a number into the INVITE to the provider, so a ring group or a
forwarding step can ring a mobile. Unauthenticated callers never reach a trunk (toll fraud).
Trunks that say ``register = true`` are kept registered with the provider.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping

import sip

from .. import codec_policy, encryption
from ..calls import Party
from ..config import Trunk, User
from ..dialplan import classify, permitted
from ..feature import BaseFeature, Dial, Endpoint, Failed, Fork, Kind, Outcome, Target
from ..services import Services

log = logging.getLogger("softswitch")
EXTERNAL_RING_SECONDS = 120


class Trunks(BaseFeature):
    name = "trunks"
    state = ("registrations",)

    def __post_init__(self) -> None:
        self.registrations: list[sip.Registration] = []

    def destination_kinds(self) -> Mapping[str, Kind]:
        return {"tel": Kind(self.call_external, self.check)}

    def endpoints(self) -> Mapping[str, Endpoint]:
        return {"tel": self}

    def destinations(self) -> Iterable[tuple[str, str, User | None]]:
        for i, trunk in enumerate(self.config.trunks):
            if trunk.inbound_extension is not None:
                yield f"trunks[{i}].inbound_extension", trunk.inbound_extension, None

    def check(self, number: str, user: User | None) -> str | None:
        if classify(number, self.config) is None:
            return f"'tel:{number}' is not an external number of the [dialplan]"
        if not self.config.trunks:
            return f"'tel:{number}': no [[trunks]] to call it through"
        return None

    async def start(self, svc: Services) -> None:
        await super().start(svc)
        for trunk in self.config.trunks:
            if trunk.registers:
                svc.spawn(self._register(trunk))

    async def resume(self, old: object, svc: Services) -> None:
        await super().resume(old, svc)
        before = old.config.trunks if isinstance(old, Trunks) else []
        for trunk in self.config.trunks:  # a trunk added or changed registers now
            if trunk.registers and trunk not in before:
                svc.spawn(self._register(trunk))

    async def stop(self) -> None:
        for reg in self.registrations:
            with contextlib.suppress(Exception):
                await reg.close()

    async def _register(self, trunk: Trunk) -> None:
        proxy = sip.parse_uri(trunk.proxy)
        domain = trunk.from_domain or proxy.host
        while True:
            try:
                reg = await self.services.ua.register(
                    proxy,
                    aor=f"sip:{trunk.username}@{domain}",
                    username=trunk.username,
                    password=trunk.password,
                    expires=trunk.register_expires,
                )
                self.registrations.append(reg)
                log.info("event=trunk_registered trunk=%s", trunk.name)
                return
            except (sip.RegistrationFailed, OSError) as exc:
                log.warning("event=trunk_register_failed trunk=%s error=%s", trunk.name, exc)
                await asyncio.sleep(30)

    # -- calls out ---------------------------------------------------------------------------

    async def call_external(self, dial: Dial) -> Outcome:
        svc = self.services
        user = dial.on_behalf or dial.caller
        if user is None:
            return Failed(403, "refused", "Forbidden (external calls need an authenticated user)")
        number = dial.target
        kind = classify(number, self.config)
        if kind is None or not permitted(kind, user.permission):
            log.info("event=outbound_refused number=%s user=%s", number, user.extension)
            return Failed(403, "refused", f"Forbidden ({kind or 'unknown'} calls not permitted)")
        if not self.config.trunks:
            return Failed(503, "refused", "Service Unavailable (no trunk)")
        target = Target("tel", number, permission=user.permission, caller_id=self.shown(user))
        result = await svc.ring(dial.party, [target], EXTERNAL_RING_SECONDS)
        if result.outcome == "answered" and result.party is not None:
            return await svc.connect(dial.party, result.party)
        status = {"busy": 486, "cancelled": 487, "unreachable": 503}.get(result.outcome, 480)
        return Failed(status, result.outcome)

    def shown(self, user: User) -> str:
        """The calling number a user shows through the trunk."""
        trunk = self.config.trunks[0]
        if user.hide_caller_id:
            return "anonymous"
        return user.caller_id or trunk.username or user.extension

    async def forks(self, target: Target, caller: Party) -> list[Fork]:
        """The INVITE to the provider for an external number (none if not permitted)."""
        kind = classify(target.value, self.config)
        if kind is None or not permitted(kind, target.permission) or not self.config.trunks:
            log.info(
                "event=outbound_refused number=%s permission=%s", target.value, target.permission
            )
            return []
        trunk = self.config.trunks[0]
        proxy = sip.parse_uri(trunk.proxy)
        try:
            destination = await self.services.ua.resolve(proxy)
        except OSError as exc:
            log.warning("event=trunk_unreachable trunk=%s error=%s", trunk.name, exc)
            return []
        domain = trunk.from_domain or proxy.host
        shown = target.caller_id or trunk.username or "anonymous"
        credentials = (
            (trunk.username, trunk.password) if trunk.username and trunk.password else None
        )
        log.info(
            "event=outbound trunk=%s number=%s kind=%s caller=%s",
            trunk.name,
            target.value,
            kind,
            caller.label,
        )
        return [
            Fork(
                sip.URI("sip", target.value, host=proxy.host, port=proxy.port),
                destination,
                from_=sip.NameAddr(sip.URI("sip", shown, host=domain)),
                credentials=credentials,
                label=f"trunk:{target.value}",
                codecs=codec_policy.preference(self.config, trunk=trunk),
                encryption=encryption.configured(self.config, trunk=trunk),
            )
        ]
