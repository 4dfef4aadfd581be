"""The web console as a feature: ``[console]`` puts it in the daemon's web process.

At start it makes sure an administrator exists in ``DATA/console.sqlite`` (the first
start makes ``admin`` with a random password, shown once in the banner; the embedded demo
makes a new one at every start), then asks the web process (:mod:`softswitch.web`) to
serve the console's app (:mod:`.web`) on ``[console] listen``, over HTTPS when a
certificate is configured. What the pages need from the running PBX they ask for through
the handlers registered here: ``console.snapshot`` (the dashboard), ``console.mwi`` (a
mailbox's lamps after a message was deleted) and ``apply`` (the configuration file the
console just wrote). A console that cannot bind its address is logged and left off:
phones and calls do not depend on it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from ...feature import BaseFeature
from ...web.server import parse_listen
from ..provisioning import ProvisioningSettings
from ..voicemail import Voicemail
from .accounts import Accounts
from .app import new_password
from .live import snapshot
from .settings import ConsoleSettings

if TYPE_CHECKING:
    from ...services import Services

log = logging.getLogger("softswitch")
ADMIN = "admin"


class Console(BaseFeature):
    name = "console"
    section = "console"
    config_model = ConsoleSettings
    state = ("serving", "url", "admin_password", "problem", "applies")

    def __post_init__(self) -> None:
        self.serving = False
        self.applies = ApplyPacer()  # one per PBX: carried to the features of each edit
        self.url: str | None = None
        self.admin_password: str | None = None  # to show once (first start, the demo)
        self.problem: str | None = None  # why it is not serving
        options = self.options
        if options is None:
            return
        provisioning = self.config.section("provisioning")
        if isinstance(provisioning, ProvisioningSettings) and provisioning.listen == options.listen:
            raise ValueError("console.listen: provisioning.listen has it (give each its own port)")
        for key in ("certificate", "key"):
            path = getattr(options, key)
            if path is not None and not self.config.path(path).is_file():
                raise ValueError(f"console.{key}: {path}: no such file")

    @property
    def options(self) -> ConsoleSettings | None:
        settings: ConsoleSettings | None = self.settings()
        return settings if settings is not None and settings.enabled else None

    async def start(self, svc: Services) -> None:
        await super().start(svc)
        options = self.options
        if options is None:
            return
        accounts = Accounts(svc.data_dir)
        try:
            if options.demo or not accounts.has_admin():
                self.admin_password = new_password()
                accounts.set_admin(ADMIN, self.admin_password)
        finally:
            accounts.close()
        await self._serve(svc, options)

    async def _serve(self, svc: Services, options: ConsoleSettings) -> None:
        web = svc.web
        web.handle("console.snapshot", lambda _: snapshot(svc))
        web.handle("console.mwi", lambda args: _mwi(svc, _mailbox(args)))
        web.handle("apply", lambda _: self.applies.apply(svc))
        tls = None
        if options.certificate is not None and options.key is not None:
            tls = (str(self.config.path(options.certificate)), str(self.config.path(options.key)))
        try:
            port = await web.serve(
                "console",
                "softswitch.features.console.web:build",
                options.listen,
                options,
                tls=tls,
                trusted_proxies=tuple(str(p) for p in options.trusted_proxies),
            )
        except OSError as exc:
            self.problem = f"cannot listen on {options.listen}: {exc.strerror or exc}"
            log.warning("event=console_unavailable address=%s error=%s", options.listen, exc)
            return
        self.serving = True
        host, _ = parse_listen(options.listen)
        host = host if ":" not in host else f"[{host}]"
        self.url = f"{'https' if tls else 'http'}://{host}:{port}/"
        log.info("event=console_listening url=%s", self.url)

    async def resume(self, old: object, svc: Services) -> None:
        await super().resume(old, svc)
        options = self.options
        if self.serving and options is not None:
            await self._serve(svc, options)  # new settings; the address and TLS: a restart
        elif self.serving:  # turned off
            await svc.web.unserve("console")
            self.serving, self.url = False, None
            log.info("event=console_stopped")
        elif options is not None and self.problem is None:
            await self.start(svc)  # turned on


def _mailbox(args: dict[str, Any]) -> str:
    mailbox = args.get("mailbox")
    if not isinstance(mailbox, str) or not 0 < len(mailbox) <= 64:
        raise ValueError("mailbox: expected an extension")
    return mailbox


def _mwi(svc: Services, mailbox: str) -> None:
    """The mailbox's phones learn the new count (a message deleted in the console)."""
    feature = svc.registry.feature("voicemail")
    if isinstance(feature, Voicemail) and feature.store is not None:
        svc.spawn(feature.notify(mailbox))


class ApplyPacer:
    """Edits from the console are applied one at a time, each after a pause of
    ``PACE`` times what the previous one took: reading the file again and rebuilding the
    features runs on the daemon's loop (27 ms at 500 users, 244 ms at 2 000 on a 2-core
    machine), so a user saving forms in a loop may take at most about a tenth of it."""

    PACE = 10.0

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.free_at = 0.0  # when the next apply may start

    async def apply(self, svc: Services) -> list[str]:
        loop = asyncio.get_running_loop()
        async with self.lock:
            wait = self.free_at - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            started = loop.time()
            try:
                return await _apply(svc)
            finally:
                ended = loop.time()
                self.free_at = ended + self.PACE * (ended - started)


async def _apply(svc: Services) -> list[str]:
    """The configuration file the console wrote, read again here and run."""
    file, apply = svc.config_file, svc.apply_config
    if file is None or apply is None:
        raise ValueError("this PBX has no configuration file")
    return await apply(file.load())
