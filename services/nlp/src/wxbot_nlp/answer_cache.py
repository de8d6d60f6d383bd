"""Answer cache for frequent standalone questions (对高频问题建立本地缓存).

Only turns that do not depend on context are cached: the conversation has no history, so the
answer cannot refer to anything but the question. Keyed by the variant's fingerprint (name,
model, temperature, prompt: a changed prompt never serves old answers) and the normalised
question (case, width, spacing and trailing punctuation folded), stored in Redis with a TTL, so
every nlp replica shares it.

Single flight: when many users ask the same new question at once (an announcement went out),
the first asker claims the question and the others wait for its answer instead of each calling
the LLM. The claim is short-lived and renewed while the asker's call runs: a failed asker
releases it, a crashed or stopped one stops renewing it, and either way the waiters go on by
themselves within seconds. Redis trouble only turns the cache off for that message.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import secrets
import time
import unicodedata
from collections.abc import AsyncIterator

from redis.asyncio import Redis
from redis.exceptions import RedisError

from wxbot_common.logs import get_logger

_NOISE = re.compile(r"[\s\u3000]+|[?？!！。.,，~～]+$")
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"
_RENEW = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"
)
POLL_FIRST_S, POLL_MAX_S = 0.05, 0.5
CLAIM_TTL_S = 5.0  # how soon waiters notice that the asker holding a question died


def normalise_question(text: str) -> str:
    folded = unicodedata.normalize("NFKC", text).casefold().strip()
    return _NOISE.sub("", folded)


class AnswerCache:
    def __init__(self, redis: Redis, ttl_s: int, max_wait_s: float, claim_ttl_s: float = CLAIM_TTL_S) -> None:
        """`max_wait_s`: the longest a waiter waits for another asker (that asker's whole LLM budget)."""
        self._redis = redis
        self._ttl_s = ttl_s
        self._max_wait_s = max_wait_s
        self._claim_ms = max(1, int(claim_ttl_s * 1000))
        self._release = redis.register_script(_RELEASE)
        self._renew = redis.register_script(_RENEW)
        self._log = get_logger("wxbot.nlp.cache")

    @staticmethod
    def key(scope: str, question: str) -> str:
        digest = hashlib.sha256(f"{scope}\n{normalise_question(question)}".encode()).hexdigest()[:32]
        return f"wxbot:nlp:answer:{digest}"

    async def get(self, scope: str, question: str) -> str | None:
        try:
            raw = await self._redis.get(self.key(scope, question))
        except RedisError as exc:
            self._log.warning("cache_unavailable", error=repr(exc))
            return None
        return raw.decode() if isinstance(raw, bytes) else raw

    async def put(self, scope: str, question: str, answer: str) -> None:
        try:
            await self._redis.set(self.key(scope, question), answer, ex=self._ttl_s)
        except RedisError as exc:
            self._log.warning("cache_unavailable", error=repr(exc))

    async def claim(self, scope: str, question: str) -> str | None:
        """A token if this caller is now the one asking the LLM (or Redis is down: ask anyway),
        None if another caller already is."""
        token = secrets.token_hex(8)
        try:
            won = await self._redis.set(self.key(scope, question) + ":claim", token, nx=True, px=self._claim_ms)
        except RedisError as exc:
            self._log.warning("cache_unavailable", error=repr(exc))
            return token
        return token if won else None

    async def release(self, scope: str, question: str, token: str) -> None:
        try:
            await self._release(keys=[self.key(scope, question) + ":claim"], args=[token])
        except RedisError as exc:
            self._log.warning("cache_unavailable", error=repr(exc))

    @contextlib.asynccontextmanager
    async def holding(self, scope: str, question: str, token: str) -> AsyncIterator[None]:
        """Keep the claim alive while the body (the LLM call) runs; release it after, even when
        the body fails or is cancelled at shutdown."""
        renewing = asyncio.create_task(self._keep_alive(self.key(scope, question) + ":claim", token))
        try:
            yield
        finally:
            renewing.cancel()
            await asyncio.shield(self.release(scope, question, token))

    async def _keep_alive(self, claim_key: str, token: str) -> None:
        while True:
            await asyncio.sleep(self._claim_ms / 3000)
            try:
                if not await self._renew(keys=[claim_key], args=[token, self._claim_ms]):
                    return  # lost (expired during a long pause): a waiter may already be asking
            except RedisError as exc:
                self._log.warning("cache_unavailable", error=repr(exc))

    async def wait_for_answer(self, scope: str, question: str) -> str | None:
        """The answer of the caller holding the claim, once stored; None when it gave up (claim
        released or expired without an answer) or Redis fails."""
        key = self.key(scope, question)
        deadline = time.monotonic() + self._max_wait_s
        pause = POLL_FIRST_S
        while time.monotonic() < deadline:
            await asyncio.sleep(pause)
            try:
                answer, claimed = await self._redis.mget([key, key + ":claim"])
            except RedisError as exc:
                self._log.warning("cache_unavailable", error=repr(exc))
                return None
            if answer is not None:
                return answer.decode() if isinstance(answer, bytes) else str(answer)
            if claimed is None:
                return None
            pause = min(POLL_MAX_S, pause * 2)
        return None
