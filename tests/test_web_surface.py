"""The web process's doors, tried as an attacker on the network would: idle and slow
connections, forged proxy headers, guessed provisioning passwords, security headers on
every answer, and the data directory's parents. Each test drives the in-process PBX's web
process over loopback, the way a browser, a phone or a script would."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import re
import signal
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import sip
from softswitch.web.server import Guard, Limits

from .console import Running, admin_password, login, office_text, start
from .netutil import free_port
from .office import demo_pbx
from .test_provisioning import MAC, PHONES

LIMITS = Limits()


@pytest.fixture
async def office(tmp_path: Path) -> AsyncIterator[Running]:
    path = tmp_path / "office.toml"
    path.write_text(office_text(tmp_path))
    running = await start(path)
    try:
        yield running
    finally:
        await running.pbx.stop()


async def _open(
    host: str, port: int, source: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(host, port, local_addr=(source, 0))


async def _closed(reader: asyncio.StreamReader, within: float) -> bool:
    """The server closed the connection (EOF or reset) within ``within`` seconds."""
    try:
        async with asyncio.timeout(within):
            while await reader.read(4096):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


async def test_idle_and_slow_connections_are_capped_per_address_and_timed_out(
    office: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="security")
    url = httpx.URL(office.url)
    host, port = url.host, url.port
    assert port is not None
    # an attacker's address fills its share with connections that say nothing...
    idle = [await _open(host, port, "127.0.0.9") for _ in range(LIMITS.per_address)]
    # ...one more from it is refused at once...
    extra_reader, _ = await _open(host, port, "127.0.0.9")
    assert await _closed(extra_reader, 2.0)
    # ...and one sends 10 of 1000 bytes of a body, then nothing
    slow_writer = idle[0][1]
    slow_writer.write(
        b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: 1000\r\n\r\nname=admin"
    )
    # ...and another trickles a byte a second: alive, but far below any useful rate
    trickle_writer = idle[1][1]
    trickle_writer.write(
        b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: 4000\r\n\r\n"
    )

    async def trickle() -> None:
        with contextlib.suppress(ConnectionError):
            for _ in range(30):
                trickle_writer.write(b"a")
                await trickle_writer.drain()
                await asyncio.sleep(1.0)

    trickling = asyncio.create_task(trickle())
    # everyone else still gets the console at once, and a dashboard asked with
    # "Connection: close" (as nginx asks by default) streams past every request timeout
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
    async with httpx.AsyncClient(base_url=office.url, transport=transport) as client:
        answer = await client.get("/login", timeout=2.0)
        assert answer.status_code == 200
        await login(client, "admin", admin_password(office))

        async def dashboard() -> int:
            events = 0
            headers = {"Connection": "close"}
            async with client.stream("GET", "/live", headers=headers, timeout=20) as stream:
                async for line in stream.aiter_lines():
                    events += line.startswith("data: ")
                    if time.monotonic() > done:
                        break
            return events

        # the attacker's connections end: silent ones after the head timeout, the slow
        # body after the body timeout, the trickle by its deadline
        within = max(LIMITS.head_timeout, LIMITS.body_timeout) + 3.0
        done = time.monotonic() + within
        # a registered phone: its expiry changes every second, so does the dashboard
        phone = sip.UserAgent("udp:127.0.0.1:0", user="100")
        await phone.start()
        sip_port = office.pbx.ua.listeners[0].port
        await phone.register(
            f"sip:127.0.0.1:{sip_port}",
            aor="sip:100@office.test",
            username="100",
            password="alice100",
            expires=300,
        )
        live = asyncio.create_task(dashboard())
        ended = await asyncio.gather(*(_closed(r, within) for r, _ in idle))
        assert all(ended)  # the trickle too (idle[1]), long before its 4000 bytes
        trickling.cancel()
        assert await live >= within - 2  # still streaming after the others were cut
        await phone.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "security"]
    assert any(
        re.match(r"event=http_refused src=127\.0\.0\.9:\d+ .*reason=max_per_address", line)
        for line in lines
    ), lines
    assert any(
        re.match(r"event=http_slow src=127\.0\.0\.9:\d+ .*reason=body_timeout", line)
        for line in lines
    ), lines
    for _, writer in idle:
        writer.close()


async def test_forwarded_for_is_believed_only_from_trusted_proxies(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="security")
    path = tmp_path / "office.toml"
    path.write_text(office_text(tmp_path))
    running = await start(path)
    try:
        async with httpx.AsyncClient(base_url=running.url) as client:
            for n in range(6):  # a new forged address each time: still this one source
                answer = await client.post(
                    "/login",
                    data={"name": "admin", "password": "guess"},
                    headers={"X-Forwarded-For": f"203.0.113.{n + 1}"},
                )
            assert answer.status_code == 429
    finally:
        await running.pbx.stop()
    lines = [r.getMessage() for r in caplog.records if r.name == "security"]
    assert lines and all("src=127.0.0.1:" in line for line in lines), lines
    assert not any("203.0.113." in line for line in lines)

    # behind a configured proxy the client's address is the one it names
    caplog.clear()
    (tmp_path / "data").mkdir(exist_ok=True)
    path.write_text(office_text(tmp_path, 'trusted_proxies = ["127.0.0.1"]'))
    running = await start(path)
    try:
        async with httpx.AsyncClient(base_url=running.url) as client:
            answer = await client.post(
                "/login",
                data={"name": "admin", "password": "guess"},
                headers={"X-Forwarded-For": "198.51.100.7"},
            )
            assert answer.status_code == 401
    finally:
        await running.pbx.stop()
    lines = [r.getMessage() for r in caplog.records if r.name == "security"]
    assert any(line.startswith("event=auth_failed src=198.51.100.7:") for line in lines), lines


async def test_provisioning_guesses_are_throttled_and_phones_can_have_their_own_secret(
    tmp_path: Path,
) -> None:
    http_port = free_port()
    extra = PHONES.format(port=http_port).replace(
        "gmt_offset = 3600\n", 'gmt_offset = 3600\ncredentials = "per_phone"\n'
    )
    extra = extra.replace(
        'blf = ["101", "102"]\n',
        'blf = ["101", "102"]\nprovisioning_password = "phone-one-secret"\n',
    )
    extra = extra.replace(
        'password = "shared-phone-secret"\n',
        'password = "shared-phone-secret"\nprovisioning_password = "phone-two-secret"\n',
    )
    pbx = await demo_pbx(tmp_path, extra=extra, rtp=34800)
    base = f"http://127.0.0.1:{http_port}"
    try:
        # each phone's own credentials open its files, and not another phone's
        mine = httpx.DigestAuth(MAC, "phone-one-secret")
        async with httpx.AsyncClient(base_url=base, auth=mine, timeout=5) as phone:
            assert (await phone.get(f"/{MAC}-softswitch.cfg")).status_code == 200
            assert (await phone.get("/0004f2000001-softswitch.cfg")).status_code == 401
        office = httpx.DigestAuth("prov", "prov-secret")
        async with httpx.AsyncClient(base_url=base, auth=office, timeout=5) as client:
            assert (await client.get("/000000000000.cfg")).status_code == 200  # no secret in it
            assert (await client.get(f"/{MAC}-softswitch.cfg")).status_code == 401
        # guesses from one address: refused after login_attempts, with a Retry-After
        statuses = []
        guessing = httpx.AsyncHTTPTransport(local_address="127.0.0.3")
        async with httpx.AsyncClient(base_url=base, timeout=5, transport=guessing) as guesser:
            for n in range(8):
                answer = await guesser.get(f"/{MAC}.cfg", auth=httpx.BasicAuth(MAC, f"guess{n}"))
                statuses.append(answer.status_code)
        assert statuses[:5] == [401] * 5 and set(statuses[5:]) == {429}, statuses
        assert int(answer.headers["retry-after"]) > 0
        # the phone itself, from its own address, is not locked out
        transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
        async with httpx.AsyncClient(base_url=base, auth=mine, transport=transport) as phone:
            assert (await phone.get(f"/{MAC}-softswitch.cfg")).status_code == 200
    finally:
        await pbx.stop()


async def test_every_answer_carries_the_security_headers(office: Running) -> None:
    async with httpx.AsyncClient(base_url=office.url) as client:
        answers = {
            "static": await client.get("/static/console.css"),
            "404": await client.get("/no/such/page"),
            "login": await client.get("/login"),
            "413": await client.post("/login", content=b"a" * 100_000),
        }
    assert answers["static"].status_code == 200
    assert answers["404"].status_code == 404
    assert answers["413"].status_code == 413
    for name, answer in answers.items():
        headers = answer.headers
        assert headers.get("x-content-type-options") == "nosniff", name
        assert "default-src 'self'" in headers.get("content-security-policy", ""), name
        assert headers.get("x-frame-options") == "DENY", name


async def test_chunked_bodies_are_cut_at_the_limit(office: Running) -> None:
    """8 MB of '&' sent chunked to the login form (the stall of the last probe): the web
    process stops reading at the login limit and says 413, or closes on the rest."""
    url = httpx.URL(office.url)
    assert url.port is not None
    reader, writer = await asyncio.open_connection(url.host, url.port)
    writer.write(
        b"POST /login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n\r\n"
    )
    chunk = b"&" * 65536
    sent = 0
    answer = b""
    try:
        while sent < 8 * 1024 * 1024:
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await asyncio.wait_for(writer.drain(), 5)
            sent += len(chunk)
        answer = await asyncio.wait_for(reader.read(4096), 5)
    except (ConnectionError, TimeoutError):
        with contextlib.suppress(ConnectionError, TimeoutError):  # what came before the reset
            answer = await asyncio.wait_for(reader.read(4096), 1)
    assert answer.startswith(b"HTTP/1.1 413") or sent < 8 * 1024 * 1024, (sent, answer[:200])
    writer.close()


def test_data_directory_parents_are_private_whatever_the_umask(tmp_path: Path) -> None:
    data = tmp_path / "srv" / "pbx" / "data"
    path = tmp_path / "office.toml"
    text = office_text(tmp_path).replace(
        f'data_dir = "{tmp_path / "data"}"', f'data_dir = "{data}"'
    )
    path.write_text(text)

    async def run() -> None:
        running = await start(path)
        await running.pbx.stop()

    old = os.umask(0)
    try:
        asyncio.run(run())
    finally:
        os.umask(old)
    for made in (tmp_path / "srv", tmp_path / "srv" / "pbx", data):
        assert stat.S_IMODE(made.stat().st_mode) == 0o700, made


async def test_a_web_process_that_dies_is_started_again(
    office: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="softswitch")
    web = office.pbx.svc.web
    pid = web.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    async with httpx.AsyncClient(base_url=office.url) as client:
        async with asyncio.timeout(15):
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/login", timeout=1.0)).status_code == 200:
                        break
                await asyncio.sleep(0.2)
    assert web.pid not in (None, pid) and web.restarts == 1
    assert any("event=web_process_exited" in r.getMessage() for r in caplog.records)


async def test_a_stranger_can_neither_forge_log_lines_nor_park_uploads(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    http_port = free_port()
    pbx = await demo_pbx(tmp_path, extra=PHONES.format(port=http_port), rtp=35600)
    try:
        forged = (
            "/x%0a2026-12-07 13:48:06,123 WARNING security event=auth_failed"
            " src=203.0.113.8:5060 user=100 method=REGISTER reason=wrong_password%0a"
        )
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}") as client:
            answer = await client.get(forged, auth=httpx.BasicAuth("prov", "guess"))
            assert answer.status_code == 401
    finally:
        await pbx.stop()
    messages = [r.getMessage() for r in caplog.records]
    assert any("provisioning_request" in m and "203.0.113.8" in m for m in messages)
    assert not any("\n" in m or "\r" in m for m in messages)
    assert not any(r.name == "security" and "203.0.113.8" in r.getMessage() for r in caplog.records)


async def test_uploads_are_read_only_from_whom_is_logged_in(office: Running) -> None:
    url = httpx.URL(office.url)
    assert url.port is not None
    reader, writer = await asyncio.open_connection(url.host, url.port)
    writer.write(
        b"POST /admin/music HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; b=x\r\n"
        b"Content-Length: 5000000\r\n\r\n"
    )
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(4096), 5)  # at once, not after 5 MB
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    writer.close()
    async with httpx.AsyncClient(base_url=office.url) as client:
        csrf = await login(client, "admin", admin_password(office))
        upload = await client.post(
            "/admin/music",
            data={"csrf": csrf, "slot": "default"},
            files={"file": ("big.wav", b"\0" * 200_000, "audio/wav")},
        )
        assert upload.status_code != 413  # the administrator's upload is read (then judged)


async def test_the_web_process_follows_each_applied_configuration(tmp_path: Path) -> None:
    http_port = free_port()
    text = PHONES.format(port=http_port)
    pbx = await demo_pbx(tmp_path, extra=text, rtp=35800)
    base = f"http://127.0.0.1:{http_port}"
    auth = httpx.DigestAuth("prov", "prov-secret")
    try:
        async with httpx.AsyncClient(base_url=base, auth=auth) as client:
            first = await client.get(f"/{MAC}-softswitch.cfg")
            assert 'reg.1.auth.password="alice100"' in first.text
        users = [
            u.model_copy(update={"password": "alice-second"}) if u.extension == "100" else u
            for u in pbx.config.users
        ]
        await pbx.apply(pbx.config.model_copy(update={"users": users}))
        async with httpx.AsyncClient(base_url=base, auth=auth) as client:
            second = await client.get(f"/{MAC}-softswitch.cfg")
            assert 'reg.1.auth.password="alice-second"' in second.text
        sections = {k: v for k, v in pbx.config.sections.items() if k != "provisioning"}
        await pbx.apply(pbx.config.model_copy(update={"sections": sections}))
        async with httpx.AsyncClient(base_url=base, auth=auth) as client:
            with pytest.raises(httpx.ConnectError):
                await client.get(f"/{MAC}-softswitch.cfg")
    finally:
        await pbx.stop()


async def test_console_edits_are_applied_at_a_pace_the_calls_can_bear(office: Running) -> None:
    svc = office.pbx.svc
    real = svc.apply_config
    assert real is not None
    starts: list[float] = []

    async def slow(config: Any) -> list[str]:  # an office whose rebuild takes 20 ms
        starts.append(time.monotonic())
        await asyncio.sleep(0.02)
        return await real(config)

    svc.apply_config = slow
    handler = svc.web.handlers["apply"]
    await asyncio.gather(*(handler({}) for _ in range(3)))  # a user saving in a loop
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert len(starts) == 3 and all(gap >= 10 * 0.02 for gap in gaps), gaps


class _Conn:
    """What the guard needs of a connection: its peer, and a way to close it."""

    def __init__(self, guard: Guard, host: str) -> None:
        self.guard, self.peer, self.dropped = guard, (host, 40000), False

    def drop(self) -> None:
        self.dropped = True
        self.guard.table.remove(self)  # type: ignore[arg-type]


def test_the_guard_caps_addresses_by_64_and_evicts_a_silent_connection_first() -> None:
    guard = Guard(Limits(per_address=2, total=3), sip.SecurityLog())

    def admit(host: str) -> _Conn | None:
        conn = _Conn(guard, host)
        return conn if guard.admit(conn, host, 40000) else None  # type: ignore[arg-type]

    a, b = admit("2001:db8::1"), admit("2001:db8::2")
    assert a is not None and b is not None
    assert admit("2001:db8::3") is None  # the same /64: one address's share
    for conn in (a, b):
        guard.heard(conn, complete=True)  # type: ignore[arg-type]
    silent = admit("127.0.0.3")
    assert silent is not None
    newcomer = admit("127.0.0.4")  # at the total cap: the one that never asked goes
    assert newcomer is not None and silent.dropped and not (a.dropped or b.dropped)
