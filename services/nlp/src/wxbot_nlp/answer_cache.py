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

Every Redis round trip costs CPU on the hot path, so each step is one Lua script (atomic, so no
answer can slip in between looking and claiming): a hit is one round trip (get or claim), a miss
two (get or claim, then put and release, or release alone when the LLM fails).
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
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from wxbot_common.logs import get_logger
from wxbot_common.redis_scripts import BatchedScripts

_NOISE = re.compile(r"[\s\u3000]+|[?？!！。.,，~～]+$")
# KEYS: answer, claim. ARGV: token, claim ms. The answer (a hit), 1 (claimed: ask the LLM) or 0
# (someone else is asking it).
_GET_OR_CLAIM = """
local answer = redis.call('get', KEYS[1])
if answer then return answer end
if redis.call('set', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""
# KEYS: answer, claim. ARGV: answer, TTL s, token.
_PUT_AND_RELEASE = """
redis.call('set', KEYS[1], ARGV[1], 'EX', ARGV[2])
if redis.call('get', KEYS[2]) == ARGV[3] then redis.call('del', KEYS[2]) end
return 1
"""
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"
_RENEW = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"
)
POLL_FIRST_S, POLL_MAX_S = 0.05, 0.5
CLAIM_TTL_S = 5.0  # how soon waiters notice that the asker holding a question died


def normalise_question(text: str) -> str:
    folded = unicodedata.normalize("NFKC", text).casefold().strip()
    return _NOISE.sub("", folded)


@dataclass
class Claim:
    """This caller's right to ask the LLM a question that others wait on (see `AnswerCache.holding`)."""

    key: str  # the answer's; the claim lives at key + ":claim"
    token: str  # so that only its holder releases it, never a later asker's claim
    settled: bool = False  # put_and_release already let it go: nothing left to release


class AnswerCache:
    def __init__(
        self,
        redis: Redis,
        ttl_s: int,
        max_wait_s: float,
        claim_ttl_s: float = CLAIM_TTL_S,
        *,
        scripts: BatchedScripts | None = None,
    ) -> None:
        """`max_wait_s`: the longest a waiter waits for another asker (that asker's whole LLM budget);
        `scripts`: the service's script batcher, so this turn's calls share a round trip with its
        other scripts' (its own by default)."""
        self._redis = redis
        self._ttl_s = ttl_s
        self._max_wait_s = max_wait_s
        self._claim_ms = max(1, int(claim_ttl_s * 1000))
        scripts = scripts or BatchedScripts(redis)  # the askers of one loop turn: one round trip
        self._get_or_claim = scripts.register_script(_GET_OR_CLAIM)
        self._put_and_release = scripts.register_script(_PUT_AND_RELEASE)
        self._release = scripts.register_script(_RELEASE)
        self._renew = scripts.register_script(_RENEW)
        self._log = get_logger("wxbot.nlp.cache")

    @staticmethod
    def key(scope: str, question: str) -> str:
        digest = hashlib.sha256(f"{scope}\n{normalise_question(question)}".encode()).hexdigest()[:32]
        return f"wxbot:nlp:answer:{digest}"

    async def get_or_claim(self, scope: str, question: str) -> str | Claim | None:
        """The cached answer; else a Claim if this caller is now the one asking the LLM (or Redis is
        down: ask anyway, uncached); else None: another caller is asking it, `wait_for_answer`."""
        key = self.key(scope, question)
        token = secrets.token_hex(8)
        try:
            found = await self._get_or_claim(keys=[key, key + ":claim"], args=[token, self._claim_ms])
        except RedisError as exc:
            self._log.warning("cache_unavailable", error=repr(exc))
            return Claim(key, token)
        if isinstance(found, bytes | str):
            return found.decode() if isinstance(found, bytes) else found
        return Claim(key, token) if found else None

    async def put_and_release(self, claim: Claim, answer: str) -> None:
        """Store the answer with its TTL and let the claim go (if still ours), in one round trip."""
        try:
            await self._put_and_release(keys=[claim.key, claim.key + ":claim"], args=[answer, self._ttl_s, claim.token])
        except RedisError as exc:
            self._log.warning("cache_unavailable", error=repr(exc))
            return  # `holding` tries the release again
        claim.settled = True

    async def release(self, claim: Claim) -> None:
        """Give up without an answer, so that a waiter tries the LLM itself at once."""
        try:
            await self._release(keys=[claim.key + ":claim"], args=[claim.token])
        except RedisError as exc:
            self._log.warning("cache_unavailable", error=repr(exc))

    @contextlib.asynccontextmanager
    async def holding(self, claim: Claim) -> AsyncIterator[None]:
        """Keep the claim alive while the body (the LLM call) runs; release it after unless the body
        stored the answer with `put_and_release`, even when the body fails or is cancelled at shutdown."""
        renewing = asyncio.create_task(self._keep_alive(claim.key + ":claim", claim.token))
        try:
            yield
        finally:
            renewing.cancel()
            if not claim.settled:
                await asyncio.shield(self.release(claim))

    async def _keep_alive(self, claim_key: str, token: str) -> None:
        while True:
            await asyncio.sleep(self._claim_ms / 3000)
            try:
                if not await self._renew(keys=[claim_key], args=[token, self._claim_ms]):
                    return  # lost (expired during a long pause): a waiter may already be asking
            except RedisError as exc:
                self._log.warning("cache_unavailable", error=repr(exc))

    async def wait_for_answer(self, scope: str, question: str, within_s: float | None = None) -> str | None:
        """The answer of the caller holding the claim, once stored; None when it gave up (claim
        released or expired without an answer), Redis fails, or `within_s` (at most `max_wait_s`)
        has passed."""
        key = self.key(scope, question)
        wait_s = self._max_wait_s if within_s is None else min(within_s, self._max_wait_s)
        deadline = time.monotonic() + wait_s
        pause = POLL_FIRST_S
        while (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(pause, left))
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
