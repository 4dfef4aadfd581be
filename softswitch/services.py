"""The call primitives every feature uses: the narrow services object a feature receives.

In the spirit of FreeSWITCH applications and Asterisk's channel API: answer a caller,
give it early media, ring a set of targets together (first answer wins, the others get
CANCEL), connect (answer + bridge), move a call to another party (call flip), re-enter the
dialplan with a new destination, find a user's devices, hold music, spawn tasks, and emit
call events to every listener. Features never see the PBX itself.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import zoneinfo
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import sip
from ivr import Prompt, collect_digits
from media.clock import MediaClock
from rtp import PortAllocator
from sip.address import transport_of

from . import codec_policy, encryption
from .calls import Party, bridge, on_reinvite, srtp_terms, unbridge
from .config import Config, User
from .devices import Devices
from .dialplan import classify, parse_destination
from .encryption import Encryption
from .feature import Connected, Dial, Done, Failed, Fork, Outcome, Target
from .hours import is_open
from .keypad import Claim, InCallKeypad, Relay
from .media_engine import MediaEngine, Samples, Source, behind_nat
from .plugins import Registry
from .prompts import Prompts
from .rules import CallFacts, Rule, first_match

if TYPE_CHECKING:
    from .reload import ConfigFile
    from .web.host import WebHost

log = logging.getLogger("softswitch")
MAX_DEPTH = 5  # forwards/transfers in a row before the call is refused (loops)


@dataclass(eq=False)
class Ringing:
    """A caller whose forks ring now: ``forks`` are the callee parties (outgoing calls,
    early once their phone rings); ``picked`` resolves with the party of a pickup."""

    caller: Party
    forks: list[Party]
    picked: asyncio.Future[Party]

    def at(self, user: User) -> list[Party]:
        """The forks ringing at ``user``'s devices (a 180/183 came back)."""
        return [p for p in self.forks if p.user is user and p.call.state is sip.CallState.EARLY]


@dataclass(frozen=True, slots=True)
class RingResult:
    """``outcome``: answered (``party`` is the callee), busy, noanswer, unreachable or
    cancelled (the caller hung up)."""

    outcome: str
    party: Party | None = None


class OfficeView:
    """What the daemon's services and the web process's view both read off the running
    configuration (``config``, ``wallclock``: the subclass's)."""

    wallclock: Callable[[], datetime]

    @property
    def config(self) -> Config:
        raise NotImplementedError

    @property
    def domain(self) -> str:
        return self.config.server.domain

    @property
    def data_dir(self) -> Path:
        return Path(self.config.server.data_dir)

    def user(self, extension: str) -> User | None:
        return self.config.user(extension)

    def office_open(self) -> bool:
        """Is it business hours now (``[business_hours]``; always, without it)?"""
        return is_open(self.config.business_hours, self.wallclock())


