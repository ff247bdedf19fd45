"""The Lua scripts: every step that must be atomic on the Redis side.

Each script reads Redis's own clock (``TIME``) where it judges due times, so
daemons on hosts whose clocks disagree never dispatch early or late. Scripts
only touch keys passed in ``KEYS``, except re-dispatch, which pushes onto the
application's queues named in the task (see the limitation there).
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

__all__ = ["Scripts"]

# Redis time in milliseconds, shared by the scripts below.
_NOW_MS = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
"""

# KEYS: failures, inflight.  ARGV: how many.
# Returns {now_ms, raw...}: up to ARGV[1] records moved oldest first.
TAKE = (
    _NOW_MS
    + """
local taken = {now}
for _ = 1, tonumber(ARGV[1]) do
    local raw = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
    if not raw then break end
    taken[#taken + 1] = raw
end
return taken
"""
)

# KEYS: retry, stats.  ARGV: batch size, task key prefix.
# Returns {dispatched, popped, now_ms, next_due_ms or -1}.
# Limitation: the queues are not in KEYS, so on Redis Cluster they must share
# the prefix's hash tag; fix: a two-step dispatch through a per-daemon list.
DISPATCH = (
    _NOW_MS
    + """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, ARGV[1])
local dispatched, orphans = 0, 0
for _, id in ipairs(due) do
    local task = ARGV[2] .. id
    local fields = redis.call('HMGET', task, 'queue', 'payload')
    if fields[1] then
        redis.call('LPUSH', fields[1], fields[2] or '')
        redis.call('HSET', task, 'state', 'dispatched', 'dispatched_at', now)
        dispatched = dispatched + 1
    else
        orphans = orphans + 1
    end
    redis.call('ZREM', KEYS[1], id)
end
if dispatched > 0 then redis.call('HINCRBY', KEYS[2], 'dispatched', dispatched) end
if orphans > 0 then redis.call('HINCRBY', KEYS[2], 'dispatch_orphans', orphans) end
local head = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {dispatched, #due, now, head[2] or '-1'}
"""
)

# KEYS: inflight of a dead daemon, failures, consumers.  ARGV: its id.
# Returns how many records went back to the failures list, oldest last
# pushed on the right, so they are taken next and in their old order.
REAP = """
local moved = 0
while redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT') do
    moved = moved + 1
end
redis.call('HDEL', KEYS[3], ARGV[1])
return moved
"""

# KEYS: consumers.  ARGV: this daemon's id.
# Records this daemon's heartbeat; returns {now_ms, id, beat, id, beat, ...}.
HEARTBEAT = (
    _NOW_MS
    + """
redis.call('HSET', KEYS[1], ARGV[1], now)
local out = {now}
for _, value in ipairs(redis.call('HGETALL', KEYS[1])) do out[#out + 1] = value end
return out
"""
)

# KEYS: outbox.  ARGV: batch size, lease ms.
# Claims due deliveries by pushing their score one lease ahead, so a daemon
# killed mid-delivery leaves them to be claimed again, never lost.
# Returns {now_ms, next_due_ms or -1, member...}.
CLAIM = (
    _NOW_MS
    + """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, ARGV[1])
local lease = now + tonumber(ARGV[2])
for _, member in ipairs(due) do
    redis.call('ZADD', KEYS[1], lease, member)
end
local head = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local out = {now, head[2] or '-1'}
for _, member in ipairs(due) do out[#out + 1] = member end
return out
"""
)

# KEYS: dead, stats.  ARGV: oldest score kept, most entries kept, task prefix.
# Returns how many dead tasks were evicted, by age and by count.
TRIM_DEAD = """
local function evict(ids)
    for _, id in ipairs(ids) do
        redis.call('DEL', ARGV[3] .. id)
        redis.call('ZREM', KEYS[1], id)
    end
    return #ids
end
local by_age = evict(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1]))
local excess = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[2])
local by_count = 0
if excess > 0 then
    by_count = evict(redis.call('ZRANGE', KEYS[1], 0, excess - 1))
end
if by_age + by_count > 0 then
    redis.call('HINCRBY', KEYS[2], 'dead_evicted', by_age + by_count)
end
return {by_age, by_count}
"""

# KEYS: invalid, stats.  ARGV: most entries kept.
TRIM_INVALID = """
local excess = redis.call('LLEN', KEYS[1]) - tonumber(ARGV[1])
if excess <= 0 then return 0 end
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[1]) - 1)
redis.call('HINCRBY', KEYS[2], 'invalid_evicted', excess)
return excess
"""

# KEYS: retry, dead, task.  ARGV: task id, score, task ttl ms.
# Makes one scheduled or dead task due at ARGV[2]; 0 when it is neither.
RETRY_NOW = """
local was = 'retry'
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
    if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 0 end
    redis.call('ZREM', KEYS[2], ARGV[1])
    was = 'dead'
end
if redis.call('HEXISTS', KEYS[3], 'queue') == 0 then return -1 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[3], 'state', 'scheduled', 'manual', '1')
redis.call('PEXPIRE', KEYS[3], ARGV[3])
if was == 'dead' then return 2 end
return 1
"""


class Scripts:
    """The scripts registered on one client; each call runs by its SHA."""

    def __init__(self, redis: Redis) -> None:
        self.take = redis.register_script(TAKE)
        self.dispatch = redis.register_script(DISPATCH)
        self.reap = redis.register_script(REAP)
        self.heartbeat = redis.register_script(HEARTBEAT)
        self.claim = redis.register_script(CLAIM)
        self.trim_dead = redis.register_script(TRIM_DEAD)
        self.trim_invalid = redis.register_script(TRIM_INVALID)
        self.retry_now = redis.register_script(RETRY_NOW)

    async def load(self, redis: Redis) -> None:
        """Load every script up front, so the first call fails fast if not."""
        for script in self._all():
            await redis.script_load(script.script)

    def _all(self) -> list[AsyncScript]:
        return [
            value for value in vars(self).values() if isinstance(value, AsyncScript)
        ]
