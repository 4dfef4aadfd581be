"""Overload control: new INVITEs/REGISTERs refused with 503 + Retry-After, in-dialog served."""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

import sip
from sip.overload import OverloadControl, OverloadSettings

from .netutil import daemon, free_port

SCENARIOS = Path(__file__).parent / "sipp"


def test_refused_share_follows_the_load() -> None:
    control = OverloadControl(OverloadSettings(max_lag=0.05, step_up=0.25, step_down=0.05))
    assert all(control.admit() for _ in range(10))
    assert control.observe(0.3, 0) == "start"  # smoothed lag above the bound
    for _ in range(5):
        control.observe(0.3, 0)
    assert control.refuse_share == 1.0
    assert not any(control.admit() for _ in range(10))
    for _ in range(8):  # the lag falls: the refused share shrinks step by step
        control.observe(0.0, 0)
    assert control.overloaded
    assert 0 < control.refuse_share < 1
    admitted = sum(control.admit() for _ in range(100))
    assert admitted == pytest.approx(100 * (1 - control.refuse_share), abs=1)
    changes = [control.observe(0.0, 0) for _ in range(40)]
    assert changes.count("end") == 1 and not control.overloaded
    assert control.stats.episodes == 1


def test_pending_calls_count_as_overload() -> None:
    control = OverloadControl(OverloadSettings(max_pending=10))
    assert control.observe(0.0, 11) == "start"
    assert control.observe(0.0, 3) is None and control.overloaded


def _screen_count(out: str, status: str) -> int:
    tail = out[out.rfind("Messages  Retrans") :]
    found = re.findall(rf"^\s*{status}\s*<-+\s+(\d+)", tail, re.M)
    return sum(int(n) for n in found)


@pytest.mark.interop
@pytest.mark.serial  # the burst loads the CPU on purpose
async def test_burst_is_refused_with_503_while_in_dialog_requests_are_answered() -> None:
    """A bounded burst far above what examples/uas.py can take (SIPp, 4000 calls at
    2500/s): some calls are refused with 503 and Retry-After, none times out, every
    answered call ends with its BYE answered, and a call established before the burst
    gets every in-dialog request (INFO) answered 200 throughout."""
    sipp = shutil.which("sipp")
    assert sipp is not None, "sipp is not installed: run scripts/system-deps.sh"
    port = free_port()
    with daemon(
        ["examples/uas.py", "--listen", f"127.0.0.1:{port}", "--transport", "udp"], "uas listening"
    ):
        async with sip.UserAgent("udp:127.0.0.1:0", user="probe") as ua:
            offer = bytes(sip.make_offer("127.0.0.1", 40002, (sip.PCMU,)))
            call = await ua.invite(f"sip:echo@127.0.0.1:{port}", offer)
            statuses: list[int] = []
            stop = asyncio.Event()

            async def keep_talking() -> None:
                while not stop.is_set():
                    statuses.append((await call.send_dtmf("5")).status)
                    await asyncio.sleep(0.05)

            talker = asyncio.create_task(keep_talking())
            burst = await asyncio.create_subprocess_exec(
                sipp,
                f"127.0.0.1:{port}",
                "-sf",
                str(SCENARIOS / "uac_overload.xml"),
                "-i",
                "127.0.0.1",
                "-p",
                str(free_port()),
                "-r",
                "2500",
                "-m",
                "4000",
                "-l",
                "4000",
                "-nostdin",
                "-timeout",
                "60s",
                "-timeout_error",
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd="/tmp",
            )
            out_bytes, _ = await asyncio.wait_for(burst.communicate(), 90)
            stop.set()
            await talker
            out = out_bytes.decode(errors="replace")
            # once the burst is over the server takes calls again (within seconds)
            for _ in range(40):
                try:
                    again = await ua.invite(f"sip:echo@127.0.0.1:{port}", offer, timeout=10)
                    break
                except sip.RequestFailed as exc:
                    assert exc.status == 503
                    await asyncio.sleep(0.25)
            await again.bye()
            assert (await call.send_dtmf("#")).status == 200
            await call.bye()
    refused = _screen_count(out, "503")
    answered, completed = (
        int(n)
        for n in re.findall(r"^\s*200\s*<-+\s+(\d+)", out[out.rfind("Messages  Retrans") :], re.M)[
            :2
        ]
    )
    failed = int(re.findall(r"Failed call\s*\|\s*\d+\s*\|\s*(\d+)", out)[-1])
    print(
        f"burst: answered {answered}, refused {refused}, failed {failed}; in-dialog {len(statuses)}"
    )
    assert refused > 0, out[-3000:]
    assert answered + refused == 4000 and failed == 0, out[-3000:]
    assert completed == answered  # no answered call failed
    assert statuses and set(statuses) == {200}


def test_messages_waiting_unread_count_as_overload() -> None:
    control = OverloadControl(OverloadSettings(max_wait=0.1, smoothing=1.0))
    assert control.observe(0.0, 0, wait=0.05) is None  # a burst read within the bound
    assert control.observe(0.0, 0, wait=0.3) == "start"
    assert control.stats.max_wait == 0.3


async def test_queue_wait_is_the_oldest_unread_datagrams_age() -> None:
    """The probe peeks at the kernel's arrival stamp of the oldest datagram the loop has
    not read yet (it runs between loop passes, so nothing here is read before it)."""
    async with sip.UserAgent("udp:127.0.0.1:0", user="probe") as ua:
        assert ua.transport.queue_wait() == 0.0  # nothing queued
        port = ua.transport.listeners[0].port
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            sent_at = time.time()
            s.sendto(b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\n\r\n", ("127.0.0.1", port))
            first = ua.transport.queue_wait()
            time.sleep(0.03)  # the loop is held: the datagram stays unread
            later = ua.transport.queue_wait()
            assert 0.0 < first <= time.time() - sent_at
            assert later - first >= 0.029
            await asyncio.sleep(0.05)  # the loop reads it
        assert ua.transport.queue_wait() == 0.0
