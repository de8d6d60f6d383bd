"""Conversation state in Redis, written only by the projection and idempotent by stream position.

Per conversation (`{ckey}` is a Redis Cluster hash tag, so one conversation lives in one slot):
`wxbot:ctx:{ckey}:turns` (list of JSON turns), `:pending` (sorted set of the origin sequences of
messages not yet answered, member `seq:unix_time`), `:seq` (last stream sequence applied).
`wxbot:ctx:position` is the highest stream sequence applied by any replica.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from enum import StrEnum

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from wxbot_context.tokens import estimate_tokens

POSITION_KEY = "wxbot:ctx:position"

_APPLY = """
local last = tonumber(redis.call('GET', KEYS[3]) or '0')
local seq = tonumber(ARGV[1])
local applied = 0
if seq > last then
  local op = ARGV[2]
  local origin = ARGV[3]
  if op == 'pending' then
    redis.call('ZADD', KEYS[2], origin, origin .. ':' .. ARGV[7])
  elseif op == 'user' then
    redis.call('RPUSH', KEYS[1], ARGV[4])
  elseif op == 'resolve' then
    redis.call('ZREMRANGEBYSCORE', KEYS[2], origin, origin)
  elseif op == 'assistant' then
    redis.call('ZREMRANGEBYSCORE', KEYS[2], origin, origin)
    if ARGV[4] ~= '' then redis.call('RPUSH', KEYS[1], ARGV[4]) end
  elseif op == 'reset' then
    redis.call('DEL', KEYS[1])
  end
  redis.call('LTRIM', KEYS[1], -tonumber(ARGV[6]), -1)
  redis.call('SET', KEYS[3], seq, 'EXAT', ARGV[5])
  redis.call('EXPIREAT', KEYS[1], ARGV[5])
  redis.call('EXPIREAT', KEYS[2], ARGV[5])
  applied = 1
end
local pos = tonumber(redis.call('GET', KEYS[4]) or '0')
if seq > pos then redis.call('SET', KEYS[4], seq) end
return applied
"""


class Op(StrEnum):
    PENDING = "pending"  # a message arrived and awaits an answer
    USER = "user"  # the message passed safety: it becomes a user turn
    RESOLVE = "resolve"  # the message was answered without an assistant turn (blocked)
    ASSISTANT = "assistant"  # the answer was approved: resolve + assistant turn
    RESET = "reset"  # the user asked to forget


@dataclass(frozen=True)
class StoredTurn:
    role: str  # "user" | "assistant"
    text: str
    origin_sequence: int
    at: float
    tokens: int = -1  # its estimate, stored with it: estimated once when projected, not on every read
    image: bool = False  # a user turn that was an image message (nlp asks for the image only after one)

    def __post_init__(self) -> None:
        if self.tokens < 0:
            object.__setattr__(self, "tokens", estimate_tokens(self.text))

    def to_json(self) -> str:
        stored: dict[str, object] = {
            "r": self.role,
            "t": self.text,
            "s": self.origin_sequence,
            "at": round(self.at, 3),
            "k": self.tokens,
        }
        if self.image:
            stored["i"] = 1
        return json.dumps(stored, ensure_ascii=False)

    @classmethod
    def from_json(cls, raw: str | bytes) -> StoredTurn:
        # str, not bytes: json.loads would sniff the bytes' encoding first, for every turn of every read.
        # Turns stored before "k" existed get their estimate now.
        d = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        return cls(
            role=d["r"],
            text=d["t"],
            origin_sequence=int(d["s"]),
            at=float(d["at"]),
            tokens=int(d.get("k", -1)),
            image=bool(d.get("i")),
        )


@dataclass(frozen=True)
class ApplyOp:
    """One event's change to its conversation, for `ContextStore.apply_many`."""

    ckey: str
    seq: int
    op: Op
    origin_seq: int
    at: float
    turn: StoredTurn | None = None


@dataclass(frozen=True)
class Snapshot:
    turns: list[StoredTurn]
    pending_before: list[int]  # unanswered, non-stale origin sequences older than the asked one


KEY_NAMES = ("turns", "pending", "seq", "position")  # the keys `_keys` gives, in order


def _keys(ckey: str) -> list[str]:
    base = f"wxbot:ctx:{{{ckey}}}"
    return [f"{base}:turns", f"{base}:pending", f"{base}:seq", POSITION_KEY]


