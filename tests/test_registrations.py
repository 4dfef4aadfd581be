"""Registrations that survive a restart: the binding store, and the daemon restarted."""

from __future__ import annotations

import asyncio
import sqlite3
import stat
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import sip
from softswitch.binding_store import MemoryBindingStore, SqliteBindingStore, StoredBinding
from softswitch.registrar import Registrar

from .office import Office, frequency, segment, started, stop_all

SOURCE = ("udp", "192.0.2.10", 5060)


def register(
    contact: str, *, cseq: int = 1, expires: int = 3600, call_id: str = "c1@phone"
) -> sip.Request:
    data = (
        "REGISTER sip:pbx.test SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKreg" + str(cseq) + "\r\n"
        "From: <sip:101@pbx.test>;tag=a\r\nTo: <sip:101@pbx.test>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\n"
        f"Contact: <{contact}>;expires={expires}\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    message = sip.parse(data)
    assert isinstance(message, sip.Request)
    return message


class Wall:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_bindings_are_written_on_change_and_restored_with_their_remaining_life() -> None:
    store, wall = MemoryBindingStore(), Wall()
    reg = Registrar(store=store, wallclock=wall)
    aor = "sip:101@pbx.test"
    assert reg.process(register("sip:101@192.0.2.10"), aor, SOURCE, 100.0).status == 200
    assert store.writes == 1
    # a retransmission (same expiry) writes nothing; a refresh half an hour later does
    reg.process(register("sip:101@192.0.2.10", cseq=2), aor, SOURCE, 100.5)
    assert store.writes == 1
    wall.now += 1800
    reg.process(register("sip:101@192.0.2.10", cseq=3), aor, SOURCE, 1900.0)
    assert store.writes == 2
    # a second device; then the process "restarts" 600 s later: a new loop clock
    reg.process(register("sip:101@192.0.2.11", call_id="c2@phone"), aor, SOURCE, 1900.0)
    wall.now += 600
    again = Registrar(store=store, wallclock=wall)
    restored = again.restore(5.0, await store.load())
    assert sorted(str(b.contact) for b in restored) == ["sip:101@192.0.2.10", "sip:101@192.0.2.11"]
    assert {b.expires_in(5.0) for b in again.lookup(aor, 5.0)} == {3000}
    assert again.lookup(aor, 5.0)[0].source == SOURCE
    # the order of REGISTERs is still checked against what was stored
    stale = again.process(register("sip:101@192.0.2.10", cseq=2), aor, SOURCE, 6.0)
    assert stale.status == 500
    # removal and expiry delete from the store
    again.remove(again.lookup(aor, 6.0)[0])
    assert len(await store.load()) == 1
    again.expire(5.0 + 3001)
    assert await store.load() == []
    # a row that expired while the daemon was down is not restored
    fresh = Registrar(store=store, wallclock=wall)
    fresh.process(register("sip:101@192.0.2.12", call_id="c3@phone", expires=60), aor, SOURCE, 0.0)
    assert len(await store.load()) == 1
    wall.now += 120
    assert Registrar(store=store, wallclock=wall).restore(0.0, await store.load()) == []
    assert await store.load() == []


async def test_sqlite_store_is_private_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "data" / "registrations.sqlite"
    store, wall = SqliteBindingStore(path), Wall()
    reg = Registrar(store=store, wallclock=wall)
    aor = "sip:101@pbx.test"
    reg.process(
        register("sip:101@192.0.2.10;transport=tcp"), aor, ("tcp", "192.0.2.10", 40000), 0.0
    )
    await store.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for sidecar in path.parent.glob("registrations.sqlite-*"):
        assert stat.S_IMODE(sidecar.stat().st_mode) == 0o600
    again = SqliteBindingStore(path)
    back = Registrar(store=again, wallclock=wall).restore(0.0, await again.load())
    await again.close()
    assert [(str(b.contact), b.source, b.call_id, b.cseq) for b in back] == [
        ("sip:101@192.0.2.10;transport=tcp", ("tcp", "192.0.2.10", 40000), "c1@phone", 1)
    ]


async def test_sqlite_store_writes_off_the_loop_in_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A registration storm: 2000 changes to 100 bindings queue at once (put returns
    without touching the file: the loop's thread never opens it), coalesce per binding
    and reach SQLite in a few transactions on the store's thread; the file then holds
    each binding's last state, deletions included."""
    store = SqliteBindingStore(tmp_path / "registrations.sqlite")
    opened_on: list[int] = []
    connect = sqlite3.connect

    def spying(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        opened_on.append(threading.get_ident())
        db: sqlite3.Connection = connect(*args, **kwargs)
        return db

    monkeypatch.setattr(sqlite3, "connect", spying)
    for n in range(2000):
        i = n % 100
        store.put(
            StoredBinding(
                f"sip:{i}@pbx.test",
                f"sip:{i}@192.0.2.1",
                "udp",
                "192.0.2.1",
                5060,
                1e9 + n,
                f"c{i}",
                n,
            )
        )
    store.delete("sip:7@pbx.test", "sip:7@192.0.2.1")
    await store.flush()
    rows = {row.aor: row for row in await store.load()}
    assert len(rows) == 99 and "sip:7@pbx.test" not in rows
    assert rows["sip:3@pbx.test"].cseq == 1903  # the last of its 20 changes
    assert store.writes == 2001 and store.batches <= 3
    assert opened_on and threading.get_ident() not in opened_on
    await store.close()
    await store.close()  # a PBX stopped twice (a test's own stop, then its fixture's)
    store.put(StoredBinding("sip:1@pbx.test", "sip:1@x", "udp", "192.0.2.1", 5060, 1e9, "c", 1))
    await store.flush()  # dropped after close: nothing to write, nothing raised


@pytest.fixture
async def office(tmp_path: Path) -> AsyncIterator[Office]:
    o = Office(tmp_path, extra="sip_t1 = 0.1\nkeepalive_interval = 3600\n")
    yield o
    o.stop()


@pytest.mark.interop
async def test_restarted_daemon_reaches_a_phone_registered_before(office: Office) -> None:
    """Bob's baresip registers (every 300 s), the daemon restarts, and Alice's call
    reaches Bob without Bob registering again: the binding came back from SQLite and
    Bob's phone answered the OPTIONS check. Carol's phone, gone meanwhile, is dropped."""
    office.start()
    alice = office.phone("alice", "100", 1000.0)
    bob = office.phone("bob", "101", 600.0)
    carol = office.phone("carol", "102", 700.0)
    await started(alice, bob, carol)
    try:
        assert carol.proc is not None  # Carol's phone dies without unregistering
        carol.proc.kill()
        await carol.proc.wait()
        await asyncio.to_thread(office.restart)
        proc = office.proc
        assert proc is not None
        await asyncio.to_thread(proc.wait_for, r"event=bindings_restored count=3", 10)
        await alice.command("dial", f"sip:101@127.0.0.1:{office.port}")
        await alice.wait_event("CALL_ESTABLISHED")
        await bob.wait_event("CALL_ESTABLISHED")
        await asyncio.sleep(2.5)
        await alice.command("hangup")
        await bob.wait_event("CALL_CLOSED")
        assert len(bob.seen("REGISTER_OK")) == 1  # registered once, before the restart
        # Carol's phone does not answer the OPTIONS check: her binding is dropped
        await asyncio.to_thread(
            proc.wait_for, r"event=contact_unreachable aor=sip:102@office.test", 15
        )
    finally:
        await stop_all(alice, bob, carol)
    assert abs(frequency(alice.recording(), 0.5) - 600) < 10  # Alice hears Bob
    heard, rate = segment(bob.recording(), 0.5)
    assert len(heard) > rate  # Bob's phone took a call with audio
