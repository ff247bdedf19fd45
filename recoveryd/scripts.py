"""The Lua scripts: every step that must be atomic on the Redis side.

Each script reads Redis's own clock (``TIME``) where it judges due times, so
daemons on hosts whose clocks disagree never dispatch early or late.

Scripts that act on a batch of tasks (intake's commit and recall,
re-dispatch, the scan's repairs) name the tasks' keys in their arguments,
not in ``KEYS``, and re-dispatch pushes onto the application's queues named
in each task. On Redis Cluster all of those keys must therefore share one
hash slot: a prefix with a hash tag, and queues that carry the same tag.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from recoveryd.tasks import LUA as _TASKS
from recoveryd.tasks import READ

__all__ = ["Scripts", "eval_command"]

# Redis time in milliseconds, shared by the scripts below.
_NOW_MS = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
"""

# Adds ``total`` and the per-category counts to the stats hash and to the
# current minute's history counters (see recoveryd.history).
_COUNT = """
local function count(stats, history_prefix, keep_ms, now_ms, name, total, by_category)
    redis.call('HINCRBY', stats, name, total)
    local minute = history_prefix .. math.floor(now_ms / 60000)
    redis.call('HINCRBY', minute, name, total)
    for category, n in pairs(by_category) do
        redis.call('HINCRBY', minute, name .. ':' .. category, n)
    end
    redis.call('PEXPIRE', minute, keep_ms)
end
"""

# Changes a known task's state (unless ``state`` is '') and sets the
# name/value pairs that follow in its ``more``; a task Redis does not know
# is left unknown. With an ``index`` (a sorted set, '' for none) the task
# is first added there with ``score``. Used by COMMIT's +mark and by MARK.
_MARK = """
local function mark_task(tasks, id, state, index, score, pairs_at, args)
    local t = load_task(tasks, id)
    if not t then return 0 end
    if state ~= '' then t[STATE] = STATE_OF[state] end
    -- Its index first: if that is refused, nothing is written.
    if index ~= '' then redis.call('ZADD', index, score, id) end
    for i = pairs_at, #args, 2 do set_more(t, args[i], args[i + 1]) end
    store_task(tasks, id, t)
    return 1
end
"""

