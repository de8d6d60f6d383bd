"""Logins kept in Redis, named by signed cookies; login `state`s that work once.

The cookie holds only a random session id signed with itsdangerous (a forged or tampered cookie
is no session); the session itself (who, its CSRF token) lives in Redis with the session's TTL,
so it expires on the server and a logout ends it everywhere. Cookies are HttpOnly and SameSite=Lax:
Lax so that the top-level redirect back from WeCom's login page still carries the state cookie;
every change additionally needs the session's CSRF token.
"""

from __future__ import annotations

import hmac
import json
import secrets
from dataclasses import dataclass

from itsdangerous import BadSignature, TimestampSigner
from redis.asyncio import Redis

SESSION_COOKIE = "wxbot_console"
STATE_COOKIE = "wxbot_console_login"
STATE_TTL_S = 600  # a login started must finish within ten minutes
LOCAL_TOKEN_TTL_S = 7 * 86400  # how long a spent local login token is remembered as spent


@dataclass(frozen=True, slots=True)
class Session:
    session_id: str
    user: str
    csrf: str

    def csrf_ok(self, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(str(given).encode(), self.csrf.encode())


class SessionStore:
    def __init__(self, redis: Redis, secret_key: str, ttl_s: int) -> None:
        self._redis = redis
        self._signer = TimestampSigner(secret_key, salt="wxbot-console-session")
        self._state_signer = TimestampSigner(secret_key, salt="wxbot-console-state")
        self.ttl_s = ttl_s

    # -- sessions ----------------------------------------------------------------------------------

    async def create(self, user: str) -> tuple[Session, str]:
        """A new session for `user` and the cookie value that names it."""
        session = Session(secrets.token_urlsafe(32), user, secrets.token_urlsafe(32))
        record = json.dumps({"user": user, "csrf": session.csrf})
        await self._redis.set(f"console:session:{session.session_id}", record, ex=self.ttl_s)
        return session, self._signer.sign(session.session_id).decode()

    async def load(self, cookie: str | None) -> Session | None:
        """The live session a cookie names, or None (missing, forged, expired or logged out)."""
        if not cookie:
            return None
        try:
            session_id = self._signer.unsign(cookie, max_age=self.ttl_s).decode()
        except BadSignature:
            return None
        raw = await self._redis.get(f"console:session:{session_id}")
        if raw is None:
            return None
        record = json.loads(raw)
        return Session(session_id, str(record["user"]), str(record["csrf"]))

    async def end(self, session: Session) -> None:
        await self._redis.delete(f"console:session:{session.session_id}")

    # -- login states ------------------------------------------------------------------------------

    async def new_state(self) -> tuple[str, str]:
        """A random `state` for the login redirect and the cookie that binds it to this browser."""
        state = secrets.token_urlsafe(24)
        await self._redis.set(f"console:state:{state}", "1", ex=STATE_TTL_S)
        return state, self._state_signer.sign(state).decode()

    async def take_state(self, given: str | None, cookie: str | None) -> bool:
        """True once for a state this console issued to this browser; never again."""
        if not given or not cookie:
            return False
        try:
            bound = self._state_signer.unsign(cookie, max_age=STATE_TTL_S).decode()
        except BadSignature:
            return False
        if not hmac.compare_digest(bound.encode(), given.encode()):
            return False
        return bool(await self._redis.delete(f"console:state:{given}"))

    async def spend_local_token(self, token: str) -> bool:
        """A local login token works once (remembered by its signature, not in clear)."""
        mark = self._signer.get_signature(token).decode()
        return bool(await self._redis.set(f"console:local-login:{mark}", "1", nx=True, ex=LOCAL_TOKEN_TTL_S))
