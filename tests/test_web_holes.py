"""Holes a web probe found in the console and its API, each shut and kept shut: a reset or
a changed phone password evicts whoever held the user's API tokens, console sessions and
portal password; the API never shows a SIP password or PIN after creation (or an explicit
reset); the call-history CSV carries no formulas; the API and the forms refuse deep JSON
and control characters, naming the field; the TTS preview speaks text and reads no file;
failed logins from one address lock no account for the others."""

from __future__ import annotations

import csv
import io
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile

from softswitch.features.cdr import COLUMNS, CallHistory, CallRecord, from_csv, to_csv
from softswitch.features.console.websec import LoginThrottle

from .console import Running, admin_password, login, make_token, office_text, start
from .test_console_api import api

SECRETS = ("password", "pin")


@pytest.fixture
async def office(tmp_path: Path) -> AsyncIterator[Running]:
    path = tmp_path / "office.toml"
    path.write_text(office_text(tmp_path))
    running = await start(path)
    yield running
    await running.pbx.stop()


def console(office: Running, address: str | None = None) -> httpx.AsyncClient:
    """A browser on the console (from ``address``: another source)."""
    if address is None:
        return httpx.AsyncClient(base_url=office.url)
    transport = httpx.AsyncHTTPTransport(local_address=address)
    return httpx.AsyncClient(base_url=office.url, transport=transport)


def no_secrets(user: dict[str, object]) -> bool:
    devices = user.get("devices") or []
    assert isinstance(devices, list)
    return not any(k in user for k in SECRETS) and all("password" not in d for d in devices)


def without_nulls(data: object) -> object:
    """What was read, as a PUT takes it (TOML has no null: PUT refuses one)."""
    if isinstance(data, dict):
        return {k: without_nulls(v) for k, v in data.items() if v is not None}
    if isinstance(data, list):
        return [without_nulls(v) for v in data]
    return data


async def logged_out(browser: httpx.AsyncClient) -> bool:
    page = await browser.get("/portal")
    return page.status_code == 303 and page.headers["location"] == "/login"


# -- hole 3: a reset, or a changed phone password, evicts the user's holders ---------------


async def test_a_reset_on_the_console_ends_the_users_tokens_and_sessions(
    office: Running,
) -> None:
    async with console(office) as admin, console(office) as bob:
        csrf = await login(admin, "admin", admin_password(office))
        token = await make_token(admin, csrf, "101")
        await login(bob, "101", "bob101")
        assert (await bob.get("/portal")).status_code == 200
        answer = await admin.post("/admin/users/101/reset", data={"csrf": csrf})
        assert answer.status_code == 303
        async with api(office, token) as client:
            assert (await client.get("/users/101")).status_code == 401
        assert await logged_out(bob)
        user = office.pbx.config.user("101")
        assert user is not None and user.password != "bob101"
        await login(bob, "101", user.password)  # the new phone password works


async def test_the_api_never_shows_a_sip_password_or_pin_after_creation(
    office: Running,
) -> None:
    async with console(office) as admin:
        csrf = await login(admin, "admin", admin_password(office))
        admin_token = await make_token(admin, csrf)
        bob_token = await make_token(admin, csrf, "101")
        own = (await admin.get("/api/users/101")).json()  # the session's cookie
        assert own["name"] == "Bob Durand" and no_secrets(own)
    async with api(office, bob_token) as client:
        mine = await client.get("/users/101")
        assert mine.status_code == 200 and no_secrets(mine.json())
        assert all(no_secrets(u) for u in (await client.get("/users")).json())
        patched = await client.patch("/users/101", json={"dnd": "all"})
        assert patched.status_code == 200 and no_secrets(patched.json())
    eve = {
        "extension": "104",
        "name": "Eve Roux",
        "password": "eve-secret",
        "pin": "1104",
        "devices": [{"name": "desk", "username": "eve-desk", "password": "desk-secret"}],
    }
    async with api(office, admin_token) as client:
        created = await client.post("/users", json=eve)
        assert created.status_code == 201  # creation shows them, once
        assert created.json()["password"] == "eve-secret" and created.json()["pin"] == "1104"
        assert all(no_secrets(u) for u in (await client.get("/users")).json())
        shown = without_nulls((await client.get("/users/104")).json())
        assert isinstance(shown, dict) and no_secrets(shown)
        assert shown["devices"][0]["username"] == "eve-desk"
        # what was read, put back: the secrets it did not show are kept
        put = await client.put("/users/104", json={**shown, "name": "Eve Roux-Martin"})
        assert put.status_code == 200 and no_secrets(put.json()), put.text
        user = office.pbx.config.user("104")
        assert user is not None and user.name == "Eve Roux-Martin"
        assert (user.password, user.pin) == ("eve-secret", "1104")
        assert user.devices[0].password == "desk-secret"
        reset = await client.post("/users/104/reset")  # an explicit reset shows the new ones
        assert reset.status_code == 200, reset.text
        user = office.pbx.config.user("104")
        assert user is not None and user.password != "eve-secret"
        assert reset.json() == {"password": user.password, "pin": user.pin}


