"""A phone in the browser: headless Chromium (Debian's, under Playwright) runs JsSIP in a
bare page, registers over secure WebSocket and calls a baresip desk phone through the
PBX, then is called by it: ICE-lite, DTLS-SRTP, G.711 at the desk phone; then the user
portal's phone page does it all (calls, is called, held, conference, transfer). The
browser's fake microphone plays 600 Hz (baresip must hear it), baresip sends 1000 Hz
(the page must measure it, Web Audio).

Everything runs in a network namespace with loopback alone (tests/netns.py): Chromium
then offers no candidate of this machine's interfaces."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Awaitable
from pathlib import Path

import pytest
import soundfile
from playwright.async_api import Browser, Page, Playwright, async_playwright

from media.tones import sine_mix

from .audio import active, dominant_frequency
from .baresip import Phone
from .netns import loopback_only
from .netutil import ROOT, free_port
from .office import demo_pbx, segment

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(os.geteuid() != 0, reason="a network namespace needs root"),
]
CHROMIUM = "/usr/bin/chromium"
PAGE = Path(__file__).parent / "data" / "browser_phone.html"
BUNDLE = ROOT / "js" / "dist" / "jssip.js"
ARTIFACTS = Path(__file__).parent / "artifacts"  # screenshots (not committed)


async def serve_page() -> tuple[asyncio.Server, int]:
    """The bare page and JsSIP's bundle over HTTP on 127.0.0.1 (a secure context)."""
    files = {b"/": (PAGE, b"text/html"), b"/jssip.js": (BUNDLE, b"text/javascript")}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await reader.readuntil(b"\r\n\r\n")
            path = request.split(b" ", 2)[1]
            found = files.get(path)
            if found is None:
                writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            else:
                body = found[0].read_bytes()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: "
                    + found[1]
                    + b"\r\nContent-Length: "
                    + str(len(body)).encode()
                    + b"\r\nConnection: close\r\n\r\n"
                    + body
                )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def chromium(playwright: Playwright, microphone: Path, *extra: str) -> Awaitable[Browser]:
    """Headless Chromium whose microphone plays ``microphone`` and whose WebRTC may use
    loopback addresses (the only ones in the test's namespace)."""
    return playwright.chromium.launch(
        executable_path=CHROMIUM,
        args=[
            "--no-sandbox",
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={microphone}",
            "--allow-loopback-in-peer-connection",
            "--autoplay-policy=no-user-gesture-required",
            *extra,
        ],
    )


async def portal_phone(browser: Browser, url: str, user: str, password: str) -> Page:
    """The user's phone page in the portal, logged in, registered ("ready")."""
    from playwright.async_api import expect

    page = await browser.new_page()
    page.set_default_timeout(15_000)
    await page.goto(url + "login")
    await page.get_by_label("Extension or administrator").fill(user)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Log in").click()
    await page.get_by_role("link", name="Phone").click()
    await expect(page.locator("#phone-state")).to_have_text("ready")
    return page


async def test_a_browser_calls_a_desk_phone_and_is_called_by_it(tmp_path: Path) -> None:
    if shutil.which(CHROMIUM) is None:
        pytest.fail("chromium is not installed: run scripts/system-deps.sh (make test does)")
    assert BUNDLE.exists(), "js/dist/jssip.js is missing: make test builds it (npm run build)"
    tone = tmp_path / "tone600.wav"
    soundfile.write(tone, sine_mix((600.0,), 48000 * 30, 48000, -12), 48000, subtype="PCM_16")
    bob_tone = tmp_path / "tone1000.wav"
    soundfile.write(bob_tone, sine_mix((1000.0,), 8000 * 60, 8000, -12), 8000, subtype="PCM_16")
    with loopback_only():
        pbx = await demo_pbx(tmp_path, ws=True)
        sip_port = pbx.ua.listeners[0].port
        wss_port = next(x.port for x in pbx.ua.listeners if x.transport == "wss")
        bob = Phone(
            "bob",
            tmp_path / "bob",
            f"<sip:101@127.0.0.1:{sip_port}>;auth_pass=bob101;regint=300;answermode=auto;"
            "audio_codecs=PCMU",
            bob_tone,
            free_port(),
            free_port(),
            46000,
        )
        http, http_port = await serve_page()
        try:
            await bob.start()
            await bob.wait_event("REGISTER_OK")
            async with async_playwright() as playwright:
                browser = await chromium(playwright, tone, "--ignore-certificate-errors")
                try:
                    page = await browser.new_page()
                    await page.goto(f"http://127.0.0.1:{http_port}/")
                    url = f"wss://127.0.0.1:{wss_port}"  # SIP over secure WebSocket
                    assert (
                        await page.evaluate(
                            "(u) => register(u, '100', 'alice100', 'demo.softswitch')", url
                        )
                        == "registered"
                    )
                    # the browser calls the desk phone
                    assert await page.evaluate("dial('sip:101@demo.softswitch')") == "confirmed"
                    await bob.wait_event("CALL_ESTABLISHED")
                    heard = await page.evaluate("measure(2.5)")
                    await page.evaluate("hangup()")
                    await bob.wait_event("CALL_CLOSED")
                    assert abs(heard["hz"] - 1000) < 15, heard  # the page hears baresip
                    first_call = bob.recording()
                    # the desk phone calls the browser: it rings in the page, which answers
                    await bob.command("dial", f"sip:100@127.0.0.1:{sip_port}")
                    await page.wait_for_function("window.events.includes('incoming')")
                    await page.evaluate("answer()")
                    await bob.wait_event("CALL_ESTABLISHED", count=2)
                    heard_back = await page.evaluate("measure(2.5)")
                    await bob.command("hangup")
                    await page.wait_for_function("window.events.includes('ended')")
                    assert abs(heard_back["hz"] - 1000) < 15, heard_back
                finally:
                    await browser.close()
        finally:
            http.close()
            await bob.stop()
            await pbx.stop()
    for recording in (first_call, bob.recording()):  # baresip hears the page, both calls
        audio, rate = segment(recording, 0.5)
        assert abs(dominant_frequency(active(audio), rate) - 600) < 10, recording


