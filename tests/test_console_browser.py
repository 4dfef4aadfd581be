"""The web console in a real browser: Playwright driving Debian's headless Chromium against
``softswitch run``, with baresip phones and SIPp on loopback.

What a person does there, and what the phones then hear: refused uploads (too large, not
audio) show their error and the old hold music keeps playing; an uploaded file becomes
the hold music a held caller hears (correlated with the file); the live dashboard shows a
call appear and disappear; the receptionist editor speaks its greeting (the TTS preview)
and saves; a user sets forwarding in the portal and a SIPp call follows it. Screenshots
of the dashboard and the receptionist editor go to ``tests/artifacts/`` (not committed)."""

from __future__ import annotations

import asyncio
import shutil
import time
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import soundfile
from playwright.async_api import BrowserContext, Page, async_playwright, expect

from softswitch.features.hold_music import builtin_music

from .audio import best_correlation
from .netutil import free_port
from .office import Office, segment, started, stop_all
from .test_call_handling import TRUNK_IP
from .test_sipp import SCENARIOS, counts, run_sipp

pytestmark = pytest.mark.interop
ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[BrowserContext]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail("chromium is not installed: run scripts/system-deps.sh (make test does)")
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),  # a fresh profile
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        context.set_default_timeout(15_000)
        try:
            yield context
        finally:
            await context.close()


def console_office(
    tmp_path: Path, extra: str = "", user_extra: dict[str, str] | None = None
) -> tuple[Office, str, str]:
    """A running office with the console; its URL and the admin password of the banner."""
    office = Office(tmp_path, user_extra=user_extra or {})
    office.extra = f'\n[console]\nlisten = "127.0.0.1:{free_port()}"\n{extra}'
    proc = office.start()
    url = proc.wait_for(r"web console (http://\S+)").group(1)
    password = proc.wait_for(r"console login: admin / (\S+)").group(1)
    return office, url, password


async def log_in(page: Page, url: str, name: str, password: str) -> None:
    await page.goto(url + "login")
    await page.get_by_label("Extension or administrator").fill(name)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Log in").click()
    await expect(page.get_by_role("button", name=f"Log out {name}")).to_be_visible()


def new_music(path: Path) -> np.ndarray:
    """3 s of tones at random pitches, 100 ms each (nothing like the built-in tune)."""
    rng = np.random.default_rng(15)
    t = np.arange(800) / 8000
    notes = [np.sin(2 * np.pi * f * t) for f in rng.uniform(300, 1800, 30)]
    music = (np.concatenate(notes) * 9000).astype(np.int16)
    soundfile.write(path, music, 8000, subtype="PCM_16")
    return music


def heard(recording: Path, start: float, end: float, reference: np.ndarray) -> float:
    """How well what was heard between ``start`` and ``end`` matches the looping
    ``reference`` (the player starts anywhere in it)."""
    audio, _ = segment(recording, start, end)
    return best_correlation(np.tile(reference, 3), audio[: min(len(audio), 12000)])


async def upload(page: Page, path: Path) -> None:
    await page.get_by_label("File (WAV or MP3, at most 5 MB)").set_input_files(str(path))
    await page.get_by_role("button", name="Upload").click()