async def test_a_phone_password_changed_through_the_api_evicts_the_user(
    office: Running,
) -> None:
    async with console(office) as admin, console(office) as bob:
        csrf = await login(admin, "admin", admin_password(office))
        admin_token = await make_token(admin, csrf)
        bob_token = await make_token(admin, csrf, "101")
        portal = await login(bob, "101", "bob101")
        chosen = {"csrf": portal, "current": "bob101", "new": "portal-pass", "again": "portal-pass"}
        assert (await bob.post("/portal/password", data=chosen)).status_code == 303
        # a portal password of one's own revokes the tokens made before it
        async with api(office, bob_token) as mine:
            assert (await mine.get("/users/101")).status_code == 401
        bob_token = await make_token(admin, csrf, "101")
        async with api(office, admin_token) as client:
            answer = await client.patch("/users/101", json={"dnd": "all"})
            assert answer.status_code == 200  # no new password: nothing ends
            async with api(office, bob_token) as mine:
                assert (await mine.get("/users/101")).status_code == 200
            assert (await bob.get("/api/users/101")).status_code == 200

            answer = await client.patch("/users/101", json={"password": "bob-second"})
            assert answer.status_code == 200 and no_secrets(answer.json())
            async with api(office, bob_token) as mine:
                assert (await mine.get("/users/101")).status_code == 401
            assert (await bob.get("/api/users/101")).status_code == 401
            assert await logged_out(bob)
            refused = await bob.post("/login", data={"name": "101", "password": "portal-pass"})
            assert refused.status_code == 401  # the portal password chosen before is gone

            await login(bob, "101", "bob-second")
            bob_token = await make_token(admin, csrf, "101")
            shown = without_nulls((await client.get("/users/101")).json())
            assert isinstance(shown, dict)
            answer = await client.put("/users/101", json={**shown, "password": "bob-third"})
            assert answer.status_code == 200 and no_secrets(answer.json())
            async with api(office, bob_token) as mine:
                assert (await mine.get("/users/101")).status_code == 401
            assert await logged_out(bob)
    user = office.pbx.config.user("101")
    assert user is not None and user.password == "bob-third" and user.dnd == "all"


async def test_a_phone_password_changed_in_the_console_form_evicts_the_user(
    office: Running,
) -> None:
    async with console(office) as admin, console(office) as bob:
        csrf = await login(admin, "admin", admin_password(office))
        bob_token = await make_token(admin, csrf, "101")
        await login(bob, "101", "bob101")
        form = {
            "csrf": csrf,
            "name": "Bob Durand",
            "password": "bob101",
            "pin": "1101",
            "voicemail": "on",
            "device_rows": "0",
            "rule_rows": "0",
        }
        assert (await admin.post("/admin/users/101", data=form)).status_code == 303
        async with api(office, bob_token) as mine:  # the same password: nothing ends
            assert (await mine.get("/users/101")).status_code == 200
        assert (await bob.get("/portal")).status_code == 200

        answer = await admin.post("/admin/users/101", data={**form, "password": "bob-second"})
        assert answer.status_code == 303
        async with api(office, bob_token) as mine:
            assert (await mine.get("/users/101")).status_code == 401
        assert await logged_out(bob)
    user = office.pbx.config.user("101")
    assert user is not None and user.password == "bob-second"


# -- hole 6: formulas in the call-history CSV -----------------------------------------------


def a_call(**fields: object) -> CallRecord:
    values: dict[str, object] = {
        "id": 1,
        "call_id": "c1@office.test",
        "start": 1_780_000_000.0,
        "answer": None,
        "end": 1_780_000_005.0,
        "caller": "100",
        "caller_name": "Alice Martin",
        "dialled": "101",
        "destination": "101",
        "disposition": "no answer",
        "duration": 0.0,
        "chain": "101",
    }
    values.update(fields)
    return CallRecord(**values)  # type: ignore[arg-type]


HOSTILE = a_call(
    caller="=1+2",
    caller_name="@SUM(A1:A9)",
    dialled="+33612345678",
    destination="-2+3",
    chain="\t=cmd|' /C calc'!A0",
    call_id="\r=1",
)