MEASURE = """async (seconds) => {
  const stream = document.getElementById('phone-remote').srcObject;
  const ctx = new AudioContext();
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 8192;
  ctx.createMediaStreamSource(stream).connect(analyser);
  await new Promise((r) => setTimeout(r, seconds * 1000));
  const data = new Float32Array(analyser.frequencyBinCount);
  analyser.getFloatFrequencyData(data);
  let best = 1;
  for (let i = 1; i < data.length; i++) if (data[i] > data[best]) best = i;
  return best * ctx.sampleRate / analyser.fftSize;
}"""


async def test_the_portal_phone_calls_is_called_and_is_held(tmp_path: Path) -> None:
    """The user portal's phone page (JsSIP, served by the console): 100 logs in, calls
    baresip 101 (tones both ways), is called back and answers in the page, is held by 101
    and hears the hold music (an 800 Hz file here), holds 101 (who then hears it), hangs
    up."""
    from playwright.async_api import expect

    from .office import Office

    tone = tmp_path / "tone600.wav"
    soundfile.write(tone, sine_mix((600.0,), 48000 * 60, 48000, -12), 48000, subtype="PCM_16")
    music = tmp_path / "music800.wav"
    soundfile.write(music, sine_mix((800.0,), 8000 * 30, 8000, -12), 8000, subtype="PCM_16")
    with loopback_only():
        office = Office(tmp_path, ws=True)
        office.extra = (
            f'[hold_music]\ndefault = "{music}"\n[console]\nlisten = "127.0.0.1:{free_port()}"\n'
        )
        proc = office.start()
        url = proc.wait_for(r"web console (http://\S+)").group(1)
        bob = office.phone("bob", "101", 1000.0)
        try:
            await bob.start()
            await bob.wait_event("REGISTER_OK")
            async with async_playwright() as playwright:
                browser = await chromium(playwright, tone)
                try:
                    page = await portal_phone(browser, url, "100", "alice100")
                    state = page.locator("#phone-state")
                    # a call from the page
                    await page.locator("#phone-number").fill("101")
                    await page.get_by_role("button", name="Call").click()
                    await bob.wait_event("CALL_ESTABLISHED")
                    await expect(state).to_have_text("in call")
                    ARTIFACTS.mkdir(exist_ok=True)  # the phone page in a call, for people
                    await page.screenshot(path=str(ARTIFACTS / "portal-phone-in-call.png"))
                    heard = await page.evaluate(MEASURE, 2.5)
                    await page.get_by_role("button", name="Hang up").click()
                    await bob.wait_event("CALL_CLOSED")
                    assert abs(heard - 1000) < 15, heard
                    first_call = bob.recording()
                    # a call to the page: it rings, the user answers
                    await bob.command("dial", f"sip:100@127.0.0.1:{office.port}")
                    await expect(state).to_have_text("ringing")
                    await page.get_by_role("button", name="Answer").click()
                    await bob.wait_event("CALL_ESTABLISHED", count=2)
                    answered_at = time.monotonic()  # Bob's second recording starts about now
                    await expect(state).to_have_text("in call")
                    heard_back = await page.evaluate(MEASURE, 2.0)
                    # the page holds Bob: he hears the music while held
                    t_hold = time.monotonic() - answered_at
                    await page.get_by_role("button", name="Hold").click()
                    await asyncio.sleep(2.5)
                    await page.get_by_role("button", name="Resume").click()
                    t_resume = time.monotonic() - answered_at
                    await asyncio.sleep(1.0)
                    # Bob holds the page: it hears the hold music (baresip records no more
                    # once it has held a call, so this comes second)
                    await bob.command("hold")  # the page hears the hold music
                    await asyncio.sleep(1.0)
                    held = await page.evaluate(MEASURE, 2.0)
                    await bob.command("resume")
                    await asyncio.sleep(1.0)
                    await page.get_by_role("button", name="Hang up").click()
                    await bob.wait_event("CALL_CLOSED", count=2)
                    await expect(state).to_have_text("ready")
                    assert abs(heard_back - 1000) < 15, heard_back
                    assert abs(held - 800) < 15, held
                finally:
                    await browser.close()
        finally:
            await bob.stop()
            office.stop()
    for recording in (first_call, bob.recording()):  # baresip hears the page, both calls
        audio, rate = segment(recording, 0.5, 2.0)
        assert abs(dominant_frequency(active(audio), rate) - 600) < 10, recording
    held_by_page, rate = segment(bob.recording(), t_hold + 0.8, t_resume - 0.3)
    assert abs(dominant_frequency(held_by_page, rate) - 800) < 10  # the music, not the page


