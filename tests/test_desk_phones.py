"""Desk-phone features against foreign phones over loopback: busy-lamp presence (a SIPp
subscriber, RFC 4235 documents checked against the RFC's schema), directed pickup
(baresip), intercom with the auto-answer headers (a SIPp callee that insists on them),
hot desk (baresip, and SIPp as the provider for 112) and session timers (SIPp peers that
refresh or not)."""

from __future__ import annotations

import asyncio
import re
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import xmlschema

from .netutil import free_port
from .office import Office, frequency, started, stop_all
from .test_pbx import office, provider_invites
from .test_sipp import sipp

pytestmark = pytest.mark.interop
__all__ = ["office"]  # the fixture

SCENARIOS = Path(__file__).parent / "sipp"
SCHEMA = Path(__file__).parent / "data" / "dialog-info.xsd"


async def run_sipp(
    office: Office,
    tmp_path: Path,
    name: str,
    *args: str,
    scenario: str | None = None,
    values: dict[str, str] | None = None,
) -> asyncio.subprocess.Process:
    """SIPp with ``scenario`` (a file in tests/sipp, its placeholders replaced by
    ``values``) against the office, in the background."""
    text = (SCENARIOS / (scenario or f"{name}.xml")).read_text()
    for key, value in (values or {}).items():
        text = text.replace(key, value)
    path = tmp_path / f"{name}.xml"
    path.write_text(text)
    return await asyncio.create_subprocess_exec(
        sipp(),
        f"127.0.0.1:{office.port}",
        *("-sf", str(path)),
        *("-i", "127.0.0.1", "-m", "1", "-nostdin", "-timeout", "40s", "-timeout_error"),
        *("-trace_msg", "-message_file", str(tmp_path / f"{name}.log")),
        *("-trace_err", "-error_file", str(tmp_path / f"{name}.err")),
        *args,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        cwd=str(tmp_path),
    )


async def finished(proc: asyncio.subprocess.Process, tmp_path: Path, name: str) -> int:
    try:
        return await asyncio.wait_for(proc.wait(), 45)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"SIPp {name} did not finish: {errors(tmp_path, name)}") from None


def errors(tmp_path: Path, name: str) -> str:
    path = tmp_path / f"{name}.err"
    return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def received(tmp_path: Path, name: str, method: str) -> list[str]:
    """The ``method`` requests SIPp received, whole, in order (its -message_file)."""
    text = (tmp_path / f"{name}.log").read_text(errors="replace")
    chunks = re.split(r"^-{20,}.*$", text, flags=re.M)
    out = []
    for chunk in chunks:
        _, _, message = chunk.partition("message received")
        message = message.split("\n", 2)[-1].strip("\n") if message else ""
        if message.startswith(f"{method} "):
            out.append(message)
    return out


def body(message: str) -> str:
    return re.split(r"\r?\n\r?\n", message, maxsplit=1)[1].strip()


