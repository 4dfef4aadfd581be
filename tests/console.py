"""Helpers of the web console's tests: an office with ``[console]``, logged-in clients,
tokens made through the console's own pages."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import httpx

from softswitch.pbx import Pbx
from softswitch.reload import ConfigFile

from .netutil import free_port

USERS = """
[[users]]
extension = "100"
name = "Alice Martin"
password = "alice100"
pin = "1100"

[[users]]
extension = "101"
name = "Bob Durand"
password = "bob101"
pin = "1101"

[[users]]
extension = "102"
name = "Carol Dupont"
password = "carol102"
pin = "1102"
"""


def office_text(tmp: Path, extra: str = "") -> str:
    port = free_port()
    return f"""# the office of a console test
[server]
listen = ["udp:127.0.0.1:{port}"]
domain = "office.test"
data_dir = "{tmp / "data"}"
rtp_ports = [{port * 2 % 20000 + 30000}, {port * 2 % 20000 + 30400}]

[console]
listen = "127.0.0.1:{free_port()}"
{extra}
{USERS}"""


@dataclass
class Running:
    pbx: Pbx
    file: ConfigFile

    @property
    def console(self) -> object:
        return self.pbx.registry.feature("console")

    @property
    def url(self) -> str:
        url = getattr(self.console, "url", None)
        assert isinstance(url, str), getattr(self.console, "problem", None)
        return url


async def start(path: Path) -> Running:
    """The PBX of ``path`` in this process, as ``softswitch run --config`` runs it."""
    file = ConfigFile(path)
    pbx = Pbx(file.load())
    pbx.svc.config_file = file
    await pbx.start()
    return Running(pbx, file)


def admin_password(running: Running) -> str:
    password = getattr(running.console, "admin_password", None)
    assert isinstance(password, str)  # a first start makes one (shown in the banner)
    return password


CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found is not None, html[:500]
    return found.group(1)


async def login(client: httpx.AsyncClient, name: str, password: str) -> str:
    """Log in; the session's CSRF token."""
    answer = await client.post("/login", data={"name": name, "password": password})
    assert answer.status_code == 303, answer.text[:500]
    page = await client.get(answer.headers["location"])
    return csrf_of(page.text)


async def make_token(client: httpx.AsyncClient, csrf: str, extension: str = "") -> str:
    """An API token made on the admin's token page (for a user when ``extension``)."""
    answer = await client.post(
        "/admin/tokens",
        data={"csrf": csrf, "label": f"test {extension or 'admin'}", "extension": extension},
        follow_redirects=True,
    )
    found = re.search(r"shown once\): (sst_[A-Za-z0-9_-]+)", answer.text)
    assert found is not None, answer.text[:1000]
    return found.group(1)