LEVELS = """async ([seconds, freqs]) => {
  const stream = document.getElementById('phone-remote').srcObject;
  const ctx = new AudioContext();
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 8192;
  ctx.createMediaStreamSource(stream).connect(analyser);
  await new Promise((r) => setTimeout(r, seconds * 1000));
  const data = new Float32Array(analyser.frequencyBinCount);
  analyser.getFloatFrequencyData(data);
  const bin = (hz) => Math.round(hz * analyser.fftSize / ctx.sampleRate);
  const sorted = Array.from(data).sort((a, b) => a - b);
  return {median: sorted[sorted.length >> 1], at: freqs.map((hz) => data[bin(hz)])};
}"""


async def test_the_portal_phone_in_a_conference_and_transferring(tmp_path: Path) -> None:
    """The portal's phone hosts the conference (its code typed on the page's dial pad:
    RFC 4733 keys inside SRTP), two baresip phones join and it hears both; then it calls
    one of them and transfers it to the other, who then talks with it."""
    from playwright.async_api import expect

    from .office import Office

    tone = tmp_path / "tone600.wav"
    soundfile.write(tone, sine_mix((600.0,), 48000 * 90, 48000, -12), 48000, subtype="PCM_16")
    with loopback_only():
        office = Office(
            tmp_path,
            ws=True,
            user_extra={"100": 'conference_host_code = "1001"\nconference_code = "2001"'},
        )
        office.extra = f'[console]\nlisten = "127.0.0.1:{free_port()}"\n'
        proc = office.start()
        url = proc.wait_for(r"web console (http://\S+)").group(1)
        bob = office.phone("bob", "101", 1000.0)
        carol = office.phone("carol", "102", 1400.0)
        try:
            for phone in (bob, carol):
                await phone.start()
                await phone.wait_event("REGISTER_OK")
            async with async_playwright() as playwright:
                browser = await chromium(playwright, tone)
                try:
                    page = await portal_phone(browser, url, "100", "alice100")
                    state = page.locator("#phone-state")
                    # the conference: the page hosts, typing its code on the dial pad
                    await page.locator("#phone-number").fill("800")
                    await page.get_by_role("button", name="Call").click()
                    await expect(state).to_have_text("in call")
                    await asyncio.sleep(1.0)
                    for key in "1001#":
                        await page.locator(f"#dialpad [data-key='{key}']").click()
                        await asyncio.sleep(0.3)
                    for phone in (bob, carol):
                        await phone.command("dial", f"sip:800@127.0.0.1:{office.port}")
                        await phone.wait_event("CALL_ESTABLISHED")
                        await asyncio.sleep(1.0)
                        for key in "2001#":
                            await phone.command("sndcode", key)
                            await asyncio.sleep(0.3)
                    await asyncio.sleep(2.0)
                    both = await page.evaluate(LEVELS, [2.0, [1000, 1400]])
                    await page.get_by_role("button", name="Hang up").click()
                    for phone in (bob, carol):
                        await phone.command("hangup")
                    await expect(state).to_have_text("ready")
                    # the page calls Bob, then transfers him to Carol
                    await page.locator("#phone-number").fill("101")
                    await page.get_by_role("button", name="Call").click()
                    await bob.wait_event("CALL_ESTABLISHED", count=2)
                    await expect(state).to_have_text("in call")
                    await page.locator("#phone-number").fill("102")
                    await page.get_by_role("button", name="Transfer to the number").click()
                    await carol.wait_event("CALL_ESTABLISHED", count=2)
                    await expect(state).to_have_text("ready")  # the page is out of it
                    await asyncio.sleep(2.5)
                    await bob.command("hangup")
                    await carol.wait_event("CALL_CLOSED", count=2)
                finally:
                    await browser.close()
        finally:
            await bob.stop()
            await carol.stop()
            office.stop()
    # in the conference the page heard both phones, well above the noise floor
    assert all(level > both["median"] + 30 for level in both["at"]), both
    audio, rate = segment(carol.recording(), 1.0)  # after the transfer Carol hears Bob
    assert abs(dominant_frequency(active(audio), rate) - 1000) < 10