async def test_busy_lamp_follows_the_call_and_star8_picks_it_up(
    office: Office, tmp_path: Path
) -> None:
    office.start()
    alice = office.phone("alice", "100", 1000.0)
    bob = office.phone("bob", "101", 800.0, answer="manual")
    carol = office.phone("carol", "102", 600.0)
    await started(alice, bob, carol)
    try:
        # a busy-lamp key on 101, while 101 takes a call from 100
        lamp = await run_sipp(
            office, tmp_path, "lamp", "-s", "101", "-au", "100", "-ap", "alice100",
            scenario="subscribe_dialog.xml",
        )  # fmt: skip
        await asyncio.sleep(1.5)
        await alice.command("dial", f"sip:101@127.0.0.1:{office.port}")
        await bob.wait_event("CALL_INCOMING")
        await asyncio.sleep(0.5)
        await bob.command("accept")
        await alice.wait_event("CALL_ESTABLISHED")
        await asyncio.sleep(1.0)
        await alice.command("hangup")
        await bob.wait_event("CALL_CLOSED")
        assert await finished(lamp, tmp_path, "lamp") == 0, errors(tmp_path, "lamp")

        # 101 rings again; 102 dials *8101 and gets the call
        await alice.command("dial", f"sip:101@127.0.0.1:{office.port}")
        await bob.wait_event("CALL_INCOMING", 2)
        await asyncio.sleep(0.5)
        await carol.command("dial", f"sip:*8101@127.0.0.1:{office.port}")
        await carol.wait_event("CALL_ESTABLISHED")
        await alice.wait_event("CALL_ESTABLISHED", 2)
        await bob.wait_event("CALL_CLOSED", 2)  # CANCEL to the phone that rang
        await asyncio.sleep(2.5)
        await alice.command("hangup")
        await carol.wait_event("CALL_CLOSED")
    finally:
        await stop_all(alice, bob, carol)
    assert len(bob.seen("CALL_ESTABLISHED")) == 1  # only the first call
    assert abs(frequency(alice.recording(), 0.5) - 600) < 10  # Alice hears Carol
    assert abs(frequency(carol.recording(), 0.5) - 1000) < 10  # and Carol hears Alice

    schema = xmlschema.XMLSchema(str(SCHEMA))
    notifies = received(tmp_path, "lamp", "NOTIFY")
    documents = [body(n) for n in notifies[:5]]
    for document in documents:
        schema.validate(document)
    ns = {"d": "urn:ietf:params:xml:ns:dialog-info"}
    trees = [ET.fromstring(d) for d in documents]
    assert [t.get("state") for t in trees] == ["full", "partial", "partial", "partial", "partial"]
    assert [int(t.get("version") or 0) for t in trees] == [1, 2, 3, 4, 5]
    assert all(t.get("entity", "").startswith("sip:101@") for t in trees)
    assert trees[0].findall("d:dialog", ns) == []  # 101 is idle at first
    states = [t.findtext("d:dialog/d:state", namespaces=ns) for t in trees[1:]]
    assert states == ["trying", "early", "confirmed", "terminated"]
    early = trees[2].find("d:dialog", ns)
    assert early is not None and early.get("direction") == "recipient"
    assert early.get("call-id") and early.get("local-tag") and early.get("remote-tag")
    remote = early.findtext("d:remote/d:identity", namespaces=ns) or ""
    assert remote.startswith("sip:100@")  # the watcher may see who calls
    assert "terminated" in notifies[-1].split("Subscription-State:")[1].split("\n")[0]


async def test_intercom_auto_answers_with_both_headers_and_refuses_who_may_not_page(
    office: Office, tmp_path: Path
) -> None:
    office.extra = '[intercom]\nallowed = ["100"]\n'
    office.start()
    alice = office.phone("alice", "100", 1000.0)
    carol = office.phone("carol", "102", 600.0)
    await started(alice, carol)
    callee = await run_sipp(
        office, tmp_path, "callee", "-s", "101", "-au", "101", "-ap", "bob101",
        "-oocsf", str(SCENARIOS / "intercom_callee.xml"), "-rtp_echo", "-mp", str(free_port()),
        scenario="register_wait.xml", values={"WAIT": "9000"},
    )  # fmt: skip
    try:
        await asyncio.sleep(1.5)
        await alice.command("dial", f"sip:*85101@127.0.0.1:{office.port}")
        await alice.wait_event("CALL_ESTABLISHED")  # SIPp answers only with both headers
        await asyncio.sleep(3.0)
        await alice.command("hangup")
        await alice.wait_event("CALL_CLOSED")
        await carol.command("dial", f"sip:*85101@127.0.0.1:{office.port}")
        closed = await carol.wait_event("CALL_CLOSED")
        assert await finished(callee, tmp_path, "callee") == 0, errors(tmp_path, "callee")
    finally:
        await stop_all(alice, carol)
    assert "403" in str(closed.get("param")), closed  # Carol may not page
    assert not carol.seen("CALL_ESTABLISHED")
    [invite] = received(tmp_path, "callee", "INVITE")
    assert re.search(r"^Alert-Info: <[^>]+>;info=alert-autoanswer", invite, re.M)
    assert re.search(r"^Call-Info: <[^>]+>;answer-after=0", invite, re.M)
    # Alice's tone went to SIPp and came back: audio flows both ways
    assert abs(frequency(alice.recording(), 0.5, 2.5) - 1000) < 10


