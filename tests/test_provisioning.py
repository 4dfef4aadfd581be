"""Polycom provisioning over HTTP from the in-process PBX, fetched with httpx (digest auth,
as a phone does): the master configuration, the phone's parameters (registration, BLF
keys) under the names Polycom UC Software documents, 401 and 404, and the check-sync
NOTIFY that makes a phone fetch them again."""

from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import httpx
import pytest

import sip
from softswitch.features.provisioning import Provisioning

from .netutil import free_port
from .office import demo_pbx

MAC = "0004f2aabbcc"
PHONES = """
[provisioning]
listen = "127.0.0.1:{port}"
username = "prov"
password = "prov-secret"
gmt_offset = 3600

[[phones]]
mac = "0004F2AABBCC"
model = "VVX 450"
user = "100"
blf = ["101", "102"]

[[phones]]
mac = "0004f2000001"
model = "VVX 250"
hot_desk = true
password = "shared-phone-secret"
"""

# Parameter names of Polycom UC Software 4.x-6.x administrator guides (N: an index).
DOCUMENTED = {
    "reg.N.address",
    "reg.N.label",
    "reg.N.displayName",
    "reg.N.auth.userId",
    "reg.N.auth.password",
    "reg.N.server.N.address",
    "reg.N.server.N.port",
    "reg.N.server.N.transport",
    "reg.N.server.N.expires",
    "reg.N.server.N.register",
    "msg.mwi.N.subscribe",
    "msg.mwi.N.callBackMode",
    "msg.mwi.N.callBack",
    "attendant.reg",
    "attendant.resourceList.N.address",
    "attendant.resourceList.N.label",
    "attendant.resourceList.N.type",
    "feature.directedCallPickup.enabled",
    "call.directedCallPickupMethod",
    "call.directedCallPickupString",
    "call.callWaiting.enable",
    "voIpProt.SIP.alertInfo.N.value",
    "voIpProt.SIP.alertInfo.N.class",
    "voIpProt.SIP.keepalive.sessionTimers",
    "voIpProt.SIP.specialEvent.checkSync.alwaysReboot",
    "tcpIpApp.sntp.address",
    "tcpIpApp.sntp.address.overrideDHCP",
    "tcpIpApp.sntp.gmtOffset",
    "tcpIpApp.sntp.daylightSavings.enable",
    # TLS and SRTP (UC Software 5.x/6.x; Wazo's and FusionPBX's Polycom templates)
    "device.sec.TLS.customCaCertN",
    "device.sec.TLS.customCaCertN.set",
    "device.sec.TLS.profile.caCertListN",
    "sec.TLS.profileSelection.SIP",
    "sec.TLS.SIP.strictCertCommonNameValidation",
    "sec.srtp.enable",
    "sec.srtp.offer",
    "sec.srtp.require",
    "sec.srtp.offer.HMAC_SHA1_80",
    "sec.srtp.offer.HMAC_SHA1_32",
    "sec.srtp.requireMatchingTag",
    "sec.srtp.mki.enabled",
}
MASTER_ATTRIBUTES = {
    "APP_FILE_PATH",
    "CONFIG_FILES",
    "MISC_FILES",
    "LOG_FILE_DIRECTORY",
    "OVERRIDES_DIRECTORY",
    "CONTACTS_DIRECTORY",
    "LICENSE_DIRECTORY",
}


def generic_name(name: str) -> str:
    """``reg.1.server.1.port`` -> ``reg.N.server.N.port``, ``customCaCert1`` -> ``...N``."""
    return re.sub(r"(?<=[a-zA-Z.])\d+(?=\.|$)", "N", name)


def parameters(xml: bytes) -> dict[str, str]:
    root = ET.fromstring(xml)
    assert root.tag == "polycomConfig"
    out: dict[str, str] = {}
    for element in root.iter():
        out.update(element.attrib)
    return out


