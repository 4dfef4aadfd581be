"""Call queues in the web console: the queue forms (typed input kept on an error, the file
rewritten and applied), the wallboard (escaped, live), the agents' log in / log out /
pause from the portal and the REST API (a user's token: its own extension only).

The console's app runs in this process against a fake daemon (the answers of ``apply``,
``queues.snapshot`` and ``queues.agent``), no web process, no sockets; one test drives the
real thing in a browser: a PBX in this process, a caller waiting in a queue, an agent
resumed from the wallboard who answers, the wallboard following it live."""

from __future__ import annotations

import asyncio
import copy
import re
import tomllib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import BrowserContext, expect

from media.clock import MediaClock
from softswitch.features.console.accounts import Accounts
from softswitch.features.console.feature import Console
from softswitch.features.console.settings import ConsoleSettings
from softswitch.features.console.web import build
from softswitch.reload import ConfigFile
from softswitch.web.child import WebServices

from .console import CSRF, office_text
from .netutil import free_port
from .office import demo_pbx
from .softphone import USERS, phone
from .test_console_browser import ARTIFACTS, browser

__all__ = ["browser"]  # the fixture, used here by name

ADMIN_PASSWORD = "admin-secret-1"
QUEUES = """
[[queues]]
extension = "700"
name = "Support"
members = ["101", "102"]

[[queues]]
extension = "701"
name = "Sales"
members = ["102"]
retry_seconds = 9

[[queues.priorities]]
caller = "+3361*"
priority = 2
"""


@dataclass
class Daemon:
    """What the daemon answers the web process: ``apply`` runs the file again, the queues'
    data follows the agents' actions."""

    file: ConfigFile
    svc: WebServices | None = None
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    agents: dict[str, dict[str, bool]] = field(default_factory=dict)
    waiting: list[dict[str, Any]] = field(default_factory=list)
    recent: list[dict[str, Any]] = field(default_factory=list)
    refuse: str | None = None  # every call fails with this (the daemon's error)

    async def call(self, name: str, args: dict[str, Any]) -> Any:
        self.calls.append((name, args))
        if self.refuse is not None:
            raise RuntimeError(self.refuse)
        if name == "apply":
            assert self.svc is not None
            self.svc.update(self.file.load(), self.file)
            return []
        if name == "console.snapshot":  # the dashboard, after the admin's login
            media = {"ticks": 0, "late_ticks": 0, "skipped_ticks": 0}
            return {"time": 0.0, "registrations": [], "calls": [], "conferences": [],
                    "media": media, "counters": {"calls": 0}}  # fmt: skip
        if name == "queues.snapshot":
            return copy.deepcopy(self.board())
        if name == "queues.agent":
            extension, action = args["extension"], args["action"]
            if extension not in ("101", "102"):
                raise RuntimeError(f"{extension} is not a member of any queue")
            agent = self.agents.setdefault(extension, {"logged_in": True, "paused": False})
            if action in ("login", "logout"):
                agent.update(logged_in=action == "login", paused=False)
            else:
                agent["paused"] = action == "pause"
            queues = ["700", "701"] if extension == "102" else ["700"]
            return {"extension": extension, **agent, "queues": queues}
        raise RuntimeError(f"no handler for {name!r}")

    def state(self, extension: str) -> str:
        agent = self.agents.get(extension, {"logged_in": True, "paused": False})
        if not agent["logged_in"]:
            return "logged_out"
        return "paused" if agent["paused"] else "available"

    def board(self) -> dict[str, Any]:
        names = {"101": "Bob <Durand>", "102": "Carol Dupont"}
        return {
            "queues": [
                {
                    "extension": "700",
                    "name": "Support",
                    "strategy": "rotating",
                    "service_level_seconds": 30,
                    "waiting": self.waiting,
                    "agents": [
                        {
                            "extension": ext,
                            "name": names[ext],
                            "state": self.state(ext),
                            "talking_to": None,
                            "answered": 3,
                            "penalty": 0,
                            **self.agents.get(ext, {"logged_in": True, "paused": False}),
                        }
                        for ext in ("101", "102")
                    ],
                    "recent": self.recent,
                    "stats": {
                        "answered": 1,
                        "abandoned": 2,
                        "timeout": 0,
                        "overflow": 0,
                        "message": 0,
                        "average_wait": 4.2,
                        "longest_wait": 75.0,
                        "service_level": 0.5,
                    },
                }
            ]
        }


