"""Desk-phone features in-process, with this project's UA as the phones: a busy-lamp key's
pickup by INVITE with Replaces naming the early dialog the dialog package reported
(what a Polycom does), the call-waiting tone, and the pure pieces (Replaces parsing,
dialog-info rendering)."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import sip
from softswitch.dialog_info import DialogView, render
from softswitch.features.pickup import parse_replaces

from .office import demo_pbx
from .test_pbx_inprocess import SoftPhone

NS = {"d": "urn:ietf:params:xml:ns:dialog-info"}


def test_parse_replaces() -> None:
    assert parse_replaces("abc@h;to-tag=1;from-tag=2;early-only") == ("abc@h", {"1", "2"}, True)
    assert parse_replaces("abc@h;from-tag=2") is None
    assert parse_replaces(";to-tag=1;from-tag=2") is None


def test_dialog_info_refuses_states_outside_rfc4235() -> None:
    with pytest.raises(ValueError):
        DialogView("x", "ringing", "recipient")
    document = ET.fromstring(render("sip:101@d", 7, [], full=True))
    assert (document.get("version"), document.get("state")) == ("7", "full")


async def test_blf_key_picks_up_the_early_dialog_with_replaces(tmp_path: Path) -> None:
    pbx = await demo_pbx(tmp_path, rtp=35200)
    port = pbx.ua.listeners[0].port
    alice = SoftPhone("100", "alice100", port, 1000.0)
    carol = SoftPhone("102", "carol102", port, 600.0)
    ringing: list[sip.IncomingCall] = []
    bob = sip.UserAgent("udp:127.0.0.1:0", user="101")

    def rings(call: sip.IncomingCall) -> None:  # Bob's phone rings and is never answered
        ringing.append(call)
        call.ring()

    bob.on_invite = rings
    try:
        await alice.start()
        await carol.start()
        await bob.start()
        await bob.register(
            f"sip:127.0.0.1:{port}",
            aor="sip:101@demo.softswitch",
            username="101",
            password="bob101",
            expires=300,
        )
        lamp = await carol.ua.subscribe(
            f"sip:101@127.0.0.1:{port}",
            "dialog",
            expires=600,
            accept="application/dialog-info+xml",
            credentials=("102", "carol102"),
        )
        await asyncio.wait_for(lamp.notifications.get(), 5)  # the full state: idle
        calling = asyncio.create_task(alice.call("101"))
        early = None
        while early is None:
            notify = await asyncio.wait_for(lamp.notifications.get(), 5)
            dialog = ET.fromstring(notify.body).find("d:dialog", NS)
            if dialog is not None and dialog.findtext("d:state", namespaces=NS) == "early":
                early = dialog
        replaces = (
            f"{early.get('call-id')};to-tag={early.get('remote-tag')};"
            f"from-tag={early.get('local-tag')};early-only"
        )
        session, offer = await carol._stream()
        picked = await carol.ua.invite(
            f"sip:101@127.0.0.1:{port}",
            offer,
            credentials=("102", "carol102"),
            headers=[("Replaces", replaces), ("Require", "replaces")],
            timeout=5,
        )
        to_bob = await asyncio.wait_for(calling, 5)  # Alice is answered: by Carol
        await ringing[0].wait_ended(5)  # Bob's phone stopped ringing (CANCEL)
        assert picked.state is sip.CallState.ESTABLISHED
        assert to_bob.state is sip.CallState.ESTABLISHED
        assert ringing[0].end_reason == "cancelled by caller"
        session.close()
        await lamp.close()
    finally:
        await alice.stop()
        await carol.stop()
        await bob.close()
        await pbx.stop()


def power_at(samples: np.ndarray, hz: float, rate: int = 8000) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64)))
    freqs = np.fft.rfftfreq(len(samples), 1 / rate)
    return float(spectrum[np.abs(freqs - hz) < 15].max())


class BusyPhone(SoftPhone):
    """Answers its first call; later calls only ring (a phone showing a waiting call)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.waiting: list[sip.IncomingCall] = []

    async def _on_invite(self, call: sip.IncomingCall) -> None:
        if self.calls:
            self.waiting.append(call)
            call.ring()
            return
        await super()._on_invite(call)


async def test_call_waiting_tone_over_the_call_while_a_second_call_rings(tmp_path: Path) -> None:
    pbx = await demo_pbx(tmp_path, extra='[call_waiting]\nusers = ["101"]\n', rtp=35600)
    port = pbx.ua.listeners[0].port
    alice = SoftPhone("100", "alice100", port, 1000.0)
    bob = BusyPhone("101", "bob101", port, 600.0)
    carol = SoftPhone("102", "carol102", port, 800.0)
    try:
        for phone in (alice, bob, carol):
            await phone.start()
        await alice.call("101")
        await asyncio.sleep(1.0)
        before = np.concatenate(bob.heard[-50:])  # Alice alone
        second = asyncio.create_task(carol.call("101"))
        while not bob.waiting:
            await asyncio.sleep(0.02)
        await asyncio.sleep(1.0)
        during = np.concatenate(bob.heard[-50:])  # Alice, and the tone
        second.cancel()
    finally:
        for phone in (alice, bob, carol):
            await phone.stop()
        await pbx.stop()
    assert power_at(during, 440) > 10 * power_at(before, 440)  # the call-waiting tone
    assert power_at(during, 1000) > 0.5 * power_at(before, 1000)  # Alice still heard