def cells(text: str) -> list[str]:
    return [cell for row in list(csv.reader(io.StringIO(text)))[1:] for cell in row]


def test_the_csv_export_escapes_formulas_and_reads_back_the_same() -> None:
    text = to_csv([HOSTILE, a_call(id=2, caller_name="'Tis Bob")])
    found = cells(text)
    assert not [c for c in found if c[:1] in ("=", "+", "-", "@", "\t", "\r")], found
    row = dict(zip(COLUMNS, found[: len(COLUMNS)], strict=True))
    assert row["caller"] == "'=1+2" and row["dialled"] == "'+33612345678"
    back = list(from_csv(text))  # the import strips what the export added
    assert back == [
        {k: str(v) for k, v in HOSTILE.row().items()},
        {k: str(v) for k, v in a_call(id=2, caller_name="'Tis Bob").row().items()},
    ]


async def test_the_csv_downloads_escape_formulas(office: Running) -> None:
    history = office.pbx.registry.feature("cdr")
    assert isinstance(history, CallHistory) and history.store is not None
    history.store.add(HOSTILE)
    async with console(office) as admin:
        csrf = await login(admin, "admin", admin_password(office))
        token = await make_token(admin, csrf)
        page = await admin.get("/admin/calls.csv")
        assert page.status_code == 200
    async with api(office, token) as client:
        answer = await client.get("/calls.csv")
        assert answer.status_code == 200
    for text in (page.text, answer.text):
        assert "'=1+2" in text
        assert not [c for c in cells(text) if c[:1] in ("=", "+", "-", "@", "\t", "\r")]


# -- hole 8: deep JSON, control characters, the TTS preview, the login throttle -------------


async def test_deeply_nested_json_is_refused_with_400(office: Running, tmp_path: Path) -> None:
    path = tmp_path / "office.toml"
    before = path.read_bytes()
    async with console(office) as admin:
        csrf = await login(admin, "admin", admin_password(office))
        token = await make_token(admin, csrf)
    async with api(office, token) as client:
        deep = b"[" * 50_000 + b"]" * 50_000
        for method, url in (("PATCH", "/users/100"), ("POST", "/users"), ("PUT", "/trunks/x")):
            answer = await client.request(method, url, content=deep)
            assert answer.status_code == 400, answer.text[:300]
            assert "nested" in answer.json()["error"]
        # parsable, but deeper than any configuration goes
        nested: object = "x"
        for _ in range(40):
            nested = {"a": nested}
        answer = await client.patch("/users/100", json={"forward": nested})
        assert answer.status_code == 400 and "nested" in answer.json()["error"]
        answer = await client.patch("/users/100", content=b'{"name": "' + b"x" * 300_000 + b'"}')
        assert answer.status_code == 413  # the size bound holds as before
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "Alice\x00Martin"}, "name"),
        ({"name": "Alice\tMartin"}, "name"),
        ({"name": "Alice\x7f"}, "name"),
        ({"name": "Alice\u2028Martin"}, "name"),
        ({"name": "Alice\x85"}, "name"),
        ({"forward": {"connecting_message": "one\ntwo"}}, "forward.connecting_message"),
        ({"blocked": ["0899", "08\x0099"]}, "blocked[1]"),
        ({"na\x00me": "Alice"}, "na\\x00me"),
    ],
)
async def test_control_characters_in_api_strings_are_refused_naming_the_field(
    office: Running, tmp_path: Path, body: dict[str, object], field: str
) -> None:
    path = tmp_path / "office.toml"
    before = path.read_bytes()
    async with console(office) as admin:
        csrf = await login(admin, "admin", admin_password(office))
        token = await make_token(admin, csrf)
    async with api(office, token) as client:
        answer = await client.patch("/users/100", json=body)
        assert answer.status_code == 422, answer.text
        assert [d["field"] for d in answer.json()["detail"]] == [field]
        assert "control character" in answer.json()["detail"][0]["message"]
        created = await client.post("/users", json={"extension": "104", "pin": "1104", **body})
        assert created.status_code == 422
    assert path.read_bytes() == before


