"""The registry: features built from the configuration, their tables merged and checked.

Building it needs no I/O, so ``softswitch check`` and :class:`~softswitch.pbx.Pbx` both
use it: a number, in-call code, event package, endpoint or destination kind claimed by two
features is an error naming both, and every destination the configuration names
(forwarding rules, ring-group steps, ...) must resolve, or the error names its key.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .config import Config, ConfigError, User
from .dialplan import classify, parse_destination
from .feature import (
    CallCheck,
    CallListener,
    Endpoint,
    Feature,
    FeatureType,
    Handler,
    Hint,
    InCallHandler,
    InDialogHandler,
    Kind,
    SubscribeHandler,
)

CORE = "core"


def _merge(
    table: dict[str, Any],
    owners: dict[str, str],
    entries: Mapping[str, Any],
    owner: str,
    what: str,
) -> list[str]:
    problems = []
    for key, value in entries.items():
        if key in table:
            problems.append(f"{what} {key} is claimed by both {owners[key]} and {owner}")
            continue
        table[key] = value
        owners[key] = owner
    return problems


class Registry:
    def __init__(
        self,
        config: Config,
        feature_types: Sequence[FeatureType],
        *,
        core_endpoints: Mapping[str, Endpoint] | None = None,
        source: str | None = None,
    ) -> None:
        self.config = config
        self.source = source or str(config.source or "<config>")
        self.features: list[Feature] = []
        self.numbers: dict[str, Handler] = {}
        self.kinds: dict[str, Kind] = {}
        self.endpoints: dict[str, Endpoint] = dict(core_endpoints or {})
        self.codes: dict[str, InCallHandler] = {}
        self.packages: dict[str, SubscribeHandler] = {}
        self.in_dialog: dict[str, InDialogHandler] = {}
        self.hints: dict[str, Hint] = {}
        self.listeners: list[CallListener] = []
        self._handlers: dict[str, list[Callable[..., None]]] = {}
        self.checks: list[CallCheck] = []
        self.owners: dict[str, str] = {}  # "number 600" -> feature name
        problems: list[str] = []
        names: set[str] = set()
        owners: dict[str, dict[str, str]] = {
            t: {} for t in ("number", "kind", "endpoint", "code", "package", "method", "hint")
        }
        owners["endpoint"].update({k: CORE for k in self.endpoints})
        for kind in feature_types:
            if kind.name in names:
                problems.append(f"feature {kind.name} is loaded twice")
                continue
            names.add(kind.name)
            try:
                feature = kind(config)
            except ConfigError as exc:
                problems.append(str(exc))
                continue
            except ValueError as exc:  # the feature names the key at fault
                problems.append(f"{self.source}: {exc}")
                continue
            self.features.append(feature)
            name = kind.name
            problems += _merge(self.numbers, owners["number"], feature.numbers(), name, "number")
            problems += _merge(
                self.kinds, owners["kind"], feature.destination_kinds(), name, "destination kind"
            )
            problems += _merge(
                self.endpoints, owners["endpoint"], feature.endpoints(), name, "endpoint"
            )
            problems += _merge(
                self.codes, owners["code"], feature.in_call_codes(), name, "in-call code"
            )
            problems += _merge(
                self.packages, owners["package"], feature.event_packages(), name, "event package"
            )
            problems += _merge(
                self.in_dialog, owners["method"], feature.in_dialog(), name, "in-dialog method"
            )
            problems += _merge(self.hints, owners["hint"], feature.hints(), name, "busy lamp")
            self.listeners.extend(feature.listeners())
            self.checks.extend(feature.call_checks())
        self.owners = {f"number {k}": v for k, v in owners["number"].items()}
        if not problems:
            for built in self.features:
                problems += [
                    f"{self.source}: {key}: {error}"
                    for key, text, user in built.destinations()
                    if (error := self.check(text, user)) is not None
                ]
        if problems:
            raise ConfigError("\n".join(problems))
        self.warnings = [
            f"{self.source}: {warning}" for f in self.features for warning in f.warnings()
        ]

    def check(self, text: str, user: User | None) -> str | None:
        """Why destination ``text`` (a rule of ``user``) cannot be reached, or None."""
        dest = parse_destination(text)
        if dest.kind == "hangup":
            return None
        if dest.kind == "number":
            if dest.value in self.numbers:
                return None
            if classify(dest.value, self.config) is not None:
                dest = parse_destination(f"tel:{dest.value}")
            else:
                return f"{text!r}: no extension, group or feature has this number"
        kind = self.kinds.get(dest.kind)
        if kind is None:
            known = ", ".join(sorted(["hangup", *self.kinds]))
            return f"{text!r}: unknown destination kind {dest.kind!r} (known: {known})"
        return kind.check(dest.value, user) if kind.check is not None else None

    def feature(self, name: str) -> Feature | None:
        return next((f for f in self.features if type(f).name == name), None)

    def handlers(self, event: str) -> list[Callable[..., None]]:
        """The listeners' methods for ``event`` that do something: those overriding the
        no-op of :class:`CallListener` (most features follow a few events of a dozen,
        and a call emits several), found once per registry."""
        found = self._handlers.get(event)
        if found is None:
            noop = getattr(CallListener, event)
            found = self._handlers[event] = [
                getattr(listener, event)
                for listener in self.listeners
                if getattr(type(listener), event, noop) is not noop
            ]
        return found