@dataclass
class WebConsole:
    daemon: Daemon
    client: httpx.AsyncClient
    path: Path
    accounts: Accounts

    def saved(self) -> dict[str, Any]:
        return tomllib.loads(self.path.read_text())

    async def log_in(self, name: str, password: str) -> str:
        """A session (the client's cookie); its CSRF token."""
        self.client.cookies.clear()
        answer = await self.client.post("/login", data={"name": name, "password": password})
        assert answer.status_code == 303, answer.text[:300]
        page = await self.client.get(answer.headers["location"])
        found = CSRF.search(page.text)
        assert found is not None
        return found.group(1)

    def token(self, extension: str | None = None) -> dict[str, str]:
        role = "user" if extension else "admin"
        value = self.accounts.new_token(role, extension, f"test {extension or 'admin'}")
        return {"Authorization": f"Bearer {value}"}


@pytest.fixture
async def console(tmp_path: Path) -> AsyncIterator[WebConsole]:
    path = tmp_path / "office.toml"
    path.write_text(office_text(tmp_path, QUEUES))
    file = ConfigFile(path)
    daemon = Daemon(file)
    svc = WebServices(daemon.call)
    daemon.svc = svc
    svc.update(file.load(), file)
    settings = svc.config.section("console")
    assert isinstance(settings, ConsoleSettings)
    accounts = Accounts(svc.data_dir)
    accounts.set_admin("admin", ADMIN_PASSWORD)
    web = build(svc, settings)
    transport = httpx.ASGITransport(app=web.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://console.test") as client:
        yield WebConsole(daemon, client, path, accounts)
    web.close()
    accounts.close()


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


async def test_queues_are_listed_added_edited_and_deleted_like_ring_groups(
    console: WebConsole,
) -> None:
    csrf = await console.log_in("admin", ADMIN_PASSWORD)
    client = console.client
    listed = await client.get("/admin/queues")
    assert "700" in listed.text and "Sales" in listed.text and "102 Carol Dupont" in listed.text

    # refused: the page again with what was typed, each error beside its field
    form = {
        "csrf": csrf,
        "extension": "702",
        "name": "Billing",
        "members": "101, 1x",
        "strategy": "fixed_order",
        "ring_seconds": "999",
        "overflow": "voicemail:101",
        "music": "default",
        "announce_position_seconds": "0",
        "service_level_seconds": "20",
    }
    answer = await client.post("/admin/queues/new", data=form)
    assert answer.status_code == 422
    assert 'value="101, 1x"' in answer.text and 'value="Billing"' in answer.text
    assert "1x: expected an extension, or extension:penalty" in answer.text
    form["members"] = "101, 102:1"
    answer = await client.post("/admin/queues/new", data=form)
    assert answer.status_code == 422
    assert 'data-field="ring_seconds"' in answer.text and "less than or equal to 120" in answer.text
    assert 'value="101, 102:1"' in answer.text  # the corrected field stays corrected

    form["ring_seconds"] = "20"
    answer = await client.post("/admin/queues/new", data=form)
    assert answer.status_code == 303 and answer.headers["location"] == "/admin/queues/702"
    assert ("apply", {}) in console.daemon.calls
    billing = console.saved()["queues"][2]
    assert billing == {
        "extension": "702",
        "name": "Billing",
        "members": ["101", {"extension": "102", "penalty": 1}],
        "strategy": "fixed_order",
        "ring_seconds": 20,
        "overflow": "voicemail:101",
        "join_empty": False,  # the box was not ticked
        "announce_position_seconds": 0,
        "announce_wait": False,
        "service_level_seconds": 20,
    }
    page = await client.get("/admin/queues/702")
    assert 'value="101, 102:1"' in page.text
    assert '<option value="fixed_order" selected>' in page.text

    # an edit keeps what the form does not show (priorities, retry_seconds)
    page = await client.get("/admin/queues/701")
    assert 'value="102"' in page.text and "readonly" in page.text
    answer = await client.post(
        "/admin/queues/701",
        data={
            "csrf": csrf,
            "extension": "701",
            "name": "Sales team",
            "members": "102 101",
            "strategy": "simultaneous",
            "join_empty": "on",
            "announce_wait": "on",
            "overflow": "",
            "leave_message": "voicemail:102",
            "ring_seconds": "15",
        },
    )
    assert answer.status_code == 303, answer.text[:500]
    sales = console.saved()["queues"][1]
    assert sales["name"] == "Sales team" and sales["members"] == ["102", "101"]
    assert sales["retry_seconds"] == 9 and sales["priorities"] == [
        {"caller": "+3361*", "priority": 2}
    ]
    assert sales["leave_message"] == "voicemail:102" and "overflow" not in sales
    assert console.daemon.svc is not None
    assert [q.name for q in console.daemon.svc.config.section("queues")][1] == "Sales team"

    # a destination the dialplan does not have: the whole file's check names the field
    answer = await client.post(
        "/admin/queues/701",
        data={"csrf": csrf, "extension": "701", "name": "Sales", "overflow": "599"},
    )
    assert answer.status_code == 422 and 'data-field="overflow"' in answer.text

    answer = await client.post("/admin/queues/702/delete", data={"csrf": csrf})
    assert answer.status_code == 303
    assert [q["extension"] for q in console.saved()["queues"]] == ["700", "701"]
    forged = await client.post("/admin/queues/701/delete", data={"csrf": "forged"})
    assert forged.status_code == 403
    assert (await client.get("/admin/queues/799")).status_code == 404


async def test_the_wallboard_shows_the_queue_escaped_and_says_when_the_pbx_does_not(
    console: WebConsole,
) -> None:
    console.daemon.waiting = [
        {
            "id": "c1",
            "caller": "<script>alert(1)</script>",
            "number": "100",
            "position": 1,
            "waited": 72.4,
            "state": "ringing",
            "agents": ["101"],
        }
    ]
    console.daemon.recent = [
        {
            "caller": "Alice <100>",
            "agent": "101",
            "agent_name": "Bob <Durand>",
            "outcome": "answered",
            "waited": 4.2,
            "at": 1733580000.0,
        }
    ]
    await console.log_in("admin", ADMIN_PASSWORD)
    client = console.client
    page = await client.get("/admin/queues/wallboard")
    assert page.status_code == 200
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "<script>alert" not in page.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "Bob &lt;Durand&gt;" in page.text and "<Durand>" not in page.text
    shown = text_of(page.text)
    for words in (
        "700 · Support",
        "1:12",  # waited, m:ss
        "ringing 101",
        "1 answered today",
        "2 hung up waiting",
        "0:04 average wait",
        "1:15 longest wait",
        "50 % answered within 30 s",
        "answered by Bob &lt;Durand&gt; (101)",
        "2024-12-07 14:00:00",
    ):
        assert words in shown, words
    assert 'data-live="/live/queues"' in page.text
    assert 'data-agent="101" data-action="pause"' in page.text
    one = await client.get("/admin/queues/700/wallboard")
    assert 'data-queue="700"' in one.text
    assert (await client.get("/admin/queues/799/wallboard")).status_code == 404
    script = await client.get("/static/console.js")
    assert "function wallboard" in script.text and "textContent" in script.text

    console.daemon.refuse = "no handler for 'queues.snapshot'"
    console.daemon.calls.clear()
    await asyncio.sleep(0.6)  # past the shared answer's half second
    page = await client.get("/admin/queues/wallboard")
    assert page.status_code == 200 and "no answer from the PBX" in page.text
    assert console.daemon.calls == [("queues.snapshot", {})]

    await console.log_in("101", "bob101")  # a user: neither the page nor its feed
    assert (await client.get("/admin/queues/wallboard")).status_code == 403
    assert (await client.get("/live/queues")).status_code == 403


async def test_agents_log_in_out_and_pause_from_the_portal(console: WebConsole) -> None:
    client = console.client

    async def box() -> tuple[str, list[str]]:
        """The portal's queue box: its words, its buttons."""
        html = (await client.get("/portal")).text.partition('id="queue-box"')[2]
        html = html.partition("</section>")[0]
        return text_of(html), re.findall(r"<button[^>]*>([^<]+)</button>", html)

    csrf = await console.log_in("101", "bob101")
    words, buttons = await box()
    assert "I answer for 700 Support" in words and "Now: Available" in words
    assert buttons == ["Pause", "Log out"]

    answer = await client.post("/portal/queues", data={"csrf": csrf, "action": "pause"})
    assert answer.status_code == 303
    assert console.daemon.calls[-1] == ("queues.agent", {"extension": "101", "action": "pause"})
    assert "101 is paused" in (await client.get("/portal")).text  # the flash
    words, buttons = await box()  # at once: not the answer of a moment ago
    assert "Now: Paused" in words and buttons == ["Resume", "Log out"]

    await client.post("/portal/queues", data={"csrf": csrf, "action": "logout"})
    words, buttons = await box()
    assert "Now: Logged out" in words and buttons == ["Log in"]

    refused = await client.post("/portal/queues", data={"csrf": csrf, "action": "dance"})
    assert refused.status_code == 303
    assert "queues: one of login, logout, pause, unpause" in (await client.get("/portal")).text
    forged = await client.post("/portal/queues", data={"csrf": "x", "action": "login"})
    assert forged.status_code == 403

    await console.log_in("100", "alice100")  # a member of no queue: no box
    page = await client.get("/portal")
    assert page.status_code == 200 and 'id="queue-box"' not in page.text


async def test_the_api_shows_the_queues_and_holds_a_user_token_to_its_own_agent(
    console: WebConsole,
) -> None:
    client = console.client
    admin, bob = console.token(), console.token("101")
    board = await client.get("/api/queues", headers=admin)
    assert board.status_code == 200 and board.json()["queues"][0]["extension"] == "700"
    assert (await client.get("/api/queues", headers=bob)).status_code == 403

    answer = await client.post("/api/queues/agents/101", headers=bob, json={"action": "pause"})
    assert answer.status_code == 200, answer.text
    paused = {"extension": "101", "logged_in": True, "paused": True, "queues": ["700"]}
    assert answer.json() == paused
    other = await client.post("/api/queues/agents/102", headers=bob, json={"action": "logout"})
    assert other.status_code == 403
    answer = await client.post("/api/queues/agents/102", headers=admin, json={"action": "logout"})
    assert answer.status_code == 200 and answer.json()["logged_in"] is False
    stranger = await client.post("/api/queues/agents/100", headers=admin, json={"action": "login"})
    assert stranger.status_code == 404
    bad = await client.post("/api/queues/agents/101", headers=admin, json={"action": "nap"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "action"
    console.daemon.refuse = "101 is not a member of any queue"
    refused = await client.post("/api/queues/agents/101", headers=admin, json={"action": "login"})
    assert refused.status_code == 409 and "not a member" in refused.json()["error"]
    console.daemon.refuse = None

    # with the session's cookie, the CSRF header is needed (the wallboard's buttons send it)
    csrf = await console.log_in("admin", ADMIN_PASSWORD)
    body = {"action": "unpause"}
    assert (await client.post("/api/queues/agents/101", json=body)).status_code == 403
    answer = await client.post("/api/queues/agents/101", json=body, headers={"X-CSRF-Token": csrf})
    assert answer.status_code == 200 and answer.json()["paused"] is False

    # the queues' configuration, as ring groups'
    new = {"extension": "703", "name": "Night", "members": [{"extension": "101", "penalty": 2}]}
    created = await client.post("/api/queue_settings", headers=admin, json=new)
    assert created.status_code == 201, created.text
    changed = await client.patch(
        "/api/queue_settings/703", headers=admin, json={"strategy": "longest_idle"}
    )
    assert changed.status_code == 200 and changed.json()["strategy"] == "longest_idle"
    assert console.saved()["queues"][2]["members"] == [{"extension": "101", "penalty": 2}]
    assert (await client.delete("/api/queue_settings/703", headers=admin)).status_code == 204
    schema = (await client.get("/api/openapi.json")).json()
    assert "/api/queues/agents/{extension}" in schema["paths"]
    assert "QueueSettings" in schema["components"]["schemas"]


# -- in a browser, against the real queue ----------------------------------------------------

QUEUE_700 = """
[[queues]]
extension = "700"
name = "Support"
members = ["200"]
greeting = ""
announce_position_seconds = 0
"""


@pytest.mark.interop
async def test_the_wallboard_follows_a_caller_from_waiting_to_answered(
    tmp_path: Path, browser: BrowserContext
) -> None:
    console = f'\n[console]\nlisten = "127.0.0.1:{free_port()}"\n'
    pbx = await demo_pbx(tmp_path, extra=console + USERS + QUEUE_700, rtp=38800)
    feature = pbx.registry.feature("console")
    assert isinstance(feature, Console) and feature.url and feature.admin_password
    clock = MediaClock()
    clock.start()
    agent = phone(pbx, clock, 200, "PCMU", 600.0)
    caller = phone(pbx, clock, 201, "PCMU", 900.0)
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        await agent.start()
        await caller.start()
        await page.goto(feature.url + "login")
        await page.get_by_label("Extension or administrator").fill("admin")
        await page.get_by_label("Password").fill(feature.admin_password)
        await page.get_by_role("button", name="Log in").click()
        await page.goto(feature.url + "admin/queues/700/wallboard")
        await expect(page.locator("#live-state")).to_contain_text("live")
        row = page.locator('tbody.agents tr[data-extension="200"]')
        await expect(row).to_contain_text("Available")
        await row.get_by_role("button", name="Pause").click()  # through the API
        await expect(row.locator("td.state")).to_have_text("Paused")

        await caller.call("700")  # the queue answers; nobody free: the caller waits
        waiting = page.locator("tbody.waiting tr.caller")
        await expect(waiting).to_have_count(1)
        await expect(waiting).to_contain_text("201")
        await expect(waiting.locator("td.waited")).to_have_text(re.compile(r"^0:0[2-9]$"))
        await expect(page.locator(".n-waiting")).to_have_text("1")

        await row.get_by_role("button", name="Resume").click()  # rings 200, who answers
        await expect(page.locator("tbody.waiting")).to_contain_text("Nobody waiting")
        await expect(row.locator("td.state")).to_have_text("Talking")
        recent = page.locator("tbody.recent tr").first
        await expect(recent).to_contain_text("answered by Test 200 (200)")
        await expect(page.locator(".n-answered")).to_have_text("1")
        assert agent.legs and caller.legs
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "wallboard.png"), full_page=True)
        assert errors == []  # the script ran without an exception
    finally:
        await page.close()
        await agent.stop()
        await caller.stop()
        await clock.stop()
        await pbx.stop()
