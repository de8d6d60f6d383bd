"""Answer cache for frequent standalone questions (对高频问题建立本地缓存).

Only turns that do not depend on context are cached: the conversation has no history, so the
answer cannot refer to anything but the question. Keyed by the variant and the normalised
question (case, width, spacing and trailing punctuation folded), stored in Redis with a TTL, so
every nlp replica shares it.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

from redis.asyncio import Redis
from redis.exceptions import RedisError

from wxbot_common.logs import get_logger

_NOISE = re.compile(r"[\s\u3000]+|[?？!！。.,，~～]+$")


def normalise_question(text: str) -> str:
    folded = unicodedata.normalize("NFKC", text).casefold().strip()
    return _NOISE.sub("", folded)


class AnswerCache:
    def __init__(self, redis: Redis, ttl_s: int) -> None:
        self._redis = redis
        self._ttl_s = ttl_s
        self._log = get_logger("wxbot.nlp.cache")

    @staticmethod
    def key(variant: str, question: str) -> str:
        digest = hashlib.sha256(f"{variant}\n{normalise_question(question)}".encode()).hexdigest()[:32]
        return f"wxbot:nlp:answer:{digest}"

    async def get(self, variant: str, question: str) -> str | None:
        try:
            raw = await self._redis.get(self.key(variant, question))
        except RedisError as exc:
            self._log.warning("cache_unavailable", error=repr(exc))
            return None
        return raw.decode() if isinstance(raw, bytes) else raw

    async def put(self, variant: str, question: str, answer: str) -> None:
        try:
            await self._redis.set(self.key(variant, question), answer, ex=self._ttl_s)
        except RedisError as exc:
            self._log.warning("cache_unavailable", error=repr(exc))
