"""Client registration (RFC 3261 §10): register, refresh before expiry, unregister."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from .headers import NameAddr
from .uri import URI, parse_uri

if TYPE_CHECKING:
    from .ua import UserAgent

log = logging.getLogger(__name__)


class RegistrationFailed(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"registration refused: {status} {reason}")
        self.status = status


class Registration:
    """One binding of ``aor`` to this UA's contact at ``registrar``."""

    def __init__(
        self,
        ua: UserAgent,
        registrar: URI | str,
        *,
        aor: str | None = None,
        username: str | None = None,
        password: str | None = None,
        expires: int = 3600,
    ) -> None:
        self.ua = ua
        self.registrar = parse_uri(registrar) if isinstance(registrar, str) else registrar
        user = username or ua.user
        self.aor = parse_uri(aor) if aor else URI("sip", user, host=self.registrar.host)
        self.credentials = (username or user, password) if password is not None else None
        self.expires = expires
        self.granted: int | None = None  # what the registrar allowed
        self.registered = asyncio.Event()
        self._call_id: str | None = None
        self._cseq = 0
        self._task: asyncio.Task[None] | None = None

    async def _send(self, expires: int) -> int:
        from .dialog import new_call_id

        if self._call_id is None:
            self._call_id = new_call_id(self.registrar.host)
        self._cseq += 1
        # the registrar's URI without its parameters but its transport (RFC 3261
        # §10.2: no user part; ;transport=tls keeps the REGISTER on TLS)
        kept = {k: v for k, v in self.registrar.params.items() if k.lower() == "transport"}
        request = self.ua.new_request(
            "REGISTER",
            self.registrar.copy(params=kept, headers={}),
            from_=NameAddr(self.aor.copy()),
            to=NameAddr(self.aor.copy()),
            call_id=self._call_id,
            cseq=self._cseq,
            headers=[("Expires", str(expires))],
        )
        response = await self.ua.send(request, credentials=self.credentials)
        self._cseq = response.cseq.seq  # the auth retry consumed a sequence number
        if response.status == 423 and expires:  # Interval Too Brief: use Min-Expires
            minimum = int(response.headers.get("Min-Expires") or expires)
            return await self._send(minimum)
        if not 200 <= response.status < 300:
            raise RegistrationFailed(response.status, response.reason)
        granted = expires
        for contact in response.contact:
            if contact.expires is not None:
                granted = contact.expires
                break
        else:
            if response.expires is not None:
                granted = response.expires
        return granted

    async def start(self) -> None:
        self.granted = await self._send(self.expires)
        self.registered.set()
        self.ua.registrations.append(self)
        self._task = self.ua.spawn(self._refresh())
        log.info("event=registered aor=%s expires=%d", self.aor, self.granted)

    async def _refresh(self) -> None:
        while True:
            granted = self.granted or self.expires
            await asyncio.sleep(max(1.0, granted * 0.8 if granted > 60 else granted - 5))
            try:
                self.granted = await self._send(self.expires)
                self.registered.set()
            except (RegistrationFailed, OSError) as exc:
                self.registered.clear()
                log.warning("event=registration_refresh_failed aor=%s error=%s", self.aor, exc)
                self.granted = 30  # try again soon

    async def close(self) -> None:
        """Remove the binding (Expires: 0)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self in self.ua.registrations:
            self.ua.registrations.remove(self)
        if self.registered.is_set():
            self.registered.clear()
            try:
                await asyncio.wait_for(self._send(0), 5.0)
            except (RegistrationFailed, OSError, TimeoutError) as exc:
                log.info("event=unregister_failed aor=%s error=%s", self.aor, exc)
