"""The ``softswitch`` commands agree with each other on a new user's first day: the demo's
office edited in the console is the one ``users``, ``status`` and ``check`` see (its saved
file names its own data directory, the bridge codes are the daemon's), the demo's console
moves off a taken 8080, every command takes ``--config`` and explains itself in plain
text, and configuration errors count positions as people do, with the line."""

from __future__ import annotations

import re
import socket
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from softswitch import banner, cli
from softswitch import config as cfg
from softswitch.features.console.settings import ConsoleSettings
from softswitch.reload import ConfigFile

from .console import login, make_token
from .netutil import daemon, free_port

COMMANDS = ("run", "check", "status", "reload", "users", "console-password")
MARKUP = re.compile(r":class:|:func:|:mod:|``")


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``softswitch ARGS`` in this process: exit status, stdout, stderr."""
    try:
        code = cli.main(list(args))
    except SystemExit as exc:  # argparse: --help, --version, usage errors
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def held_8080() -> Iterator[bool]:
    """127.0.0.1:8080 taken by this test (False: something else has it already)."""
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        holder.bind(("127.0.0.1", 8080))
        holder.listen()
    except OSError:
        holder.close()
        yield False
        return
    with holder:
        yield True


async def test_the_demo_office_edited_in_the_console_is_what_every_command_sees(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    held_8080: bool,
) -> None:
    data = tmp_path / "data"
    port = free_port()
    run = ["-m", "softswitch.cli", "run", "--listen", f"127.0.0.1:{port}"]
    with daemon(
        [*run, "--data-dir", str(data), "--log-level", "warning"], "softswitch running"
    ) as proc:
        shown = "".join(proc.lines)
        bob = re.search(r"^  101 +Bob Durand +bob101 +1101 +(\d{6}) +(\d{6})$", shown, re.M)
        assert bob is not None, shown
        url = proc.wait_for(r"web console (http://\S+)").group(1)
        if held_8080:  # the demo's 8080 is taken: another port, said in the banner
            assert url != "http://127.0.0.1:8080/"
            assert f"web console {url} (127.0.0.1:8080 is taken)" in shown
        password = proc.wait_for(r"console login: admin / (\S+)").group(1)
        async with httpx.AsyncClient(base_url=url) as client:
            token = await make_token(client, await login(client, "admin", password))
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=url + "api", headers=headers) as client:
            dave = {"extension": "103", "name": "Dave Morel", "password": "dave103", "pin": "1103"}
            assert (await client.post("/users", json=dave)).status_code == 201
            group = {"extension": "600", "name": "Sales", "steps": [{"targets": ["101", "103"]}]}
            assert (await client.post("/ring_groups", json=group)).status_code == 201

        # the saved office names its own directory, wherever it is read from
        saved = data / "office.toml"
        assert tomllib.loads(saved.read_text())["server"]["data_dir"] == "."
        assert cfg.load(saved).server.data_dir == data

        monkeypatch.chdir(tmp_path)  # where `make run` was: data/ is the demo's
        for where in ((), ("--config", "data/office.toml"), ("--config", str(saved))):
            code, out, err = run_cli(capsys, "status", *where)
            assert code == 0, err
            assert "registrations: 0 (of 4 users)" in out

        # `users` lists the edited office, with the codes the bridge uses (not "made at start")
        for where in ((), ("--config", "data/office.toml")):
            code, out, err = run_cli(capsys, "users", "--secrets", *where)
            assert code == 0, err
            assert re.search(r"^  103 +Dave Morel +dave103 +1103 +\d{6} +\d{6}$", out, re.M), out
            row = f"^  101 +Bob Durand +bob101 +1101 +{bob[1]} +{bob[2]}$"
            assert re.search(row, out, re.M), out
            assert re.search(r"^  600 +ring group Sales$", out, re.M)
            assert "made at start" not in out

        code, out, err = run_cli(capsys, "check")
        assert code == 0, err
        assert out.startswith("data/office.toml: OK (4 users, 0 trunks, 1 ring group,")


def test_the_demo_file_keeps_its_data_dir_in_its_own_directory(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    demo = ConfigFile(None, {"data_dir": data}, save_to=data / "office.toml")
    assert demo.demo and not ConfigFile(tmp_path / "x.toml").demo
    assert 'data_dir = "."' in demo.text()  # what the console edits before the first save
    demo.write(demo.text().replace('name = "Bob Durand"', 'name = "Bob Martin"'))
    assert cfg.load(data / "office.toml").server.data_dir == data
    assert cfg.load(data / "office.toml").user("101").name == "Bob Martin"  # type: ignore[union-attr]

    # a file saved before: "data" was read as DATA/data; the next demo start corrects it
    (data / "office.toml").write_text(cfg.DEMO + "# kept\n")
    assert demo.repair()
    text = (data / "office.toml").read_text()
    assert tomllib.loads(text)["server"]["data_dir"] == "." and "# kept" in text
    assert (data / "office.toml.prev").read_text() == cfg.DEMO + "# kept\n"
    assert not demo.repair()  # once


def test_console_listen_overrides_the_console_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "office.toml"
    path.write_text(cfg.DEMO + '\n[console]\nlisten = "127.0.0.1:8090"\nsession_minutes = 60\n')
    file = ConfigFile(path, section_overrides={"console": {"listen": "127.0.0.1:8091"}})
    console = file.load().section("console")
    assert console.listen == "127.0.0.1:8091" and console.session_minutes == 60
    # the file keeps its own address: an option is never saved
    assert 'listen = "127.0.0.1:8090"' in path.read_text()
    wrong = ConfigFile(path, section_overrides={"console": {"listen": "nowhere"}})
    with pytest.raises(cfg.ConfigError, match=r"^--console-listen: console\.listen: "):
        wrong.load()
    code, _, err = run_cli(capsys, "run", "--console-listen", "nowhere")
    assert code == 2 and "--console-listen: 'nowhere': expected HOST:PORT" in err
    code, out, _ = run_cli(capsys, "run", "--help")
    assert "--console-listen HOST:PORT" in out and "[console] demo = true" in out


class _Console:
    def __init__(self, **state: object) -> None:
        self.url: str | None = None
        self.problem: str | None = None
        self.admin_password: str | None = None
        self.options = ConsoleSettings()
        self.__dict__.update(state)


class _Registry:
    def __init__(self, console: _Console) -> None:
        self.console = console

    def feature(self, name: str) -> object:
        return self.console if name == "console" else None


def test_banner_says_where_the_console_is_and_how_to_move_it() -> None:
    def lines(console: _Console, **kw: object) -> list[str]:
        return banner.console_lines(_Registry(console), **kw)  # type: ignore[arg-type]

    # a real office's explicit address that is taken stays an error, with the fix
    taken = _Console(problem="cannot listen on 127.0.0.1:8080: Address already in use")
    assert lines(taken, demo=False) == [
        "  web console: cannot listen on 127.0.0.1:8080: Address already in use"
        " (choose another with --console-listen HOST:PORT)"
    ]
    moved = _Console(url="http://127.0.0.1:8081/", admin_password="pw")
    shown = lines(moved, demo=True, note="127.0.0.1:8080 is taken")
    assert shown[:2] == [
        "  web console http://127.0.0.1:8081/ (127.0.0.1:8080 is taken)",
        "  console login: admin / pw",
    ]
    trial = _Console(url="http://127.0.0.1:8081/", admin_password="pw")
    trial.options = ConsoleSettings(demo=True)
    assert lines(trial, demo=False)[1] == (
        "  console login: admin / pw (a new one at every start: [console] demo = true)"
    )
    assert lines(_Console(url="http://x/", admin_password="pw"), demo=False)[1] == (
        "  console login: admin / pw (shown once: change it in the console)"
    )


def test_every_help_is_plain_text_with_a_description(capsys: pytest.CaptureFixture[str]) -> None:
    code, top, _ = run_cli(capsys, "--help")
    assert code == 0 and not MARKUP.search(top), top
    assert "a small-office SIP PBX" in top
    for command in COMMANDS:
        assert re.search(rf"^    {command}\s+\S", top, re.M), command
        code, text, _ = run_cli(capsys, command, "--help")
        assert code == 0 and not MARKUP.search(text), text
        usage, description = text.split("\n\n")[:2]
        assert usage.startswith(f"usage: softswitch {command}")
        assert len(description.split()) > 10, f"{command}: {description!r}"  # says what it does
        assert "--config FILE" in text, command  # every command takes --config
    code, out, _ = run_cli(capsys, "--version")
    assert code == 0 and re.fullmatch(r"softswitch \S+\n", out)


def test_check_and_users_take_config_and_still_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "office.toml"
    path.write_text(cfg.DEMO)
    code, out, err = run_cli(capsys, "check", "--config", str(path))
    assert code == 0 and out.startswith(f"{path}: OK (3 users") and err == ""
    code, out, err = run_cli(capsys, "check", str(path))  # the old form still works
    assert code == 0 and out.startswith(f"{path}: OK (3 users")
    assert err == "softswitch check FILE is deprecated: use softswitch check --config FILE\n"
    code, out, err = run_cli(capsys, "users", "--config", str(path))
    assert code == 0 and re.search(r"^  100 +Alice Martin +100$", out, re.M)
    assert "alice100" not in out  # a file's secrets only with --secrets
    code, out, err = run_cli(capsys, "users", str(path), "--secrets")
    assert code == 0 and "alice100" in out and "deprecated" in err
    code, _, err = run_cli(capsys, "users", "--config", str(path), str(path))
    assert code == 2 and "give --config FILE only" in err
    code, _, err = run_cli(capsys, "check", "--config", str(tmp_path / "missing.toml"))
    assert code == 1 and "missing.toml: cannot read" in err


def test_listen_entries_are_checked_by_the_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for good in (
        *("udp:127.0.0.1:5060", "127.0.0.1:5060", "tcp:[::1]:5060", "tls:pbx.lan:5061"),
        *("ws:127.0.0.1:8080", "wss:0.0.0.0:8089"),
    ):
        assert cfg.parse(f'[server]\nlisten = ["{good}"]\n').server.listen == [good]
    path = tmp_path / "office.toml"
    path.write_text(
        '[server]\ndomain = "x"\nlisten = ["udp:127.0.0.1:5060", "sctp:127.0.0.1:15092"]\n'
    )
    code, _, err = run_cli(capsys, "check", "--config", str(path))
    assert code == 1
    assert err == (
        f"{path}: server.listen[1]: 'sctp:127.0.0.1:15092': unknown transport 'sctp' (one of"
        " udp, tcp, tls, ws, wss, e.g. 'tcp:127.0.0.1:15092') (listen[1] is the second listen"
        " entry, line 3)\n"
    )
    for bad, why in (
        ("udp:127.0.0.1", "expected [udp:|tcp:|tls:]HOST:PORT"),
        ("udp:127.0.0.1:70000", "expected [udp:|tcp:|tls:]HOST:PORT"),
        ("udp:no host:5060", "'no host' is not an IP address or host name"),
    ):
        with pytest.raises(cfg.ConfigError, match=re.escape(why)):
            cfg.parse(f'[server]\nlisten = ["{bad}"]\n')
    # --listen is checked the same way, before anything starts
    code, _, err = run_cli(capsys, "run", "--listen", "sctp:127.0.0.1:15092")
    assert (
        code == 2 and "argument --listen: 'sctp:127.0.0.1:15092': unknown transport 'sctp'" in err
    )


def test_config_errors_count_from_one_and_give_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "office.toml"
    path.write_text(
        cfg.DEMO.replace('pin = "1101"', 'pin = "11"')
        + '\n[[users]]\nextension = "103"\nname = "Dave"\npassword = "dave103"\npin = "1103"\n'
        + '[[users.devices]]\nname = "desk"\nusername = "103-desk"\n'
    )
    lines = path.read_text().splitlines()
    pin = lines.index('pin = "11"') + 1
    device = lines.index("[[users.devices]]") + 1
    code, _, err = run_cli(capsys, "check", "--config", str(path))
    assert code == 1
    assert err.splitlines() == [
        f"{path}: users[1].pin: String should match pattern '^[0-9]{{4,12}}$'"
        f" (users[1] is the second [[users]] table, line {pin})",
        f"{path}: users[3].devices[0]: a SIP device needs a password (users[3] is the fourth"
        f" [[users]] table; devices[0] is the first [[users.devices]] table, line {device})",
    ]

    # an error the whole office makes (top level) is placed too; an unknown key has its line
    path.write_text(cfg.DEMO.replace('extension = "102"', 'extension = "101"'))
    code, _, err = run_cli(capsys, "users", "--config", str(path))
    lines = path.read_text().splitlines()
    second = len(lines) - lines[::-1].index('extension = "101"')  # the one that repeats
    assert code == 1 and err == (
        f"{path}: (top level): users[2].extension 101 is used twice"
        f" (users[2] is the third [[users]] table, line {second})\n"
    )
    path.write_text(cfg.DEMO.replace("domain =", "domian ="))
    code, _, err = run_cli(capsys, "check", "--config", str(path))
    assert err == f"{path}: server.domian: unknown key (did you mean 'domain'?) (line 4)\n"

    # the message the console and the API parse keeps its form
    with pytest.raises(cfg.ConfigError) as raised:
        cfg.load(path)
    assert str(raised.value) == f"{path}: server.domian: unknown key (did you mean 'domain'?)"


def test_key_lines_follow_tables_arrays_and_multiline_strings() -> None:
    text = """[server]
domain = "x"  # a comment

[[users]]
extension = "100"
[users.forward]
no_answer_after = 5

[[users]]
extension = "101"
greeting_text = '''
pin = "not a key"
'''
pin = "1101"
[[users.devices]]
"name" = "desk"
"""
    found = cfg.key_lines(text)
    assert found["server.domain"] == 2
    assert found["users[0].forward.no_answer_after"] == 7
    assert found["users[1]"] == 9 and found["users[1].pin"] == 14
    assert found["users[1].devices[0].name"] == 16
    assert "users[0].devices[0]" not in found
