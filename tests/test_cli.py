"""The ``softswitch`` command as a new user meets it: the banner of ``run``, ``status``
against the running daemon (baresip phones registered and in a call, a conference joined
with the codes the banner and ``users`` show), ``users``, ``check`` on broken files, a
taken port, ``--quiet``."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile

from softswitch import banner
from softswitch import config as cfg
from softswitch.control import render
from softswitch.features import builtin
from softswitch.loadgen import ConferenceLoad
from softswitch.plugins import Registry

from .netutil import ROOT, daemon, free_port
from .office import USERS, Office
from .test_api_errors import JUNK_MP3

EXTRA = """
[[ring_groups]]
extension = "600"
name = "Sales"
steps = [ {{ targets = ["101", "102"], ring_seconds = 15 }} ]

[[ivr]]
extension = "500"
name = "Reception"
greeting = "{greeting}"
[ivr.keys]
"1" = "600"
"""


def softswitch(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "softswitch.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


async def status(office: Office) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "softswitch.cli",
        "status",
        "--config",
        str(office.config_path),
        "--json",
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    answer: dict[str, Any] = json.loads(out)
    return answer


async def until(office: Office, check: Any, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        answer = await status(office)
        if check(answer):
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(f"status never showed it: {answer}")
        await asyncio.sleep(0.3)


@pytest.fixture
async def office(tmp_path: Path) -> AsyncIterator[Office]:
    greeting = tmp_path / "greeting.wav"
    soundfile.write(greeting, np.zeros(8000, np.int16), 8000)
    o = Office(tmp_path, extra=EXTRA.format(greeting=greeting))
    yield o
    o.stop()


def banner_of(lines: list[str]) -> str:
    text = "".join(lines)
    start = text.index("softswitch: ")
    return text[start : text.index("softswitch running", start)]


@pytest.mark.interop
async def test_banner_users_and_status_of_a_running_office(office: Office) -> None:
    proc = office.start()
    shown = banner_of(proc.lines)
    port = office.port
    assert f"phones register to 127.0.0.1:{port} (UDP or TCP)" in shown
    assert 'for phones on the LAN: make run ARGS="--listen 0.0.0.0:5060"' in shown
    for login, name in (("100", "Alice Martin"), ("101", "Bob Durand"), ("102", "Carol Dupont")):
        assert re.search(rf"^  {login}\s+{name}\s+{login}$", shown, re.M), shown
    assert "alice100" not in shown and "1100" not in shown  # a real office: no secrets
    assert f"softswitch users --config {office.config_path} --secrets" in shown
    numbers = shown[shown.index("\n\n  800 ") + 2 :].splitlines()
    firsts = [line.split()[0] for line in numbers]
    assert firsts[:5] == ["800", "*97", "*98", "500", "600"], shown  # bridge, voicemail, ...
    assert re.search(r"^  500 +receptionist Reception$", shown, re.M)
    assert re.search(r"^  600 +ring group Sales$", shown, re.M)
    assert re.search(
        r"^  \*8 \+ ext +pickup: answer the call ringing at that extension$", shown, re.M
    )
    assert "*8100" not in shown  # a code for every extension is shown once

    # `users --secrets` shows the codes the running bridge generated (kept in the data dir)
    users = softswitch("users", "--config", str(office.config_path), "--secrets")
    assert users.returncode == 0, users.stderr
    row = next(line.split() for line in users.stdout.splitlines() if line.startswith("  100 "))
    kept = json.loads((office.data_dir / "conference-codes.json").read_text())["100"]
    assert row[-4:] == ["alice100", "1100", kept["host"], kept["participant"]]

    alice = office.phone("alice", "100", 1000.0)
    bob = office.phone("bob", "101", 600.0)
    load = ConferenceLoad(
        f"sip:800@127.0.0.1:{port}", user="102", password="carol102", legs=2, talkers=1
    )
    for phone in (alice, bob):
        await phone.start()
    try:
        for phone in (alice, bob):
            await phone.wait_event("REGISTER_OK")
        answer = await until(office, lambda s: len(s["registrations"]) == 2)
        regs = {r["login"]: r for r in answer["registrations"]}
        assert set(regs) == {"100", "101"}
        assert regs["100"]["name"] == "Alice Martin" and "baresip" in regs["100"]["user_agent"]
        assert regs["101"]["source"].startswith("udp:127.0.0.1:")
        assert answer["calls"] == [] and answer["conferences"] == []

        await alice.command("dial", f"sip:101@127.0.0.1:{port}")
        await bob.wait_event("CALL_ESTABLISHED")
        answer = await until(office, lambda s: s["calls"] and s["calls"][0]["b"])
        (call,) = answer["calls"]
        assert {call["a"], call["b"]} == {"100", "101"}
        assert call["state"] == "established" and call["codec"] == "PCMU"

        # the participant code of user 100 picks 100's room; the host code opens it
        await load.start()
        await load.join_all(kept["participant"], {0: kept["host"]})
        answer = await until(
            office, lambda s: s["conferences"] and len(s["conferences"][0]["members"]) == 2
        )
        (room,) = answer["conferences"]
        assert room["room"] == "100" and room["hosts"] == 1
        assert sorted(room["members"]) == ["102", "102 (host)"]
        text = render(answer)
        # the two members of the bridge are calls too, beside 100 <-> 101
        assert f"registrations: 2 (of {len(USERS)} users)" in text and "calls: 3" in text
        assert sorted(c["state"] for c in answer["calls"]) == [
            "conference",
            "conference",
            "established",
        ]
        assert re.search(r"^  room 100\s+102 \(host\), 102$", text, re.M), text

        await alice.command("hangup")
        await bob.wait_event("CALL_CLOSED")
        await until(office, lambda s: all(c["state"] == "conference" for c in s["calls"]))
    finally:
        await load.stop()
        for phone in (alice, bob):
            await phone.stop()


@pytest.mark.interop
def test_demo_banner_quiet_and_a_taken_port(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "data"
    run = ["-m", "softswitch.cli", "run", "--listen", f"127.0.0.1:{port}", "--data-dir", str(data)]
    with daemon([*run, "--log-level", "warning"], "softswitch running") as proc:
        shown = "".join(proc.lines)
        assert shown.startswith("softswitch demo office: domain demo.softswitch")
        assert re.search(
            r"^  login +name +password +PIN +bridge: host code +participant code$", shown, re.M
        )
        assert re.search(r"^  100 +Alice Martin +alice100 +1100 +1001 +2001$", shown, re.M)
        assert re.search(r"^  101 +Bob Durand +bob101 +1101 +\d{6} +\d{6}$", shown, re.M)
        assert re.search(r"^  800 +conference bridge: then a host or participant code", shown, re.M)
        assert re.search(r"^  \*97 +voicemail: your own mailbox", shown, re.M)

        # the same port again: the error names it and the fix
        taken = softswitch(*run[2:], "--data-dir", str(tmp_path / "other"))
        assert taken.returncode == 1
        assert f"cannot start: udp:127.0.0.1:{port} is already in use" in taken.stderr
        assert "--listen HOST:PORT" in taken.stderr
        assert "Errno" not in taken.stderr

    # --quiet: nothing on stdout; status is how a script knows it is up
    quiet = subprocess.Popen(
        [sys.executable, *run, "--quiet", "--log-level", "error"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 15
        while (answer := softswitch("status", "--data-dir", str(data))).returncode != 0:
            assert time.monotonic() < deadline, answer.stderr
            time.sleep(0.2)
        assert "registrations: 0 (of 3 users)" in answer.stdout
        assert (data / "control.sock").stat().st_mode & 0o777 == 0o600
    finally:
        quiet.terminate()
        out, err = quiet.communicate(timeout=10)
    assert out == "" and err == ""
    assert not (data / "control.sock").exists()  # removed at stop
    gone = softswitch("status", "--data-dir", str(data))
    assert gone.returncode == 1 and "no daemon" in gone.stderr


def test_users_lists_the_accounts_of_a_config(tmp_path: Path) -> None:
    demo = softswitch("users")
    assert demo.returncode == 0
    assert re.search(r"^  100 +Alice Martin +alice100 +1100 +1001 +2001$", demo.stdout, re.M)
    office = softswitch("users", "examples/office.toml")
    assert office.returncode == 0
    assert re.search(r"^  100-desk +Alice Martin \(desk\) +100$", office.stdout, re.M)
    assert "change-me" not in office.stdout  # passwords only with --secrets
    assert re.search(r"^  600 +ring group Sales$", office.stdout, re.M)
    secrets = softswitch("users", "examples/office.toml", "--secrets")
    assert re.search(
        r"^  100-desk +Alice Martin \(desk\) +change-me-desk +\d+ ", secrets.stdout, re.M
    )
    broken = softswitch("users", str(tmp_path / "missing.toml"))
    assert broken.returncode == 1 and "missing.toml: cannot read" in broken.stderr


def test_check_names_the_fix(tmp_path: Path) -> None:
    (tmp_path / "music.mp3").write_bytes(JUNK_MP3)
    (tmp_path / "office.toml").write_text('[hold_music]\ndefault = "music.mp3"\n')
    junk = softswitch("check", "--config", str(tmp_path / "office.toml"))
    assert junk.returncode == 1
    assert junk.stderr.strip() == (
        f"{tmp_path}/office.toml: hold_music.default: {tmp_path}/music.mp3: "
        "not an MP3/WAV/FLAC file we can read (unknown or damaged data) (line 2)"
    )
    assert junk.stdout == ""  # no decoder noise anywhere

    (tmp_path / "office.toml").write_text(
        "[server]\ndomian = 'x'\n[[trunks]]\nname='t'\nproxy='sip:x'\n"
    )
    typo = softswitch("check", str(tmp_path / "office.toml"))
    assert "server.domian: unknown key (did you mean 'domain'?)" in typo.stderr

    (tmp_path / "office.toml").write_text("[[trunks]]\nname='t'\nproxy='sip:x'\n")
    ok = softswitch("check", str(tmp_path / "office.toml"))
    assert re.search(r"OK \(0 users, 1 trunk, 0 ring groups, \d+ numbers\)$", ok.stdout), ok.stdout


def test_banner_says_where_lan_phones_register(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pure: what the banner says for wildcard, loopback and public addresses."""
    import sip.netroute

    both = [("udp", "0.0.0.0", 5060), ("tcp", "0.0.0.0", 5060)]
    monkeypatch.setattr(sip.netroute, "source_address_for", lambda _: "192.168.1.20")
    assert banner.where_phones_register(both, None) == [
        "  phones register to 192.168.1.20:5060 (UDP or TCP)"
    ]
    provisioning = (
        "[provisioning]\nlisten = '0.0.0.0:8088'\nusername = 'prov'\npassword = 'prov-secret'\n"
    )
    config = cfg.parse(cfg.DEMO + provisioning)
    assert banner.provisioning_line(config) == [
        "  Polycom phones provision from http://192.168.1.20:8088/ (user prov)"
    ]
    assert banner.provisioning_line(cfg.demo()) == []
    monkeypatch.setattr(sip.netroute, "source_address_for", lambda _: "127.0.0.1")  # no route
    assert banner.where_phones_register(both, None) == [
        "  phones register to 0.0.0.0:5060 (UDP or TCP)"
    ]
    public = banner.where_phones_register([("udp", "0.0.0.0", 5060)], "203.0.113.7")
    assert public == ["  phones register to 203.0.113.7:5060 (UDP)"]
    local = banner.where_phones_register([("tcp", "127.0.0.1", 5070)], None)
    assert local == [
        "  phones register to 127.0.0.1:5070 (TCP)",
        '  this machine only; for phones on the LAN: make run ARGS="--listen 0.0.0.0:5060"',
    ]


