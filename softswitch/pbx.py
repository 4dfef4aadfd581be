"""The PBX daemon's composition root: configuration -> services -> features -> serve.

:class:`Pbx` builds the user agent, the media clock and engine, the registrar and the
devices, merges the features' tables (:mod:`softswitch.plugins`), hands every feature the
narrow :class:`~softswitch.services.Services` object, and dispatches what arrives: REGISTER
to the devices, SUBSCRIBE to the features' event packages, INVITE through authentication
into the dialplan. Explicit phases: :meth:`Pbx.start`, serve, :meth:`Pbx.stop` (calls
ended with BYE, features stopped, state flushed).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import sip
from media.clock import MediaClock
from rtp import PortAllocator
from sip.address import parse_listen

from . import certificates, codec_policy, encryption
from .banner import print_demo_accounts as print_demo_accounts  # moved; kept importable
from .binding_store import SqliteBindingStore
from .call_limit import RETRY_AFTER, CallLimit
from .calls import Party
from .config import Config, Trunk, User
from .devices import DeviceEndpoint, Devices, UserEndpoint
from .feature import Dial, Endpoint, Failed, FeatureType
from .features import builtin
from .media_engine import MediaEngine, offer_peers
from .plugins import Registry
from .private_files import private_dir
from .registrar import Registrar
from .reload import needs_restart
from .services import Services

log = logging.getLogger("softswitch")


class Pbx:
    def __init__(
        self,
        config: Config,
        *,
        features: Sequence[FeatureType] | None = None,
        stats_file: Path | None = None,
        wallclock: Callable[[], datetime] | None = None,
    ) -> None:
        """``features``: the feature modules to load (default: the built-in ones). A
        configuration they cannot serve raises :class:`~softswitch.config.ConfigError`.
        ``wallclock``: the time of day for business hours (default: the real one)."""
        self._config = config
        self.feature_types = builtin() if features is None else list(features)
        self.stats_file = stats_file
        server = config.server
        self.data_dir = Path(server.data_dir)
        self.registrar = Registrar(
            min_expires=server.registration_min_expires,
            max_expires=server.registration_max_expires,
            store=SqliteBindingStore(self.data_dir / "registrations.sqlite"),
        )
        self.clock = MediaClock()
        self.ports = PortAllocator(*server.rtp_ports)
        # one TLS context for every tls: listener, its certificate reloaded in place
        self.tls_context = (
            certificates.server_context(server, self.tls_hosts(config))
            if any(spec.startswith(("tls:", "wss:")) for spec in server.listen)
            else None
        )
        self.ua = sip.UserAgent(
            server.listen,
            user="pbx",
            domain=server.domain,
            local_address=server.public_address,
            user_agent="softswitch-pbx/0.1",
            tls_context=self.tls_context,
            timers=sip.Timers(t1=server.sip_t1, t2=8 * server.sip_t1),
            connection_limits=sip.ConnectionLimits(
                idle_timeout=server.tcp_idle_timeout,
                message_timeout=server.tcp_message_timeout,
                max_connections=server.tcp_max_connections,
                max_per_address=server.tcp_max_per_address,
            ),
        )
        self._tasks: set[asyncio.Task[Any]] = set()
        self.devices = Devices(
            lambda: self.config,
            self.ua,
            self.registrar,
            emit_registered=lambda b: self.svc.emit("registered", b),
            emit_unregistered=lambda b: self.svc.emit("unregistered", b),
            spawn=self.spawn,
        )
        self.registry = Registry(
            config,
            self.feature_types,
            core_endpoints=self._core_endpoints(),
        )
        # after the registry: a configuration it refuses leaves no subscriber on the clock
        self.engine = MediaEngine(self.clock, self.ports, server.country, server.language)
        self.svc = Services(
            config=lambda: self.config,
            ua=self.ua,
            clock=self.clock,
            ports=self.ports,
            engine=self.engine,
            devices=self.devices,
            registry=self.registry,
            spawn=self.spawn,
            wallclock=wallclock,
        )
        self.svc.apply_config = self.apply
        self.engine.on_rejected_source = self.svc.report_rtp(None)  # packets nobody owns
        self.counters = self.svc.counters
        self.calls = CallLimit(lambda: self.config.server.max_calls)
        self.started = asyncio.Event()
        self._applying = asyncio.Lock()

    @property
    def config(self) -> Config:
        return self._config

    @config.setter
    def config(self, config: Config) -> None:
        """A new configuration for what is read live (users' settings)."""
        self._config = config

    @staticmethod
    def tls_hosts(config: Config) -> list[str]:
        """The names a demo certificate carries: the domain, the advertised address and
        the TLS listeners' addresses (not a wildcard)."""
        hosts = [config.server.domain, *filter(None, [config.server.public_address])]
        for transport, host, _ in map(parse_listen, config.server.listen):
            if transport in ("tls", "wss") and host not in ("0.0.0.0", "::"):
                hosts.append(host)
        return hosts

    def tls_fingerprint(self) -> str | None:
        """SHA-256 of the certificate the TLS listeners present (None: no TLS)."""
        if self.tls_context is None:
            return None
        return certificates.fingerprint(self.config.server, self.tls_hosts(self.config))

    def _reload_certificate(self, config: Config) -> None:
        """The certificate on disk again (replaced, renewed): checked in a context of its
        own first, so that one that does not load leaves the running one in place."""
        if self.tls_context is None:
            return
        hosts = self.tls_hosts(config)
        certificates.server_context(config.server, hosts)  # raises ConfigError
        certificates.load(self.tls_context, config.server, hosts)
        log.info(
            "event=tls_certificate_loaded fingerprint=%s",
            certificates.fingerprint(config.server, hosts),
        )

    def _core_endpoints(self) -> dict[str, Endpoint]:
        return {
            "user": UserEndpoint(self.devices, lambda p: self.svc.caller_id(p)),
            "device": DeviceEndpoint(self.devices, lambda p: self.svc.caller_id(p)),
        }

    async def apply(self, config: Config) -> list[str]:
        """Run ``config`` from now on, calls in progress going on: the features are built
        again from it (a ConfigError leaves everything as it was) and each takes over
        the state of its predecessor (:meth:`BaseFeature.resume`); new calls see the new
        numbers, groups, menus and users at once. Returns the keys whose change needs a
        restart (listen addresses, ports, the data directory...): their running values
        stay until then."""
        async with self._applying:
            restart = needs_restart(self.config, config)
            running = {
                k.removeprefix("server."): getattr(self.config.server, k[7:]) for k in restart
            }
            if running:
                config = config.model_copy(
                    update={"server": config.server.model_copy(update=running)}
                )
            self._reload_certificate(config)
            await self._apply(config)
            log.info(
                "event=config_applied users=%d numbers=%d restart_needed=%s",
                len(config.users),
                len(self.registry.numbers),
                ",".join(restart) or "-",
            )
            return restart

    async def _apply(self, config: Config) -> None:
        registry = Registry(config, self.feature_types, core_endpoints=self._core_endpoints())
        old = self.registry
        self._config = config
        self.registry = self.svc.registry = registry
        for feature in registry.features:
            previous = old.feature(type(feature).name)
            try:
                if previous is None:
                    await feature.start(self.svc)
                else:
                    await feature.resume(previous, self.svc)
            except Exception:
                log.exception("event=feature_resume_failed feature=%s", type(feature).name)
        await self.svc.config_changed()

    @property
    def parties(self) -> set[Party]:
        return self.svc.parties

    @property
    def guard(self) -> Any:
        return self.devices.guard

    @property
    def conference(self) -> Any:
        """The conference service (rooms, engine), when the conference feature is loaded."""
        feature = self.registry.feature("conference")
        return getattr(feature, "service", None)

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        private_dir(self.data_dir, own=False)  # private data; missing parents 0700 too
        ua = self.ua
        ua.handlers["REGISTER"] = self.devices.on_register
        ua.handlers["SUBSCRIBE"] = self.on_subscribe
        ua.on_invite = self.on_invite
        store = self.registrar.store
        stored = await store.load() if store is not None else []  # before any REGISTER
        await ua.start()
        self.devices.restore(stored)  # registrations from before a restart, each checked
        self.clock.start()
        for feature in self.registry.features:
            await feature.start(self.svc)
        self.spawn(self.devices.keepalive(self.config.server.keepalive_interval))
        self.spawn(self._report())
        self.started.set()
        listening = ", ".join(f"{lst.transport}:{lst.host}:{lst.port}" for lst in ua.listeners)
        log.info(
            "event=started listen=%s domain=%s users=%d features=%s data_dir=%s",
            listening,
            self.config.server.domain,
            len(self.config.users),
            ",".join(type(f).name for f in self.registry.features),
            self.data_dir,
        )

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for feature in reversed(self.registry.features):
            try:
                await feature.stop()
            except Exception:
                log.exception("event=feature_stop_failed feature=%s", type(feature).name)
        self.devices.close()
        await self.svc.close()  # HTTP servers the features started
        await self.ua.close()  # BYE to every established call
        await self.clock.stop()
        self.engine.close()
        if self.registrar.store is not None:
            await self.registrar.store.close()  # the last changes written
        log.info("event=stopped")

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        """A background task of the PBX's, cancelled at stop; failures are logged."""
        task = self.ua.spawn(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @property
    def stats(self) -> dict[str, int | float]:
        conference = self.conference
        return {
            "registrations": len(self.registrar),
            "active_calls": len(self.calls),
            "call_limit_refused": self.calls.refused,
            "parties": len(self.parties),
            "late_ticks": self.clock.stats.late,
            "skipped_ticks": self.clock.stats.skipped,
            "tick_busy_s": round(self.clock.stats.busy, 3),
            "ticks": self.clock.stats.ticks,
            "conference_legs": len(conference.legs) if conference else 0,
            "conference_members": conference.members() if conference else 0,
            "auth_failures": self.devices.auth_failures,
            # what the soak benchmark watches for leaks
            "tasks": len(asyncio.all_tasks()),
            "rtp_ports": self.ports.in_use,
            "rtp_kernel_drops": self.engine.kernel_drops(),
            "rtp_strays": self.engine.stats["strays"],  # packets no leg took (strict RTP)
            "srtp_refused": self.engine.stats["srtp_refused"],  # forged or replayed SRTP
            "transactions": len(self.ua.transactions),
            "dialogs": len(self.ua.calls),
            "overload_refused": self.ua.overload.stats.refused if self.ua.overload else 0,
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

    def trunk_for(self, source_ip: str) -> Trunk | None:
        for trunk in self.config.trunks:
            if source_ip in trunk.addresses:
                return trunk
        return None

    # -- SUBSCRIBE ----------------------------------------------------------------------

    def on_subscribe(self, incoming: sip.IncomingRequest) -> None:
        """Event packages are the features'; the subscriber is authenticated first."""
        request = incoming.request
        event = (request.headers.get("Event") or "").split(";")[0].strip()
        handler = self.registry.packages.get(event)
        if handler is None:
            allowed = ", ".join(sorted(self.registry.packages))
            incoming.respond(489, headers=[("Allow-Events", allowed)])
            return
        user = self.devices.registered_source(incoming)
        if user is None:
            verdict = self.devices.authenticate(incoming)
            if verdict.user is None:
                incoming.respond_stateless(
                    verdict.status, verdict.reason, headers=list(verdict.headers)
                )
                return
            user = verdict.user
        handler(incoming, user)

    # -- INVITE -------------------------------------------------------------------------

    async def on_invite(self, call: sip.IncomingCall) -> None:
        source_ip = call.incoming.source[1]
        trunk = self.trunk_for(source_ip)
        caller: User | None = None
        device: str | None = None
        if trunk is None:
            verdict = self.devices.authenticate(call.incoming, proxy=True)
            if verdict.user is None:
                call.reject(
                    verdict.status, verdict.reason, headers=list(verdict.headers), stateless=True
                )
                return
            identity = self.devices.identity(verdict.user)
            if identity is None:
                call.reject(403, "Forbidden")
                return
            caller = identity[0]
            device = identity[1].name if identity[1] is not None else None
        who = caller.extension if caller else call.invite.from_.uri.user
        if trunk is not None and not self._trunk_certified(trunk, call):
            return
        if not self.calls.admit(call):
            retry = [("Retry-After", str(RETRY_AFTER))]
            call.reject(503, "Service Unavailable (call limit)", headers=retry, stateless=True)
            if self.calls.report(source_ip, self.ua.now()):
                reason = f"call_limit:{self.config.server.max_calls}"
                self.ua.security_event(
                    "request_refused",
                    call.incoming.source,
                    user=who,
                    method="INVITE",
                    reason=reason,
                )
            return
        self.counters["calls"] += 1
        offer: sip.SessionDescription | None = None
        if call.remote_sdp:
            try:
                offer = sip.parse_sdp(call.remote_sdp)
            except sip.ParseError as exc:
                call.reject(488, f"Not Acceptable Here ({exc})")
                return
        secure = encryption.effective(
            encryption.configured(self.config, caller, device, trunk), call.incoming.source[0]
        )
        if not self._encryption_fits(call, offer, secure, who):
            return
        dialled = called = call.invite.uri.user or ""
        if trunk is not None and (dialled.startswith("*") or dialled not in self.registry.numbers):
            dialled = trunk.inbound_extension or ""  # the provider reaches numbers, not codes
        log.info("event=invite caller=%s dialled=%s", who, dialled)
        party = await self._party_for_incoming(call, offer, caller, device)
        if party is None:
            return
        party.encryption = secure
        try:
            dial = Dial(party, dialled, caller, on_behalf=caller, called=called)
            outcome = await self.svc.dial(dial)
            log.debug("event=routed dialled=%s outcome=%s", dialled, type(outcome).__name__)
            if isinstance(outcome, Failed) and outcome.status == 403:  # not permitted
                reason = f"{dialled}: {outcome.reason or 'Forbidden'}"
                self.ua.security_event(
                    "request_refused",
                    call.incoming.source,
                    user=who,
                    method="INVITE",
                    reason=reason,
                )
            await self.svc.finish(party, outcome)
        finally:
            if party.peer is None and not party.ended:
                await party.call.hangup()

    def _trunk_certified(self, trunk: Trunk, call: sip.IncomingCall) -> bool:
        """A trunk with ``tls_client_name`` is believed only over TLS with a verified client
        certificate naming it; anything else from its addresses is refused 403 (logged)."""
        if trunk.tls_client_name is None:
            return True
        cert = self.ua.transport.peer_certificate(call.incoming.source)
        if cert is not None and trunk.tls_client_name.lower() in certificates.names(cert):
            return True
        call.reject(403, "Forbidden (trunk certificate)")
        self.ua.security_event(
            "request_refused",
            call.incoming.source,
            user=trunk.name,
            method="INVITE",
            reason="tls_client_certificate" if cert is None else "tls_client_name",
        )
        return False

    def _encryption_fits(
        self,
        call: sip.IncomingCall,
        offer: sip.SessionDescription | None,
        secure: encryption.Encryption,
        who: str | None,
    ) -> bool:
        """SRTP keys sent where anyone on the path reads them are refused (and logged);
        an offer that the caller's policy leaves nothing of (RTP/SAVP with SRTP off, plain
        RTP with SRTP required) gets 488 before anything rings."""
        if offer is None:
            if not secure.impossible:
                return True
        else:
            if not secure.keys and any(m.attribute("crypto") is not None for m in offer.media):
                self.ua.security_event(
                    "request_refused",
                    call.incoming.source,
                    user=who,
                    method="INVITE",
                    reason="srtp_keys_over_" + call.incoming.source[0],
                )
            if encryption.srtp_check(offer, secure):
                return True
        log.info("event=invite_refused reason=encryption policy=%s", secure.policy)
        call.reject(488, "Not Acceptable Here (SRTP policy)")
        return False

    async def _party_for_incoming(
        self,
        call: sip.IncomingCall,
        offer: sip.SessionDescription | None,
        user: User | None,
        device: str | None,
    ) -> Party | None:
        host = self.ua.local_host(call.incoming.source)
        try:
            leg = await self.engine.new_leg(host, offer_peers(call.incoming.source[1], offer))
        except OSError:
            call.reject(503, "Service Unavailable (no RTP port)")
            return None
        label = user.extension if user else (call.invite.from_.uri.user or "?")
        party = Party(call, leg, user, label=label, device=device, offer=offer)
        party.codecs = codec_policy.preference(
            self.config,
            user=user,
            trunk=self.trunk_for(call.incoming.source[1]) if user is None else None,
            user_agent=call.invite.headers.get("User-Agent"),
        )
        self.svc.track(party)
        self.svc.emit("trying", party)
        return party
