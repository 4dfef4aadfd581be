"""Polycom phone provisioning over HTTP, from the ``[[phones]]`` table.

A Polycom (UC Software) phone pointed at ``http://HOST:PORT/`` asks for its per-phone
master configuration ``<MAC>.cfg`` and, when there is none, the default
``000000000000.cfg``; the master names the configuration files to load, here
``<MAC>-softswitch.cfg``, generated for that phone: its registration (the user's
extension and password, or the hot-desk phone's own login), the SIP server, MWI, its
busy-lamp keys (``attendant.resourceList.N.*``), directed pickup, the intercom
auto-answer ring class, session timers, SNTP and the time zone.

The files are served by the web process (:class:`ProvisioningServer`, built by
:func:`build`), never by the daemon's loop. Every request needs credentials (HTTP digest,
or basic when ``auth = "basic"``; compared in constant time): the office's
(``[provisioning] username/password``) or, with ``credentials = "per_phone"``, each phone's
own for its files; it is logged with its source. An unknown MAC gets 404, wrong
credentials 401, too many of them 429. ``resync(mac)`` pushes a re-provision: ``NOTIFY``
with ``Event: check-sync`` to the phone's registrations.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Literal

from pydantic import Field, IPvAnyAddress, IPvAnyNetwork
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import sip
from sip.address import parse_listen

from .. import encryption
from ..config import Config, User
from ..feature import BaseFeature
from ..model import Strict
from ..services import Services
from ..web.child import WebApp, WebServices
from ..web.server import Limits
from ..web.throttle import LoginThrottle
from .intercom import ALERT_INFO_VALUE
from .phones import Phone, phones_of

log = logging.getLogger("softswitch")

DEFAULT_MASTER = "000000000000.cfg"
FILE = re.compile(r"^(?P<mac>[0-9a-fA-F]{12})(?P<kind>\.cfg|-softswitch\.cfg)$")
REALM = "softswitch provisioning"
TRANSPORTS = {"udp": "UDPOnly", "tcp": "TCPOnly", "tls": "TLS"}
# SRTP as Polycom UC Software names it (sec.srtp.*: enable, offer, require), per policy:
# "optional" makes a VVX offer RTP/SAVP with keys and an RTP/AVP copy (two m= lines, the
# PBX answers the first); MKI off (we take no MKI), the 80-bit tag only
SRTP = {
    "optional": {"sec.srtp.enable": "1", "sec.srtp.offer": "1", "sec.srtp.require": "0"},
    "required": {"sec.srtp.enable": "1", "sec.srtp.offer": "1", "sec.srtp.require": "1"},
}
SRTP_COMMON = {
    "sec.srtp.offer.HMAC_SHA1_80": "1",
    "sec.srtp.offer.HMAC_SHA1_32": "0",
    "sec.srtp.requireMatchingTag": "1",
    "sec.srtp.mki.enabled": "0",
}
DISPLAY_CACHE = 5.0  # seconds a hot-desk phone's display name is kept by the web process
HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",  # each phone's file holds its SIP password
    "Content-Security-Policy": "default-src 'none'",
    "X-Frame-Options": "DENY",
}


class ProvisioningSettings(Strict):
    listen: str = Field("127.0.0.1:8088", pattern=r"^(\[[0-9A-Fa-f:.]+\]|[^:\[\]]+):[0-9]{1,5}$")
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=8, max_length=128)
    auth: Literal["digest", "basic"] = "digest"  # basic only behind TLS
    sip_server: str | None = None  # default: server.public_address, else the host asked
    # "tls": every phone registers over TLS; phones of users who require SRTP do anyway
    sip_transport: Literal["udp", "tcp", "tls"] = "udp"
    sntp_server: str = Field("pool.ntp.org", min_length=1, max_length=255)
    gmt_offset: int = Field(0, ge=-12 * 3600, le=14 * 3600)  # seconds east of UTC
    daylight_saving: bool = False
    # "office": every phone with username/password; "per_phone": a phone's files need its
    # own credentials (user: its MAC, password: its provisioning_password in [[phones]])
    credentials: Literal["office", "per_phone"] = "office"
    # failed logins per source (and per account, over sources) within login_window seconds
    login_attempts: int = Field(5, ge=1, le=100)
    login_window: int = Field(300, ge=10, le=86400)
    # reverse proxies whose X-Forwarded-For is believed (none by default)
    trusted_proxies: list[IPvAnyAddress | IPvAnyNetwork] = Field(
        default_factory=list, max_length=64
    )


def master(files: str) -> bytes:
    """A Polycom master configuration naming ``files``."""
    root = ET.Element(
        "APPLICATION",
        {
            "APP_FILE_PATH": "sip.ld",
            "CONFIG_FILES": files,
            "MISC_FILES": "",
            "LOG_FILE_DIRECTORY": "",
            "OVERRIDES_DIRECTORY": "",
            "CONTACTS_DIRECTORY": "",
            "LICENSE_DIRECTORY": "",
        },
    )
    return _document(root)


def _document(root: ET.Element) -> bytes:
    text = ET.tostring(root, encoding="unicode")
    return b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n' + text.encode()


def phone_parameters(
    config: Config,
    settings: ProvisioningSettings,
    phone: Phone,
    *,
    sip_host: str,
    sip_port: int,
    display: str | None = None,
    tls_port: int | None = None,
    ca_pem: str | None = None,
) -> dict[str, str]:
    """The Polycom UC Software parameters of ``phone``, by name. ``tls_port``: the SIP
    TLS listener's (None: none); ``ca_pem``: the certificate the phone is to trust for it
    (the demo's self-signed one, or the root of the configured chain)."""
    domain = config.server.domain
    user: User | None = None
    if phone.user is not None:
        user = config.user(phone.user)
        assert user is not None
        login, password, display = user.extension, user.password, display or user.name
    else:
        login, password = phone.login, phone.password or ""
        display = display or phone.label or "Hot desk"
    policy = encryption.configured(config, user)
    transport = settings.sip_transport
    if tls_port is not None and policy == "required":
        transport = "tls"  # SRTP keys travel only over TLS
    if transport == "tls" and tls_port is not None:
        sip_port = tls_port
    elif transport == "tls":
        transport = "udp"  # no TLS listener: nothing else can work
    params = {
        "reg.1.address": login,
        "reg.1.label": phone.label or display,
        "reg.1.displayName": display,
        "reg.1.auth.userId": login,
        "reg.1.auth.password": password,
        "reg.1.server.1.address": sip_host,
        "reg.1.server.1.port": str(sip_port),
        "reg.1.server.1.transport": TRANSPORTS[transport],
        "reg.1.server.1.expires": "600",
        "reg.1.server.1.register": "1",
        "msg.mwi.1.subscribe": login,
        "msg.mwi.1.callBackMode": "contact",
        "msg.mwi.1.callBack": config.features.voicemail_access,
        "attendant.reg": "1",
        "feature.directedCallPickup.enabled": "1",
        "call.directedCallPickupMethod": "native",  # INVITE with Replaces from a BLF key
        "call.directedCallPickupString": "*8",
        "call.callWaiting.enable": "1",
        "voIpProt.SIP.alertInfo.1.value": ALERT_INFO_VALUE,
        "voIpProt.SIP.alertInfo.1.class": "autoAnswer",
        "voIpProt.SIP.keepalive.sessionTimers": "1",
        "voIpProt.SIP.specialEvent.checkSync.alwaysReboot": "0",
        "tcpIpApp.sntp.address": settings.sntp_server,
        "tcpIpApp.sntp.address.overrideDHCP": "1",
        "tcpIpApp.sntp.gmtOffset": str(settings.gmt_offset),
        "tcpIpApp.sntp.daylightSavings.enable": "1" if settings.daylight_saving else "0",
    }
    if transport == "tls":
        if ca_pem is not None:  # the server's certificate, trusted for SIP, name checked
            params["device.sec.TLS.customCaCert1"] = ca_pem
            params["device.sec.TLS.customCaCert1.set"] = "1"
            params["device.sec.TLS.profile.caCertList1"] = "Platform1"
            params["sec.TLS.profileSelection.SIP"] = "PlatformProfile1"
            params["sec.TLS.SIP.strictCertCommonNameValidation"] = "1"
        if policy in SRTP:
            params |= SRTP[policy] | SRTP_COMMON
    for n, extension in enumerate(phone.blf, 1):
        watched = config.user(extension)
        params[f"attendant.resourceList.{n}.address"] = f"{extension}@{domain}"
        params[f"attendant.resourceList.{n}.label"] = watched.name if watched else extension
        params[f"attendant.resourceList.{n}.type"] = "normal"
    return params


def trusted_certificate(config: Config) -> str | None:
    """The certificate a phone must trust for the daemon's TLS: the last of the
    configured chain (its root, or the certificate itself when self-signed), else the
    demo's self-signed one; None while there is none (the daemon makes it at start)."""
    path = config.server.tls_certificate or Path(config.server.data_dir) / "tls" / "cert.pem"
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    blocks = re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", text, re.S)
    return blocks[-1] if blocks else None


def parameters_document(params: dict[str, str]) -> bytes:
    """``<polycomConfig>`` with one element per parameter group (``reg``, ``msg``...)."""
    root = ET.Element("polycomConfig")
    groups: dict[str, ET.Element] = {}
    for name, value in params.items():
        group = name.split(".")[0]
        element = groups.get(group)
        if element is None:
            element = groups[group] = ET.SubElement(root, group)
        element.set(name, value)
    return _document(root)


class Provisioning(BaseFeature):
    """The daemon's side: it asks the web process to serve the files (:func:`build`) and
    pushes re-provisioning (:meth:`resync`)."""

    name = "provisioning"
    state = ("serving",)
    section = "provisioning"
    config_model = ProvisioningSettings

    def __post_init__(self) -> None:
        self.phones = {p.mac: p for p in phones_of(self.config)}
        self.serving = False
        options = self.options
        if options is not None and options.credentials == "per_phone":
            for phone in self.phones.values():
                if phone.provisioning_password is None:
                    raise ValueError(
                        f"phones: {phone.mac} needs a provisioning_password "
                        '(provisioning.credentials = "per_phone")'
                    )

    @property
    def options(self) -> ProvisioningSettings | None:
        settings: ProvisioningSettings | None = self.settings()
        return settings

    async def start(self, svc: Services) -> None:
        await super().start(svc)
        options = self.options
        if options is None:
            return
        svc.web.handle("provisioning.display", self._display)
        port = await svc.web.serve(
            "provisioning",
            "softswitch.features.provisioning:build",
            options.listen,
            options,
            trusted_proxies=tuple(str(p) for p in options.trusted_proxies),
        )
        self.serving = True
        log.info("event=provisioning_listening address=%s port=%d", options.listen, port)

    async def resume(self, old: object, svc: Services) -> None:
        await super().resume(old, svc)
        if self.options is not None:  # the web process now serves this configuration's phones
            await self.start(svc)
        elif self.serving:  # turned off
            await svc.web.unserve("provisioning")
            self.serving = False
            log.info("event=provisioning_stopped")

    def _display(self, args: dict[str, object]) -> str | None:
        """The name of who is logged in at hot-desk phone ``mac`` (its display)."""
        phone = self.phones.get(str(args.get("mac"))[:12])
        hot_desk = self.services.registry.feature("hot_desk")
        if phone is None or not phone.hot_desk or hot_desk is None:
            return None
        user = getattr(hot_desk, "user_on", lambda _: None)(phone)
        return user.name if user is not None else None

    # -- re-provisioning ---------------------------------------------------------------------

    async def resync(self, mac: str) -> int:
        """NOTIFY ``Event: check-sync`` to the phone's registrations: it fetches its
        configuration again. Returns how many contacts answered 2xx."""
        svc = self.services
        phone = self.phones.get(mac.lower())
        if phone is None:
            return 0
        login = phone.user if phone.user is not None else phone.login
        done = 0
        for binding in svc.devices.registrar.lookup(svc.aor(login), svc.ua.now()):
            response = await svc.ua.request(
                "NOTIFY",
                binding.contact,
                destination=binding.source,
                to=f"<{svc.aor(login)}>",
                headers=[("Event", "check-sync"), ("Subscription-State", "terminated")],
            )
            log.info(
                "event=check_sync mac=%s contact=%s status=%d",
                phone.mac,
                binding.contact,
                response.status,
            )
            done += 200 <= response.status < 300
        return done


# -- the web process's side ------------------------------------------------------------------


class ProvisioningServer:
    """The files over HTTP, in the web process. Every request needs credentials: the
    office's (``username``/``password``), or with ``credentials = "per_phone"`` each
    phone's own for its files (user: its MAC, password: its ``provisioning_password``),
    so that one guessed secret yields one phone. Failures are throttled per source and
    per account (:class:`~softswitch.web.throttle.LoginThrottle`): 429 until the window
    has passed."""

    def __init__(self, svc: WebServices, options: ProvisioningSettings) -> None:
        self.svc = svc
        self.options = options
        self.digest = sip.DigestServer(REALM, algorithms=("MD5",))
        self.throttle = LoginThrottle(options.login_attempts, float(options.login_window))
        self.requests = 0
        self.displays: dict[str, tuple[float, str | None]] = {}  # mac -> (when, who)

    @property
    def phones(self) -> dict[str, Phone]:
        return {p.mac: p for p in phones_of(self.svc.config)}

    async def serve(self, request: Request) -> Response:
        options = self.options
        source = request.client.host if request.client else "?"
        port = request.client.port if request.client else 0
        name = request.path_params["name"]
        self.requests += 1
        now = self.svc.now()
        header = request.headers.get("authorization", "")
        given = self._given(header)
        account = self._account(given)
        refusal = self.throttle.refused(source, account, now)
        if refusal is not None:
            log.info("event=provisioning_request source=%s file=%s status=429", source, name)
            wait = max(1, int(refusal.until - now))
            return Response(status_code=429, headers={"Retry-After": str(wait)})
        match = FILE.match(name)
        phone = self.phones.get(match["mac"].lower()) if match else None
        if not self._authenticated(request, given, options, phone, now):
            if header:  # wrong credentials (none at all: the first round of a challenge)
                security = self.svc.security
                security.event(
                    "auth_failed",
                    (source, port),
                    now,
                    user=account or None,
                    method=request.method,
                    reason="provisioning",
                )
                started = self.throttle.failed(source, account, now)
                if started is not None:
                    security.event(
                        "auth_throttled",
                        (source, port),
                        now,
                        user=account if started.scope == "account" else None,
                        method=request.method,
                        reason="provisioning",
                    )
            log.info("event=provisioning_request source=%s file=%s status=401", source, name)
            return self._challenge(options, now)
        body, status = await self._file(name, phone, request)
        log.info(
            "event=provisioning_request source=%s file=%s status=%d ua=%r",
            source,
            name,
            status,
            request.headers.get("user-agent", "")[:128],
        )
        if body is None:
            return Response(status_code=status)
        return Response(body, media_type="application/xml")

    async def _file(
        self, name: str, phone: Phone | None, request: Request
    ) -> tuple[bytes | None, int]:
        if name == DEFAULT_MASTER:
            return master("[PHONE_MAC_ADDRESS]-softswitch.cfg"), 200
        match = FILE.match(name)
        if match is None or phone is None:
            return None, 404
        if match["kind"] == ".cfg":
            return master(f"{phone.mac}-softswitch.cfg"), 200
        display = None
        if phone.hot_desk:
            display = await self._display(phone.mac)
        params = self.parameters(phone, request.url.hostname, display)
        return parameters_document(params), 200

    async def _display(self, mac: str) -> str | None:
        """Who is logged in at a hot-desk phone, asked of the daemon at most once per
        DISPLAY_CACHE seconds per phone (a phone that polls costs the daemon nothing)."""
        now = self.svc.now()
        cached = self.displays.get(mac)
        if cached is not None and now - cached[0] < DISPLAY_CACHE:
            return cached[1]
        found = await self.svc.call("provisioning.display", mac=mac)
        display = found if isinstance(found, str) else None
        self.displays[mac] = (now, display)
        return display

    def parameters(
        self, phone: Phone, asked_host: str | None = None, display: str | None = None
    ) -> dict[str, str]:
        options = self.options
        config = self.svc.config
        listen = next(
            (s for s in config.server.listen if s.startswith(options.sip_transport)),
            config.server.listen[0],
        )
        listen_host, _, port = listen.rpartition(":")
        listen_host = listen_host.partition(":")[2] or listen_host
        host = options.sip_server or config.server.public_address
        if host is None:
            wildcard = listen_host.strip("[]") in ("0.0.0.0", "::")
            host = asked_host if wildcard and asked_host else listen_host.strip("[]")
        tls = next((a for a in map(parse_listen, config.server.listen) if a[0] == "tls"), None)
        return phone_parameters(
            config,
            options,
            phone,
            sip_host=host,
            sip_port=int(port),
            display=display,
            tls_port=tls[2] if tls else None,
            ca_pem=trusted_certificate(config) if tls else None,
        )

    @staticmethod
    def _given(header: str) -> tuple[bytes, bytes] | sip.Credentials | None:
        """The credentials of an Authorization header, read once: basic's (user,
        password) (empty when unreadable), digest's parsed, else None."""
        if header[:6].lower() == "basic ":
            try:
                user, _, password = base64.b64decode(header[6:], validate=True).partition(b":")
            except (binascii.Error, ValueError):
                return b"", b""
            return user, password
        if header[:7].lower() == "digest ":
            try:
                return sip.parse_credentials(header)
            except sip.ParseError:
                return None
        return None

    @staticmethod
    def _account(given: tuple[bytes, bytes] | sip.Credentials | None) -> str:
        """Who the credentials claim to be ("" without any): the throttle's account."""
        if isinstance(given, tuple):
            return given[0].decode("utf-8", "replace")[:64]
        return given.username[:64] if given is not None else ""

    def _expected(
        self, options: ProvisioningSettings, phone: Phone | None
    ) -> tuple[str, str] | None:
        """The credentials this file needs: the phone's own in per-phone mode (the default
        master holds no secret and takes the office's), else the office's."""
        if options.credentials == "per_phone" and phone is not None:
            if phone.provisioning_password is None:
                return None
            return phone.mac, phone.provisioning_password
        return options.username, options.password

    def _authenticated(
        self,
        request: Request,
        given: tuple[bytes, bytes] | sip.Credentials | None,
        options: ProvisioningSettings,
        phone: Phone | None,
        now: float,
    ) -> bool:
        expected = self._expected(options, phone)
        if expected is None:
            return False
        username, password = expected
        if options.auth == "basic" and isinstance(given, tuple):
            user, secret = given
            return hmac.compare_digest(user, username.encode()) & hmac.compare_digest(
                secret, password.encode()
            )
        if options.auth == "digest" and isinstance(given, sip.Credentials):
            path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            if given.uri != path:
                return False
            known = hmac.compare_digest(given.username.encode(), username.encode())
            result = self.digest.verify(
                given,
                method=request.method,
                password=password if known else None,
                now=now,
            )
            return result is sip.AuthResult.OK
        return False

    def _challenge(self, options: ProvisioningSettings, now: float) -> Response:
        if options.auth == "basic":
            challenge = f'Basic realm="{REALM}"'
        else:
            challenge = str(self.digest.challenges(now)[0])
        return Response(status_code=401, headers={"WWW-Authenticate": challenge})


def build(svc: WebServices, options: ProvisioningSettings) -> WebApp:
    """The provisioning app of the web process (:mod:`softswitch.web`)."""
    server = ProvisioningServer(svc, options)

    def update(new: object) -> None:
        assert isinstance(new, ProvisioningSettings)
        server.options = new

    app = Starlette(routes=[Route("/{name}", server.serve, methods=["GET"])])
    return WebApp(app=app, headers=HEADERS, limits=Limits(default_body=4096), update=update)
