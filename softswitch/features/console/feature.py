"""The web console as a feature: ``[console]`` puts it on the daemon's HTTP server.

At start it opens ``DATA/console.sqlite`` (administrators, portal passwords, API tokens),
makes sure an administrator exists (the first start makes ``admin`` with a random
password, shown once in the banner; the embedded demo makes a new one at every start)
and mounts its routes (:mod:`.app`) on ``svc.http(listen)``, over HTTPS when a
certificate is configured. A console that cannot bind its address is logged and left
off: phones and calls do not depend on it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ...feature import BaseFeature
from ..provisioning import ProvisioningSettings
from .accounts import Accounts
from .app import ConsoleApp, new_password
from .settings import ConsoleSettings

if TYPE_CHECKING:
    from ...services import Services

log = logging.getLogger("softswitch")
ADMIN = "admin"


class Console(BaseFeature):
    name = "console"
    section = "console"
    config_model = ConsoleSettings
    state = ("app", "url", "admin_password", "problem")

    def __post_init__(self) -> None:
        self.app: ConsoleApp | None = None
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
        if options.demo or not accounts.has_admin():
            self.admin_password = new_password()
            accounts.set_admin(ADMIN, self.admin_password)
        app = ConsoleApp(svc, options, accounts)
        server = svc.http(options.listen)
        for route in app.routes():
            server.add(route)
        if options.certificate is not None and options.key is not None:
            server.use_tls(
                str(self.config.path(options.certificate)), str(self.config.path(options.key))
            )
        try:
            await server.start()
        except OSError as exc:
            self.problem = f"cannot listen on {options.listen}: {exc.strerror or exc}"
            log.warning("event=console_unavailable address=%s error=%s", options.listen, exc)
            accounts.close()
            return
        self.app = app
        host = server.host if ":" not in server.host else f"[{server.host}]"
        self.url = f"{server.scheme}://{host}:{server.port}/"
        log.info("event=console_listening url=%s", self.url)

    async def resume(self, old: object, svc: Services) -> None:
        await super().resume(old, svc)
        options = self.options
        if self.app is not None and options is not None:
            self.app.settings = options  # the listen address and TLS wait for a restart
        elif self.app is None and options is not None and self.problem is None:
            await self.start(svc)  # turned on

    async def stop(self) -> None:
        if self.app is not None:
            self.app.closing.set()  # the dashboards' live streams end
            self.app.accounts.close()