# The writes of COMMIT that are more than one command (see recoveryd.writes).
#
# schedule: {'+schedule', retry, tasks, names, id, due ms, record}: the
# task's record stored (see recoveryd.tasks), its retry due at due ms. The
# retry entries are added in one ZADD per retry set, made before any other
# write to that set and at the end.
#
# store: {'+store', tasks, names, id, record}: the task's record stored.
#
# mark: {'+mark', tasks, id, state, index, score, name, value, ...}: see
# mark_task.
#
# group: {'+group', group, open groups, wake channel, now ms, window ms,
# group id, task id, most sample ids, notification, channel names
# (space-separated), the delivery's tail, then outbox and the delivery's
# head for each channel}. The first of a group goes to the outboxes at once
# (each delivery: head, notification, tail) and opens a window; the rest
# are only counted, with a few sample ids, for the summary at the window's
# end.
#
# count: {'+count', group, now ms, task id, most sample ids}: a failure
# counted in a group an earlier write of the same call opened or counted.
_WRITES = """
local due = {}

-- Wake-ups for the daemons' loops, sent once each at the end of the call
-- with the earliest time asked for: a batch opening a hundred groups sends
-- two messages, not two hundred.
local wakes, woken = {}, {}

local function wake(channel, what, at)
    local key = channel .. ' ' .. what
    local earliest = wakes[key]
    if not earliest then
        woken[#woken + 1] = {channel, what, key}
        wakes[key] = at
    elseif at < earliest then
        wakes[key] = at
    end
end

local function send_wakes()
    for _, w in ipairs(woken) do
        redis.call('PUBLISH', w[1], w[2] .. ' ' .. wakes[w[3]])
    end
end

local function schedule(op)
    store_new(op[3], op[4], op[5], op[7])
    local entries = due[op[2]]
    if not entries then
        entries = {}
        due[op[2]] = entries
    end
    entries[#entries + 1] = op[6]
    entries[#entries + 1] = op[5]
end

local function store(op)
    store_new(op[2], op[3], op[4], op[5])
end

local function mark(op)
    mark_task(op[2], op[3], op[4], op[5], op[6], 7, op)
end

local function add_due(key)
    local entries = due[key]
    due[key] = nil
    for first = 1, #entries, 1000 do
        redis.call('ZADD', key, unpack(entries, first, math.min(first + 999, #entries)))
    end
end

local function count_in(key, now, id, most)
    if redis.call('HINCRBY', key, 'pending', 1) == 1 then
        redis.call('HSET', key, 'since', now)
    end
    redis.call('HINCRBY', key, 'seen', 1)
    redis.call('HSET', key, 'last_at', now, 'last_id', id)
    local kept = tonumber(redis.call('HGET', key, 'kept') or '0')
    if kept < tonumber(most) then
        -- A JSON array: an id may hold any character. An older daemon's
        -- ids are one per line.
        local raw, samples = redis.call('HGET', key, 'samples') or '', {}
        if string.sub(raw, 1, 1) == '[' then
            samples = cjson.decode(raw)
        else
            for old in string.gmatch(raw, '[^\\n]+') do samples[#samples + 1] = old end
        end
        samples[#samples + 1] = id
        redis.call('HSET', key, 'samples', cjson.encode(samples), 'kept', kept + 1)
    end
end

local function add_to_group(op)
    if redis.call('EXISTS', op[2]) == 1 then
        count_in(op[2], tonumber(op[3]), op[4], op[5])
    end
end

local function group(op)
    local key, now = op[2], tonumber(op[5])
    if redis.call('EXISTS', key) == 1 then
        count_in(key, now, op[8], op[9])
        return
    end
    local window_end = now + tonumber(op[6])
    redis.call('HSET', key, 'template', op[10], 'channels', op[11],
        'window_end', window_end, 'first_at', now, 'last_at', now,
        'last_id', op[8], 'last_sent', now, 'since', now, 'pending', 0,
        'seen', 0, 'summaries', 0, 'kept', 0, 'samples', '')
    redis.call('ZADD', op[3], window_end, op[7])
    local i = 13
    for name in string.gmatch(op[11], '%S+') do
        redis.call('ZADD', op[i], now, op[i + 1] .. op[10] .. op[12])
        wake(op[4], 'outbox:' .. name, now)
        i = i + 2
    end
    wake(op[4], 'groups', window_end)
end
"""

# take(failures, inflight, want, budget, held): a batch of up to ``want``
# records and about ``budget`` bytes (at least one record), oldest first:
# with ``held``, the oldest records already in flight first (left by an
# error, or moved by a call whose reply was lost); then records moved from
# the failures list onto the in-flight list, as repeated LMOVEs would move
# them, in a few commands. The byte budget bounds the daemon's memory per
# batch when records are large.
_TAKE = """
local function take(failures, inflight, want, budget, held)
    local taken, bytes = {}, 0
    if held and want > 0 then
        local kept = redis.call('LRANGE', inflight, -want, -1)
        for i = #kept, 1, -1 do
            if bytes >= budget then break end
            taken[#taken + 1] = kept[i]
            bytes = bytes + #kept[i]
        end
    end
    local room = want - #taken
    if room > 0 and bytes < budget then
        local tail = redis.call('LRANGE', failures, -room, -1)
        local moved = {}
        for i = #tail, 1, -1 do
            if bytes >= budget then break end
            moved[#moved + 1] = tail[i]
            bytes = bytes + #tail[i]
        end
        if #moved > 0 then
            redis.call('LTRIM', failures, 0, -(#moved + 1))
            for first = 1, #moved, 1000 do
                local last = math.min(first + 999, #moved)
                redis.call('LPUSH', inflight, unpack(moved, first, last))
            end
            for _, raw in ipairs(moved) do taken[#taken + 1] = raw end
        end
    end
    return taken
end

local function taken_reply(out, inflight, taken)
    out[#out + 1] = now
    out[#out + 1] = redis.call('LLEN', inflight)
    for _, raw in ipairs(taken) do out[#out + 1] = raw end
    return out
end
"""

