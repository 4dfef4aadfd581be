"""The virtual receptionist (auto-attendant): ``[[ivr]]`` menus on their own extensions.

A receptionist answers, says its greeting (text spoken by espeak-ng, rendered once and
cached under the data directory, or an audio file) and acts on the caller's key: any
destination of the dialplan (an extension, a ring group, the bridge, ``voicemail:100``,
an external number), dial-by-name, an announcement, a sub-menu, repeat, hang up. Callers
may type an extension during the greeting (``dial_extension``). Outside
``[business_hours]`` the ``after_hours`` menu (or destination) takes the call. While the
chosen destination rings the caller hears ringback or music (``features.transfer_audio``);
if nothing takes the call it comes back to the menu. The menu itself is
:class:`ivr.MenuMachine`, run by :func:`ivr.run_menu` on the caller's media leg.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Iterable, Mapping
from typing import Any, Literal

from pydantic import Field, field_validator

import ivr
import sip
from ivr.menu import Action, Entry, Menu, Prompt

from ..config import Extension, User
from ..feature import BaseFeature, Dial, Done, Failed, Handler, Outcome
from ..model import Strict
from ..prompts import configured
from ..rules import Rule, conflicts, first_match
from ..services import Services

log = logging.getLogger("softswitch")
MAX_TRIES = 3  # destinations that fail before the receptionist gives up


class MenuSettings(Strict):
    greeting: str = Field(min_length=1, max_length=2000)  # text, or an audio file name
    keys: dict[str, str] = {}  # key -> action (a destination, dial_by_name, menu:NAME, ...)
    dial_extension: bool = False
    timeout: float = Field(5.0, ge=1.0, le=30.0)
    retries: int = Field(3, ge=1, le=10)
    default: str = "hangup"  # after ``retries`` invalid keys or silences

    @field_validator("keys")
    @classmethod
    def _keys(cls, keys: dict[str, str]) -> dict[str, str]:
        for key in keys:
            if len(key) != 1 or key not in "0123456789*#":
                raise ValueError(f"key {key!r} is not one of 0-9, * and #")
        return keys


class Receptionist(MenuSettings):
    extension: Extension
    name: str = Field(min_length=1, max_length=64)
    menus: dict[str, MenuSettings] = {}  # sub-menus, reached with "menu:NAME"
    after_hours: MenuSettings | str | None = None  # a menu, or a destination
    dial_by: Literal["last", "first"] = "last"  # which name dial-by-name spells
    rules: list[Rule] = []  # first match wins, before the menus (destinations, "ring")


class Receptionists(BaseFeature):
    name = "receptionist"
    section = "ivr"
    config_model = list[Receptionist]

    def __post_init__(self) -> None:
        found: list[Receptionist] = self.settings() or []
        self.receptionists = {r.extension: r for r in found}
        self.menus: dict[str, dict[str, Menu]] = {}  # by extension, "main"/"after_hours"/...
        for i, r in enumerate(found):
            self.menus[r.extension] = self._build(r, f"ivr[{i}]")
        if any(p.kind == "text" for p in self.prompts()):  # a clear error at load
            try:
                ivr.tts.espeak()
            except ivr.SpeechError as exc:
                raise ValueError(f"ivr: {exc}") from None

    # -- configuration -------------------------------------------------------------------

    def _build(self, r: Receptionist, where: str) -> dict[str, Menu]:
        settings: dict[str, tuple[MenuSettings, str]] = {"main": (r, where)}
        for name, sub in r.menus.items():
            settings[name] = (sub, f"{where}.menus.{name}")
        if isinstance(r.after_hours, MenuSettings):
            settings["after_hours"] = (r.after_hours, f"{where}.after_hours")
        menus = {
            name: Menu(
                name,
                self._prompt(s.greeting, f"{key}.greeting"),
                {k: self._action(a, f"{key}.keys.{k}", settings) for k, a in s.keys.items()},
                dial_extension=s.dial_extension,
                timeout=s.timeout,
                retries=s.retries,
                default=self._action(s.default, f"{key}.default", settings),
            )
            for name, (s, key) in settings.items()
        }
        for name, (_, key) in settings.items():  # a caller who presses nothing must get out
            seen, current = [name], menus[name].default
            while isinstance(current, ivr.SubMenu):
                if current.name in seen:
                    cycle = " -> ".join([*seen, current.name])
                    raise ValueError(f"{key}.default: the menus' defaults loop ({cycle})")
                seen.append(current.name)
                current = menus[current.name].default
        return menus

    def _prompt(self, text: str, key: str) -> Prompt:
        try:
            return configured(text, self.config)
        except ValueError as exc:
            raise ValueError(f"{key}: {exc}") from None

    def _action(self, text: str, key: str, menus: Mapping[str, tuple[MenuSettings, str]]) -> Action:
        text = text.strip()
        if text == "dial_by_name":
            return ivr.DialByName()
        if text == "repeat":
            return ivr.Repeat()
        if text == "hangup":
            return ivr.Hangup()
        kind, _, value = text.partition(":")
        if kind == "menu":
            if value not in menus:
                raise ValueError(f"{key}: no menu {value!r} (menus: {sorted(menus)})")
            return ivr.SubMenu(value)
        if kind in ("announce", "announce_hangup"):
            if not value:
                raise ValueError(f"{key}: {kind}: needs a text or an audio file")
            return ivr.Announce(
                self._prompt(value, key), "hangup" if kind == "announce_hangup" else "menu"
            )
        return ivr.Transfer(text)  # a destination, checked with the others

    def numbers(self) -> Mapping[str, Handler]:
        return {extension: self.answer_call for extension in self.receptionists}

    def destinations(self) -> Iterable[tuple[str, str, User | None]]:
        for i, r in enumerate(self.receptionists.values()):
            for name, menu in self.menus[r.extension].items():
                where = f"ivr[{i}]" if name == "main" else f"ivr[{i}].{_menu_key(name)}"
                for k, action in menu.keys.items():
                    if isinstance(action, ivr.Transfer):
                        yield f"{where}.keys.{k}", action.destination, None
                if isinstance(menu.default, ivr.Transfer):
                    yield f"{where}.default", menu.default.destination, None
            if isinstance(r.after_hours, str):
                yield f"ivr[{i}].after_hours", r.after_hours, None
            for j, rule in enumerate(r.rules):
                if rule.action != "ring":
                    yield f"ivr[{i}].rules[{j}].action", rule.action, None

    def warnings(self) -> Iterable[str]:
        for i, r in enumerate(self.receptionists.values()):
            for conflict in conflicts(r.rules):
                yield f"ivr[{i}] ({r.extension}): {conflict}"

    def prompts(self) -> list[Prompt]:
        out: list[Prompt] = []
        for menus in self.menus.values():
            for menu in menus.values():
                out.append(menu.greeting)
                out += [a.prompt for a in menu.keys.values() if isinstance(a, ivr.Announce)]
        return out

    # -- running -------------------------------------------------------------------------

    async def start(self, svc: Services) -> None:
        await super().start(svc)
        names = [Prompt("text", u.name) for u in self.config.users if u.name_recording is None]
        await svc.prompts.prepare([*self.prompts(), *names])

    async def resume(self, old: object, svc: Services) -> None:
        await self.start(svc)  # what start() sets follows the new settings

    def directory(self, by: str) -> list[Entry]:
        entries = []
        for user in self.services.config.users:
            if not user.directory.by_name:
                continue
            words = user.name.split()
            part = words[0] if by == "first" else words[-1]
            spoken = (
                Prompt("file", str(user.name_recording))
                if user.name_recording is not None
                else None
            )
            entries.append(Entry(user.extension, user.name, ivr.keypad_digits(part), spoken))
        return entries

    def extensions(self) -> list[str]:
        return [u.extension for u in self.services.config.users if u.directory.by_extension]

    async def answer_call(self, dial: Dial) -> Outcome:
        svc = self.services
        r = self.receptionists[dial.target]
        menus = self.menus[r.extension]
        start = "main"
        rule = first_match(list(r.rules), svc.facts(dial))
        if rule is not None and rule.action != "ring":
            log.info("event=rule ivr=%s name=%s action=%s", r.extension, rule.name, rule.action)
            return await svc.send_on(dial, rule.action)
        if not svc.office_open():
            if isinstance(r.after_hours, str):
                log.info("event=after_hours ivr=%s to=%s", r.extension, r.after_hours)
                return await svc.send_on(dial, r.after_hours)
            if r.after_hours is not None:
                start = "after_hours"
        party = dial.party
        if not await svc.answer(party):
            return Done()
        leg = party.leg
        outcome: Outcome = Done()
        for _ in range(MAX_TRIES):
            machine = ivr.MenuMachine(
                menus,
                start,
                extensions=self.extensions(),
                directory=self.directory(r.dial_by),
                by_first_name=r.dial_by == "first",
            )
            leg.listen_dtmf = True
            result = await _until_hangup(
                ivr.run_menu(machine, leg, lambda p: svc.prompts.samples(p, leg.rate)), party.call
            )
            if not isinstance(result, ivr.Connect):
                return Done()  # the caller hung up, or the menu said goodbye
            log.info("event=ivr_choice ivr=%s to=%s", r.extension, result.destination)
            leg.listen_dtmf = False
            if self.config.features.transfer_audio == "music" and svc.music is not None:
                leg.source = svc.music("default")
            else:
                leg.source = svc.ringback()
            outcome = await svc.send_on(dial, result.destination)
            if not isinstance(outcome, Failed) or party.ended:
                return outcome
            await svc.prompts.say(leg, Prompt("builtin", "unavailable"))
        return outcome


def _menu_key(name: str) -> str:
    return "after_hours" if name == "after_hours" else f"menus.{name}"


async def _until_hangup(
    menu: Coroutine[Any, Any, ivr.Connect | ivr.End], call: sip.Call
) -> ivr.Connect | ivr.End | None:
    """Run the menu until it ends, or the caller hangs up (None)."""
    task = asyncio.ensure_future(menu)
    gone = asyncio.ensure_future(call.ended.wait())
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return task.result() if task.done() and not task.cancelled() else None
