"""Interop with SIPp (Debian sip-tester), a SIP implementation this project did not write."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import sip
from sip import UserAgent

from .netutil import ROOT, daemon, free_port

pytestmark = pytest.mark.interop
SCENARIOS = Path(__file__).parent / "sipp"


def sipp() -> str:
    path = shutil.which("sipp")
    if path is None:
        pytest.fail("sipp is not installed: run scripts/system-deps.sh (make test does)")
    return path


def counts(output: str) -> tuple[int, int]:
    """(successful, failed) calls from SIPp's final statistics screen."""
    ok = re.findall(r"Successful call\s*\|\s*\d+\s*\|\s*(\d+)", output)
    failed = re.findall(r"Failed call\s*\|\s*\d+\s*\|\s*(\d+)", output)
    return int(ok[-1]), int(failed[-1])


def run_sipp(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sipp(), *args, "-nostdin", "-timeout", "60s", "-timeout_error"],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd="/tmp",
    )


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_sipp_uac_against_example_uas(transport: str) -> None:
    """SIPp's built-in uac: 500 calls at 50 calls/s, every one must succeed."""
    port = free_port()
    with daemon(["examples/uas.py", "--listen", f"127.0.0.1:{port}"], "uas listening"):
        flag = ["-t", "t1"] if transport == "tcp" else []
        result = run_sipp(
            [
                "-sn",
                "uac",
                f"127.0.0.1:{port}",
                "-i",
                "127.0.0.1",
                "-p",
                str(free_port()),
                "-m",
                "500",
                "-r",
                "50",
                *flag,
            ]
        )
    ok, failed = counts(result.stdout)
    assert (result.returncode, ok, failed) == (0, 500, 0), result.stdout[-3000:]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_user_agent_against_sipp_uas(transport: str) -> None:
    """Our UserAgent places 200 calls (INVITE/ACK/BYE) to SIPp's built-in uas."""
    port = free_port()
    flag = ["-t", "t1"] if transport == "tcp" else []
    proc = await asyncio.create_subprocess_exec(
        sipp(),
        "-sn",
        "uas",
        "-i",
        "127.0.0.1",
        "-p",
        str(port),
        "-m",
        "200",
        "-nostdin",
        "-timeout",
        "60s",
        "-timeout_error",
        *flag,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd="/tmp",
    )
    await asyncio.sleep(0.5)
    failures: list[str] = []
    async with UserAgent(f"{transport}:127.0.0.1:0", user="alice") as ua:
        limit = asyncio.Semaphore(10)

        async def one(i: int) -> None:
            async with limit:
                try:
                    offer = bytes(sip.make_offer("127.0.0.1", 30000 + 2 * i))
                    call = await ua.invite(
                        f"sip:service@127.0.0.1:{port};transport={transport}", offer, timeout=10
                    )
                    assert call.remote_sdp
                    await call.bye()
                except Exception as exc:
                    failures.append(repr(exc))

        await asyncio.gather(*(one(i) for i in range(200)))
        # SIPp ends each call with a pause; closing our TCP connection during it would
        # fail that call, so keep the UA until SIPp has finished.
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
    text = out.decode(errors="replace")
    assert failures == []
    assert (proc.returncode, *counts(text)) == (0, 200, 0), text[-3000:]


@pytest.mark.parametrize(
    ("user", "password", "expected"),
    [("100", "secret", 200), ("100", "wrong", 403), ("999", "secret", 403)],
)
def test_sipp_register_with_digest(user: str, password: str, expected: int, tmp_path: Path) -> None:
    scenario = tmp_path / "register.xml"
    scenario.write_text(
        (SCENARIOS / "register_auth.xml").read_text().replace("EXPECTED", str(expected))
    )
    port = free_port()
    with daemon(
        ["examples/registrar.py", "--listen", f"127.0.0.1:{port}", "--user", "100:secret"],
        "registrar listening",
    ):
        result = run_sipp(
            [
                f"127.0.0.1:{port}",
                "-sf",
                str(scenario),
                "-s",
                user,
                "-au",
                user,
                "-ap",
                password,
                "-i",
                "127.0.0.1",
                "-p",
                str(free_port()),
                "-m",
                "1",
            ]
        )
    assert result.returncode == 0, result.stdout[-3000:]
    assert counts(result.stdout) == (1, 0)


def test_examples_are_in_the_repository() -> None:
    assert (ROOT / "examples" / "uas.py").exists() and (ROOT / "examples" / "registrar.py").exists()