async def test_phone_fetches_its_configuration_with_digest_credentials(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="softswitch")
    http_port = free_port()
    pbx = await demo_pbx(tmp_path, extra=PHONES.format(port=http_port), rtp=34400)
    sip_port = pbx.ua.listeners[0].port
    base = f"http://127.0.0.1:{http_port}"
    try:
        auth = httpx.DigestAuth("prov", "prov-secret")
        async with httpx.AsyncClient(base_url=base, auth=auth, timeout=5) as client:
            default = await client.get("/000000000000.cfg")
            assert default.status_code == 200
            root = ET.fromstring(default.content)
            assert root.tag == "APPLICATION" and set(root.attrib) == MASTER_ATTRIBUTES
            assert root.attrib["CONFIG_FILES"] == "[PHONE_MAC_ADDRESS]-softswitch.cfg"

            master = await client.get(f"/{MAC}.cfg")  # the per-phone master, first asked
            assert master.status_code == 200
            files = ET.fromstring(master.content).attrib["CONFIG_FILES"]
            assert files == f"{MAC}-softswitch.cfg"
            response = await client.get(f"/{files}")
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("application/xml")
            params = parameters(response.content)

            shared = parameters((await client.get("/0004f2000001-softswitch.cfg")).content)
            unknown = await client.get("/0004f2ffffff.cfg")
            unknown_params = await client.get("/0004f2ffffff-softswitch.cfg")
        async with httpx.AsyncClient(base_url=base, timeout=5) as anonymous:
            challenge = await anonymous.get(f"/{MAC}.cfg")
            wrong = await anonymous.get(
                f"/{MAC}-softswitch.cfg", auth=httpx.DigestAuth("prov", "guess")
            )
            basic = await anonymous.get(f"/{MAC}.cfg", auth=("prov", "prov-secret"))
    finally:
        await pbx.stop()

    assert unknown.status_code == 404 and unknown_params.status_code == 404
    assert challenge.status_code == 401
    assert challenge.headers["www-authenticate"].startswith("Digest ")
    assert wrong.status_code == 401 and b"reg." not in wrong.content
    assert basic.status_code == 401  # digest is configured: no basic credentials

    generic = {generic_name(name) for name in params}
    assert generic <= DOCUMENTED, generic - DOCUMENTED
    assert params["reg.1.address"] == "100"
    assert params["reg.1.auth.userId"] == "100"
    assert params["reg.1.auth.password"] == "alice100"
    assert params["reg.1.displayName"] == "Alice Martin"
    assert params["reg.1.server.1.address"] == "127.0.0.1"
    assert params["reg.1.server.1.port"] == str(sip_port)
    assert params["reg.1.server.1.transport"] == "UDPOnly"
    assert params["msg.mwi.1.subscribe"] == "100"
    assert params["attendant.resourceList.1.address"] == "101@demo.softswitch"
    assert params["attendant.resourceList.1.label"] == "Bob Durand"
    assert params["attendant.resourceList.2.address"] == "102@demo.softswitch"
    assert params["attendant.resourceList.2.type"] == "normal"
    assert "attendant.resourceList.3.address" not in params
    assert params["voIpProt.SIP.alertInfo.1.value"] == "alert-autoanswer"
    assert params["voIpProt.SIP.alertInfo.1.class"] == "autoAnswer"
    assert params["tcpIpApp.sntp.gmtOffset"] == "3600"
    # the shared phone registers with its own login
    assert shared["reg.1.address"] == "0004f2000001"
    assert shared["reg.1.auth.password"] == "shared-phone-secret"

    logged = [r.getMessage() for r in caplog.records if "provisioning_request" in r.getMessage()]
    assert any(f"file={MAC}-softswitch.cfg status=200" in line for line in logged)
    # wrong credentials are failed logins for fail2ban; no credentials are not
    refused = [r.getMessage() for r in caplog.records if r.name == "security"]
    assert len(refused) == 2, refused  # the wrong digest password, the basic credentials
    assert all(
        re.fullmatch(
            r"event=auth_failed src=127\.0\.0\.1:\d+ user=\S+ method=GET reason=provisioning", line
        )
        for line in refused
    ), refused
    assert any("status=401" in line for line in logged)
    assert any("file=0004f2ffffff.cfg status=404" in line for line in logged)


async def test_check_sync_notify_reaches_the_registered_phone(tmp_path: Path) -> None:
    pbx = await demo_pbx(tmp_path, extra=PHONES.format(port=free_port()), rtp=34800)
    port = pbx.ua.listeners[0].port
    got: list[sip.Request] = []
    try:
        async with sip.UserAgent("udp:127.0.0.1:0", user="100") as phone:

            def on_notify(incoming: sip.IncomingRequest) -> None:
                got.append(incoming.request)
                incoming.respond(200)

            phone.handlers["NOTIFY"] = on_notify
            await phone.register(
                f"sip:127.0.0.1:{port}",
                aor="sip:100@demo.softswitch",
                username="100",
                password="alice100",
                expires=300,
            )
            feature = pbx.registry.feature("provisioning")
            assert isinstance(feature, Provisioning)
            assert await feature.resync(MAC) == 1
            assert await feature.resync("0004f2ffffff") == 0  # not a phone of ours
    finally:
        await pbx.stop()
    [notify] = got
    assert notify.headers.get("Event") == "check-sync"


async def test_phones_of_users_who_require_srtp_get_tls_srtp_and_the_certificate(
    tmp_path: Path,
) -> None:
    http_port = free_port()
    pbx = await demo_pbx(
        tmp_path,
        extra=PHONES.format(port=http_port),
        server='media_encryption = "required"',
        rtp=34800,
        tls=True,
    )
    tls_port = pbx.ua.listeners[-1].port
    cert = (tmp_path / "data" / "tls" / "cert.pem").read_text().strip()
    try:
        auth = httpx.DigestAuth("prov", "prov-secret")
        base = f"http://127.0.0.1:{http_port}"
        async with httpx.AsyncClient(base_url=base, auth=auth, timeout=5) as client:
            params = parameters((await client.get(f"/{MAC}-softswitch.cfg")).content)
    finally:
        await pbx.stop()
    generic = {generic_name(name) for name in params}
    assert generic <= DOCUMENTED, generic - DOCUMENTED
    assert params["reg.1.server.1.transport"] == "TLS"
    assert params["reg.1.server.1.port"] == str(tls_port)
    assert params["device.sec.TLS.customCaCert1"].strip() == cert  # the demo certificate
    assert params["sec.TLS.profileSelection.SIP"] == "PlatformProfile1"
    assert params["sec.TLS.SIP.strictCertCommonNameValidation"] == "1"
    srtp = {k: params[k] for k in ("sec.srtp.enable", "sec.srtp.offer", "sec.srtp.require")}
    assert srtp == {"sec.srtp.enable": "1", "sec.srtp.offer": "1", "sec.srtp.require": "1"}
    assert params["sec.srtp.mki.enabled"] == "0"  # the PBX takes no MKI
