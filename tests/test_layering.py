"""The layering of DESIGN.md, enforced: pure modules do no I/O, imports point downward."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Modules that must stay sans-IO: no sockets, no event loop, no clock.
PURE = [
    "sip/grammar.py",
    "sip/errors.py",
    "sip/uri.py",
    "sip/headers.py",
    "sip/message.py",
    "sip/framing.py",
    "sip/sdp.py",
    "sip/offer_answer.py",
    "sip/auth.py",
    "sip/overload.py",
    "rtp/source_policy.py",
    "rtp/jitter.py",
]
IO_MODULES = {"asyncio", "socket", "time", "selectors", "ssl", "threading"}
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
        if path.exists():
            bad = imported(path) & IO_MODULES
            assert not bad, f"{rel} imports {sorted(bad)}"


def test_imports_point_downward() -> None:
    for package, forbidden in FORBIDDEN.items():
        for path in (ROOT / package).rglob("*.py"):
            bad = imported(path) & forbidden
            assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"
