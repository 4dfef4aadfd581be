"""BLF presence: the dialog event package (RFC 6665 + RFC 4235) for every extension.

A phone's busy-lamp key SUBSCRIBEs with ``Event: dialog`` to an extension; it gets the
full state at once (and after each refresh), then partial NOTIFYs as that user's calls
go trying / early / confirmed / terminated, seen from the user's own phone (its tags:
a Polycom picks a ringing call up with an INVITE that ``Replaces`` the early dialog,
RFC 3891). The remote party is shown unless ``show_remote`` is off or the caller hides
its number. A feature's number with a busy lamp of its own (``BaseFeature.hints``: the
call queues' ``*45`` is lit while the watching agent is logged in) is watched the same
way: one dialog, in the state the feature gives for the watcher. Subscriptions are bounded
per watcher and in all, their expiry is bounded, and they end when the watcher's phone
unregisters.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pydantic import Field

import sip
from rtp.source_policy import BurstGate

from ..calls import Party
from ..config import User
from ..dialog_info import CONTENT_TYPE, DialogView, Participant, render
from ..feature import BaseFeature, CallListener, SubscribeHandler
from ..model import Strict

if TYPE_CHECKING:
    from ..registrar import Binding

log = logging.getLogger("softswitch")

STATE_OF = {
    sip.CallState.CALLING: "trying",
    sip.CallState.EARLY: "early",
    sip.CallState.ESTABLISHED: "confirmed",
    sip.CallState.ENDED: "terminated",
}


class PresenceSettings(Strict):
    max_per_watcher: int = Field(64, ge=1, le=1000)  # BLF keys + expansion modules
    max_subscriptions: int = Field(2000, ge=1, le=100000)
    min_expires: int = Field(60, ge=1, le=3600)
    max_expires: int = Field(3600, ge=60, le=86400)
    show_remote: bool = True  # the other party of a watched call, in <remote>


@dataclass(eq=False)
class Watch:
    sub: sip.ServerSubscription
    watcher: str  # the login that subscribed
    user: User  # the extension watched (for a feature's lamp: the watcher's own user)
    hint: str | None = None  # a feature's number with a lamp of its own, watched instead
    version: int = 0
    sent: dict[str, DialogView] = field(default_factory=dict)  # last state NOTIFYed
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # NOTIFYs in version order


def _dialog_id(call: sip.Call) -> str:
    ours = call.to_tag if isinstance(call, sip.IncomingCall) else call.invite.from_.tag
    return hashlib.sha1(f"{call.call_id};{ours}".encode()).hexdigest()[:16]


class Presence(BaseFeature, CallListener):
    name = "presence"
    state = ("watches", "live", "refusals")
    section = "presence"
    config_model = PresenceSettings

    def __post_init__(self) -> None:
        self.watches: list[Watch] = []
        self.live: dict[Party, None] = {}  # parties of users, in order of arrival
        self.refusals = BurstGate()  # a refusal is logged once per source per burst

    @property
    def options(self) -> PresenceSettings:
        settings: PresenceSettings | None = self.settings()
        return settings or PresenceSettings()

    def event_packages(self) -> Mapping[str, SubscribeHandler]:
        return {"dialog": self.subscribe}

    def listeners(self) -> Iterable[CallListener]:
        return (self,)

    async def stop(self) -> None:
        for watch in list(self.watches):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(watch.sub.close(), 2)

    # -- what a user's phone would say --------------------------------------------------

    def view(self, party: Party) -> DialogView:
        """``party``'s dialog as its user's phone sees it."""
        call = party.call
        domain = self.services.domain
        assert party.user is not None
        aor = f"sip:{party.user.extension}@{domain}"
        local_tag: str | None
        remote_tag: str | None
        if isinstance(call, sip.IncomingCall):  # the user's phone called
            direction = "initiator"
            local_tag, remote_tag = call.invite.from_.tag, call.to_tag
            target = call.invite.contact[0].uri if call.invite.contact else None
            called = call.invite.uri.user or ""
            remote = Participant(f"sip:{called}@{domain}")
        else:  # the PBX rings the user's phone
            direction = "recipient"
            dialog = call.dialog
            local_tag = dialog.remote_tag if dialog is not None else None
            remote_tag = call.invite.from_.tag
            target = call.invite.uri
            shown = call.invite.from_
            remote = Participant(str(shown.uri.copy(params={}, headers={})), shown.display)
        return DialogView(
            _dialog_id(call),
            STATE_OF[call.state],
            direction,
            call.call_id,
            local_tag,
            remote_tag,
            Participant(aor, party.user.name, str(target) if target else None),
            remote if self.options.show_remote else None,
        )

    def views(self, user: User) -> dict[str, DialogView]:
        return {v.id: v for v in (self.view(p) for p in self.live if p.user is user)}

    def lamp(self, number: str, user: User) -> dict[str, DialogView]:
        """A feature's lamp for ``number`` as ``user``'s phone shows it: one dialog."""
        hint = self.services.registry.hints.get(number)
        state = hint(user) if hint is not None else "terminated"
        key = hashlib.sha1(f"{number};{user.extension}".encode()).hexdigest()[:16]
        aor = f"sip:{number}@{self.services.domain}"
        return {key: DialogView(key, state, "recipient", key, local=Participant(aor))}

    def current(self, watch: Watch) -> dict[str, DialogView]:
        if watch.hint is not None:
            return self.lamp(watch.hint, watch.user)
        return self.views(watch.user)

    def resource(self, watch: Watch) -> str:
        return f"sip:{watch.hint or watch.user.extension}@{self.services.domain}"

    # -- call events --------------------------------------------------------------------

    def trying(self, party: Party) -> None:
        self._seen(party)

    def ringing(self, party: Party) -> None:
        self._seen(party)

    def answered(self, party: Party) -> None:
        self._seen(party)

    def bridged(self, a: Party, b: Party) -> None:
        self._changed()

    def hint_changed(self, number: str) -> None:
        if any(w.hint == number for w in self.watches):
            self._changed()

    def ended(self, party: Party) -> None:
        if party in self.live:
            self._changed()
            del self.live[party]
            self._forget(party)

    def _seen(self, party: Party) -> None:
        if party.user is not None and party not in self.live:
            self.live[party] = None
        self._changed()

    def _forget(self, party: Party) -> None:
        gone = _dialog_id(party.call)
        for watch in self.watches:
            watch.sent.pop(gone, None)

    def _changed(self) -> None:
        """Partial NOTIFYs to every watch whose user's dialogs changed (the caller's side
        turns early without an event of its own, so every watched user is compared)."""
        if not self.watches:
            return
        by_user: dict[tuple[int, str | None], dict[str, DialogView]] = {}
        for watch in list(self.watches):
            key = (id(watch.user), watch.hint)
            current = by_user.get(key)
            if current is None:
                current = by_user[key] = self.current(watch)
            changed = [v for k, v in current.items() if watch.sent.get(k) != v]
            if changed:
                self._send(watch, changed, full=False)
                watch.sent.update({v.id: v for v in changed})

    def _send(self, watch: Watch, dialogs: list[DialogView], *, full: bool) -> None:
        watch.version += 1
        body = render(self.resource(watch), watch.version, dialogs, full=full)
        self.services.spawn(self._notify(watch, body))

    async def _notify(self, watch: Watch, body: bytes) -> None:
        async with watch.lock:
            try:
                await watch.sub.notify(body, CONTENT_TYPE)
            except OSError as exc:
                log.info("event=dialog_notify_failed watcher=%s error=%s", watch.watcher, exc)

    # -- subscriptions ------------------------------------------------------------------

    def subscribe(self, incoming: sip.IncomingRequest, login: str) -> None:
        svc = self.services
        options = self.options
        request = incoming.request
        source = incoming.source[1]
        number = request.uri.user or ""
        user = svc.user(number)
        hint: str | None = None
        if user is None and number in svc.registry.hints:  # a feature's lamp: the
            identity = svc.devices.identity(login)  # watcher's own state
            user, hint = (identity[0] if identity else None), number
        if user is None:
            incoming.respond(404, "Not Found (no such extension)")
            return
        accept = request.headers.values("Accept")
        if accept and not any(a.split(";")[0].strip().lower() == CONTENT_TYPE for a in accept):
            incoming.respond(406, headers=[("Accept", CONTENT_TYPE)])
            return
        asked = request.expires if request.expires is not None else options.max_expires
        if 0 < asked < options.min_expires:
            incoming.respond(423, headers=[("Min-Expires", str(options.min_expires))])
            return
        mine = sum(1 for w in self.watches if w.watcher == login)
        if mine >= options.max_per_watcher or len(self.watches) >= options.max_subscriptions:
            limit = "per_watcher" if mine >= options.max_per_watcher else "total"
            if self.refusals(incoming.source[1:], svc.ua.now()):
                log.warning(
                    "event=dialog_subscribe_refused source=%s watcher=%s limit=%s",
                    source,
                    login,
                    limit,
                )
            if limit == "total":
                incoming.respond(503, "Service Unavailable (too many subscriptions)")
            else:
                incoming.respond(403, f"Forbidden (at most {mine} subscriptions per phone)")
            return
        sub = sip.ServerSubscription.accept(
            incoming, expires=options.max_expires, max_expires=options.max_expires
        )
        watch = Watch(sub, login, user, hint)
        current = self.current(watch)
        watch.sent = dict(current)
        if asked == 0:  # a fetch: the state once, and the subscription ends
            watch.version = 1
            body = render(self.resource(watch), 1, list(current.values()), full=True)
            svc.spawn(sub.notify(body, CONTENT_TYPE, state="terminated;reason=timeout"))
            return
        self.watches.append(watch)
        sub.on_end = lambda _: self.watches.remove(watch) if watch in self.watches else None
        sub.on_refresh = lambda _: self._full(watch)
        log.info("event=dialog_subscribed watcher=%s user=%s", login, hint or user.extension)
        self._send(watch, list(current.values()), full=True)

    def _full(self, watch: Watch) -> None:
        watch.sent = self.current(watch)
        self._send(watch, list(watch.sent.values()), full=True)

    def unregistered(self, binding: Binding) -> None:
        """A watcher whose phone is gone (no binding left) loses its subscriptions."""
        svc = self.services
        login = binding.aor.removeprefix("sip:").partition("@")[0]
        if svc.devices.registrar.lookup(binding.aor, svc.ua.now()):
            return
        for watch in [w for w in self.watches if w.watcher == login]:
            log.info("event=dialog_unsubscribed watcher=%s reason=unregistered", login)
            svc.spawn(watch.sub.notify(b"", None, state="terminated;reason=deactivated"))


__all__ = ["Presence", "PresenceSettings"]
