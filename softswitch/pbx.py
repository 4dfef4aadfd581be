"""The PBX: requests from phones and trunks, routing, B2BUA calls and features.

This is the composition root of the daemon (DESIGN.md): it owns the user agent, the
media clock and engine, the registrar, the authentication guard, hold music, voicemail
and MWI, and the trunks. It is built from a :class:`Config` with explicit phases:
:meth:`Pbx.start`, serve, :meth:`Pbx.stop` (calls ended with BYE, state flushed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import sip
from media.clock import MediaClock
from rtp import PortAllocator

from . import codec_policy, router
from .authguard import AuthGuard
from .calls import Party, bridge, on_reinvite, refresh_media, sipfrag, unbridge
from .config import PERMISSION_RANK, Config, Trunk, User
from .features import voicemail as vm
from .features.conference.service import ConferenceService
from .features.hold_music import HoldMusic
from .media_engine import MediaEngine, Source
from .registrar import Binding, Registrar

log = logging.getLogger("softswitch")
MAX_FORWARD_DEPTH = 5
UNSOLICITED_MWI_DELAY = 3.0


class Pbx:
    def __init__(self, config: Config, *, stats_file: Path | None = None) -> None:
        self.config = config
        self.stats_file = stats_file
        self.server = config.server
        self.domain = config.server.domain
        self.data_dir = Path(config.server.data_dir)
        self.registrar = Registrar(
            min_expires=self.server.registration_min_expires,
            max_expires=self.server.registration_max_expires,
        )
        self.guard = AuthGuard(
            self.domain,
            self._password,
            algorithms=tuple(self.server.auth_algorithms),
            max_failures=self.server.failed_auth_limit,
        )
        self.clock = MediaClock()
        self.ports = PortAllocator(*self.server.rtp_ports)
        self.engine = MediaEngine(self.clock, self.ports, self.server.country)
        self.hold_music = HoldMusic(self.engine, dict(config.hold_music))
        self.ua = sip.UserAgent(
            self.server.listen,
            user="pbx",
            domain=self.domain,
            local_address=self.server.public_address,
            user_agent="softswitch-pbx/0.1",
            timers=sip.Timers(t1=self.server.sip_t1, t2=8 * self.server.sip_t1),
        )
        self.store: vm.VoicemailStore | None = None
        self.parties: set[Party] = set()
        self.mwi: dict[str, list[sip.ServerSubscription]] = {}
        self.trunk_registrations: list[sip.Registration] = []
        self.counters = {"calls": 0, "auth_failures": 0, "refused": 0, "voicemails": 0}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.started = asyncio.Event()

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = vm.VoicemailStore(self.data_dir)
        ua = self.ua
        ua.handlers["REGISTER"] = self.on_register
        ua.handlers["SUBSCRIBE"] = self.on_subscribe
        ua.on_invite = self.on_invite
        await ua.start()
        self.conference = ConferenceService(self)
        self.clock.start()
        for trunk in self.config.trunks:
            if trunk.registers:
                self.spawn(self._register_trunk(trunk))
        self.spawn(self._keepalive())
        self.spawn(self._report())
        self.started.set()
        listening = ", ".join(f"{lst.transport}:{lst.host}:{lst.port}" for lst in ua.listeners)
        log.info(
            "event=started listen=%s domain=%s users=%d data_dir=%s",
            listening,
            self.domain,
            len(self.config.users),
            self.data_dir,
        )

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for reg in self.trunk_registrations:
            with contextlib.suppress(Exception):
                await reg.close()
        for subs in self.mwi.values():
            for sub in subs:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(sub.close(), 2)
        await self.ua.close()  # BYE to every established call
        self.conference.close()
        await self.clock.stop()
        self.engine.close()
        if self.store is not None:
            self.store.close()
        log.info("event=stopped")

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        """A background task of the PBX's, cancelled at stop; failures are logged."""
        task = self.ua.spawn(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @property
    def stats(self) -> dict[str, int | float]:
        return {
            "registrations": len(self.registrar),
            "active_calls": sum(1 for p in self.parties if not p.ended) // 2,
            "parties": len(self.parties),
            "late_ticks": self.clock.stats.late,
            "skipped_ticks": self.clock.stats.skipped,
            "tick_busy_s": round(self.clock.stats.busy, 3),
            "ticks": self.clock.stats.ticks,
            "conference_legs": len(self.conference.engine.legs) if self.started.is_set() else 0,
            "conference_members": self.conference.members() if self.started.is_set() else 0,
            **self.counters,
        }

    async def _report(self) -> None:
        """Counters in the log every minute, and in ``stats_file`` (JSON) every second."""
        last_log = 0.0
        while True:
            await asyncio.sleep(1.0 if self.stats_file else 60.0)
            now = self.ua.now()
            stats = self.stats
            if self.stats_file is not None:
                tmp = self.stats_file.with_suffix(".tmp")
                tmp.write_text(json.dumps({"time": time.time(), **stats}))
                tmp.replace(self.stats_file)
            if now - last_log >= 60.0:
                last_log = now
                log.info("event=stats %s", " ".join(f"{k}={v}" for k, v in stats.items()))

    # -- identities ---------------------------------------------------------------------

    def _password(self, username: str) -> str | None:
        user = self.config.user(username)
        return user.password if user is not None else None

    def aor(self, extension: str) -> str:
        return f"sip:{extension}@{self.domain}"

    def _inbound_reachable(self, dialled: str) -> bool:
        """What a call from a trunk may dial directly: an extension or the bridge."""
        return self.config.user(dialled) is not None or (
            dialled == self.config.features.conference_bridge
        )

    def trunk_for(self, source_ip: str) -> Trunk | None:
        for trunk in self.config.trunks:
            if source_ip in trunk.addresses:
                return trunk
        return None

    # -- REGISTER -----------------------------------------------------------------------

    def on_register(self, incoming: sip.IncomingRequest) -> None:
        request, now = incoming.request, self.ua.now()
        verdict = self.guard.check(request, incoming.source[1], now)
        if verdict.user is None:
            if verdict.status == 403:
                self.counters["auth_failures"] += 1
            incoming.respond(verdict.status, verdict.reason, headers=list(verdict.headers))
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
        for binding in result.removed:
            log.info("event=unregistered aor=%s contact=%s", aor, binding.contact)
        if result.added and self.store is not None:
            self.spawn(self._unsolicited_mwi_later(verdict.user, result.added))

    async def _keepalive(self) -> None:
        """OPTIONS to every registered contact; a silent one is dropped."""
        while True:
            await asyncio.sleep(self.server.keepalive_interval)
            now = self.ua.now()
            for aor in self.registrar.aors():
                for binding in self.registrar.lookup(aor, now):
                    self.spawn(self._ping(binding))

    async def _ping(self, binding: Binding) -> None:
        response = await self.ua.request("OPTIONS", binding.contact, destination=binding.source)
        if response.status in (408, 503):
            self.registrar.remove(binding)
            log.info("event=contact_unreachable aor=%s contact=%s", binding.aor, binding.contact)

    async def _register_trunk(self, trunk: Trunk) -> None:
        proxy = sip.parse_uri(trunk.proxy)
        domain = trunk.from_domain or proxy.host
        while True:
            try:
                reg = await self.ua.register(
                    proxy,
                    aor=f"sip:{trunk.username}@{domain}",
                    username=trunk.username,
                    password=trunk.password,
                    expires=trunk.register_expires,
                )
                self.trunk_registrations.append(reg)
                log.info("event=trunk_registered trunk=%s", trunk.name)
                return
            except (sip.RegistrationFailed, OSError) as exc:
                log.warning("event=trunk_register_failed trunk=%s error=%s", trunk.name, exc)
                await asyncio.sleep(30)

    # -- MWI ----------------------------------------------------------------------------

    def on_subscribe(self, incoming: sip.IncomingRequest) -> None:
        request = incoming.request
        if (request.headers.get("Event") or "").split(";")[0].strip() != "message-summary":
            incoming.respond(489, headers=[("Allow-Events", "message-summary")])
            return
        mailbox = self._registered_source(incoming)
        if mailbox is None:
            verdict = self.guard.check(request, incoming.source[1], self.ua.now())
            if verdict.user is None:
                incoming.respond(verdict.status, verdict.reason, headers=list(verdict.headers))
                return
            mailbox = verdict.user
        sub = sip.ServerSubscription.accept(incoming, expires=3600)
        subs = self.mwi.setdefault(mailbox, [])
        subs.append(sub)
        sub.on_end = lambda s: subs.remove(s) if s in subs else None
        self.spawn(self._notify_sub(sub, mailbox))

    def _registered_source(self, incoming: sip.IncomingRequest) -> str | None:
        """The user whose live registration came from this very source address and who
        subscribes to its own mailbox: already authenticated by that REGISTER. (baresip
        1.0 loops on a challenged SUBSCRIBE now and then; desk phones are spared a round
        trip.)"""
        user = incoming.request.to.uri.user or ""
        for binding in self.registrar.lookup(self.aor(user), self.ua.now()):
            if binding.source == incoming.source:
                return user
        return None

    def summary(self, mailbox: str) -> bytes:
        assert self.store is not None
        new, old = self.store.counts(mailbox)
        return vm.summary_body(
            f"sip:{self.config.features.voicemail_access}@{self.domain}", new, old
        )

    async def _notify_sub(self, sub: sip.ServerSubscription, mailbox: str) -> None:
        await sub.notify(self.summary(mailbox), "application/simple-message-summary")

    async def _unsolicited_mwi_later(self, mailbox: str, bindings: list[Binding]) -> None:
        """A phone that subscribes does so right after registering; an unsolicited NOTIFY
        crossing its SUBSCRIBE confuses some (baresip 1.0 floods SUBSCRIBEs). So wait a
        moment and tell only phones that did not subscribe."""
        await asyncio.sleep(UNSOLICITED_MWI_DELAY)
        if not self.mwi.get(mailbox):
            await self.notify_mwi(mailbox, only=bindings)

    async def notify_mwi(self, mailbox: str, *, only: list[Binding] | None = None) -> None:
        """Tell the mailbox owner's phones how many messages wait."""
        subs = self.mwi.get(mailbox, [])
        for sub in list(subs):
            await self._notify_sub(sub, mailbox)
        if subs or not self.config.voicemail.unsolicited_mwi:
            return
        bindings = only or self.registrar.lookup(self.aor(mailbox), self.ua.now())
        for binding in bindings:
            response = await self.ua.request(
                "NOTIFY",
                binding.contact,
                destination=binding.source,
                to=f"<{self.aor(mailbox)}>",
                headers=[("Event", "message-summary"), ("Subscription-State", "active")],
                body=self.summary(mailbox),
                content_type="application/simple-message-summary",
            )
            log.info(
                "event=mwi_notify mailbox=%s contact=%s status=%d",
                mailbox,
                binding.contact,
                response.status,
            )

    # -- INVITE -------------------------------------------------------------------------

    async def on_invite(self, call: sip.IncomingCall) -> None:
        source_ip = call.incoming.source[1]
        trunk = self.trunk_for(source_ip)
        caller: User | None = None
        if trunk is None:
            verdict = self.guard.check(call.invite, source_ip, self.ua.now(), proxy=True)
            if verdict.user is None:
                if verdict.status == 403:
                    self.counters["auth_failures"] += 1
                call.reject(verdict.status, verdict.reason, headers=list(verdict.headers))
                return
            caller = self.config.user(verdict.user)
        active = sum(1 for p in self.parties if not p.ended)
        if active >= 2 * self.server.max_calls:
            call.reject(503, "Service Unavailable (call limit)")
            return
        self.counters["calls"] += 1
        offer: sip.SessionDescription | None = None
        if call.remote_sdp:
            try:
                offer = sip.parse_sdp(call.remote_sdp)
            except sip.ParseError as exc:
                call.reject(488, f"Not Acceptable Here ({exc})")
                return
        dialled = call.invite.uri.user or ""
        if trunk is not None and not self._inbound_reachable(dialled):
            dialled = trunk.inbound_extension or ""
        route = router.route(dialled, caller, self.config)
        log.info(
            "event=invite caller=%s dialled=%s route=%s",
            caller.extension if caller else call.invite.from_.uri.user,
            dialled,
            type(route).__name__,
        )
        if isinstance(route, router.Refused):
            self.counters["refused"] += 1
            call.reject(route.status, route.reason)
            return
        if isinstance(route, router.ToConference):
            if offer is None:
                call.reject(488, "Not Acceptable Here (the bridge needs an SDP offer)")
                return
            await self.conference.serve(call, offer)  # conference legs share the bridge port
            return
        party = await self._party_for_incoming(call, offer, caller)
        if party is None:
            return
        try:
            if isinstance(route, router.ToUser):
                await self.call_user(party, route.user)
            elif isinstance(route, router.ToVoicemailAccess):
                await self.voicemail_access(party, route.mailbox)
            elif isinstance(route, router.ToExternal):
                await self.call_external(party, route.number, caller)
        finally:
            if party.peer is None and not party.ended:
                await party.call.hangup()

    async def _party_for_incoming(
        self, call: sip.IncomingCall, offer: sip.SessionDescription | None, user: User | None
    ) -> Party | None:
        host = self.ua.local_host(call.incoming.source)
        try:
            leg = await self.engine.new_leg(host)
        except OSError:
            call.reject(503, "Service Unavailable (no RTP port)")
            return None
        label = user.extension if user else (call.invite.from_.uri.user or "?")
        party = Party(call, leg, user, label=label, offer=offer)
        party.codecs = codec_policy.preference(
            self.config,
            user=user,
            trunk=self.trunk_for(call.incoming.source[1]) if user is None else None,
            user_agent=call.invite.headers.get("User-Agent"),
        )
        self._track(party)
        return party

    def _track(self, party: Party) -> None:
        self.parties.add(party)
        party.hold_source = self._hold_source
        call = party.call
        call.on_dtmf = party.leg.push_dtmf

        async def reinvite(_: sip.Call, request: sip.Request) -> bytes | None:
            return await on_reinvite(party, request)

        call.on_reinvite = reinvite
        call.on_refer = lambda c, incoming: self._on_refer(party, incoming)

        def gone(_: sip.Call) -> None:
            self.parties.discard(party)
            party.leg.close()
            peer = unbridge(party)
            if peer is not None and not peer.ended:
                self.spawn(peer.call.hangup())
            for hook in party.on_gone:
                hook(party)

        call.on_end = gone

    def _hold_source(self, holder: Party) -> Source:
        slot = holder.user.hold_music if holder.user else "default"
        return self.hold_music.source(slot)

    async def answer(self, party: Party) -> bool:
        """Answer an incoming party with our anchored SDP."""
        call = party.call
        assert isinstance(call, sip.IncomingCall)
        if call.state not in (sip.CallState.CALLING, sip.CallState.EARLY):
            return call.state is sip.CallState.ESTABLISHED
        if party.offer is None:
            return await self._answer_late_offer(party, call)
        answer, stream = party.answer_sdp(party.offer)
        if stream is None:
            call.reject(488)
            return False
        party.leg.configure(stream)
        call.answer(bytes(answer))
        return True

    async def _answer_late_offer(self, party: Party, call: sip.IncomingCall) -> bool:
        """An INVITE without SDP: our offer goes in the 200, the answer comes in the ACK."""
        partner = [party.partner_codec] if party.partner_codec else []
        ours = codec_policy.offer_codecs(party.codecs, partner, party.partner_max_bitrate)
        offer = sip.make_offer(party.host, party.leg.local[1], ours)
        call.answer(bytes(offer))
        try:
            await asyncio.wait_for(call.acked.wait(), 64 * self.server.sip_t1)
            stream = sip.process_answer(offer, sip.parse_sdp(call.remote_sdp or b""))
        except (TimeoutError, sip.ParseError) as exc:
            log.info("event=late_offer_failed call_id=%s error=%s", call.call_id, exc)
            await call.hangup()
            return False
        party.leg.configure(stream)
        return True

    # -- ringing users -------------------------------------------------------------------

    def _caller_id(self, caller: Party) -> sip.NameAddr:
        user = caller.user
        if user is not None and user.hide_caller_id:
            return sip.NameAddr(sip.parse_uri("sip:anonymous@anonymous.invalid"), "Anonymous")
        if user is not None:
            return sip.NameAddr(sip.URI("sip", user.extension, host=self.domain), user.name)
        remote = caller.call.invite.from_
        return sip.NameAddr(remote.uri.copy(params={}, headers={}), remote.display)

    async def ring(self, caller: Party, user: User, timeout: float) -> tuple[str, Party | None]:
        """Fork to every device of ``user``. Outcome: answered, busy, noanswer,
        unreachable or cancelled (the caller hung up)."""
        bindings = self.registrar.lookup(self.aor(user.extension), self.ua.now())
        if not bindings:
            return "unreachable", None
        host = caller.host
        leg = await self.engine.new_leg(host)
        partner, limit = caller.usable_codecs(), caller.max_bitrate()
        offers: dict[int, tuple[sip.SessionDescription, list[str]]] = {}  # per fork
        forks: list[sip.OutgoingCall] = []
        statuses: list[int] = []
        answered: asyncio.Future[sip.OutgoingCall] = asyncio.get_running_loop().create_future()

        def progress(response: sip.Response) -> None:
            if response.status in (180, 183) and isinstance(caller.call, sip.IncomingCall):
                caller.call.ring()

        async def fork(binding: Binding) -> None:
            mine = codec_policy.preference(self.config, user=user, user_agent=binding.user_agent)
            ours = codec_policy.offer_codecs(mine, partner, limit)
            offer = sip.make_offer(host, leg.local[1], ours)
            try:
                out = await self.ua.invite(
                    binding.contact,
                    bytes(offer),
                    wait=False,
                    destination=binding.source,
                    from_=self._caller_id(caller),
                    to=f"<{self.aor(user.extension)}>",
                )
            except OSError as exc:
                statuses.append(503)
                log.info("event=fork_failed contact=%s error=%s", binding.contact, exc)
                return
            forks.append(out)
            offers[id(out)] = (offer, mine)
            out.on_progress = progress
            try:
                await out.wait_answer()
            except sip.RequestFailed as exc:
                statuses.append(exc.status)
                return
            if not answered.done():
                answered.set_result(out)
            else:
                await out.bye()  # a second device answered too late

        tasks = [asyncio.ensure_future(fork(b)) for b in bindings]
        all_failed: asyncio.Future[Any] = asyncio.ensure_future(
            asyncio.gather(*tasks, return_exceptions=True)
        )
        caller_gone: asyncio.Future[Any] = asyncio.ensure_future(caller.call.ended.wait())
        waiting: set[asyncio.Future[Any]] = {answered, all_failed, caller_gone}
        try:
            await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            caller_gone.cancel()
        if answered.done():
            winner = answered.result()
            for other in forks:
                if other is not winner:
                    self.spawn(other.hangup())
            assert winner.remote_sdp is not None
            offer, mine = offers[id(winner)]
            stream = sip.process_answer(offer, sip.parse_sdp(winner.remote_sdp))
            leg.configure(stream)
            party = Party(winner, leg, user, label=user.extension, codecs=mine)
            caller.expect_partner(leg)
            self._track(party)
            return "answered", party
        for out in forks:
            self.spawn(out.hangup())
        leg.close()
        if caller.ended:
            return "cancelled", None
        if not all_failed.done():
            all_failed.cancel()
            return "noanswer", None
        if any(s in (486, 600, 603) for s in statuses):
            return "busy", None
        return "unreachable", None

    async def call_user(self, caller: Party, user: User, depth: int = 0) -> None:
        """Ring ``user``; on busy, no answer or no device, follow the user's forwarding."""
        if user.dnd == "all":
            await self.forward(caller, user, "voicemail" if user.voicemail else None, "busy", depth)
            return
        fw = user.forward
        timeout = fw.no_answer_after if fw.no_answer else 120
        outcome, callee = await self.ring(caller, user, timeout)
        log.info("event=ring_outcome callee=%s outcome=%s", user.extension, outcome)
        if outcome == "answered" and callee is not None:
            if not await self.answer(caller):
                await callee.call.hangup()
                return
            bridge(caller, callee)
            await caller.call.ended.wait()
            return
        if outcome == "cancelled":
            return
        target = {"busy": fw.busy, "noanswer": fw.no_answer, "unreachable": fw.unreachable}[outcome]
        await self.forward(caller, user, target, outcome, depth)

    async def forward(
        self, caller: Party, user: User, target: str | None, outcome: str, depth: int
    ) -> None:
        status = {"busy": 486, "noanswer": 480, "unreachable": 480}.get(outcome, 480)
        if target is None or target == "hangup" or depth >= MAX_FORWARD_DEPTH:
            if isinstance(caller.call, sip.IncomingCall):
                caller.call.reject(status)
            return
        log.info("event=forward from=%s to=%s reason=%s", user.extension, target, outcome)
        if target == "voicemail":
            if user.voicemail:
                await self.leave_voicemail(caller, user)
            elif isinstance(caller.call, sip.IncomingCall):
                caller.call.reject(status)
        elif target.startswith("ext:"):
            other = self.config.user(target[4:])
            if other is None:
                if isinstance(caller.call, sip.IncomingCall):
                    caller.call.reject(404)
                return
            await self.call_user(caller, other, depth + 1)
        elif target.startswith("tel:"):
            # an external forward is placed on behalf of the forwarding user
            await self.call_external(caller, target[4:], user)

    # -- external calls -----------------------------------------------------------------

    async def call_external(self, caller: Party, number: str, on_behalf: User | None) -> None:
        if on_behalf is None:
            if isinstance(caller.call, sip.IncomingCall):
                caller.call.reject(403, "Forbidden (external calls need an authenticated user)")
            return
        kind = router.classify(number, self.config)
        if kind is None or (
            kind != "emergency" and PERMISSION_RANK[on_behalf.permission] < PERMISSION_RANK[kind]
        ):
            if isinstance(caller.call, sip.IncomingCall):
                caller.call.reject(403, "Forbidden (not permitted)")
            return
        trunk = self.config.trunks[0]
        proxy = sip.parse_uri(trunk.proxy)
        destination = await self.ua.resolve(proxy)
        leg = await self.engine.new_leg(caller.host)
        mine = codec_policy.preference(self.config, trunk=trunk)
        ours = codec_policy.offer_codecs(mine, caller.usable_codecs(), caller.max_bitrate())
        offer = sip.make_offer(leg.local[0], leg.local[1], ours)
        domain = trunk.from_domain or proxy.host
        number_shown = (
            "anonymous"
            if on_behalf.hide_caller_id
            else (on_behalf.caller_id or trunk.username or on_behalf.extension)
        )
        credentials = (
            (trunk.username, trunk.password) if trunk.username and trunk.password else None
        )
        try:
            out = await self.ua.invite(
                sip.URI("sip", number, host=proxy.host, port=proxy.port),
                bytes(offer),
                wait=False,
                destination=destination,
                credentials=credentials,
                from_=sip.NameAddr(sip.URI("sip", number_shown, host=domain)),
            )
        except OSError as exc:
            leg.close()
            log.warning("event=trunk_unreachable trunk=%s error=%s", trunk.name, exc)
            if isinstance(caller.call, sip.IncomingCall):
                caller.call.reject(503)
            return
        log.info(
            "event=outbound trunk=%s number=%s kind=%s user=%s",
            trunk.name,
            number,
            kind,
            on_behalf.extension,
        )

        def progress(response: sip.Response) -> None:
            if response.status in (180, 183) and isinstance(caller.call, sip.IncomingCall):
                caller.call.ring()

        out.on_progress = progress
        gone = asyncio.ensure_future(caller.call.ended.wait())
        answer = asyncio.ensure_future(out.wait_answer())
        await asyncio.wait({gone, answer}, timeout=120, return_when=asyncio.FIRST_COMPLETED)
        gone.cancel()
        if not answer.done() or answer.exception() is not None:
            answer.cancel()
            await out.hangup()
            leg.close()
            if isinstance(caller.call, sip.IncomingCall) and not caller.ended:
                failure = answer.exception() if answer.done() else None
                status = failure.status if isinstance(failure, sip.RequestFailed) else 480
                caller.call.reject(status if 400 <= status < 700 else 480)
            return
        assert out.remote_sdp is not None
        stream = sip.process_answer(offer, sip.parse_sdp(out.remote_sdp))
        leg.configure(stream)
        party = Party(out, leg, None, label=f"trunk:{number}", codecs=mine)
        caller.expect_partner(leg)
        self._track(party)
        if not await self.answer(caller):
            await out.hangup()
            return
        bridge(caller, party)
        await caller.call.ended.wait()

    # -- voicemail ----------------------------------------------------------------------

    async def leave_voicemail(self, caller: Party, user: User) -> None:
        if not await self.answer(caller):
            return
        caller.leg.listen_dtmf = True  # '#' ends the message
        assert self.store is not None
        who = caller.user.extension if caller.user else (caller.call.invite.from_.uri.user or "")
        message = await vm.deposit(
            caller.leg,
            caller.call,
            self.store,
            user.extension,
            who,
            greeting=user.greeting,
            max_seconds=self.config.voicemail.max_message_seconds,
            max_messages=self.config.voicemail.max_messages,
        )
        if message is not None:
            self.counters["voicemails"] += 1
            self.spawn(self.notify_mwi(user.extension))

    async def voicemail_access(self, caller: Party, mailbox: str | None) -> None:
        if not await self.answer(caller):
            return
        caller.leg.listen_dtmf = True
        assert self.store is not None
        pins = {u.extension: u.pin for u in self.config.users if u.voicemail}
        changed = asyncio.Event()
        session = asyncio.ensure_future(vm.retrieve(caller.leg, self.store, mailbox, pins, changed))
        gone = asyncio.ensure_future(caller.call.ended.wait())
        await asyncio.wait({session, gone}, return_when=asyncio.FIRST_COMPLETED)
        session.cancel()
        gone.cancel()
        for box in {mailbox} if mailbox else set(pins):
            if box is not None:
                self.spawn(self.notify_mwi(box))

    # -- transfer -----------------------------------------------------------------------

    def _on_refer(self, party: Party, incoming: sip.IncomingRequest) -> None:
        refer_to = incoming.request.headers.get("Refer-To")
        transferee = party.peer
        if refer_to is None or transferee is None:
            incoming.respond(400 if refer_to is None else 603)
            return
        try:
            target = sip.parse_name_addr(refer_to, "Refer-To").uri
        except sip.ParseError as exc:
            incoming.respond(400, f"Bad Request ({exc})")
            return
        incoming.respond(202)
        replaces = next((v for k, v in target.headers.items() if k.lower() == "replaces"), None)
        if replaces is not None:
            self.spawn(self._attended_transfer(party, transferee, replaces))
        else:
            self.spawn(self._blind_transfer(party, transferee, target))

    async def _notify(self, party: Party, status: int, *, final: bool) -> None:
        if party.ended:
            return
        with contextlib.suppress(Exception):
            await party.call.notify_refer(sipfrag(status), final=final)

    async def _blind_transfer(self, transferor: Party, transferee: Party, target: sip.URI) -> None:
        await self._notify(transferor, 100, final=False)
        user = self.config.user(target.user or "")
        if user is None:
            await self._notify(transferor, 404, final=True)
            return
        log.info(
            "event=blind_transfer by=%s moving=%s to=%s",
            transferor.label,
            transferee.label,
            user.extension,
        )
        unbridge(transferor)
        transferee.holding = False
        if self.config.features.transfer_audio == "music":
            transferee.leg.source = self._hold_source(transferor)
        else:
            transferee.leg.source = self.engine.tone_source("ringback")
        outcome, callee = await self.ring(transferee, user, user.forward.no_answer_after)
        if outcome == "answered" and callee is not None:
            bridge(transferee, callee)
            await self._notify(transferor, 200, final=True)
            await transferor.call.hangup()
            return
        status = {"busy": 486, "noanswer": 480}.get(outcome, 480)
        await self._notify(transferor, status, final=True)
        if not transferor.ended and not transferee.ended:
            bridge(transferor, transferee)  # the transfer failed: back to the transferor
        elif not transferee.ended:
            await transferee.call.hangup()

    async def _attended_transfer(self, transferor: Party, transferee: Party, replaces: str) -> None:
        """Refer-To: <target?Replaces=call-id;to-tag=..;from-tag=..>: connect our peer
        with the peer of the transferor's other call (RFC 3891 §3 via RFC 3515)."""
        call_id, _, params = replaces.partition(";")
        tags = dict(p.partition("=")[::2] for p in params.split(";") if p)
        other = next(
            (
                p
                for p in self.parties
                if p.call.call_id == call_id
                and p.call.dialog is not None
                and {p.call.dialog.local_tag, p.call.dialog.remote_tag}
                == {tags.get("to-tag"), tags.get("from-tag")}
            ),
            None,
        )
        if other is None or other.peer is None:
            await self._notify(transferor, 481, final=True)
            return
        target = other.peer
        log.info(
            "event=attended_transfer by=%s moving=%s to=%s",
            transferor.label,
            transferee.label,
            target.label,
        )
        unbridge(transferor)
        unbridge(other)
        transferee.holding = target.holding = False
        bridge(transferee, target)
        refresh_media(transferee)
        await self._notify(transferor, 200, final=True)
        await transferor.call.hangup()
        await other.call.hangup()


def print_demo_accounts(config: Config, listen: str) -> None:
    """What `make run` shows so that a softphone can register at once."""
    lines = [f"softswitch demo office on {listen} (domain {config.server.domain})"]
    for user in config.users:
        lines.append(
            f"  extension {user.extension:>4}  {user.name:<16} password {user.password:<10}"
            f" voicemail PIN {user.pin}"
        )
    lines.append(f"  voicemail: dial {config.features.voicemail_access}")
    print("\n".join(lines), flush=True)