async def test_hot_desk_login_rings_the_shared_phone_and_logout_leaves_emergency_only(
    office: Office, tmp_path: Path
) -> None:
    provider_port = free_port()
    office.extra = f"""
[[trunks]]
name = "provider"
proxy = "sip:127.0.0.1:{provider_port}"

[[phones]]
mac = "0004f2000001"
model = "VVX 250"
hot_desk = true
password = "shared-phone-secret"
"""
    office.start()
    provider = await asyncio.create_subprocess_exec(
        sipp(),
        *("-sn", "uas", "-i", "127.0.0.1", "-p", str(provider_port), "-nostdin"),
        *("-timeout", "90s", "-trace_stat", "-stf", str(tmp_path / "provider.csv"), "-fd", "1"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        cwd=str(tmp_path),
    )
    alice = office.phone("alice", "100", 1000.0)
    shared = office.phone("shared", "0004f2000001", 600.0, password="shared-phone-secret")
    await started(alice, shared)
    pbx = f"127.0.0.1:{office.port}"
    try:
        await shared.command("dial", f"sip:*90@{pbx}")  # log in as 102
        await shared.wait_event("CALL_ESTABLISHED")
        await asyncio.sleep(0.5)
        await shared.command("sndcode", "102#1102#")  # extension, then PIN
        await shared.wait_event("CALL_CLOSED", timeout=20)

        await alice.command("dial", f"sip:102@{pbx}")  # rings the shared phone now
        await shared.wait_event("CALL_ESTABLISHED", 2)  # it answers (answermode auto)
        await alice.wait_event("CALL_ESTABLISHED")
        await asyncio.sleep(1.0)
        await alice.command("hangup")
        await shared.wait_event("CALL_CLOSED", 2)

        await shared.command("dial", f"sip:*90@{pbx}")  # log out
        await shared.wait_event("CALL_ESTABLISHED", 3)
        await shared.wait_event("CALL_CLOSED", 3, timeout=10)
        await alice.command("dial", f"sip:102@{pbx}")  # 102 has no phone: voicemail
        await alice.wait_event("CALL_ESTABLISHED", 2)
        await asyncio.sleep(1.0)
        await alice.command("hangup")
        await alice.wait_event("CALL_CLOSED", 2)
        rung = len(shared.seen("CALL_ESTABLISHED"))

        await shared.command("dial", f"sip:101@{pbx}")  # logged out: refused
        refused = await shared.wait_event("CALL_CLOSED", 4)
        await shared.command("dial", f"sip:112@{pbx}")  # but emergency goes out
        await shared.wait_event("CALL_ESTABLISHED", 4)
        await asyncio.sleep(0.5)
        await shared.command("hangup")
        await shared.wait_event("CALL_CLOSED", 5)
        assert await provider_invites(tmp_path) == 1
    finally:
        provider.terminate()
        await provider.wait()
        await stop_all(alice, shared)
    assert rung == 3  # *90, Alice's call while logged in, *90: not rung after logout
    remote = shared.seen("CALL_ESTABLISHED")[1].get("peeruri", "")
    assert "100" in str(remote), shared.seen("CALL_ESTABLISHED")[1]  # the call from Alice
    assert "403" in str(refused.get("param")), refused


async def test_session_timer_ends_a_silent_call_and_keeps_a_refreshed_one(
    office: Office, tmp_path: Path
) -> None:
    office.extra = "[session_timers]\nmin_se = 2\n"  # RFC 4028 says 90: shortened to test
    office.start()
    bob = office.phone("bob", "101", 800.0)
    await started(bob)
    auth = ("-s", "101", "-au", "100", "-ap", "alice100")
    try:
        t0 = time.monotonic()
        silent = await run_sipp(office, tmp_path, "timer_silent", *auth, "-mp", str(free_port()))
        assert await finished(silent, tmp_path, "timer_silent") == 0, errors(
            tmp_path, "timer_silent"
        )
        silent_seconds = time.monotonic() - t0
        await bob.wait_event("CALL_CLOSED")  # the callee's leg ended with it
        refresh = await run_sipp(office, tmp_path, "timer_refresh", *auth, "-mp", str(free_port()))
        assert await finished(refresh, tmp_path, "timer_refresh") == 0, errors(
            tmp_path, "timer_refresh"
        )
        await bob.wait_event("CALL_CLOSED", 2)
    finally:
        await stop_all(bob)
    assert 4.5 < silent_seconds < 9.0
    assert len(received(tmp_path, "timer_refresh", "BYE")) == 0  # it hung up itself
    assert len(received(tmp_path, "timer_silent", "BYE")) == 1
