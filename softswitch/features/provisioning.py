"""Polycom phone provisioning over HTTP, from the ``[[phones]]`` table.

A Polycom (UC Software) phone pointed at ``http://HOST:PORT/`` asks for its per-phone
master configuration ``<MAC>.cfg`` and, when there is none, the default
``000000000000.cfg``; the master names the configuration files to load, here
``<MAC>-softswitch.cfg``, generated for that phone: its registration (the user's
extension and password, or the hot-desk phone's own login), the SIP server, MWI, its
busy-lamp keys (``attendant.resourceList.N.*``), directed pickup, the intercom
auto-answer ring class, session timers, SNTP and the time zone.

Every request needs the office credentials (``[provisioning] username/password``, HTTP
digest, or basic when ``auth = "basic"``; compared in constant time) and is logged with
its source. An unknown MAC gets 404, wrong credentials 401. ``resync(mac)`` pushes a
re-provision: ``NOTIFY`` with ``Event: check-sync`` to the phone's registrations.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import re
import xml.etree.ElementTree as ET
from typing import Literal

from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response

import sip

from ..config import Config
from ..feature import BaseFeature
from ..model import Strict
from ..services import Services
from .intercom import ALERT_INFO_VALUE
from .phones import Phone, phones_of

log = logging.getLogger("softswitch")

DEFAULT_MASTER = "000000000000.cfg"
FILE = re.compile(r"^(?P<mac>[0-9a-fA-F]{12})(?P<kind>\.cfg|-softswitch\.cfg)$")
REALM = "softswitch provisioning"
TRANSPORTS = {"udp": "UDPOnly", "tcp": "TCPOnly"}


class ProvisioningSettings(Strict):
    listen: str = Field("127.0.0.1:8088", pattern=r"^(\[[0-9A-Fa-f:.]+\]|[^:\[\]]+):[0-9]{1,5}$")
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=8, max_length=128)
    auth: Literal["digest", "basic"] = "digest"  # basic only behind TLS
    sip_server: str | None = None  # default: server.public_address, else the host asked
    sip_transport: Literal["udp", "tcp"] = "udp"
    sntp_server: str = Field("pool.ntp.org", min_length=1, max_length=255)
    gmt_offset: int = Field(0, ge=-12 * 3600, le=14 * 3600)  # seconds east of UTC
    daylight_saving: bool = False


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
) -> dict[str, str]:
    """The Polycom UC Software parameters of ``phone``, by name."""
    domain = config.server.domain
    if phone.user is not None:
        user = config.user(phone.user)
        assert user is not None
        login, password, display = user.extension, user.password, display or user.name
    else:
        login, password = phone.login, phone.password or ""
        display = display or phone.label or "Hot desk"
    params = {
        "reg.1.address": login,
        "reg.1.label": phone.label or display,
        "reg.1.displayName": display,
        "reg.1.auth.userId": login,
        "reg.1.auth.password": password,
        "reg.1.server.1.address": sip_host,
        "reg.1.server.1.port": str(sip_port),
        "reg.1.server.1.transport": TRANSPORTS[settings.sip_transport],
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
    for n, extension in enumerate(phone.blf, 1):
        watched = config.user(extension)
        params[f"attendant.resourceList.{n}.address"] = f"{extension}@{domain}"
        params[f"attendant.resourceList.{n}.label"] = watched.name if watched else extension
        params[f"attendant.resourceList.{n}.type"] = "normal"
    return params


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
    name = "provisioning"
    state = ("digest", "requests")
    section = "provisioning"
    config_model = ProvisioningSettings

    def __post_init__(self) -> None:
        self.phones = {p.mac: p for p in phones_of(self.config)}
        self.digest = sip.DigestServer(REALM, algorithms=("MD5",))
        self.requests = 0

    @property
    def options(self) -> ProvisioningSettings | None:
        settings: ProvisioningSettings | None = self.settings()
        return settings

    async def start(self, svc: Services) -> None:
        await super().start(svc)
        options = self.options
        if options is None:
            return
        server = svc.http(options.listen)
        server.mount("/{name}", self.serve)
        await server.start()
        log.info("event=provisioning_listening address=%s", options.listen)

    async def resume(self, old: object, svc: Services) -> None:
        await super().resume(old, svc)
        if self.options is not None:  # the route now serves this configuration's phones
            await self.start(svc)

    # -- HTTP ------------------------------------------------------------------------------

    async def serve(self, request: Request) -> Response:
        options = self.options
        assert options is not None
        source = request.client.host if request.client else "?"
        name = request.path_params["name"]
        self.requests += 1
        denied = self._authenticate(request, options, source)
        if denied is not None:
            log.info("event=provisioning_request source=%s file=%s status=401", source, name)
            return denied
        body, status = self._file(name, request)
        log.info(
            "event=provisioning_request source=%s file=%s status=%d ua=%r",
            source,
            name,
            status,
            request.headers.get("user-agent", ""),
        )
        if body is None:
            return Response(status_code=status)
        return Response(body, media_type="application/xml")

    def _file(self, name: str, request: Request) -> tuple[bytes | None, int]:
        if name == DEFAULT_MASTER:
            return master("[PHONE_MAC_ADDRESS]-softswitch.cfg"), 200
        match = FILE.match(name)
        phone = self.phones.get(match["mac"].lower()) if match else None
        if match is None or phone is None:
            return None, 404
        if match["kind"] == ".cfg":
            return master(f"{phone.mac}-softswitch.cfg"), 200
        return parameters_document(self.parameters(phone, request.url.hostname)), 200

    def parameters(self, phone: Phone, asked_host: str | None = None) -> dict[str, str]:
        options = self.options
        assert options is not None
        svc = self.services
        listen = next(
            (s for s in self.config.server.listen if s.startswith(options.sip_transport)),
            self.config.server.listen[0],
        )
        listen_host, _, port = listen.rpartition(":")
        listen_host = listen_host.partition(":")[2] or listen_host
        host = options.sip_server or self.config.server.public_address
        if host is None:
            wildcard = listen_host.strip("[]") in ("0.0.0.0", "::")
            host = asked_host if wildcard and asked_host else listen_host.strip("[]")
        display = None
        hot_desk = svc.registry.feature("hot_desk")
        if phone.hot_desk and hot_desk is not None:
            user = getattr(hot_desk, "user_on", lambda _: None)(phone)
            display = user.name if user is not None else None
        return phone_parameters(
            self.config, options, phone, sip_host=host, sip_port=int(port), display=display
        )

    def _authenticate(
        self, request: Request, options: ProvisioningSettings, source: str
    ) -> Response | None:
        """None when the request carries the office credentials, else the 401."""
        header = request.headers.get("authorization", "")
        now = self.services.ua.now()
        ok = False
        if options.auth == "basic" and header[:6].lower() == "basic ":
            try:
                user, _, password = base64.b64decode(header[6:], validate=True).partition(b":")
            except (binascii.Error, ValueError):
                user = password = b""
            ok = hmac.compare_digest(user, options.username.encode()) & hmac.compare_digest(
                password, options.password.encode()
            )
        elif options.auth == "digest" and header[:7].lower() == "digest ":
            ok = self._digest_ok(request, header, options, now)
        if ok:
            return None
        if header:  # wrong credentials (none at all: the first round of a challenge)
            port = request.client.port if request.client else 0
            self.services.ua.security.event(
                "auth_failed", (source, port), now, method=request.method, reason="provisioning"
            )
        if options.auth == "basic":
            challenge = f'Basic realm="{REALM}"'
        else:
            challenge = str(self.digest.challenges(now)[0])
        return Response(status_code=401, headers={"WWW-Authenticate": challenge})

    def _digest_ok(
        self, request: Request, header: str, options: ProvisioningSettings, now: float
    ) -> bool:
        try:
            credentials = sip.parse_credentials(header)
        except sip.ParseError:
            return False
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        if credentials.uri != path:
            return False
        known = hmac.compare_digest(credentials.username.encode(), options.username.encode())
        result = self.digest.verify(
            credentials,
            method=request.method,
            password=options.password if known else None,
            now=now,
        )
        return result is sip.AuthResult.OK

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
