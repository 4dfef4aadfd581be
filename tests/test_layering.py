"""The layering (README "Layers"), enforced: pure modules do no I/O (sans-IO: bytes,
events and the time in; bytes, events and deadlines out), imports point downward, and the
core of the PBX does not reach into its features."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Modules that must stay sans-IO: no sockets, no event loop, no clock, no processes.
PURE = [
    "sip/address.py",
    "sip/auth.py",
    "sip/connections.py",
    "sip/dialog.py",
    "sip/errors.py",
    "sip/events.py",
    "sip/framing.py",
    "sip/grammar.py",
    "sip/headers.py",
    "sip/message.py",
    "sip/offer_answer.py",
    "sip/overload.py",
    "sip/sdes.py",
    "sip/sdp.py",
    "sip/security.py",
    "sip/session_timer.py",
    "sip/transaction.py",
    "sip/uri.py",
    "sip/webrtc.py",
    "sip/websocket.py",
    "rtp/columns.py",
    "rtp/dtls_srtp.py",
    "rtp/dtmf.py",
    "rtp/jitter.py",
    "rtp/jitter_rows.py",
    "rtp/packet.py",
    "rtp/source_policy.py",
    "rtp/srtp.py",
    "rtp/stats.py",
    "media/codecs.py",
    "media/conceal.py",
    "media/dtmf_detect.py",
    "media/g711.py",
    "media/mixer.py",
    "media/resample.py",
    "media/tones.py",
    "ivr/menu.py",
]
IO_MODULES = {"asyncio", "socket", "time", "selectors", "ssl", "threading", "subprocess"}
# package -> packages it must not import
FORBIDDEN = {
    "sip": {"rtp", "media", "ivr", "softswitch"},
    "rtp": {"sip", "media", "ivr", "softswitch"},
    "media": {"sip", "ivr", "softswitch"},
    "ivr": {"sip", "softswitch"},
}


def imported(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_pure_modules_do_no_io() -> None:
    for rel in PURE:
        path = ROOT / rel
        assert path.exists(), f"{rel} is listed but does not exist"
        bad = imported(path) & IO_MODULES
        assert not bad, f"{rel} imports {sorted(bad)}"


def test_imports_point_downward() -> None:
    for package, forbidden in FORBIDDEN.items():
        for path in (ROOT / package).rglob("*.py"):
            bad = imported(path) & forbidden
            assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


# The core of the PBX (softswitch/*.py) knows features only through the feature contract;
# the composition root and the command line assemble them. What still reaches into a
# feature is listed here, each one a debt (issue 28), and nothing may join it.
COMPOSITION = {"softswitch/pbx.py", "softswitch/cli.py"}
KNOWN_DEBTS = {
    "softswitch/banner.py",  # the conference's stored codes for the banner
    "softswitch/config.py",  # the built-in features' sections, when parse is given none
    "softswitch/reload.py",  # the built-in features, when a ConfigFile is given none
}


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, relative ones made absolute (function bodies too)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            prefix = ".".join(base) if node.level else ""
            module = ".".join(filter(None, [prefix, node.module or ""]))
            names.add(module)
            names.update(f"{module}.{a.name}" for a in node.names)
    return names


def test_the_core_does_not_import_features() -> None:
    reaching = {
        str(path.relative_to(ROOT))
        for path in (ROOT / "softswitch").glob("*.py")
        if any(m.startswith("softswitch.features") for m in imports_of(path))
    }
    assert reaching - COMPOSITION == KNOWN_DEBTS  # a debt paid: remove it from the list
