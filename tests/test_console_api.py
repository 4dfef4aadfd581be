"""The console's REST API, CSRF, login throttling and the live reload path, against a PBX
in this process: CRUD on users and ring groups written to the file and kept after a
restart, invalid changes refused with the field and nothing changed, user tokens held to
their own user."""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from softswitch.config import ConfigError
from softswitch.control import reload

from .console import Running, admin_password, login, make_token, office_text, start
from .netutil import free_port
from .office import Office
from .test_cli import softswitch


@pytest.fixture
async def office(tmp_path: Path) -> AsyncIterator[Running]:
    path = tmp_path / "office.toml"
    path.write_text(office_text(tmp_path))
    running = await start(path)
    yield running
    await running.pbx.stop()


async def admin_token(running: Running) -> str:
    async with httpx.AsyncClient(base_url=running.url) as client:
        csrf = await login(client, "admin", admin_password(running))
        return await make_token(client, csrf)


def api(running: Running, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=running.url + "api", headers={"Authorization": f"Bearer {token}"}
    )


async def test_users_and_ring_groups_crud_saved_applied_and_kept_after_a_restart(
    office: Running, tmp_path: Path
) -> None:
    token = await admin_token(office)
    path = tmp_path / "office.toml"
    async with api(office, token) as client:
        schema = (await client.get("/openapi.json")).json()
        assert "/api/users/{key}" in schema["paths"] and "User" in schema["components"]["schemas"]
        created = await client.post(
            "/users",
            json={"extension": "104", "name": "Eve Roux", "password": "eve-secret", "pin": "1104"},
        )
        assert created.status_code == 201, created.text
        assert office.pbx.config.user("104") is not None  # applied: no restart
        assert "104" in office.pbx.registry.numbers
        changed = await client.patch("/users/104", json={"forward": {"no_answer": "101"}})
        assert changed.status_code == 200 and changed.json()["forward"]["no_answer"] == "101"
        group = {
            "extension": "600",
            "name": "Sales",
            "steps": [{"targets": ["100", "101"], "ring_seconds": 15}, {"targets": ["104"]}],
            "no_answer": "voicemail:100",
        }
        assert (await client.post("/ring_groups", json=group)).status_code == 201
        group["name"] = "Sales team"
        replaced = await client.put("/ring_groups/600", json=group)
        assert replaced.status_code == 200 and replaced.json()["name"] == "Sales team"
        listed = (await client.get("/ring_groups")).json()
        assert [g["extension"] for g in listed] == ["600"]
        assert (await client.delete("/users/102")).status_code == 204
        assert (await client.get("/users/102")).status_code == 404
        assert office.pbx.config.user("102") is None and "102" not in office.pbx.registry.numbers

    saved = tomllib.loads(path.read_text())
    assert [u["extension"] for u in saved["users"]] == ["100", "101", "104"]
    assert saved["users"][2]["forward"] == {"no_answer": "101"}  # only what differs
    assert saved["ring_groups"][0]["name"] == "Sales team"
    assert path.read_text().startswith("# the office of a console test")  # comments kept
    previous = tomllib.loads((tmp_path / "office.toml.prev").read_text())
    assert [u["extension"] for u in previous["users"]] == ["100", "101", "102", "104"]

    await office.pbx.stop()  # a restart: the file and the tokens are what remain
    again = await start(path)
    try:
        assert getattr(again.console, "admin_password", None) is None  # not a first start
        async with api(again, token) as client:
            group_again = (await client.get("/ring_groups/600")).json()
            assert group_again["name"] == "Sales team"
            assert group_again["steps"][1]["targets"] == ["104"]
            user = (await client.get("/users/104")).json()
            assert user["forward"]["no_answer"] == "101"
            assert (await client.get("/users/102")).status_code == 404
    finally:
        await again.pbx.stop()
        office.pbx = again.pbx  # the fixture stops it (again: harmless)


async def test_invalid_changes_are_422_naming_the_field_and_change_nothing(
    office: Running, tmp_path: Path
) -> None:
    token = await admin_token(office)
    path = tmp_path / "office.toml"
    before, config = path.read_bytes(), office.pbx.config
    async with api(office, token) as client:
        answer = await client.patch("/users/100", json={"forward": {"no_answer_after": 99}})
        assert answer.status_code == 422
        (problem,) = answer.json()["detail"]
        assert problem["field"] == "forward.no_answer_after"
        assert "less than or equal to 60" in problem["message"]

        answer = await client.post(
            "/ring_groups",
            json={"extension": "600", "name": "Bad", "steps": [{"targets": ["999"]}]},
        )
        assert answer.status_code == 422  # the whole configuration is checked
        assert answer.json()["detail"][0]["field"] == "steps[0].targets[0]"
        assert "999 is neither an extension" in answer.json()["detail"][0]["message"]

        answer = await client.post("/users", json={"extension": "1", "name": "X"})
        fields = {d["field"] for d in answer.json()["detail"]}
        assert answer.status_code == 422 and {"extension", "password", "pin"} <= fields

        answer = await client.patch("/users/100", json={"forward": {"busy": "ext:998"}})
        assert answer.status_code == 422
        assert answer.json()["detail"][0]["field"] == "forward.busy"
        assert "no extension, group or feature has this number" in answer.text

        assert (await client.get("/users/555")).status_code == 404
        assert (await client.post("/users", content=b"{not json")).status_code == 400
    assert path.read_bytes() == before  # the file was not touched
    assert not (tmp_path / "office.toml.prev").exists()
    assert office.pbx.config is config  # nor the running configuration