async def test_uploads_hold_music_dashboard_and_receptionist_editor(
    tmp_path: Path, browser: BrowserContext
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    office, url, password = console_office(tmp_path)
    music = new_music(tmp_path / "new-music.wav")
    oversized = tmp_path / "huge.wav"
    soundfile.write(oversized, np.zeros(3_200_000, np.int16), 8000, subtype="PCM_16")
    (tmp_path / "notes.mp3").write_text("not audio at all\n" * 100)
    alice = office.phone("alice", "100", 1000.0)
    bob = office.phone("bob", "101", 600.0)
    await started(alice, bob)
    page = await browser.new_page()
    dashboard = await browser.new_page()
    try:
        await log_in(page, url, "admin", password)
        await dashboard.goto(url + "admin")
        await expect(dashboard.locator("#live-state")).to_contain_text("live")
        await expect(dashboard.locator("#calls")).to_contain_text("No call")

        await alice.command("dial", f"sip:101@127.0.0.1:{office.port}")
        await alice.wait_event("CALL_ESTABLISHED")
        t0 = time.monotonic()
        await bob.wait_event("CALL_ESTABLISHED")
        call_row = dashboard.locator("#calls tr.call")
        await expect(call_row).to_have_count(1)  # the call appears, live
        await expect(call_row).to_contain_text("100 Alice Martin")
        await expect(call_row).to_contain_text("101 Bob Durand")
        await expect(call_row).to_contain_text("talking")
        await dashboard.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

        # refused uploads: the error is shown, nothing changes
        await page.goto(url + "admin/music")
        await upload(page, oversized)
        await expect(page.locator("#upload-error")).to_contain_text("larger than 5 MB")
        await upload(page, tmp_path / "notes.mp3")
        await expect(page.locator("#upload-error")).to_contain_text("not an MP3/WAV/FLAC file")
        assert "hold_music" not in tomllib.loads(office.config_path.read_text())

        await bob.command("hold")  # Alice hears the old (built-in) music
        old_hold = time.monotonic() - t0
        await asyncio.sleep(4)
        await bob.command("resume")
        old_resume = time.monotonic() - t0

        await upload(page, tmp_path / "new-music.wav")  # during the call: it goes on
        await expect(page.locator(".flash.ok")).to_contain_text("new-music.wav plays now")
        await bob.command("hold")  # now the new file
        new_hold = time.monotonic() - t0
        await asyncio.sleep(4)
        await bob.command("resume")
        await asyncio.sleep(1.5)
        await alice.command("hangup")
        await bob.wait_event("CALL_CLOSED")
        await expect(dashboard.locator("#calls")).to_contain_text("No call")  # and it goes
        await expect(call_row).to_have_count(0)

        # the receptionist editor: the greeting spoken by the TTS, then saved
        await page.goto(url + "admin/ivr/new")
        await page.get_by_label("Number", exact=True).fill("500")
        await page.get_by_label("Name", exact=True).fill("Reception")
        greeting = "Welcome to the office. For Bob press 1. For voicemail press 2."
        await page.locator("#greeting").fill(greeting)
        await page.get_by_label("key 1").fill("101")
        await page.get_by_label("key 2").fill("voicemail:100")
        async with page.expect_response(lambda r: "/admin/tts" in r.url) as spoken:
            await page.get_by_role("button", name="Listen").click()
        answer = await spoken.value
        assert answer.status == 200 and answer.headers["content-type"] == "audio/wav"
        assert int(answer.headers["content-length"]) > 16000  # a second or more of speech
        await expect(page.locator("#preview")).to_be_visible()
        await page.screenshot(path=str(ARTIFACTS / "receptionist.png"), full_page=True)
        await page.get_by_role("button", name="Add").click()
        await expect(page.locator(".flash.ok")).to_contain_text("saved and applied")
    finally:
        await stop_all(alice, bob)
        office.stop()
    saved = tomllib.loads(office.config_path.read_text())
    assert saved["ivr"][0]["keys"] == {"1": "101", "2": "voicemail:100"}
    kept = Path(saved["hold_music"]["default"])
    assert kept.parent == office.data_dir / "audio" / "music" and kept.suffix == ".wav"
    recording = alice.recording()
    old = builtin_music(8000)
    before = heard(recording, old_hold + 1.0, old_resume - 0.3, old)
    assert before > 0.6, before  # the refused uploads left the old music playing
    assert heard(recording, old_hold + 1.0, old_resume - 0.3, music) < 0.4
    after = heard(recording, new_hold + 1.0, new_hold + 3.5, music)
    assert after > 0.6, after  # the uploaded file is what a held caller hears
    assert heard(recording, new_hold + 1.0, new_hold + 3.5, old) < 0.4


async def test_forwarding_set_in_the_user_portal_is_followed_by_a_sipp_call(
    tmp_path: Path, browser: BrowserContext
) -> None:
    trunk = f"""
[[trunks]]
name = "provider"
proxy = "sip:127.0.0.1:{free_port()}"
addresses = ["{TRUNK_IP}"]
"""
    office, url, _ = console_office(tmp_path, trunk)
    bob = office.phone("bob", "101", 600.0)
    await started(bob)
    page = await browser.new_page()
    scenario = tmp_path / "call-carol.xml"
    scenario.write_text(
        (SCENARIOS / "invite_call.xml")
        .read_text()
        .replace("NUMBER", "102")
        .replace("CALLER", "+33612345678")
    )
    sipp = [f"127.0.0.1:{office.port}", "-sf", str(scenario), "-m", "1", "-i", TRUNK_IP]
    try:
        # Carol has no phone on: her calls go to voicemail, which answers SIPp's call
        result = await asyncio.to_thread(run_sipp, [*sipp, "-p", str(free_port(host=TRUNK_IP))])
        assert result.returncode == 0 and counts(result.stdout) == (1, 0), result.stdout[-1500:]
        assert not bob.seen("CALL_INCOMING")

        await log_in(page, url, "102", "carol102")  # her extension and phone password
        await page.get_by_label("When no phone of mine is on").fill("101")
        await page.get_by_role("button", name="Save").click()
        await expect(page.locator(".flash.ok")).to_contain_text("saved and in use")
        await expect(page.get_by_label("When no phone of mine is on")).to_have_value("101")

        result = await asyncio.to_thread(run_sipp, [*sipp, "-p", str(free_port(host=TRUNK_IP))])
        assert result.returncode == 0 and counts(result.stdout) == (1, 0), result.stdout[-1500:]
        await bob.wait_event("CALL_ESTABLISHED")  # the call followed her forwarding
        await bob.wait_event("CALL_CLOSED")

        await page.reload()  # and her call history says so
        rows = page.locator("section:has(h2:text('My calls')) tbody tr")
        await expect(rows).to_have_count(2)
        await expect(rows.nth(0)).to_contain_text("+33612345678")
        await expect(rows.nth(0)).to_contain_text("answered")
        await expect(rows.nth(1)).to_contain_text("voicemail")
    finally:
        await stop_all(bob)
        office.stop()
    saved = tomllib.loads(office.config_path.read_text())
    carol = next(u for u in saved["users"] if u["extension"] == "102")
    assert carol["forward"] == {"unreachable": "101"}
