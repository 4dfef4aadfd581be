"""Hot desk: a shared phone takes the identity of whoever logs in on it.

A ``[[phones]]`` entry with ``hot_desk = true`` registers with its own login. Dialling
``*90`` on it asks for an extension and that user's PIN: from then on the phone rings
when the user is called (with the user's other devices) and calls out as the user.
``*90`` again logs out. A phone nobody is logged in on may only dial ``*90`` and the
emergency numbers (which go out through the trunk as the phone itself). Who is logged in
where is kept in ``DATA/hot-desk.json``, so a restart keeps it.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path

from pydantic import Field

from ivr.digits import collect_digits, flush

from ..calls import Party
from ..config import Device, User
from ..devices import Login
from ..dialplan import classify
from ..feature import BaseFeature, CallCheck, Dial, Done, Failed, Handler, Outcome
from ..model import Strict
from ..private_files import write_private_text
from ..services import Services
from .phones import Phone, phones_of

log = logging.getLogger("softswitch")


class HotDeskSettings(Strict):
    code: str = Field("*90", pattern=r"^\*[0-9]{1,3}$")
    attempts: int = Field(3, ge=1, le=5)


def device_name(phone: Phone) -> str:
    return f"hotdesk-{phone.mac}"


class HotDesk(BaseFeature):
    name = "hot_desk"
    state = ("logged",)
    section = "hot_desk"
    config_model = HotDeskSettings

    def __post_init__(self) -> None:
        self.phones = {p.login: p for p in phones_of(self.config) if p.hot_desk}
        self.by_device = {device_name(p): p for p in self.phones.values()}
        self.logged: dict[str, str] = {}  # mac -> extension logged in
        # what a phone is when nobody is logged in: a caller with emergency rights only
        self.guests = {
            p.mac: User.model_construct(
                extension=p.login,
                name=p.label or f"Hot desk {p.mac}",
                password=p.password or "",
                pin="",
                permission="emergency",
                voicemail=False,
            )
            for p in self.phones.values()
        }
        self.path: Path | None = None

    @property
    def options(self) -> HotDeskSettings:
        settings: HotDeskSettings | None = self.settings()
        return settings or HotDeskSettings()

    def numbers(self) -> Mapping[str, Handler]:
        return {self.options.code: self.toggle} if self.phones else {}

    async def start(self, svc: Services) -> None:
        await super().start(svc)
        if not self.phones:
            return
        self.path = svc.data_dir / "hot-desk.json"
        self._load()
        svc.devices.logins.append(self.login)
        svc.devices.aor_sources.append(self.aors)

    async def resume(self, old: object, svc: Services) -> None:
        if isinstance(old, HotDesk):  # the old hooks out, the new ones (if any) in
            for hooks, hook in (
                (svc.devices.logins, old.login),
                (svc.devices.aor_sources, old.aors),
            ):
                if hook in hooks:
                    hooks.remove(hook)  # type: ignore[arg-type]
        await self.start(svc)  # logins kept in hot-desk.json are read again

    def call_checks(self) -> Iterable[CallCheck]:
        return (self.check,) if self.phones else ()

    # -- state ------------------------------------------------------------------------------

    def _load(self) -> None:
        assert self.path is not None
        try:
            saved = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return
        if isinstance(saved, dict):
            macs = {p.mac for p in self.phones.values()}
            self.logged = {
                str(mac): str(ext)
                for mac, ext in saved.items()
                if mac in macs and self.config.user(str(ext)) is not None
            }

    def _save(self) -> None:
        if self.path is None:
            return
        write_private_text(self.path, json.dumps(self.logged))

    def user_on(self, phone: Phone) -> User | None:
        extension = self.logged.get(phone.mac)
        return self.config.user(extension) if extension else None

    # -- the phone's identity (Devices hooks) --------------------------------------------------

    def login(self, username: str) -> Login | None:
        phone = self.phones.get(username)
        if phone is None or phone.password is None:
            return None
        device = Device(name=device_name(phone), username=phone.login, password=phone.password)
        user = self.user_on(phone) or self.guests[phone.mac]
        return Login(phone.password, user, device)

    def aors(self, user: User) -> list[tuple[str, str | None]]:
        return [
            (self.services.aor(phone.login), device_name(phone))
            for phone in self.phones.values()
            if self.logged.get(phone.mac) == user.extension
        ]

    # -- calls -----------------------------------------------------------------------------

    def phone_of(self, party: Party) -> Phone | None:
        return self.by_device.get(party.device or "")

    async def check(self, dial: Dial) -> Outcome | None:
        """A phone nobody is logged in on: ``*90`` and emergency numbers only."""
        phone = self.phone_of(dial.party)
        if phone is None or dial.caller is not self.guests[phone.mac]:
            return None
        target = dial.target
        if target == self.options.code or classify(target, self.config) == "emergency":
            return None
        log.info("event=hot_desk_refused phone=%s dialled=%s", phone.mac, target)
        return Failed(403, "refused", "Forbidden (log in with *90 first)")

    async def toggle(self, dial: Dial) -> Outcome:
        svc = self.services
        phone = self.phone_of(dial.party)
        if phone is None:
            return Failed(403, "refused", "Forbidden (not a hot-desk phone)")
        party = dial.party
        if not await svc.answer(party):
            return Done()
        leg = party.leg
        leg.listen_dtmf = True
        current = self.logged.pop(phone.mac, None)
        if current is not None:
            self._save()
            log.info("event=hot_desk_logout phone=%s user=%s", phone.mac, current)
            await leg.play_prompt("hotdesk-out")
            return Done()
        for _ in range(self.options.attempts):
            flush(leg)
            await leg.play_prompt("hotdesk-extension")
            extension = await collect_digits(leg, max_digits=8)
            await leg.play_prompt("vm-enter-pin")
            pin = await collect_digits(leg, max_digits=12)
            user = svc.user(extension)
            if user is not None and secrets.compare_digest(pin, user.pin):
                self.logged[phone.mac] = user.extension
                self._save()
                log.info("event=hot_desk_login phone=%s user=%s", phone.mac, user.extension)
                await leg.play_prompt("hotdesk-in")
                return Done()
            log.info("event=hot_desk_login_failed phone=%s extension=%s", phone.mac, extension)
            await leg.play_prompt("vm-incorrect")
        await leg.play_prompt("goodbye")
        return Done()