class ContextStore:
    """Applies projection operations atomically and reads conversation snapshots."""

    def __init__(self, redis: Redis, ttl_s: int, max_turns: int, pending_stale_s: float) -> None:
        self._redis = redis
        self._ttl_s = ttl_s
        self._max_turns = max_turns
        self._stale_s = pending_stale_s
        self._apply = redis.register_script(_APPLY)

    async def apply_many(self, ops: list[ApplyOp]) -> list[bool]:
        """Apply events in order in one pipelined round trip; per event, False if it was a replay.

        Each event is its own atomic script, so a batch cut short by a failure is simply applied
        again: the events already applied are recognised by their sequence. The conversation
        expires `ttl` after its latest event's own time, so a rebuild from the log forgets exactly
        the conversations that live operation had forgotten.
        """
        # EVALSHA by hand: redis-py's pipeline asks SCRIPT EXISTS before each batch that holds a
        # script object (a round trip per batch); here the script is loaded again only when Redis
        # says it lost it (a restart), and the batch is then applied again.
        for attempt in range(2):
            async with self._redis.pipeline(transaction=False) as pipe:
                for o in ops:
                    pipe.evalsha(
                        self._apply.sha,
                        len(KEY_NAMES),
                        *_keys(o.ckey),
                        o.seq,
                        o.op.value,
                        o.origin_seq,
                        o.turn.to_json() if o.turn else "",
                        int(o.at) + self._ttl_s,
                        self._max_turns,
                        int(o.at),
                    )
                results = await pipe.execute(raise_on_error=False)
            if attempt == 0 and any(isinstance(r, NoScriptError) for r in results):
                await self._redis.script_load(_APPLY)
                continue
            for r in results:
                if isinstance(r, Exception):
                    raise r
            break
        return [bool(r) for r in results]

    async def advance_position(self, seq: int) -> None:
        """Record progress for events that touch no conversation."""
        await self._redis.eval(
            "local p = tonumber(redis.call('GET', KEYS[1]) or '0') "
            "if tonumber(ARGV[1]) > p then redis.call('SET', KEYS[1], ARGV[1]) end return 0",
            1,
            POSITION_KEY,
            seq,
        )

    async def position(self) -> int:
        raw = await self._redis.get(POSITION_KEY)
        return int(raw) if raw else 0

    async def snapshot(self, ckey: str, before_sequence: int) -> Snapshot:
        return (await self.snapshots([(ckey, before_sequence)]))[0]

    async def snapshots(self, asks: list[tuple[str, int]]) -> list[Snapshot]:
        """Each conversation's turns and unanswered messages before a sequence, in one round trip."""
        return (await self._read(asks, with_position=False))[1]

    async def position_and_snapshots(self, asks: list[tuple[str, int]]) -> tuple[int, list[Snapshot]]:
        """The applied position, then the snapshots, in one round trip. Redis runs a pipeline's
        commands in order and each event's script moves the position together with the
        conversation it touched, so every event up to the position read is in the snapshots."""
        return await self._read(asks, with_position=True)

    async def _read(self, asks: list[tuple[str, int]], with_position: bool) -> tuple[int, list[Snapshot]]:
        async with self._redis.pipeline(transaction=False) as pipe:
            if with_position:
                pipe.get(POSITION_KEY)
            for ckey, before_sequence in asks:
                turns_key, pending_key, _, _ = _keys(ckey)
                pipe.lrange(turns_key, 0, -1)
                pipe.zrangebyscore(pending_key, "-inf", f"({before_sequence}" if before_sequence > 0 else "+inf")
            raw = await pipe.execute()
        position = 0
        if with_position:
            head, raw = raw[0], raw[1:]
            position = int(head) if head else 0
        fresh_after = time.time() - self._stale_s
        return position, [
            _snapshot(raw[2 * i], raw[2 * i + 1], before_sequence, fresh_after)
            for i, (_, before_sequence) in enumerate(asks)
        ]


def _snapshot(raw_turns: list[bytes], raw_pending: list[bytes], before_sequence: int, fresh_after: float) -> Snapshot:
    turns = [StoredTurn.from_json(t) for t in raw_turns]
    if before_sequence > 0:
        turns = [t for t in turns if t.origin_sequence < before_sequence]
    pending: list[int] = []
    for member in raw_pending:
        seq_s, _, at_s = (member.decode() if isinstance(member, bytes) else member).partition(":")
        if float(at_s or 0) >= fresh_after:
            pending.append(int(seq_s))
    return Snapshot(turns=turns, pending_before=pending)