def test_banner_columns_line_up() -> None:
    config = cfg.demo()
    text = banner.render(
        config,
        Registry(config, builtin()),
        [("udp", "127.0.0.1", 5060)],
        {"100": ("1001", "2001")},
        secrets=True,
        title="t",
    )
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("  login"))
    alice = next(line for line in lines if line.startswith("  100 "))
    bob = next(line for line in lines if line.startswith("  101 "))
    assert alice.index("alice100") == bob.index("bob101") == header.index("password")
    assert alice.index("2001") == header.index("participant code")
    assert re.search(r"\(made at start\) +\(made at start\)$", bob)  # made by the bridge
    assert re.search(
        r"^  800 +conference bridge: then a host or participant code and #", text, re.M
    )


def test_the_readme_shows_the_banner_as_it_is() -> None:
    config = cfg.demo()
    codes = {"100": ("1001", "2001"), "101": ("482113", "905217"), "102": ("730266", "118530")}
    listen = [
        *(("udp", "127.0.0.1", 5060), ("tcp", "127.0.0.1", 5060)),
        *(("tls", "127.0.0.1", 5061), ("ws", "127.0.0.1", 5066)),
    ]
    text = banner.render(
        config,
        Registry(config, builtin()),
        listen,
        codes,
        secrets=True,
        title="softswitch demo office",
        tls_fingerprint="62:7F:9A:C6:7B:A6:BA:C0:7A:04:03:6D:...:C6:86",  # as the README cuts it
    )
    readme = (ROOT / "README.md").read_text()
    assert f"```\n{text}\nsoftswitch running (Ctrl-C stops;" in readme
