"""Call history with baresip phones: one row per call with the right disposition
(answered, busy, no answer, voicemail), read back through the API as JSON and CSV (the
same rows, a round trip), filtered; and an edit applied in the middle of a call leaves it
going, audio and all."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from softswitch.features.cdr import COLUMNS, from_csv

from .console import login, make_token
from .netutil import free_port
from .office import Office, frequency, started, stop_all

pytestmark = pytest.mark.interop


async def test_call_history_dispositions_csv_round_trip_and_an_edit_during_a_call(
    tmp_path: Path,
) -> None:
    office = Office(tmp_path)
    office.extra = f'\n[console]\nlisten = "127.0.0.1:{free_port()}"\n'
    office.user_extra["101"] = '[users.forward]\nbusy = "hangup"\nno_answer = "hangup"\n'
    proc = office.start()
    url = proc.wait_for(r"web console (http://\S+)").group(1)
    password = proc.wait_for(r"console login: admin / (\S+)").group(1)
    async with httpx.AsyncClient(base_url=url) as client:
        token = await make_token(client, await login(client, "admin", password))
    api = httpx.AsyncClient(base_url=url + "api", headers={"Authorization": f"Bearer {token}"})
    dave = office.phone("dave", "103", 1000.0, password="dave103")
    alice = office.phone("alice", "100", 600.0)
    bob = office.phone("bob", "101", 800.0, answer="manual")
    await started(dave, alice, bob)
    target = f"127.0.0.1:{office.port}"
    try:
        # answered, and changed while it goes on: a user edited, a ring group added
        await dave.command("dial", f"sip:100@{target}")
        await dave.wait_event("CALL_ESTABLISHED")
        t0 = time.monotonic()  # (Dave's recording starts about now)
        await asyncio.sleep(1.5)
        edit = await api.patch("/users/102", json={"forward": {"unreachable": "100"}})
        assert edit.status_code == 200, edit.text
        group = {"extension": "600", "name": "Desk", "steps": [{"targets": ["100"]}]}
        assert (await api.post("/ring_groups", json=group)).status_code == 201
        t_edit = time.monotonic() - t0
        await asyncio.sleep(2.5)
        assert not dave.seen("CALL_CLOSED") and not alice.seen("CALL_CLOSED")
        await dave.command("hangup")
        await alice.wait_event("CALL_CLOSED")
        # busy: Bob refuses, and his busy rule hangs up
        await dave.command("dial", f"sip:101@{target}")
        await bob.wait_event("CALL_INCOMING")
        await bob.command("hangup")
        await dave.wait_event("CALL_CLOSED", 2)
        # no answer: Bob's phone rings, the caller gives up
        await dave.command("dial", f"sip:101@{target}")
        await bob.wait_event("CALL_INCOMING", 2)
        await asyncio.sleep(2)
        await dave.command("hangup")
        await dave.wait_event("CALL_CLOSED", 3)
        await bob.wait_event("CALL_CLOSED", 2)
        # voicemail: Bob's busy rule now sends callers to his mailbox
        vm = await api.patch("/users/101", json={"forward": {"busy": "voicemail"}})
        assert vm.status_code == 200, vm.text
        await dave.command("dial", f"sip:101@{target}")
        await bob.wait_event("CALL_INCOMING", 3)
        await bob.command("hangup")  # busy: now to his voicemail, which answers
        await dave.wait_event("CALL_ESTABLISHED", 2)
        await asyncio.sleep(2)
        await dave.command("hangup")
        await dave.wait_event("CALL_CLOSED", 4)
        await asyncio.sleep(0.5)

        rows = (await api.get("/calls")).json()
        csv_text = (await api.get("/calls.csv")).text
        busy = (await api.get("/calls", params={"disposition": "busy"})).json()
        mine = (await api.get("/calls", params={"number": "100"})).json()
    finally:
        await api.aclose()
        await stop_all(dave, alice, bob)
        office.stop()
    # Dave heard Alice before and after the edits: the call was never interrupted
    recording = min(dave.records.glob("*-dec.wav"), key=lambda p: p.stat().st_mtime)
    assert abs(frequency(recording, 0.5, t_edit - 0.3) - 600) < 10
    assert abs(frequency(recording, t_edit + 0.3, t_edit + 2.0) - 600) < 10

    by_time = list(reversed(rows))  # newest first from the API
    got = [(r["caller"], r["dialled"], r["disposition"]) for r in by_time]
    assert got == [
        ("103", "100", "answered"),
        ("103", "101", "busy"),
        ("103", "101", "no answer"),
        ("103", "101", "voicemail"),
    ], got
    answered = by_time[0]
    assert answered["destination"] == "100" and answered["caller_name"] == "Dave Caller"
    assert 4.0 < answered["duration"] < 8.0 and answered["answer"] >= answered["start"]
    assert by_time[2]["duration"] == 0 and by_time[2]["answer"] == ""
    assert by_time[3]["chain"] == "101 > voicemail:101"
    assert by_time[3]["destination"] == "voicemail:101"
    assert [r["id"] for r in busy] == [by_time[1]["id"]]
    assert [r["dialled"] for r in mine] == ["100"]  # caller, dialled or reached

    parsed = list(from_csv(csv_text))
    assert list(parsed[0]) == list(COLUMNS)
    assert parsed == [{k: str(v) for k, v in r.items()} for r in rows]  # a round trip
