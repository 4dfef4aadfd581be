"""Call queues as the console sees them: who is an agent of which queue (the running
configuration), and an agent's log in / log out / pause / resume, which the daemon does
(``queues.agent``); its state comes with the wallboard's data (``queues.snapshot``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..queues.settings import QueueSettings
from .edits import EditError, FieldError, NotFound

if TYPE_CHECKING:
    from ...config import Config
    from .app import ConsoleApp

ACTIONS = ("login", "logout", "pause", "unpause")
# what an agent's state reads as (the wallboard, the portal)
STATES = {
    "available": "Available",
    "ringing": "Ringing",
    "talking": "Talking",
    "paused": "Paused",
    "logged_out": "Logged out",
    "wrap_up": "Wrap-up",
    "busy": "Busy (another call)",
    "dnd": "Do not disturb",
    "offline": "No phone registered",
}
# how a caller left the queue (the wallboard's recent callers)
OUTCOMES = {
    "answered": "answered",
    "abandoned": "hung up",
    "timeout": "waited too long",
    "overflow": "sent on",
    "message": "left a message",
}


def configured(config: Config) -> list[QueueSettings]:
    found = config.section("queues") or []
    return [q for q in found if isinstance(q, QueueSettings)]


def member_of(config: Config, extension: str) -> list[QueueSettings]:
    """The queues ``extension`` answers for."""
    return [q for q in configured(config) if any(m.extension == extension for m in q.member_list())]


def agent_view(data: dict[str, Any], extension: str) -> dict[str, Any] | None:
    """The agent ``extension`` in the wallboard's data (an agent is one person across its
    queues: the first entry says its state, ``paused`` and ``logged_in``)."""
    for queue in data.get("queues") or []:
        for agent in queue.get("agents") or []:
            if agent.get("extension") == extension:
                return dict(agent)
    return None


async def agent_action(app: ConsoleApp, extension: str, action: Any) -> dict[str, Any]:
    """The daemon logs the agent in or out, pauses or resumes it: its answer
    (``{"extension", "logged_in", "paused", "queues"}``). EditError: 422 for an unknown
    action, 404 for an extension that is no queue's member, 409 when the daemon refused
    it, 503 when it did not answer."""
    if action not in ACTIONS:
        raise EditError([FieldError("action", f"one of {', '.join(ACTIONS)}")])
    if not member_of(app.svc.config, extension):
        raise NotFound(f"queue agent {extension}")
    app.forget("queues.snapshot")  # the next look shows what this did
    try:
        answer = await app.svc.call("queues.agent", extension=extension, action=action)
    except RuntimeError as exc:  # the daemon's refusal
        raise EditError([FieldError("", str(exc))], 409) from None
    except (OSError, TimeoutError) as exc:
        message = f"the PBX did not answer ({exc or 'no answer'}): try again"
        raise EditError([FieldError("", message)], 503) from None
    if not isinstance(answer, dict):
        raise EditError([FieldError("", "the PBX answered nothing")], 503)
    app.forget("queues.snapshot")
    return answer


def done(answer: dict[str, Any]) -> str:
    """What an agent's action did, in words."""
    who = answer.get("extension")
    queues = ", ".join(str(q) for q in answer.get("queues") or []) or "none"
    if not answer.get("logged_in"):
        return f"{who} is logged out (queues {queues})"
    if answer.get("paused"):
        return f"{who} is paused: no queue call until resumed (queues {queues})"
    return f"{who} is logged in: queue calls ring (queues {queues})"
