"""The console as a person sees it, in a real browser (the Playwright set-up of
``test_console_browser``), one office for the whole walk:

- every form refused by a validation error comes back with what was typed and the error
  beside its field (users new and edit, ring groups, receptionists, business hours,
  voicemail settings, trunks, the portal), and a corrected form then saves;
- the look: the login card centred, the "Add" buttons button-sized, the fields of a form
  in one column, enum values in words, no phone password in the user page until Show,
  one date format (history and voicemail), the caller's name with the number, phones
  registered per user (three phones of Bob's), no request that 404s (the favicon);
- a screenshot of each main page in ``tests/artifacts/page-*.png``."""

from __future__ import annotations

import re
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest
import soundfile
from playwright.async_api import BrowserContext, Locator, Page, Response, expect

from softswitch.features.cdr import CallRecord, CdrStore
from softswitch.features.voicemail import VoicemailStore

from .office import started, stop_all
from .test_console_browser import ARTIFACTS, browser, console_office, log_in

pytestmark = pytest.mark.interop
__all__ = ["browser"]  # the fixture, used here by name

# Bob has two devices besides his extension: three phones of his register
BOB_DEVICES = """
[[users.devices]]
name = "desk"
username = "bob-desk"
password = "desk-secret-1"

[[users.devices]]
name = "mobile"
username = "bob-mobile"
password = "mobile-secret-2"
flip = 2
"""
STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")