# KEYS: an in-flight list, or none; then, to take the next batch, the
# failures list.  ARGV: how many records the in-flight list must hold, one
# MessagePack array of writes, each {command, arg...} or one of those above,
# how many of the list's oldest records the batch is (all when absent), and,
# with the failures list, how many records and bytes to take next.
# Applies a batch's writes in one step, then takes the batch's records off
# the in-flight list. If the list no longer holds what it should, another
# daemon judged this one dead and took its records back: nothing is
# written, and 0 is returned. A write that fails (a key of the wrong type)
# is skipped, not allowed to stop the rest: the batch is committed, and the
# reply says what failed. Then the next batch is taken, new records only.
# Returns {1, failed writes, first error or ''}, and with a take the
# take's {now_ms, in-flight length, raw...} after that.
COMMIT = (
    _NOW_MS
    + _TASKS
    + _MARK
    + _WRITES
    + _TAKE
    + """
if #KEYS > 0 and redis.call('LLEN', KEYS[1]) ~= tonumber(ARGV[1]) then
    return {0, 0, ''}
end
local failed, first = 0, ''
local function try(name, key, apply, ...)
    local ok, err = pcall(apply, ...)
    if ok then return end
    failed = failed + 1
    if type(err) == 'table' then err = err.err end
    if first == '' then
        first = name .. ' ' .. tostring(key) .. ': ' .. tostring(err)
    end
end
local special = {
    ['+schedule'] = schedule, ['+store'] = store, ['+mark'] = mark,
    ['+group'] = group, ['+count'] = add_to_group,
}
for _, op in ipairs(cmsgpack.unpack(ARGV[2])) do
    local apply = special[op[1]]
    if apply then
        try(op[1], op[2], apply, op)
    else
        if due[op[2]] then try('ZADD', op[2], add_due, op[2]) end
        try(op[1], op[2], redis.call, unpack(op))
    end
end
for key in pairs(due) do try('ZADD', key, add_due, key) end
send_wakes()
if #KEYS > 0 then
    -- Keeps all but the batch's records, the oldest; none left: no list.
    redis.call('LTRIM', KEYS[1], 0, -(tonumber(ARGV[3] or ARGV[1]) + 1))
end
if #KEYS > 1 then
    local taken = take(KEYS[2], KEYS[1], tonumber(ARGV[4]), tonumber(ARGV[5]), false)
    return taken_reply({1, failed, first}, KEYS[1], taken)
end
return {1, failed, first}
"""
)

# KEYS: adapted base delays, silences, tasks, names.  ARGV: field names,
# '', task ids.
# What intake needs to know before it decides a batch: returns {delays,
# silences, then each task's fields} (see fields_reply).
RECALL = (
    _TASKS
    + """
return fields_reply(KEYS[3], KEYS[4], 1, {
    redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2])})
"""
)

# KEYS: failures, inflight.  ARGV: how many, how many bytes, and 1 to begin
# with the records already in flight or 0 for only new ones (see take).
# Returns {now_ms, the in-flight list's length after, raw...}.
TAKE = (
    _NOW_MS
    + _TAKE
    + """
local want, budget = tonumber(ARGV[1]), tonumber(ARGV[2])
return taken_reply({}, KEYS[2], take(KEYS[1], KEYS[2], want, budget, ARGV[3] ~= '0'))
"""
)

