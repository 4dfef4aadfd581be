"""PBX pieces without sockets: config validation, routing, registrar, auth throttle,
voicemail storage."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

import sip
from softswitch import config as cfg
from softswitch.authguard import AuthGuard
from softswitch.dialplan import classify, permitted
from softswitch.features import builtin
from softswitch.features.voicemail import VoicemailStore, summary_body
from softswitch.plugins import Registry
from softswitch.registrar import Registrar

from .netutil import ROOT


def test_demo_config_is_valid() -> None:
    demo = cfg.demo()
    assert [u.extension for u in demo.users] == ["100", "101", "102"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server\n", "office.toml: not valid TOML"),
        ("[server]\nlisten = 5\n", "office.toml: server.listen: Input should be a valid list"),
        ("[server]\nbogus = 1\n", "office.toml: server.bogus: unknown key"),
        ("[server]\nlisten_on = 1\n", "server.listen_on: unknown key (did you mean 'listen'?)"),
        ("[server]\nrtp_ports = [10001, 20000]\n", "server.rtp_ports: expected [even start"),
        (
            '[[users]]\nextension = "1"\nname = "x"\npassword = "abcd"\npin = "1234"\n',
            "office.toml: users[0].extension: String should match pattern",
        ),
        (
            '[[users]]\nextension = "100"\nname = "x"\npassword = "abcd"\npin = "1234"\n'
            "[users.forward]\nno_answer_after = 70\n",
            "users[0].forward.no_answer_after: Input should be less than or equal to 60",
        ),
        (
            '[[users]]\nextension = "100"\nname = "x"\npassword = "abcd"\npin = "1234"\n'
            'hold_music = "jazz"\n',
            "no slot 'jazz' in [hold_music]",
        ),
        ('[dialplan]\nnational = "(("\n', "dialplan.national: not a valid regular expression"),
    ],
)
def test_config_errors_name_file_key_and_expectation(text: str, message: str) -> None:
    with pytest.raises(cfg.ConfigError) as info:
        cfg.parse(text, "office.toml")
    assert message in str(info.value)


def test_audio_files_checked_at_load(tmp_path: Path) -> None:
    (tmp_path / "office.toml").write_text('[hold_music]\ndefault = "music.mp3"\n')
    (tmp_path / "music.mp3").write_text("not audio")
    with pytest.raises(
        cfg.ConfigError, match=r"hold_music\.default: .*music\.mp3: not an MP3/WAV/FLAC"
    ):
        cfg.load(tmp_path / "office.toml")
    soundfile.write(tmp_path / "music.wav", np.zeros(8000 * 400, np.int16), 8000)
    (tmp_path / "office.toml").write_text('[hold_music]\ndefault = "music.wav"\n')
    with pytest.raises(cfg.ConfigError, match="larger than the 5242880 byte limit"):
        cfg.load(tmp_path / "office.toml")


def test_check_command(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[server]\nmax_calls = 0\n")
    result = subprocess.run(
        [sys.executable, "-m", "softswitch.cli", "check", str(bad)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 1
    assert "bad.toml: server.max_calls: Input should be greater than or equal to 1" in result.stderr
    good = tmp_path / "good.toml"
    good.write_text(cfg.DEMO)
    result = subprocess.run(
        [sys.executable, "-m", "softswitch.cli", "check", str(good)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0 and "OK (3 users" in result.stdout


def test_routing_and_permissions() -> None:
    config = cfg.parse(cfg.DEMO + '[[trunks]]\nname = "p"\nproxy = "sip:192.0.2.1"\n', "demo")
    registry = Registry(config, builtin())
    alice, bob = config.user("100"), config.user("101")
    assert alice is not None and bob is not None
    owner = {k.removeprefix("number "): v for k, v in registry.owners.items()}
    assert owner["101"] == "extensions"
    assert owner["*97"] == owner["*98"] == "voicemail"
    assert owner["800"] == "conference"
    assert classify("0123456789", config) == "national" and permitted("national", bob.permission)
    assert classify("0044123456789", config) == "international"
    assert not permitted("international", bob.permission)  # Bob: national only
    assert permitted("international", alice.permission)
    assert classify("112", config) == "emergency" and permitted("emergency", "internal")
    assert registry.check("0123456789", None) is None  # an external number is a destination
    assert "no extension" in (registry.check("555", alice) or "")


def register(
    contact: str,
    *,
    call_id: str = "c1",
    cseq: int = 1,
    expires: str | None = None,
    star: bool = False,
) -> sip.Request:
    h = sip.Headers(
        [
            ("Via", "SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK1"),
            ("From", "<sip:100@pbx>;tag=1"),
            ("To", "<sip:100@pbx>"),
            ("Call-ID", call_id),
            ("CSeq", f"{cseq} REGISTER"),
            ("Contact", "*" if star else contact),
        ]
    )
    if expires is not None:
        h.add("Expires", expires)
    return sip.Request("REGISTER", "sip:pbx", h)


def test_registrar_bindings() -> None:
    reg = Registrar(min_expires=60, max_expires=3600, max_bindings=2)
    src = ("udp", "192.0.2.10", 5060)
    result = reg.process(register("<sip:100@192.0.2.10>;expires=120"), "aor", src, 0.0)
    assert result.status == 200 and result.headers == [
        ("Contact", "<sip:100@192.0.2.10>;expires=120")
    ]
    reg.process(register("<sip:100@192.0.2.11>", call_id="c2", expires="600"), "aor", src, 1.0)
    assert len(reg.lookup("aor", 2.0)) == 2
    # a third device is refused (bound), too short an expiry asks for Min-Expires
    third = reg.process(register("<sip:100@192.0.2.12>", call_id="c3"), "aor", src, 2.0)
    assert third.status == 403
    brief = reg.process(register("<sip:100@192.0.2.10>;expires=30", cseq=2), "aor", src, 2.0)
    assert brief.status == 423 and brief.headers == [("Min-Expires", "60")]
    # out-of-order CSeq on the same Call-ID
    old = reg.process(register("<sip:100@192.0.2.10>;expires=300", cseq=1), "aor", src, 3.0)
    assert old.status == 500
    # expiry, then unregister all
    assert [str(b.contact) for b in reg.lookup("aor", 130.0)] == ["sip:100@192.0.2.11"]
    gone = reg.process(register("", call_id="c2", cseq=5, expires="0", star=True), "aor", src, 131)
    assert gone.status == 200 and reg.lookup("aor", 131.0) == []


def test_failed_auth_flood_is_throttled() -> None:
    guard = AuthGuard("pbx", {"100": "secret"}.get, max_failures=5, window=60)
    request = register("<sip:100@192.0.2.10>")
    challenge = guard.check(request, "192.0.2.66", 0.0)
    assert challenge.status == 401
    nonce = sip.parse_challenge(challenge.headers[0][1])
    for i in range(5):
        creds = sip.DigestClient("100", f"guess{i}").answer(nonce, "REGISTER", "sip:pbx")
        request.headers.set("Authorization", str(creds))
        assert guard.check(request, "192.0.2.66", float(i)).status == 403
    # the right password from that source is now refused too, without digest work
    creds = sip.DigestClient("100", "secret").answer(nonce, "REGISTER", "sip:pbx")
    request.headers.set("Authorization", str(creds))
    verdict = guard.check(request, "192.0.2.66", 10.0)
    assert verdict.status == 403 and "too many" in (verdict.reason or "")
    assert guard.check(request, "192.0.2.67", 10.0).user == "100"  # other sources are fine
    # the same credentials again are a replay (nonce-count not above the last)
    assert guard.check(request, "192.0.2.67", 11.0).status == 403
    request.headers.remove("Authorization")
    later = sip.parse_challenge(guard.check(request, "192.0.2.66", 70.0).headers[0][1])
    fresh = sip.DigestClient("100", "secret").answer(later, "REGISTER", "sip:pbx")
    request.headers.set("Authorization", str(fresh))
    assert guard.check(request, "192.0.2.66", 70.0).user == "100"  # the window passed


def test_voicemail_store_survives_reopen(tmp_path: Path) -> None:
    store = VoicemailStore(tmp_path)
    path = store.new_path("101")
    soundfile.write(path, np.zeros(8000, np.int16), 8000)
    first = store.add("101", "100", path, 1.0)
    store.add("101", "102", store.new_path("101"), 2.0)
    store.mark_heard(first.id)
    store.close()
    again = VoicemailStore(tmp_path)
    messages = again.messages("101")
    assert [m.caller for m in messages] == ["102", "100"]  # new first
    assert again.counts("101") == (1, 1)
    again.delete(first.id)
    assert not path.exists() and again.counts("101") == (1, 0)
    assert summary_body("sip:*97@pbx", 1, 0).startswith(b"Messages-Waiting: yes\r\n")