async def test_control_characters_in_forms_are_refused_naming_the_field(
    office: Running, tmp_path: Path
) -> None:
    path = tmp_path / "office.toml"
    before = path.read_bytes()
    async with console(office) as admin, console(office) as carol:
        csrf = await login(admin, "admin", admin_password(office))
        form = {
            "csrf": csrf,
            "name": "Alice\x00Martin",
            "password": "alice100",
            "pin": "1100",
            "voicemail": "on",
            "device_rows": "0",
            "rule_rows": "0",
        }
        answer = await admin.post("/admin/users/100", data=form)
        assert answer.status_code == 422 and "name" in answer.text
        assert "control character" in answer.text
        group = {"csrf": csrf, "extension": "600", "name": "Sales\u2028", "steps": "100"}
        answer = await admin.post("/admin/groups/new", data=group)
        assert answer.status_code == 422 and "control character" in answer.text
        portal = await login(carol, "102", "carol102")
        mine = {"csrf": portal, "dnd": "off", "screening": "off", "forward_busy": "10\x001"}
        answer = await carol.post("/portal/settings", data=mine)
        assert answer.status_code == 422 and "control character" in answer.text
        assert path.read_bytes() == before

        # lines where a field is made of lines: the steps, a greeting spoken as one text
        group = {"csrf": csrf, "extension": "600", "name": "Sales", "steps": "100 / 15\r\n101"}
        assert (await admin.post("/admin/groups/new", data=group)).status_code == 303
        menu = {
            "csrf": csrf,
            "extension": "500",
            "name": "Reception",
            "greeting": "Welcome.\r\nPress 1 for sales.",
            "key_1": "600",
        }
        assert (await admin.post("/admin/ivr/new", data=menu)).status_code == 303
    saved = tomllib.loads(path.read_text())
    assert saved["ring_groups"][0]["steps"] == [
        {"targets": ["100"], "ring_seconds": 15},
        {"targets": ["101"]},
    ]
    assert saved["ivr"][0]["greeting"] == "Welcome. Press 1 for sales."


async def test_the_tts_preview_speaks_text_and_reads_no_file(
    office: Running, tmp_path: Path
) -> None:
    secret = tmp_path / "elsewhere" / "private.wav"
    secret.parent.mkdir()
    noise = np.random.default_rng(8).integers(-9000, 9000, 8000).astype(np.int16)
    soundfile.write(secret, noise, 8000, subtype="PCM_16")
    async with console(office) as admin:
        await login(admin, "admin", admin_password(office))
        for text in (str(secret), f"../../elsewhere/{secret.name}"):
            answer = await admin.get("/admin/tts", params={"text": text})
            assert answer.content != secret.read_bytes()
            assert answer.status_code == 200 and answer.headers["content-type"] == "audio/wav"
        answer = await admin.get("/admin/tts", params={"text": "x" * 2001})
        assert answer.status_code == 422
        answer = await admin.get("/admin/tts", params={"text": "hello\x00there"})
        assert answer.status_code == 422 and "control character" in answer.text


def test_the_login_throttle_counts_per_source_and_per_source_and_account() -> None:
    throttle = LoginThrottle(5, 300)
    for i in range(4):
        assert throttle.failed("10.0.0.1", "admin", 100.0 + i) is None
    started = throttle.failed("10.0.0.1", "admin", 104.0)
    assert started is not None and started.scope == "account" and started.until == 400.0
    refusal = throttle.refused("10.0.0.1", "admin", 105.0)
    assert refusal is not None and refusal.scope == "account"
    assert throttle.refused("10.0.0.2", "admin", 105.0) is None  # elsewhere: not locked
    assert throttle.refused("10.0.0.1", "100", 105.0) is None  # another account: not yet
    assert throttle.refused("10.0.0.1", "admin", 400.0) is None  # the window passed

    # one source trying many names is refused as a source, for every name
    scopes = [throttle.failed("10.0.0.3", f"name{i}", 200.0 + i) for i in range(40)]
    first, started = next((i, s) for i, s in enumerate(scopes) if s is not None)
    assert started.scope == "source" and first == 19  # 4 x 5 failures
    refusal = throttle.refused("10.0.0.3", "someone", 200.0 + first)
    assert refusal is not None and refusal.scope == "source"
    assert throttle.refused("10.0.0.4", "someone", 200.0 + first) is None

    # a success forgets that account's failures (not its source's)
    for i in range(4):
        throttle.failed("10.0.0.5", "101", 500.0 + i)
    throttle.succeeded("101")
    assert throttle.failed("10.0.0.5", "101", 505.0) is None


async def test_failed_logins_from_one_address_lock_no_one_out_elsewhere(
    office: Running,
) -> None:
    good = admin_password(office)
    async with console(office) as attacker:
        for _ in range(5):
            answer = await attacker.post("/login", data={"name": "admin", "password": "guess"})
            assert answer.status_code == 401
        answer = await attacker.post("/login", data={"name": "admin", "password": good})
        assert answer.status_code == 429  # the attacker's address is refused this account
    async with console(office, "127.0.0.2") as colleague:
        answer = await colleague.post("/login", data={"name": "admin", "password": good})
        assert answer.status_code == 303  # the administrator gets in from elsewhere