class Services(OfficeView):
    def __init__(
        self,
        *,
        config: Callable[[], Config],
        ua: sip.UserAgent,
        clock: MediaClock,
        ports: PortAllocator,
        engine: MediaEngine,
        devices: Devices,
        registry: Registry,
        spawn: Callable[[Awaitable[Any]], asyncio.Task[Any]],
        wallclock: Callable[[], datetime] | None = None,
    ) -> None:
        self._config = config
        self.prompts = Prompts(Path(config().server.data_dir), config().server.language)
        # the time of day for business hours and rules (injectable: tests, simulations)
        self.wallclock = wallclock or (lambda: datetime.now(UTC))
        self.ua = ua
        self.clock = clock
        self.ports = ports
        self.engine = engine
        self.devices = devices
        self.registry = registry
        self._spawn = spawn
        self.parties: set[Party] = set()
        self.counters: dict[str, int] = {"calls": 0, "refused": 0}
        # hold music by slot name, set by the hold-music feature
        self.music: Callable[[str], Source] | None = None
        self.ringing: list[Ringing] = []  # callers whose forks ring now (pickup)
        self._web: WebHost | None = None
        # a configuration applied live (softswitch.pbx.Pbx.apply; the web console's edits)
        self.apply_config: Callable[[Config], Awaitable[list[str]]] | None = None
        # the file behind the running configuration, when there is one (edits are saved there)
        self.config_file: ConfigFile | None = None
        # (dial, block list, whose) -> the refusal, or None: set by the blocking feature
        self.refuse_blocked: Callable[[Dial, list[str], str], Awaitable[Outcome | None]] | None = (
            None
        )

    # -- context --------------------------------------------------------------------------

    @property
    def config(self) -> Config:
        return self._config()

    def aor(self, extension: str) -> str:
        return self.devices.aor(extension)

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        """A background task, cancelled at stop; a failure is logged."""
        return self._spawn(coro)

    def emit(self, event: str, *args: Any) -> None:
        """Tell every feature's listener (``ringing``, ``answered``, ``bridged``...)."""
        for handler in self.registry.handlers(event):
            try:
                handler(*args)
            except Exception:
                owner = getattr(handler, "__self__", handler)
                log.exception("event=listener_failed listener=%r event=%s", owner, event)

    @property
    def web(self) -> WebHost:
        """The web process, where features serve HTTP (:mod:`softswitch.web`): started
        by the first ``await svc.web.serve(...)``, stopped with the PBX."""
        if self._web is None:
            from .web.host import WebHost  # imported when a feature serves HTTP

            self._web = WebHost(lambda: self.config, lambda: self.config_file)
        return self._web

    async def config_changed(self) -> None:
        """A configuration was applied: the web process, if any, serves from it now."""
        if self._web is not None:
            await self._web.configure()

    async def close(self) -> None:
        """Stop what the services run for the features (the web process)."""
        if self._web is not None:
            await self._web.close()

    def report_rtp(self, who: str | None) -> Callable[[tuple[str, int], str], None]:
        """A strict-RTP ``on_rejected_source`` hook (called once per burst of a refused
        source): the source goes to the security log, ``who`` as the user it aimed at."""

        def rejected(source: tuple[str, int], reason: str) -> None:
            now = self.ua.now()
            self.ua.security.event("rtp_source_rejected", source, now, user=who, reason=reason)

        return rejected

    def busy(self, user: User) -> bool:
        """Is ``user`` on an established call?"""
        return any(
            p.user is user and p.call.state is sip.CallState.ESTABLISHED and p.peer is not None
            for p in self.parties
        )

    # -- parties --------------------------------------------------------------------------

    def track(self, party: Party) -> None:
        """Follow ``party``'s call: keys, re-INVITEs (hold), in-dialog requests, its end."""
        self.parties.add(party)
        # its RTP is taken only from where signalling says (strict source, rtp.SourcePolicy)
        party.leg.signalling = party.call.destination[1] if party.call.destination else None
        party.leg.on_rejected_source = self.report_rtp(party.label)
        if self.music is not None:
            party.hold_source = self.music_for
        call = party.call
        call.on_dtmf.add(party.leg.push_dtmf)
        while not call.dtmf.empty():  # keys that came before anyone listened (a callee
            party.leg.push_dtmf(call.dtmf.get_nowait())  # pressing as it answers)

        async def reinvite(_: sip.Call, request: sip.Request) -> bytes | None:
            was = party.holding
            answer = await on_reinvite(party, request)
            if party.holding != was:
                self.emit("held", party, party.holding)
            return answer

        call.on_reinvite = reinvite
        if self.registry.in_dialog:
            call.on_request = None
            refer = self.registry.in_dialog.get("REFER")
            if refer is not None:
                call.on_refer = lambda _, incoming: refer(party, incoming)

        def gone(_: sip.Call) -> None:
            self.parties.discard(party)
            party.leg.close()
            peer = unbridge(party)
            if peer is not None and not peer.ended:
                self.spawn(peer.call.hangup())
            for hook in party.on_gone:
                hook(party)
            self.emit("ended", party)
            party.on_gone, party.on_taken, party.hold_source = [], [], None

        call.on_end.add(gone)

    def detach(self, party: Party) -> None:
        """Stop anchoring ``party`` (an application such as the bridge takes its call)."""
        self.parties.discard(party)
        party.leg.close()
        party.call.on_dtmf.remove(party.leg.push_dtmf)
        party.call.on_reinvite = None
        party.call.on_refer = None

    def music_for(self, holder: Party) -> Source:
        """What the peer of ``holder`` hears while held: the holder's music slot."""
        assert self.music is not None
        return self.music(holder.user.hold_music if holder.user else "default")

    # -- answering ------------------------------------------------------------------------

    async def answer(self, party: Party) -> bool:
        """Answer an incoming party with our anchored SDP (True once established); a
        destination that takes a call answers it here, whatever the call's direction."""
        ok = await self._answer(party)
        if ok and party.on_taken:
            hooks, party.on_taken = party.on_taken, []
            for hook in hooks:
                hook()
        return ok

    async def _answer(self, party: Party) -> bool:
        call = party.call
        if not isinstance(call, sip.IncomingCall):
            return call.state is sip.CallState.ESTABLISHED
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
        self.emit("answered", party)
        return True

    async def _answer_late_offer(self, party: Party, call: sip.IncomingCall) -> bool:
        """An INVITE without SDP: our offer goes in the 200, the answer comes in the ACK."""
        partner = [party.partner_codec] if party.partner_codec else []
        ours = codec_policy.offer_codecs(party.codecs, partner, party.partner_max_bitrate)
        offer = sip.make_offer(party.host, party.leg.local[1], ours, **party.srtp_terms())
        call.answer(bytes(offer))
        try:
            await asyncio.wait_for(call.acked.wait(), 64 * self.config.server.sip_t1)
            stream = sip.process_answer(offer, sip.parse_sdp(call.remote_sdp or b""))
        except (TimeoutError, sip.ParseError) as exc:
            log.info("event=late_offer_failed call_id=%s error=%s", call.call_id, exc)
            await call.hangup()
            return False
        party.leg.configure(stream)
        self.emit("answered", party)
        return True

    def early_media(self, party: Party, source: Source) -> None:
        """``party`` hears ``source`` before it is answered (183 with our SDP), or at once
        when it is already established (a transferee)."""
        call = party.call
        if isinstance(call, sip.IncomingCall) and call.state in (
            sip.CallState.CALLING,
            sip.CallState.EARLY,
        ):
            if party.offer is None:
                call.ring()  # no offer to answer early: plain ringing
                return
            answer, stream = party.answer_sdp(party.offer)
            if stream is None:
                call.ring()
                return
            party.leg.configure(stream)
            call.ring(bytes(answer))
        party.leg.source = source

    def ringback(self) -> Source:
        return self.engine.tone_source("ringback")

    # -- ringing --------------------------------------------------------------------------

    def caller_id(self, caller: Party) -> sip.NameAddr:
        user = caller.user
        if user is not None and user.hide_caller_id:
            return sip.NameAddr(sip.parse_uri("sip:anonymous@anonymous.invalid"), "Anonymous")
        if user is not None:
            return sip.NameAddr(sip.URI("sip", user.extension, host=self.domain), user.name)
        remote = caller.call.invite.from_
        return sip.NameAddr(remote.uri.copy(params={}, headers={}), remote.display)

    async def forks(self, targets: Sequence[Target], caller: Party) -> list[Fork]:
        out: list[Fork] = []
        for target in targets:
            endpoint = self.registry.endpoints.get(target.kind)
            if endpoint is None:
                log.warning("event=no_endpoint kind=%s value=%s", target.kind, target.value)
                continue
            out += await endpoint.forks(target, caller)
        return out

    def target(
        self, text: str, *, permission: str = "internal", caller_id: str | None = None
    ) -> Target:
        """A ring target from a configured string: an extension or an external number
        (called with ``permission``, showing ``caller_id``)."""
        value = text.removeprefix("ext:")
        if value.startswith("tel:") or (
            self.user(value) is None and classify(value, self.config) is not None
        ):
            number = value.removeprefix("tel:")
            return Target("tel", number, permission=permission, caller_id=caller_id)
        return Target("user", value)

    async def ring(
        self,
        caller: Party,
        targets: Sequence[Target],
        timeout: float,
        *,
        skip_busy: bool = False,
        progress: bool = True,
        headers: Sequence[tuple[str, str]] = (),
        stop: asyncio.Event | None = None,
    ) -> RingResult:
        """Ring every target together for ``timeout`` seconds; the first to answer wins
        and the others get CANCEL. ``skip_busy`` leaves out users already on a call.
        ``progress`` relays 180/183 to an unanswered caller as 180; ``headers`` go in
        every INVITE (intercom's auto-answer); ``stop`` set ends the ring as if the
        caller had hung up (a queue caller who left the line). While the forks ring,
        the call is in :attr:`ringing`, where a pickup may take it (:meth:`pick`)."""
        chosen = list(targets)
        if skip_busy:
            chosen = [
                t
                for t in chosen
                if not (t.kind == "user" and (u := self.user(t.value)) and self.busy(u))
            ]
        forks = await self.forks(chosen, caller)
        if not forks:
            return RingResult("busy" if len(chosen) < len(targets) else "unreachable")
        if caller.ended:
            return RingResult("cancelled")
        # the IPs of callees behind a NAT (their RTP comes from there, at a port to
        # learn): another leg still learning at one of them makes this leg's port its own
        peers = {
            f.destination[1]
            for f in forks
            if f.destination is not None and behind_nat(f.uri.host, f.destination[1])
        }
        leg = await self.engine.new_leg(caller.host, peers)
        leg.on_rejected_source = self.report_rtp(None)  # until a callee answers
        partner, limit = caller.usable_codecs(), caller.max_bitrate()
        # one offer per fork: the callee's own preference (its user, device or trunk),
        # with what the caller can use first, so that nothing is transcoded if avoidable
        offers: dict[int, tuple[sip.SessionDescription, list[str]]] = {}
        winner: list[Party] = []
        parties: list[Party] = []  # one per fork sent, the same object in every event
        statuses: list[int] = []
        pending = len(forks)
        settled = asyncio.Event()  # every fork failed
        wake = asyncio.Event()  # answered, or every fork failed
        ringing = Ringing(caller, parties, asyncio.get_running_loop().create_future())
        self.ringing.append(ringing)

        def on_progress(party: Party, response: sip.Response) -> None:
            if response.status not in (180, 183):
                return
            if progress and isinstance(caller.call, sip.IncomingCall) and caller.leg.source is None:
                caller.call.ring()
            self.emit("ringing", party)

        def lost(party: Party, *_: object) -> None:
            if not winner or winner[0] is not party:  # the winner's end is track()'s
                self.emit("ended", party)

        async def one(fork: Fork) -> None:
            mine = fork.codecs or codec_policy.preference(self.config, user=fork.user)
            secure = self.fork_encryption(fork)
            if secure.impossible:  # SRTP required, but this contact is not reached by TLS
                statuses.append(488)
                log.info("event=fork_refused target=%s reason=srtp_needs_tls", fork.uri)
                return
            # "optional" offers RTP/AVP with keys (RFC 4568 best effort); a phone that takes
            # RTP/SAVP alone refuses it with 488 and is offered RTP/SAVP once more
            attempts = [secure]
            if secure.policy == "optional" and secure.keys:
                attempts.append(Encryption("required", True))
            # a browser (registered over WebSocket) gets a WebRTC offer: ICE-lite, DTLS-SRTP
            browser = leg.browser_terms() if self.fork_transport(fork) in ("ws", "wss") else None
            for attempt, terms in enumerate(attempts):
                offer = sip.make_offer(
                    caller.host,
                    leg.local[1],
                    codec_policy.offer_codecs(mine, partner, limit),
                    browser=browser,
                    **(srtp_terms(terms, leg) if browser is None else {}),
                )
                try:
                    out = await self.ua.invite(
                        fork.uri,
                        bytes(offer),
                        wait=False,
                        destination=fork.destination,
                        credentials=fork.credentials,
                        from_=fork.from_ or self.caller_id(caller),
                        to=fork.to,
                        headers=[*fork.headers, *headers] or None,
                    )
                except (OSError, sip.SipUsageError) as exc:
                    statuses.append(503)
                    log.info("event=fork_failed target=%s error=%s", fork.uri, exc)
                    return
                party = Party(
                    out, leg, fork.user, label=fork.label, device=fork.device, codecs=mine
                )
                party.encryption = terms
                offers[id(party)] = (offer, mine)
                parties.append(party)
                out.on_progress.add(functools.partial(on_progress, party))
                out.on_end.add(functools.partial(lost, party))
                self.emit("trying", party)
                try:
                    await out.wait_answer()
                except sip.RequestFailed as exc:
                    again = exc.status == 488 and attempt + 1 < len(attempts)
                    if again and not winner and not caller.ended:
                        log.info("event=fork_retry target=%s reason=srtp_savp_only", fork.uri)
                        continue
                    statuses.append(exc.status)
                    return
                if winner or ringing.picked.done():
                    await out.bye()  # a second device answered too late
                else:
                    winner.append(party)
                    wake.set()
                return

        def finished(_: asyncio.Task[None]) -> None:
            nonlocal pending
            pending -= 1
            if pending == 0:
                settled.set()
                wake.set()

        tasks = [self.spawn(one(fork)) for fork in forks]
        for task in tasks:
            task.add_done_callback(finished)
        waits: set[asyncio.Future[Any]] = {
            asyncio.ensure_future(wake.wait()),
            asyncio.ensure_future(caller.call.ended.wait()),
            asyncio.ensure_future(asyncio.shield(ringing.picked)),
        }
        if stop is not None:
            waits.add(asyncio.ensure_future(stop.wait()))

        def give_up() -> None:
            """Every fork hung up (an answer nobody waited for ends like the others), the
            ring's leg closed."""
            winner.clear()
            for other in parties:
                self.spawn(other.call.hangup())
            for task in tasks:
                if not task.done():
                    task.cancel()
            leg.close()

        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # whoever rang gave up (the PBX stops...): the
            give_up()  # phones stop ringing and the leg is freed, as for a caller gone
            raise
        finally:
            for waiter in waits:
                waiter.cancel()
            self.ringing.remove(ringing)
        caller_gone = caller.call.state is sip.CallState.ENDED or (
            stop is not None and stop.is_set()
        )
        if winner and not caller_gone:
            party = winner[0]
            for other in parties:
                if other is not party:
                    self.spawn(other.call.hangup())
            assert party.call.remote_sdp is not None
            offer, _ = offers[id(party)]
            answered = sip.process_answer(offer, sip.parse_sdp(party.call.remote_sdp))
            leg.configure(answered)
            if leg.contested is not None:  # moved once both calls' RTP comes from there
                codec = answered.codec

                def move() -> None:
                    self.spawn(self._move_media(party, codec))

                leg.on_contested = move
            caller.expect_partner(leg)
            self.track(party)
            self.emit("answered", party)
            if not ringing.picked.done():
                ringing.picked.cancel()
            return RingResult("answered", party)
        if not ringing.picked.done():
            ringing.picked.cancel()
        give_up()
        if caller_gone:
            return RingResult("cancelled")
        if not ringing.picked.cancelled():
            picker = ringing.picked.result()
            log.info("event=picked_up caller=%s by=%s", caller.label, picker.label)
            return RingResult("answered", picker)
        if not settled.is_set():
            return RingResult("noanswer")
        if any(s in (486, 600, 603) for s in statuses):
            return RingResult("busy")
        return RingResult("unreachable")

    @staticmethod
    def fork_transport(fork: Fork) -> str:
        """The transport a fork's INVITE takes."""
        return fork.destination[0] if fork.destination is not None else transport_of(fork.uri)

    def fork_encryption(self, fork: Fork) -> Encryption:
        """SRTP towards a fork's callee: its device's, user's or trunk's policy on the
        transport the INVITE takes (a browser's media is DTLS-SRTP whatever it says)."""
        transport = self.fork_transport(fork)
        if transport in ("ws", "wss"):
            return encryption.PLAIN  # no SDES keys: sip.webrtc, keys by DTLS
        policy = fork.encryption or encryption.configured(
            self.config, user=fork.user, device=fork.device
        )
        return encryption.effective(policy, transport)

    async def _move_media(self, party: Party, codec: sip.Codec) -> None:
        """A callee answered with an RTP address another call on the shared port expects
        (one peer, several calls, one port), and RTP now comes from there: its leg moves
        to a port of its own and a re-INVITE tells the phone. Until then that address
        stays the other call's: one call's audio never reaches another, whatever this
        re-INVITE gets."""
        leg = party.leg
        contested = leg.contested
        if contested is None:
            return
        self.engine.move_to_own_port(leg)
        offer = sip.make_offer(
            party.host, leg.local[1], (codec,), session_version=1, **party.srtp_terms()
        )
        try:
            response = await party.call.reinvite(bytes(offer))
        except (OSError, TimeoutError, sip.ParseError, sip.SipUsageError) as exc:
            log.warning("event=rtp_move_failed party=%s error=%s", party.label, exc)
            return
        if not 200 <= response.status < 300 or party.call.remote_sdp is None:
            log.warning(
                "event=rtp_move_refused party=%s status=%d peer=%s:%d",
                party.label,
                response.status,
                *contested,
            )
            return
        try:
            moved = sip.process_answer(offer, sip.parse_sdp(party.call.remote_sdp))
        except sip.ParseError as exc:
            log.warning("event=rtp_move_failed party=%s error=%s", party.label, exc)
            return
        if not leg.closed:
            leg.configure(moved)
            self.engine.settled(leg, contested)
            log.info("event=rtp_moved party=%s port=%d", party.label, leg.local[1])

    def pick(self, ringing: Ringing, picker: Party) -> bool:
        """Take a ringing call for ``picker`` (an answered party): the forks get CANCEL
        and the ring answers with ``picker``, whom the caller's destination then bridges.
        False when the call was answered, picked or abandoned meanwhile."""
        if ringing.picked.done() or ringing.caller.ended or ringing not in self.ringing:
            return False
        ringing.picked.set_result(picker)
        return True

    # -- connecting -----------------------------------------------------------------------

    def bridge(self, a: Party, b: Party) -> None:
        bridge(a, b)
        for party in (a, b):
            self._keypad(party)
        self.emit("bridged", a, b)

    async def connect(self, caller: Party, callee: Party) -> Outcome:
        """Answer ``caller`` (when not yet) and bridge it with ``callee``."""
        if not await self.answer(caller):
            await callee.call.hangup()
            return Failed(487, "cancelled")
        caller.holding = False
        self.bridge(caller, callee)
        return Connected()

    def replace(self, old: Party, new: Party) -> None:
        """``old``'s peer now talks to ``new``; ``old`` is released with BYE."""
        peer = unbridge(old)
        if peer is None or peer.ended:
            self.spawn(new.call.hangup())
            return
        self.bridge(peer, new)
        self.spawn(old.call.hangup())

    def _keypad(self, party: Party) -> None:
        """Keys pressed in a bridged call: claimed codes go to their feature."""
        codes = self.registry.codes
        if not codes:
            party.leg.key_filter = None
            return
        keypad = InCallKeypad(codes)
        loop = asyncio.get_running_loop()
        timer: list[asyncio.TimerHandle] = []

        def act(actions: list[Relay | Claim]) -> None:
            for action in actions:
                if isinstance(action, Claim):
                    handler = codes[action.code]
                    used = False
                    try:
                        used = handler(party, action.code)
                    except Exception:
                        log.exception("event=in_call_code_failed code=%s", action.code)
                    if used:
                        log.info("event=in_call_code party=%s code=%s", party.label, action.code)
                        continue
                    keys = action.code
                else:
                    keys = action.keys
                for key in keys:
                    party.leg.relay_digit(key)
            for handle in timer:
                handle.cancel()
            timer.clear()
            deadline = keypad.deadline
            if deadline is not None:
                timer.append(loop.call_at(deadline, lambda: act(keypad.on_timer(loop.time()))))

        party.leg.key_filter = lambda key: act(keypad.feed(key, loop.time()))

    # -- the dialplan -----------------------------------------------------------------------

    async def dial(self, dial: Dial) -> Outcome:
        """Send the call to ``dial.target`` through the dialplan (a new call passes the
        features' call checks first)."""
        if dial.depth == 0:
            for check in self.registry.checks:
                taken = await check(dial)
                if taken is not None:
                    return taken
        if dial.depth > MAX_DEPTH:
            log.info("event=dial_loop target=%s via=%s", dial.target, ",".join(dial.via))
            return Failed(482, "refused", "Loop Detected")
        dest = parse_destination(dial.target)
        if dest.kind == "hangup":
            self.emit("routed", dial, "hangup")
            return Failed(480, "refused", "Temporarily Unavailable")
        if dest.kind == "number":
            handler = self.registry.numbers.get(dest.value)
            if handler is not None:
                self.emit("routed", dial, "number")
                return await handler(dial)
            if classify(dest.value, self.config) is None:
                return Failed(404, "refused", "Not Found")
            dest = parse_destination(f"tel:{dest.value}")
        self.emit("routed", replace(dial, target=dest.value), dest.kind)
        kind = self.registry.kinds.get(dest.kind)
        if kind is None:
            return Failed(404, "refused", f"Not Found (no {dest.kind} destinations)")
        return await kind.handler(replace(dial, target=dest.value))

    # -- call facts, rules and announcements ---------------------------------------------

    def facts(self, dial: Dial) -> CallFacts:
        """Who calls, what they dialled, and when (office time), for rules and blocking."""
        hours = self.config.business_hours
        zone = zoneinfo.ZoneInfo(hours.timezone if hours else "UTC")
        return CallFacts(
            caller_number(dial), dial.called or dial.target, self.wallclock().astimezone(zone)
        )

    def handling(self, dial: Dial, rules: list[Rule], in_hours: str, after_hours: str) -> str:
        """What to do with a call for a user, group or receptionist: the first matching
        rule's action, else the in-hours or after-hours handling ("ring": as usual)."""
        rule = first_match(rules, self.facts(dial))
        if rule is not None:
            log.info("event=rule name=%s action=%s", rule.name, rule.action)
            return rule.action
        return in_hours if self.office_open() else after_hours

    async def announce(self, party: Party, prompt: Prompt) -> Outcome:
        """Answer ``party``, say ``prompt``, and hang up."""
        if await self.answer(party):
            party.leg.listen_dtmf = True  # keys pressed meanwhile go nowhere
            await self.prompts.say(party.leg, prompt)
        return Done()

    async def record(self, party: Party, seconds: float) -> Samples:
        """What ``party`` says for ``seconds`` (a screened caller's name)."""
        frames: list[Samples] = []
        party.leg.add_tap(frames.append)
        try:
            await asyncio.sleep(seconds)
        finally:
            party.leg.remove_tap(frames.append)
        return np.concatenate(frames) if frames else np.zeros(0, np.int16)

    async def ask_key(
        self, party: Party, prompt: Samples, keys: str, timeout: float = 8.0
    ) -> str | None:
        """Say ``prompt`` to ``party`` (a key cuts it short) and wait for one of ``keys``;
        None when none came in time or the call ended."""
        leg = party.leg
        leg.listen_dtmf = True
        while not leg.dtmf.empty():
            leg.dtmf.get_nowait()
        playing = asyncio.ensure_future(leg.play_samples(prompt))
        try:
            deadline = asyncio.get_running_loop().time() + len(prompt) / leg.rate + timeout
            while not party.ended:
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    return None
                try:
                    key = await asyncio.wait_for(leg.dtmf.get(), min(left, 0.5))
                except TimeoutError:
                    continue
                if key in keys:
                    return key
            return None
        finally:
            playing.cancel()
            leg.stop_playing()
            leg.listen_dtmf = False

    async def confirm(self, callee: Party, name: str) -> bool:
        """An external callee (a forwarded mobile) must press 1 before it gets the call:
        its own voicemail never takes a forwarded call."""
        rate = callee.leg.rate
        prompt = np.concatenate(
            [
                self.prompts.samples(Prompt("builtin", "confirm-call-for"), rate),
                self.prompts.samples(Prompt("text", name), rate),
                self.prompts.samples(Prompt("builtin", "confirm-press-1"), rate),
            ]
        )
        accepted = await self.ask_key(callee, prompt, "1") == "1"
        log.info("event=confirm callee=%s accepted=%s", callee.label, accepted)
        return accepted

    async def ask_pin(self, callee: Party, name: str, pin: str) -> bool:
        """An external callee types ``pin`` (then #) before it gets the call."""
        leg = callee.leg
        leg.listen_dtmf = True
        while not leg.dtmf.empty():
            leg.dtmf.get_nowait()
        try:
            await self.prompts.say(
                leg,
                Prompt("builtin", "confirm-call-for"),
                Prompt("text", name),
                Prompt("builtin", "vm-enter-pin"),
            )
            typed = await collect_digits(leg, max_digits=12, first_timeout=8)
        finally:
            leg.listen_dtmf = False
        accepted = secrets.compare_digest(typed, pin)
        log.info("event=answer_pin callee=%s accepted=%s", callee.label, accepted)
        return accepted

    async def finish(self, party: Party, outcome: Outcome) -> None:
        """End what the dialplan left: refuse a caller nothing took, hang up after an
        application; a connected call is left to its bridge."""
        self.emit("finished", party, outcome)
        if isinstance(outcome, Failed):
            self.counters["refused"] += outcome.cause == "refused"
            if isinstance(party.call, sip.IncomingCall) and not party.ended:
                status = outcome.status if 400 <= outcome.status < 700 else 480
                party.call.reject(status, outcome.reason)
                return
        if isinstance(outcome, Connected) and party.peer is not None:
            return
        if not party.ended:
            await party.call.hangup()

    async def send_on(self, dial: Dial, destination: str, on_behalf: User | None = None) -> Outcome:
        """Re-enter the dialplan one level deeper (forwarding, exhausted groups...)."""
        log.info("event=send_on from=%s to=%s", dial.target, destination)
        return await self.dial(dial.next(destination, on_behalf=on_behalf, via=dial.target))


def caller_number(dial: Dial) -> str:
    """The caller's number as rules see it: a user's extension, the From user of an
    external caller, or "anonymous" (no caller ID, or an anonymous From)."""
    if dial.caller is not None:
        return "anonymous" if dial.caller.hide_caller_id else dial.caller.extension
    call = dial.party.call
    uri = call.invite.from_.uri
    privacy = (call.invite.headers.get("Privacy") or "").lower()
    if not uri.user or uri.user.lower() == "anonymous" or "id" in privacy.split(";"):
        return "anonymous"
    return uri.user