# KEYS: retry, stats, paused, watch, dead, tasks, names.  ARGV: batch size,
# history key prefix, history ms to keep, held key prefix.
# Returns {dispatched, popped, now_ms, next_due_ms or -1, orphans, unpushable,
# lateness_ms...}: orphans had no task record left; unpushable named a queue
# that is not a list, and went to the dead set; lateness is that of each
# dispatched entry that had a real due time (not a manual one).
# A due entry whose task or category is paused is held instead: moved, with
# its score, to the pause's held set, to be released when it is resumed.
# Each dispatched task is watched (by dispatch time) until it is judged
# recovered or it fails again; its payload, pushed, is not kept.
# Limitation: the queues are not in KEYS, so on Redis Cluster they must share
# the prefix's hash tag; fix: a two-step dispatch through a per-daemon list.
DISPATCH = (
    _NOW_MS
    + _COUNT
    + _TASKS
    + """
local due = redis.call(
    'ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, ARGV[1])
local tasks, names = KEYS[6], KEYS[7]
expect(tasks, 'hash')
expect(KEYS[4], 'zset')
expect(KEYS[5], 'zset')
local dispatched, orphans, held, unpushable = 0, 0, 0, 0
local by_category, late = {}, {}
local pauses, paused, watch = {}, false, {}
for _, matcher in ipairs(redis.call('HKEYS', KEYS[3])) do
    pauses[matcher] = true
    paused = true
end
for i = 1, #due, 2 do
    local id, score = due[i], tonumber(due[i + 1])
    local t = load_task(tasks, id)
    local queue = t and name_of(names, t[QUEUE]) or ''
    local hold = false
    if paused and queue ~= '' then
        local task, category = name_of(names, t[TASK]), name_of(names, t[CATEGORY])
        if pauses['task:' .. task] then
            hold = 'task:' .. task
        elseif pauses['category:' .. category] then
            hold = 'category:' .. category
        end
    end
    if hold then
        redis.call('ZADD', ARGV[4] .. hold, due[i + 1], id)
        t[STATE] = HELD
        set_more(t, 'held', hold)
        store_task(tasks, id, t)
        held = held + 1
    elseif queue ~= ''
        and type(redis.pcall('LPUSH', queue, t[PAYLOAD])) == 'table' then
        -- The push (made in this test) failed: the queue exists and is not a
        -- list. No retry can ever land there, and one bad entry must not
        -- stop the rest of the batch.
        t[STATE] = DEAD
        set_more(t, 'died_at', now)
        set_more(t, 'reason', 'queue ' .. queue .. ' is not a list')
        store_task(tasks, id, t)
        redis.call('ZADD', KEYS[5], now, id)
        unpushable = unpushable + 1
    elseif queue ~= '' then
        watch[#watch + 1] = now
        watch[#watch + 1] = id
        t[STATE] = DISPATCHED
        t[PAYLOAD] = ''
        set_more(t, 'dispatched_at', now)
        store_task(tasks, id, t)
        dispatched = dispatched + 1
        local category = name_of(names, t[CATEGORY])
        if category == '' then category = 'unknown' end
        by_category[category] = (by_category[category] or 0) + 1
        if score > 1e12 then late[#late + 1] = now - score end
    else
        orphans = orphans + 1
    end
    redis.call('ZREM', KEYS[1], id)
end
if dispatched > 0 then
    count(KEYS[2], ARGV[2], ARGV[3], now, 'dispatched', dispatched, by_category)
end
-- One ZADD per 500 entries: far cheaper than one per entry, and within
-- Lua's limit on unpacked arguments.
for first = 1, #watch, 1000 do
    redis.call('ZADD', KEYS[4], unpack(watch, first, math.min(first + 999, #watch)))
end
if orphans > 0 then redis.call('HINCRBY', KEYS[2], 'dispatch_orphans', orphans) end
if held > 0 then redis.call('HINCRBY', KEYS[2], 'held', held) end
if unpushable > 0 then redis.call('HINCRBY', KEYS[2], 'dead', unpushable) end
local head = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local out = {dispatched, #due / 2, now, head[2] or '-1', orphans, unpushable}
for _, ms in ipairs(late) do out[#out + 1] = ms end
return out
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

# KEYS: outbox, sent log.  ARGV: batch size, lease ms, rate limit (0: none),
# rate window ms, most members in one digest, a nonce.
# Claims due deliveries by pushing their score one lease ahead, so a daemon
# killed mid-delivery leaves them to be claimed again, never lost. With a
# rate limit, each claimed delivery up to the room left takes a place in the
# sent log; when more are due than there is room for, up to the digest size
# are claimed so the caller can fold the overflow into one digest. With no
# room, nothing is claimed and the next due time is when a place frees up.
# Returns {now_ms, next_due_ms or -1, room (-1: no limit), member...}.
CLAIM = (
    _NOW_MS
    + """
local limit = tonumber(ARGV[3] or '0')
local room = -1
if limit > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[4]))
    room = math.max(limit - redis.call('ZCARD', KEYS[2]), 0)