async def test_a_user_token_reaches_its_own_user_only(office: Running) -> None:
    async with httpx.AsyncClient(base_url=office.url) as admin:
        csrf = await login(admin, "admin", admin_password(office))
        bob = await make_token(admin, csrf, "101")
    async with api(office, bob) as client:
        assert [u["extension"] for u in (await client.get("/users")).json()] == ["101"]
        assert (await client.get("/users/100")).status_code == 403
        assert (await client.patch("/users/100", json={"dnd": "all"})).status_code == 403
        assert (await client.get("/voicemail/100")).status_code == 403
        assert (await client.get("/voicemail/101")).status_code == 200
        assert (await client.get("/ring_groups")).status_code == 403
        assert (await client.post("/users", json={})).status_code == 403
        assert (await client.delete("/users/101")).status_code == 403
        answer = await client.patch("/users/101", json={"permission": "international"})
        assert answer.status_code == 403 and answer.json()["detail"][0]["field"] == "permission"
        answer = await client.patch("/users/101", json={"dnd": "all"})
        assert answer.status_code == 200 and answer.json()["dnd"] == "all"
    user = office.pbx.config.user("101")
    assert user is not None and user.dnd == "all" and user.permission == "national"
    assert office.pbx.config.user("100").dnd == "off"  # type: ignore[union-attr]
    async with httpx.AsyncClient(
        base_url=office.url + "api", headers={"Authorization": "Bearer sst_forged"}
    ) as client:
        assert (await client.get("/users/101")).status_code == 401


async def test_forms_without_the_session_csrf_token_are_refused(
    office: Running, tmp_path: Path
) -> None:
    path = tmp_path / "office.toml"
    before = path.read_bytes()
    async with httpx.AsyncClient(base_url=office.url) as client:
        csrf = await login(client, "admin", admin_password(office))
        form = {"name": "Alice Changed", "password": "alice100", "pin": "1100"}
        answer = await client.post("/admin/users/100", data=form)  # no token
        assert answer.status_code == 403 and "did not come from here" in answer.text
        answer = await client.post("/admin/users/100", data={**form, "csrf": "x" * 43})
        assert answer.status_code == 403
        answer = await client.post("/admin/users/100/delete", data={})
        assert answer.status_code == 403
        # the API with the session's cookie needs the token in X-CSRF-Token
        answer = await client.patch("/api/users/100", json={"dnd": "all"})
        assert answer.status_code == 403
        assert path.read_bytes() == before and office.pbx.config.user("100").dnd == "off"  # type: ignore[union-attr]
        answer = await client.patch(
            "/api/users/100", json={"dnd": "all"}, headers={"X-CSRF-Token": csrf}
        )
        assert answer.status_code == 200  # with it, the same change goes through
        answer = await client.post(
            "/admin/users/100",
            data={**form, "csrf": csrf, "voicemail": "on", "device_rows": "0", "rule_rows": "0"},
        )
        assert answer.status_code == 303
    assert office.pbx.config.user("100").name == "Alice Changed"  # type: ignore[union-attr]


async def test_logins_are_throttled_per_source_and_per_account(
    office: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="security")
    good = admin_password(office)
    async with httpx.AsyncClient(base_url=office.url) as client:
        for _ in range(5):  # [console] login_attempts
            answer = await client.post("/login", data={"name": "admin", "password": "guess"})
            assert answer.status_code == 401
        answer = await client.post("/login", data={"name": "admin", "password": good})
        assert answer.status_code == 429 and "too many failed logins" in answer.text
        answer = await client.post("/login", data={"name": "100", "password": "alice100"})
        assert answer.status_code == 303  # another account from this source: not refused
        for i in range(15):  # 4 x login_attempts failures, over any names, refuse the source
            answer = await client.post("/login", data={"name": f"9{i:02d}", "password": "x"})
            assert answer.status_code == 401
        answer = await client.post("/login", data={"name": "101", "password": "bob101"})
        assert answer.status_code == 429  # this source is refused, whatever the account
    other = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
    async with httpx.AsyncClient(base_url=office.url, transport=other) as client:
        answer = await client.post("/login", data={"name": "admin", "password": good})
        assert answer.status_code == 303  # the account is not refused elsewhere
        answer = await client.post("/login", data={"name": "100", "password": "alice100"})
        assert answer.status_code == 303  # a colleague logs in from elsewhere
    lines = [r.getMessage() for r in caplog.records if r.name == "security"]
    failed = [line for line in lines if line.startswith("event=auth_failed src=127.0.0.1:")]
    assert len(failed) >= 5 and all("user=admin" in x and "reason=console" in x for x in failed[:5])
    throttled = [x for x in lines if x.startswith("event=auth_throttled src=127.0.0.1:")]
    assert len(throttled) == 2 and "user=admin" in throttled[0], lines  # admin from there
    assert "user=-" in throttled[1], lines  # then the whole source