def seed(data_dir: Path) -> None:
    """A voicemail message from Alice in Bob's box and three calls in the history, as
    the daemon would have left them (the pages read the same stores)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    store = VoicemailStore(data_dir)
    path = store.new_path("101")
    soundfile.write(path, np.zeros(8000 * 3, np.int16), 8000, subtype="PCM_16")
    store.add("101", "100", path, 3.0)
    store.close()
    history = CdrStore(data_dir)
    now = time.time()
    calls = [
        ("100", "Alice Martin", "101", "101", "answered", 42.0, "101"),
        ("+33612345678", "", "102", "voicemail:102", "voicemail", 0.0, "102 > voicemail:102"),
        ("101", "Bob Durand", "100", "100", "no answer", 0.0, "100"),
    ]
    for i, (caller, name, dialled, reached, result, talk, chain) in enumerate(calls):
        start = now - 3600 * (i + 1)
        history.add(
            CallRecord(
                0, f"seed-{i}", start, start + 5 if talk else None, start + 5 + talk,
                caller, name, dialled, reached, result, talk, chain,
            )
        )  # fmt: skip
    history.close()


async def shot(page: Page, name: str) -> None:
    await page.screenshot(path=str(ARTIFACTS / f"page-{name}.png"), full_page=True)


def error_beside(page: Page, field: str) -> Locator:
    """The error shown right after the label holding the field ``field``."""
    return page.locator(f'label:has([name="{field}"]) + .error')


async def left_edges(page: Page, names: list[str]) -> set[int]:
    edges = set()
    for name in names:
        box = await page.locator(f'[name="{name}"]').bounding_box()
        assert box is not None, name
        edges.add(round(box["x"]))
    return edges


async def test_forms_keep_what_was_typed_and_the_pages_read_well(
    tmp_path: Path, browser: BrowserContext
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    office_dir = tmp_path / "office"
    seed(office_dir / "data")
    office, url, password = console_office(office_dir, user_extra={"101": BOB_DEVICES})
    phones = [
        office.phone("bob", "101", 500.0),
        office.phone("bob-desk", "bob-desk", 600.0, password="desk-secret-1"),
        office.phone("bob-mobile", "bob-mobile", 700.0, password="mobile-secret-2"),
    ]
    await started(*phones)
    page = await browser.new_page()
    missing: list[str] = []

    def not_found(response: Response) -> None:
        if response.status == 404:
            missing.append(response.url)

    page.on("response", not_found)
    try:
        # -- the login card, centred ------------------------------------------------------
        await page.goto(url + "login")
        card = await page.locator("section.login").bounding_box()
        assert card is not None
        middle = card["x"] + card["width"] / 2
        assert abs(middle - 640) < 4, card  # the viewport is 1280 wide
        await shot(page, "login")
        await log_in(page, url, "admin", password)

        # -- dashboard and users: Bob's three phones --------------------------------------
        await expect(page.locator("#live-state")).to_contain_text("live")
        await expect(page.locator("#regs-count")).to_have_text("3")
        await shot(page, "dashboard")
        await page.goto(url + "admin/users")
        bob = page.locator('#users tr[data-extension="101"]')
        await expect(bob.locator("td.phones")).to_have_text("3")
        await expect(page.locator('#users tr[data-extension="100"] td.phones')).to_have_text("0")
        await expect(bob).to_contain_text("National numbers")
        add = page.get_by_role("link", name="Add a user")
        size = await add.evaluate("e => parseFloat(getComputedStyle(e).fontSize)")
        title = await page.locator("h1").evaluate("e => parseFloat(getComputedStyle(e).fontSize)")
        assert size < 17 < title, (size, title)  # a button's text, in a title's line
        await shot(page, "users")

        # -- a user: no secret in the page until Show, fields in one column, words ---------
        html = (await (await page.request.get(url + "admin/users/101")).text()).lower()
        for secret in ("bob101", "1101", "desk-secret-1", "mobile-secret-2"):
            assert secret not in html, secret
        await page.goto(url + "admin/users/101")
        assert len(await left_edges(page, ["name", "password", "kind", "forward_busy"])) == 1
        options = await page.locator('select[name="kind"] option').all_inner_texts()
        assert "message_only" not in options and "Message only" in " ".join(options)
        await expect(page.locator('select[name="dnd"] option[value="no_queue"]')).to_have_text(
            "Not for ring groups"
        )
        await shot(page, "user")
        await page.get_by_role("button", name="Show the passwords and PIN").click()
        await expect(page.get_by_label("Phone password")).to_have_value("bob101")
        await expect(page.get_by_label("Voicemail PIN")).to_have_value("1101")
        await expect(page.get_by_label("device 2 password")).to_have_value("mobile-secret-2")

        # item 1: an edit refused keeps the name typed, the error beside its field
        await page.get_by_label("Name", exact=True).fill("Robert Durand")
        await page.get_by_label("after (seconds)").fill("5")
        await page.get_by_label("device 1 flip").fill("9")
        await page.get_by_role("button", name="Save").click()
        await expect(error_beside(page, "forward_no_answer_after")).to_contain_text(
            "greater than or equal to 10"
        )
        await expect(page.locator('tr.row-errors [data-field="devices[0].flip"]')).to_contain_text(
            "less than or equal to 8"
        )
        await expect(page.get_by_label("Name", exact=True)).to_have_value("Robert Durand")
        await expect(page.get_by_label("after (seconds)")).to_have_value("5")
        await expect(page.get_by_label("device 1 flip")).to_have_value("9")
        await expect(page.get_by_label("Phone password")).to_have_value("bob101")
        await page.get_by_label("Phone password").fill("")  # no secret in the artifact
        await page.get_by_label("Voicemail PIN").fill("")
        for i in (1, 2):
            await page.get_by_label(f"device {i} password").fill("")
        await shot(page, "user-error")
        await page.get_by_label("after (seconds)").fill("15")
        await page.get_by_label("device 1 flip").fill("")  # the secrets emptied: kept
        await page.get_by_role("button", name="Save").click()
        await expect(page.locator(".flash.ok")).to_contain_text("saved and applied")
        await expect(page.get_by_role("heading", level=1)).to_contain_text("Robert Durand")

        # item 1: a new user refused keeps every field
        await page.goto(url + "admin/users/new")
        await page.get_by_label("Extension", exact=True).fill("104")
        await page.get_by_label("Name", exact=True).fill("Eve Roux")
        await page.get_by_label("Phone password").fill("eve-secret")
        await page.get_by_label("Voicemail PIN").fill("12")
        await page.get_by_label("Outside calls").select_option("international")
        await page.get_by_label("When busy").fill("101")
        await page.get_by_role("button", name="Add").click()
        await expect(error_beside(page, "pin")).to_contain_text("expected 4 to 12 digits")
        await expect(page.get_by_label("Extension", exact=True)).to_have_value("104")
        await expect(page.get_by_label("Name", exact=True)).to_have_value("Eve Roux")
        await expect(page.get_by_label("Phone password")).to_have_value("eve-secret")
        await expect(page.get_by_label("Outside calls")).to_have_value("international")
        await expect(page.get_by_label("When busy")).to_have_value("101")

        # item 1: a ring group with Then = 999 (the case)
        await page.goto(url + "admin/groups/new")
        await page.get_by_label("Number", exact=True).fill("600")
        await page.get_by_label("Name", exact=True).fill("Sales")
        await page.get_by_label("Steps, in order").fill("100 101 / 15\n102 / 20")
        await page.get_by_label("Then").fill("999")
        await page.get_by_label("The caller hears").select_option("music")
        await page.get_by_role("button", name="Add").click()
        await expect(error_beside(page, "no_answer")).to_contain_text("no extension, group")
        await expect(page.get_by_label("Then")).to_have_value("999")
        await expect(page.get_by_label("Number", exact=True)).to_have_value("600")
        await expect(page.get_by_label("Name", exact=True)).to_have_value("Sales")
        await expect(page.get_by_label("Steps, in order")).to_have_value("100 101 / 15\n102 / 20")
        await expect(page.get_by_label("The caller hears")).to_have_value("music")
        await shot(page, "group-error")
        await page.get_by_label("Then").fill("voicemail:100")
        await page.get_by_role("button", name="Add").click()
        await expect(page.locator(".flash.ok")).to_contain_text("saved and applied")
        await page.goto(url + "admin/groups")
        await expect(page.locator("main table")).to_contain_text("Sales")
        await shot(page, "groups")

        # item 1: a receptionist whose key 1 goes nowhere
        await page.goto(url + "admin/ivr/new")
        await page.get_by_label("Number", exact=True).fill("500")
        await page.get_by_label("Name", exact=True).fill("Reception")
        await page.locator("#greeting").fill("Welcome. For sales press 1.")
        await page.get_by_label("key 1").fill("777")
        await page.get_by_label("key 2").fill("voicemail:100")
        await page.get_by_label("Dial by name spells the").select_option("first")
        await page.get_by_role("button", name="Add").click()
        await expect(page.locator('.key-cell [data-field="keys.1"]')).to_contain_text(
            "no extension, group"
        )
        await expect(page.get_by_label("key 1")).to_have_value("777")
        await expect(page.get_by_label("key 2")).to_have_value("voicemail:100")
        await expect(page.locator("#greeting")).to_have_value("Welcome. For sales press 1.")
        await expect(page.get_by_label("Dial by name spells the")).to_have_value("first")
        await shot(page, "receptionist-error")
        await page.get_by_label("key 1").fill("600")
        await page.get_by_role("button", name="Add").click()
        await expect(page.locator(".flash.ok")).to_contain_text("saved and applied")
        await page.goto(url + "admin/ivr")
        await shot(page, "receptionists")

        # item 1: business hours
        await page.goto(url + "admin/hours")
        await page.get_by_label("Time zone").fill("Mars/Olympus")
        await page.get_by_label("Monday").fill("9-5")
        await page.get_by_label("Tuesday").fill("09:00-17:00")
        await page.get_by_role("button", name="Save").click()
        await expect(error_beside(page, "timezone")).to_contain_text("unknown time zone")
        await expect(error_beside(page, "monday")).to_contain_text(
            "expected a range such as 09:00-12:00"
        )
        await expect(page.get_by_label("Time zone")).to_have_value("Mars/Olympus")
        await expect(page.get_by_label("Monday")).to_have_value("9-5")
        await expect(page.get_by_label("Tuesday")).to_have_value("09:00-17:00")
        await shot(page, "hours-error")

        # item 1: voicemail settings; and the box: caller's name, one date format
        await page.goto(url + "admin/voicemail")
        await page.get_by_label("Longest message (seconds)").fill("2")
        await page.get_by_label("Messages per box").fill("77")
        await page.get_by_role("button", name="Save").click()
        await expect(error_beside(page, "max_message_seconds")).to_contain_text(
            "greater than or equal to 5"
        )
        await expect(page.get_by_label("Longest message (seconds)")).to_have_value("2")
        await expect(page.get_by_label("Messages per box")).to_have_value("77")
        message = page.locator("tr.message")
        await expect(message.locator("td.caller")).to_have_text("100 Alice Martin")
        assert STAMP.match(await message.locator("td.time").inner_text())
        await page.goto(url + "admin/voicemail")
        await shot(page, "voicemail")

        # item 1: a trunk
        await page.goto(url + "admin/trunks/new")
        await page.get_by_label("Name", exact=True).fill("provider")
        await page.get_by_label("Provider", exact=True).fill("http://sip.example.net")
        await page.get_by_label("Username").fill("office1")
        await page.get_by_label("Register with the provider").check()
        await page.get_by_role("button", name="Add").click()
        await expect(error_beside(page, "proxy")).to_contain_text(
            "expected an address starting with sip: or sips:"
        )
        await expect(page.get_by_label("Name", exact=True)).to_have_value("provider")
        await expect(page.get_by_label("Provider", exact=True)).to_have_value(
            "http://sip.example.net"
        )
        await expect(page.get_by_label("Username")).to_have_value("office1")
        await expect(page.get_by_label("Register with the provider")).to_be_checked()
        await page.get_by_label("Provider", exact=True).fill("sip:sip.example.net")
        await page.get_by_role("button", name="Add").click()
        await expect(page.locator(".flash.ok")).to_contain_text("saved and applied")
        await expect(page.get_by_label("Register with the provider")).to_be_checked()
        await expect(page.get_by_label("Username")).to_have_value("office1")

        # hold music and call history (dates as in voicemail)
        await page.goto(url + "admin/music")
        await shot(page, "music")
        await page.goto(url + "admin/calls")
        times = await page.locator("#cdr td.time").all_inner_texts()
        assert len(times) == 3 and all(STAMP.match(t) for t in times), times
        await shot(page, "calls")

        # -- the portal: Bob's own settings ------------------------------------------------
        await page.get_by_role("button", name="Log out admin").click()
        await log_in(page, url, "101", "bob101")
        await page.get_by_label("Do not disturb").select_option("no_queue")
        await page.get_by_label("When I am busy").fill("999")
        await page.get_by_label("When I do not answer").fill("100")
        await page.get_by_role("button", name="Save").click()
        await expect(error_beside(page, "forward_busy")).to_contain_text("no extension, group")
        await expect(page.get_by_label("When I am busy")).to_have_value("999")
        await expect(page.get_by_label("When I do not answer")).to_have_value("100")
        await expect(page.get_by_label("Do not disturb")).to_have_value("no_queue")
        portal_message = page.locator("tr.message")
        await expect(portal_message.locator("td.caller")).to_have_text("100 Alice Martin")
        assert STAMP.match(await portal_message.locator("td.time").inner_text())
        await page.goto(url + "portal")
        await shot(page, "portal")

        favicon = await page.request.get(url + "static/favicon.svg")
        assert favicon.ok and favicon.headers["content-type"] == "image/svg+xml"
        assert await page.locator('link[rel="icon"]').get_attribute("href") == (
            "/static/favicon.svg"
        )
        assert not missing, missing  # no request of any page answered 404
    finally:
        await stop_all(*phones)
        office.stop()
    saved = tomllib.loads(office.config_path.read_text())
    bob_saved = next(u for u in saved["users"] if u["extension"] == "101")
    assert bob_saved["name"] == "Robert Durand"
    assert bob_saved["password"] == "bob101" and bob_saved["pin"] == "1101"  # kept
    assert [d["password"] for d in bob_saved["devices"]] == ["desk-secret-1", "mobile-secret-2"]
    assert "flip" not in bob_saved["devices"][0] and bob_saved["devices"][1]["flip"] == 2
    assert bob_saved["forward"]["no_answer_after"] == 15
    assert [u["extension"] for u in saved["users"]] == ["100", "101", "102", "103"]
    assert saved["ring_groups"][0]["no_answer"] == "voicemail:100"
    assert saved["ivr"][0]["keys"] == {"1": "600", "2": "voicemail:100"}
    assert "business_hours" not in saved
    assert saved["trunks"] == [
        {
            "name": "provider",
            "proxy": "sip:sip.example.net",
            "username": "office1",
            "register": True,
        }
    ]