end
local head = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if room == 0 then
    local next_due = head[2] or '-1'
    if head[2] and tonumber(head[2]) <= now then
        local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
        next_due = tonumber(oldest[2]) + tonumber(ARGV[4])
    end
    return {now, next_due, room}
end
local take = tonumber(ARGV[1])
if room > 0 and redis.call('ZCOUNT', KEYS[1], '-inf', now) > room then
    take = tonumber(ARGV[5])
end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, take)
local lease = now + tonumber(ARGV[2])
for _, member in ipairs(due) do
    redis.call('ZADD', KEYS[1], lease, member)
end
if room > 0 then
    for i = 1, math.min(#due, room) do
        redis.call('ZADD', KEYS[2], now, ARGV[6] .. ':' .. i)
    end
end
head = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local out = {now, head[2] or '-1', room}
for _, member in ipairs(due) do out[#out + 1] = member end
return out
"""
)

# KEYS: dead, stats, tasks.  ARGV: oldest score kept, most entries kept.
# Returns how many dead tasks were evicted, by age and by count.
TRIM_DEAD = (
    _TASKS
    + """
expect(KEYS[1], 'zset')
expect(KEYS[3], 'hash')
local function evict(ids)
    for _, id in ipairs(ids) do
        redis.call('HDEL', KEYS[3], id)
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
)

# KEYS: done, tasks.  ARGV: now ms, most ids at once.
# Forgets the recovered and succeeded tasks whose time is up; one that
# failed again since is left to its new state. Returns how many were
# forgotten, and whether more are due.
TRIM_DONE = (
    _TASKS
    + """
expect(KEYS[1], 'zset')
expect(KEYS[2], 'hash')
local ids = redis.call(
    'ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local forgotten = 0
for _, id in ipairs(ids) do
    local t = load_task(KEYS[2], id)
    if t and (t[STATE] == RECOVERED or t[STATE] == SUCCEEDED) then
        redis.call('HDEL', KEYS[2], id)
        forgotten = forgotten + 1
    end
    redis.call('ZREM', KEYS[1], id)
end
return {forgotten, #ids == tonumber(ARGV[2]) and 1 or 0}
"""
)

# KEYS: invalid, stats.  ARGV: most entries kept.
TRIM_INVALID = """
local excess = redis.call('LLEN', KEYS[1]) - tonumber(ARGV[1])
if excess <= 0 then return 0 end
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[1]) - 1)
redis.call('HINCRBY', KEYS[2], 'invalid_evicted', excess)
return excess
"""

# KEYS: retry, dead, tasks.  ARGV: task id, score.
# Makes one scheduled or dead task due at ARGV[2]: 1 if it was scheduled, 2
# if it was dead, 0 when it is neither, -1 when it has no queue to go to.
RETRY_NOW = (
    _TASKS
    + """
local was = 1
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
    if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 0 end
    was = 2
end
-- A task with nowhere to go stays where it is.
local t = load_task(KEYS[3], ARGV[1])
if not t or t[QUEUE] == '' then return -1 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
t[STATE] = SCHEDULED
set_more(t, 'manual', '1')
store_task(KEYS[3], ARGV[1], t)
return was
"""
)

# KEYS: tasks.  ARGV: task id, state ('' to keep it), index ('' for none),
# score, then name, value, ... See mark_task; returns 1, or 0 for a task
# Redis does not know.
MARK = (
    _TASKS
    + _MARK
    + """
return mark_task(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], 5, ARGV)
"""
)

# Issue 4: held retries, the scan's repairs, recovery judgement and the
# periodic jobs' lease.

# KEYS: held set, retry, tasks.  ARGV: first due ms, ms between entries,
# how many.
# Releases the oldest held entries into the retry set, one every ARGV[2] ms
# from ARGV[1], so a resumed backlog goes out as a paced stream. An entry
# whose task is no longer held (it failed again, or succeeded) is dropped.
# Returns {released, dropped, last due ms or -1, left}.
RELEASE = (
    _TASKS
    + """
local ids = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[3]) - 1)
local released, dropped, last = 0, 0, -1
for _, id in ipairs(ids) do
    local t = load_task(KEYS[3], id)
    if t and t[STATE] == HELD then
        last = tonumber(ARGV[1]) + released * tonumber(ARGV[2])
        redis.call('ZADD', KEYS[2], last, id)
        t[STATE] = SCHEDULED
        drop_more(t, 'held')
        store_task(KEYS[3], id, t)
        released = released + 1
    else
        dropped = dropped + 1
    end
    redis.call('ZREM', KEYS[1], id)
end
return {released, dropped, last, redis.call('ZCARD', KEYS[1])}
"""
)

# KEYS: tasks, retry, watch, dead, done.  ARGV: HSCAN cursor, how many, now
# ms, held key prefix, ms a recovered or succeeded task is kept.
# One step of a walk over every task: each must be in the index its state
# names (see recoveryd.tasks), which is what ends it. A scheduled or held
# task that lost its entry is scheduled again, due now; one in any other
# state is put back in its index, so no record is kept forever.
# Checked and repaired in one step, so a task being dispatched meanwhile is
# never sent twice. Returns {next cursor, tasks examined, indexes repaired,
# rescued id...}.
# Limitation: a record that cannot be read is passed over and kept for
# ever; fix: move it, with its id, to a list of its own for an operator.
SWEEP = (
    _TASKS
    + """
expect(KEYS[1], 'hash')
for i = 2, 5 do expect(KEYS[i], 'zset') end
local page = redis.call('HSCAN', KEYS[1], ARGV[1], 'COUNT', tonumber(ARGV[2]))
local now, found = tonumber(ARGV[3]), page[2]
local out, repaired = {page[1], #found / 2, 0}, 0
for i = 1, #found, 2 do
    local id = found[i]
    local t = decode_task(found[i + 1])
    local state = t and t[STATE]
    local held = state == HELD and t[MORE] and t[MORE]['held']
    if state == SCHEDULED or state == HELD then
        local kept = state == SCHEDULED and redis.call('ZSCORE', KEYS[2], id)
            or held and redis.call('ZSCORE', ARGV[4] .. held, id)
        if not kept and t[QUEUE] ~= '' then
            redis.call('ZADD', KEYS[2], now, id)
            t[STATE] = SCHEDULED
            drop_more(t, 'held')
            store_task(KEYS[1], id, t)
            out[#out + 1] = id
        end
    elseif state == DISPATCHED then
        if not redis.call('ZSCORE', KEYS[3], id) then
            redis.call('ZADD', KEYS[3], now, id)
            repaired = repaired + 1
        end
    elseif state == DEAD or state == NOTIFIED then
        if not redis.call('ZSCORE', KEYS[4], id) then
            local died = tonumber(t[MORE] and t[MORE]['died_at']) or now
            redis.call('ZADD', KEYS[4], died, id)
            repaired = repaired + 1
        end
    elseif state == RECOVERED or state == SUCCEEDED then
        if not redis.call('ZSCORE', KEYS[5], id) then
            redis.call('ZADD', KEYS[5], now + tonumber(ARGV[5]), id)
            repaired = repaired + 1
        end
    end
end
out[3] = repaired
return out
"""
)

# KEYS: watch, stats, tasks, names, done.  ARGV: dispatched before this ms,
# now ms, how many, history key prefix, history ms to keep, ms a recovered
# task is kept.
# A re-dispatched task still in state "dispatched" after the recovery window
# did not fail again: it is recovered, counted per category in this minute.
# Returns {recovered, judged}.
SETTLE = (
    _COUNT
    + _TASKS
    + """
expect(KEYS[1], 'zset')
expect(KEYS[3], 'hash')
expect(KEYS[5], 'zset')
local ids = redis.call(
    'ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local now = tonumber(ARGV[2])
local recovered, by_category = 0, {}
for _, id in ipairs(ids) do
    local t = load_task(KEYS[3], id)
    if t and t[STATE] == DISPATCHED then
        t[STATE] = RECOVERED
        set_more(t, 'recovered_at', now)
        store_task(KEYS[3], id, t)
        redis.call('ZADD', KEYS[5], now + tonumber(ARGV[6]), id)
        local category = name_of(KEYS[4], t[CATEGORY])
        if category == '' then category = 'unknown' end
        by_category[category] = (by_category[category] or 0) + 1
        recovered = recovered + 1
    end
    redis.call('ZREM', KEYS[1], id)
end
if recovered > 0 then
    count(KEYS[2], ARGV[4], ARGV[5], now, 'recovered', recovered, by_category)
end
return {recovered, #ids}
"""
)

# KEYS: job.  ARGV: owner, now ms, period ms, lease ms, force (1: ignore the
# period, for a run an operator asked for).
# Takes the job's lease if no one else holds it and the job is due.
# Returns {1, last run ms or -1} when taken, else {0, when to ask again}.
JOB_CLAIM = """
local f = redis.call('HMGET', KEYS[1], 'owner', 'lease_until', 'last_run')
local now = tonumber(ARGV[2])
if f[1] and f[1] ~= ARGV[1] and tonumber(f[2] or '0') > now then
    return {0, tonumber(f[2])}
end
local last = tonumber(f[3] or '-1')
if ARGV[5] ~= '1' and last >= 0 and last + tonumber(ARGV[3]) > now then
    return {0, last + tonumber(ARGV[3])}
end
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'lease_until', now + tonumber(ARGV[4]))
return {1, last}
"""

# KEYS: job.  ARGV: owner, now ms, lease ms.  1 if still the owner, else 0.
JOB_RENEW = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'lease_until', tonumber(ARGV[2]) + tonumber(ARGV[3]))
return 1
"""

# KEYS: job.  ARGV: owner, started ms, summary, report path.
# Records a finished run and gives up the lease; 0 if the lease was lost.
JOB_DONE = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'last_run', ARGV[2], 'last_owner', ARGV[1],
    'last_summary', ARGV[3], 'last_report', ARGV[4])
redis.call('HINCRBY', KEYS[1], 'runs', 1)
redis.call('HDEL', KEYS[1], 'owner', 'lease_until')
return 1
"""