async def test_reload_applies_a_hand_edited_file_and_refuses_an_invalid_one(
    office: Running, tmp_path: Path
) -> None:
    path = tmp_path / "office.toml"
    path.write_text(
        path.read_text()
        + '\n[[ring_groups]]\nextension = "600"\nname = "Sales"\n'
        + 'steps = [ { targets = ["100", "101"] } ]\n'
    )
    answer = await reload(office.pbx)
    assert answer == {"ok": True, "restart_needed": []}
    assert "600" in office.pbx.registry.numbers
    running = office.pbx.config
    path.write_text(path.read_text().replace('targets = ["100", "101"]', 'targets = ["100", "9"]'))
    answer = await reload(office.pbx)
    assert "ring_groups[0].steps[0].targets[1]" in answer["error"]
    assert office.pbx.config is running and "600" in office.pbx.registry.numbers
    with pytest.raises(ConfigError, match="targets"):
        office.file.load()


@pytest.mark.interop
async def test_softswitch_reload_and_sighup_apply_the_file_or_refuse_it(tmp_path: Path) -> None:
    office = Office(tmp_path)
    office.extra = f'\n[console]\nlisten = "127.0.0.1:{free_port()}"\n'
    proc = office.start()
    url = proc.wait_for(r"web console (http://\S+)").group(1)
    password = proc.wait_for(r"console login: admin / (\S+)").group(1)
    path = office.config_path
    try:
        async with httpx.AsyncClient(base_url=url) as client:
            token = await make_token(client, await login(client, "admin", password))
        group = '[[ring_groups]]\nextension = "600"\nname = "Sales"\n'
        group += 'steps = [ { targets = ["100"] } ]\n'
        path.write_text(path.read_text() + "\n" + group)
        done = softswitch("reload", "--config", str(path))
        assert done.returncode == 0 and "applied" in done.stdout, done.stderr
        async with httpx.AsyncClient(
            base_url=url + "api", headers={"Authorization": f"Bearer {token}"}
        ) as client:
            assert (await client.get("/ring_groups/600")).json()["name"] == "Sales"
            path.write_text(path.read_text().replace('name = "Sales"', 'name = ""'))
            refused = softswitch("reload", "--config", str(path))
            assert refused.returncode == 1
            assert "ring_groups[0].name: String should have at least 1 character" in refused.stderr
            assert (await client.get("/ring_groups/600")).json()["name"] == "Sales"  # kept
            path.write_text(path.read_text().replace('name = ""', 'name = "Sales desk"'))
            proc.proc.send_signal(signal.SIGHUP)
            for _ in range(50):
                if (await client.get("/ring_groups/600")).json()["name"] == "Sales desk":
                    break
                await asyncio.sleep(0.1)
            assert (await client.get("/ring_groups/600")).json()["name"] == "Sales desk"
    finally:
        office.stop()


async def test_https_with_a_configured_certificate(tmp_path: Path) -> None:
    made = subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=127.0.0.1", "-keyout", "console.key", "-out", "console.crt"),
        ],
        cwd=tmp_path,
        capture_output=True,
    )
    assert made.returncode == 0, made.stderr
    path = tmp_path / "office.toml"
    path.write_text(office_text(tmp_path, 'certificate = "console.crt"\nkey = "console.key"'))
    running = await start(path)
    try:
        assert running.url.startswith("https://127.0.0.1:")
        password = admin_password(running)
        async with httpx.AsyncClient(base_url=running.url, verify=False) as client:
            answer = await client.post("/login", data={"name": "admin", "password": password})
            cookie = answer.headers["set-cookie"]
            assert answer.status_code == 303 and "Secure" in cookie and "HttpOnly" in cookie
            assert answer.headers["strict-transport-security"].startswith("max-age=")
        with pytest.raises(httpx.HTTPError):  # no plain HTTP on that port
            async with httpx.AsyncClient() as plain:
                await plain.get(running.url.replace("https://", "http://") + "login")
    finally:
        await running.pbx.stop()
