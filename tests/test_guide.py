"""docs/guide.md runs: every ```python block in order, in one namespace, with top-level
await (as in ``python -m asyncio``); an ```output block right after one must be exactly
what it printed. The guide cannot drift from the code."""

from __future__ import annotations

import ast
import contextlib
import inspect
import io
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

from .netutil import ROOT

GUIDE = ROOT / "docs" / "guide.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```\s*$", re.S | re.M)


@dataclass
class Snippet:
    line: int  # of the first code line in the guide
    code: str
    output: str | None = None


def snippets(text: str) -> list[Snippet]:
    found: list[Snippet] = []
    for match in FENCE.finditer(text):
        kind, body = match.group(1), match.group(2)
        line = text.count("\n", 0, match.start(2)) + 1
        if kind == "python":
            found.append(Snippet(line, body))
        elif kind == "output":
            assert found and found[-1].output is None, f"guide line {line}: output of what?"
            between = text[text.rfind("```", 0, match.start()) : match.start()]
            assert between.strip() == "```", f"guide line {line}: text between code and output"
            found[-1].output = body
    return found


def test_the_guide_has_the_tour() -> None:
    """The runner finds the blocks (so the next test cannot pass on an empty guide)."""
    found = snippets(GUIDE.read_text())
    assert len(found) >= 12
    assert sum(s.output is not None for s in found) >= 10
    text = "".join(s.code for s in found)
    for name in (
        "sip.parse",
        "make_offer",
        "process_answer",
        "UserAgent",
        "Session(",
        "clock.start()",
        "Recorder(",
        "Player(",
    ):
        assert name in text, name


async def test_every_snippet_runs_and_prints_what_the_guide_shows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the files the guide writes land here
    namespace: dict[str, object] = {"__name__": "__guide__"}
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # e.g. a clock left unstarted
        for snippet in snippets(GUIDE.read_text()):
            source = "\n" * (snippet.line - 1) + snippet.code  # tracebacks name guide lines
            code = compile(
                source, str(GUIDE), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True
            )
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                result = eval(code, namespace)
                if inspect.iscoroutine(result):
                    await result
            if snippet.output is not None:
                assert printed.getvalue() == snippet.output, f"guide line {snippet.line}"
            else:
                assert printed.getvalue() == "", f"guide line {snippet.line} prints unshown text"