# KEYS: from, to.  ARGV: member, new member, score.
# Moves one sorted-set member if it is still there; 1 if moved.
MOVE_MEMBER = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
return 1
"""


class Scripts:
    """The scripts registered on one client; each call runs by its SHA."""

    def __init__(self, redis: Redis) -> None:
        self.take = redis.register_script(TAKE)
        self.commit = redis.register_script(COMMIT)
        self.recall = redis.register_script(RECALL)
        self.dispatch = redis.register_script(DISPATCH)
        self.reap = redis.register_script(REAP)
        self.heartbeat = redis.register_script(HEARTBEAT)
        self.claim = redis.register_script(CLAIM)
        self.trim_dead = redis.register_script(TRIM_DEAD)
        self.trim_done = redis.register_script(TRIM_DONE)
        self.trim_invalid = redis.register_script(TRIM_INVALID)
        self.retry_now = redis.register_script(RETRY_NOW)
        self.mark = redis.register_script(MARK)
        self.read = redis.register_script(READ)
        self.release = redis.register_script(RELEASE)
        self.sweep = redis.register_script(SWEEP)
        self.settle = redis.register_script(SETTLE)
        self.job_claim = redis.register_script(JOB_CLAIM)
        self.job_renew = redis.register_script(JOB_RENEW)
        self.job_done = redis.register_script(JOB_DONE)
        self.move_member = redis.register_script(MOVE_MEMBER)

    async def load(self, redis: Redis) -> None:
        """Load every script up front, so the first call fails fast if not."""
        for script in self._all():
            await redis.script_load(script.script)

    def _all(self) -> list[AsyncScript]:
        return [
            value for value in vars(self).values() if isinstance(value, AsyncScript)
        ]


def eval_command(
    script: AsyncScript, keys: Sequence[str], args: Sequence[Any]
) -> list[Any]:
    """``script`` as one command to send with others (see `connection.exchange`).

    By its text, not its SHA: Redis caches it all the same, and there is no
    NOSCRIPT reply to recover from in the middle of an exchange.
    """
    return ["EVAL", script.script, len(keys), *keys, *args]
