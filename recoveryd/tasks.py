"""Tasks: what Redis remembers of each task, all in one hash.

Every task recoveryd knows is one field of ``<p>:tasks``: the task's id,
and a MessagePack array in the order of `FIELDS`. A million pending
retries are a million fields, not a million keys: a key of its own would
cost a task about a hundred bytes of keyspace and expiry bookkeeping
before it held anything, more than the rest of its record.

The names that recur across tasks (task name, category, pattern, error
type) are stored as small numbers, assigned by the scripts on first sight
and kept in ``<p>:names`` (``=<name>`` → number, ``#<number>`` → name,
``last``: the last number given). A name too long, or one past
`NAMES_MAX`, is stored as itself. The queue is always stored as itself,
so a damaged names hash can mislabel a task but never misdirect its
payload; a number whose name is lost reads as empty, and a names hash
begun afresh beside stored tasks numbers far from the lost one.

Absent text is ``""``, never nil, so that a script can unpack a record and
pack it again as the same array. ``more`` holds what only some states
carry (``held``, ``died_at``, ``reason``, ``record``, ``alerted_at``,
``dispatched_at``, ``recovered_at``, ``succeeded_at``, ``manual``).

Each task is in exactly one index, by its state, and that index is what
ends it: ``scheduled`` in ``<p>:retry``, ``held`` in its pause's held set,
``dispatched`` in ``<p>:watch``, ``dead`` and ``notified`` in ``<p>:dead``,
``recovered`` and ``succeeded`` in ``<p>:done`` (scored by when they are
forgotten). The scripts read and write records (see `recoveryd.scripts`);
Python reads them through the ``READ`` script, as ``HMGET`` would give
them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, cast

import msgspec
import redis
from redis.asyncio import Redis

from recoveryd.keys import Keys
from recoveryd.luavalues import lua_record

__all__ = [
    "ALL_FIELDS",
    "FIELDS",
    "LUA",
    "NAMED",
    "NAMES_MAX",
    "NAME_MAX_BYTES",
    "READ",
    "STATES",
    "STORE",
    "decode_fields",
    "fields_args",
    "pack",
    "read",
    "read_sync",
    "record",
    "record_from",
    "write",
    "write_sync",
]

# The states a task is in, stored as their position here, from 1.
STATES = (
    "scheduled",
    "dispatched",
    "held",
    "dead",
    "notified",
    "recovered",
    "succeeded",
)

# A record's fields, in order.
# Limitation: a record carries no version, so changing this order or the
# meaning of a field needs every stored record rewritten; fix: a leading
# version number, read by `LUA` before the fields.
FIELDS = (
    "state",
    "attempt",
    "failed_at",
    "task",
    "category",
    "pattern",
    "confidence",
    "queue",
    "payload",
    "error_type",
    "error",
    "history",
    "more",
)

# Fields stored as a number from the names hash. Not the queue: a number
# that came to mean another name would send a payload to the wrong place.
NAMED = ("task", "category", "pattern", "error_type")

# Names stored as numbers: at most this many, each at most this long.
NAMES_MAX = 100_000
NAME_MAX_BYTES = 200

_Value = str | bytes | int


def record(
    *,
    state: str,
    attempt: int,
    failed_at: int,
    task: str,
    category: str,
    pattern: str,
    confidence: str,
    queue: str = "",
    payload: _Value = "",
    error_type: str = "",
    error: str = "",
    history: str = "",
    more: Mapping[str, _Value] | None = None,
) -> list[Any]:
    """A task's record, names as text: the scripts store them as numbers."""
    out: list[Any] = [
        STATES.index(state) + 1,
        attempt,
        failed_at,
        task,
        category,
        pattern,
        confidence,
        queue,
        payload,
        error_type,
        error,
        history,
    ]
    if more:
        out.append(dict(more))
    return out


def record_from(flat: Mapping[str, str | bytes | int]) -> list[Any]:
    """A record from a task's fields by name, as ``HSET`` would take them.

    Fields it does not name are left out; so is a state it does not know,
    which reads as ``scheduled``.
    """

    def text(name: str) -> str:
        value = flat.get(name, "")
        return (
            value.decode(errors="replace") if isinstance(value, bytes) else str(value)
        )

    def number(name: str) -> int:
        try:
            return int(text(name) or 0)
        except ValueError:
            return 0

    state = text("state")
    more = {name: flat[name] for name in MORE if name in flat}
    return record(
        state=state if state in STATES else "scheduled",
        attempt=number("attempt"),
        failed_at=number("failed_at"),
        task=text("task"),
        category=text("category"),
        pattern=text("pattern"),
        confidence=text("confidence"),
        queue=text("queue"),
        payload=flat.get("payload", ""),
        error_type=text("error_type"),
        error=text("error"),
        history=text("history"),
        more=more,
    )


def fields_args(wanted: Sequence[str], ids: Sequence[str]) -> list[str]:
    """ARGV for FIELDS (and RECALL): the field names, ``""``, the task ids."""
    return [*wanted, "", *ids]


def decode_fields(
    wanted: Sequence[str], found: list[bytes | None] | bytes | None
) -> dict[str, bytes | None] | None:
    """One task's FIELDS reply as a mapping: None if the task is unknown, or
    if its record cannot be read (Redis's error text in place of fields)."""
    if found is None or isinstance(found, bytes):
        return None
    return dict(zip(wanted, found, strict=True))


# What ``more`` may hold; with FIELDS, every field a record can have.
MORE = (
    "held",
    "died_at",
    "reason",
    "record",
    "alerted_at",
    "dispatched_at",
    "recovered_at",
    "succeeded_at",
    "manual",
)
ALL_FIELDS = (*FIELDS[:-1], *MORE)


def _lua_names(names: Sequence[str]) -> str:
    return "{" + ", ".join(f"'{name}'" for name in names) + "}"


# The scripts' side of records: field positions, states, and the functions
# that load, store and read them. Names are looked up once per script call.
def _lua_constants(names: Sequence[str]) -> str:
    """``local A, B = 1, 2``: each name's position, from 1, as a constant."""
    upper = ", ".join(name.upper() for name in names)
    return f"local {upper} = {', '.join(str(i) for i in range(1, len(names) + 1))}"


LUA = f"""
{_lua_constants(FIELDS)}
{_lua_constants(STATES)}
local STATES = {_lua_names(STATES)}
local STATE_OF, FIELD_AT, NAMED = {{}}, {{}}, {{}}
for i, name in ipairs(STATES) do STATE_OF[name] = i end
for i, name in ipairs({_lua_names(FIELDS)}) do FIELD_AT[name] = i end
for _, name in ipairs({_lua_names(NAMED)}) do NAMED[FIELD_AT[name]] = true end
local NAMES_MAX, NAME_MAX_BYTES = {NAMES_MAX}, {NAME_MAX_BYTES}

local function plain(value)
    local kind = type(value)
    return kind == 'string' or kind == 'number'
end

local function whole(value)
    return type(value) == 'number' and value == math.floor(value)
        or type(value) == 'string' and string.find(value, '^%d+$') ~= nil
end

-- What each field up to the history must be: a whole number (the attempt
-- may be one too big for a Lua number, kept as its digits), a name (its
-- number or its text), or text.
local KIND = {{
    [STATE] = 'state', [ATTEMPT] = 'whole', [FAILED_AT] = 'time',
    [TASK] = 'name', [CATEGORY] = 'name', [PATTERN] = 'name',
    [CONFIDENCE] = 'text', [QUEUE] = 'text', [PAYLOAD] = 'text',
    [ERROR_TYPE] = 'name', [ERROR] = 'text', [HISTORY] = 'text',
}}

local function fits(kind, value)
    if kind == 'state' then return STATES[value] ~= nil end
    if kind == 'whole' then return whole(value) end
    -- Milliseconds from 1970 to the end of 9999, as intake writes them.
    if kind == 'time' then
        return type(value) == 'number' and whole(value)
            and value >= 0 and value < 253402300800000
    end
    if kind == 'name' then return plain(value) end
    return type(value) == 'string'
end

-- A stored record, or nil when it is not one recoveryd wrote: each field
-- up to the history of its kind, ``more`` absent or a map of plain values.
local function decode_task(raw)
    local ok, t = pcall(cmsgpack.unpack, raw)
    if not ok or type(t) ~= 'table' or #t < HISTORY then return nil end
    for i = 1, HISTORY do
        if not fits(KIND[i], t[i]) then return nil end
    end
    local more = t[MORE]
    if more == nil then return t end
    if type(more) ~= 'table' then return nil end
    for name, value in pairs(more) do
        if type(name) ~= 'string' or not plain(value) then return nil end
    end
    return t
end

-- Stops the script, before it writes anything, when ``key`` holds
-- another type than ``kind``: the error names the key.
local function expect(key, kind)
    local found = redis.call('TYPE', key).ok
    if found ~= kind and found ~= 'none' then
        error(key .. ' is a ' .. found .. ', not a ' .. kind)
    end
end

-- A task's record, or nil when there is none or it cannot be read.
local function load_task(tasks, id)
    local raw = redis.call('HGET', tasks, id)
    if not raw then return nil end
    return decode_task(raw)
end

local function store_task(tasks, id, t)
    redis.call('HSET', tasks, id, cmsgpack.pack(t))
end

local function set_more(t, name, value)
    local more = t[MORE] or {{}}
    more[name] = value
    t[MORE] = more
end

local function drop_more(t, name)
    local more = t[MORE]
    if not more then return end
    more[name] = nil
    if next(more) == nil then t[MORE] = nil end
end

local names_seen, numbers_seen = {{}}, {{}}

-- A number as the names hash spells it (Lua would write a big one as
-- 1.7e+15).
local function spelled(number)
    return string.format('%.0f', number)
end

-- The name a stored value stands for.
local function name_of(names, value)
    if type(value) ~= 'number' then return value or '' end
    local name = names_seen[value]
    if not name then
        -- A names hash that is not one reads as no names at all.
        local ok, found = pcall(redis.call, 'HGET', names, '#' .. spelled(value))
        name = ok and found or ''
        names_seen[value] = name
    end
    return name
end

-- A number for a name not seen before, or the name itself past the limit.
local function new_number(tasks, names, name)
    if redis.call('HLEN', names) >= 2 * NAMES_MAX then return name end
    local last = tonumber(redis.call('HGET', names, 'last'))
    if not last then
        last = 0
        if redis.call('HLEN', tasks) > 0 then
            -- Begun afresh beside stored tasks, the old names lost: numbers
            -- start at the microsecond, far from any given before, so none
            -- means another name now.
            local clock = redis.call('TIME')
            last = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
        end
    end
    repeat
        last = last + 1
    until redis.call('HSETNX', names, '#' .. spelled(last), name) == 1
    redis.call('HSET', names, 'last', spelled(last), '=' .. name, spelled(last))
    return last
end

-- What to store for a name: its number, given on first sight.
local function number_of(tasks, names, name)
    if type(name) ~= 'string' or name == '' or #name > NAME_MAX_BYTES then
        return name
    end
    local number = numbers_seen[name]
    if number then return number end
    number = tonumber(redis.call('HGET', names, '=' .. name))
    -- A number whose way back was lost is given it again; one that now
    -- names something else is not this name's any more.
    if not number or (redis.call('HSETNX', names, '#' .. spelled(number), name) == 0
            and redis.call('HGET', names, '#' .. spelled(number)) ~= name) then
        number = new_number(tasks, names, name)
    end
    numbers_seen[name] = number
    return number
end

-- Stores a record written with its names as text.
local function store_new(tasks, names, id, t)
    for at in pairs(NAMED) do t[at] = number_of(tasks, names, t[at]) end
    store_task(tasks, id, t)
end

-- One field of a record as HMGET would give it: text, or false.
local function field_of(names, t, name)
    local at = FIELD_AT[name]
    local value
    if at then value = t[at] else value = t[MORE] and t[MORE][name] end
    if value == nil or value == '' then return false end
    if at == STATE then return STATES[value] or false end
    if NAMED[at] then
        value = name_of(names, value)
        if value == '' then return false end
    end
    if type(value) == 'number' then return string.format('%d', value) end
    return value
end

-- ARGV from ``first`` on: field names, '', task ids. Each task's fields as
-- HMGET gives them, false for an unknown task, or the error text of one
-- whose record cannot be read.
local function fields_reply(tasks, names, first, out)
    local wanted, i = {{}}, first
    while ARGV[i] ~= '' do
        wanted[#wanted + 1] = ARGV[i]
        i = i + 1
    end
    local broken = false
    for _, key in ipairs({{tasks, names}}) do
        local kind = redis.call('TYPE', key).ok
        if kind ~= 'hash' and kind ~= 'none' then
            broken = key .. ' is a ' .. kind .. ', not a hash'
        end
    end
    for j = i + 1, #ARGV do
        local ok, raw = pcall(redis.call, 'HGET', tasks, ARGV[j])
        if broken then ok, raw = false, broken end
        local t
        if ok and raw then
            t = decode_task(raw)
            if not t then
                ok, raw = false, 'its record is not one recoveryd wrote'
            end
        end
        if not ok then
            out[#out + 1] = type(raw) == 'table' and raw.err or tostring(raw)
        elseif not t then
            out[#out + 1] = false
        else
            local found = {{}}
            for k, name in ipairs(wanted) do found[k] = field_of(names, t, name) end
            out[#out + 1] = found
        end
    end
    return out
end
"""

# KEYS: tasks, names.  ARGV: field names, '', task ids (see fields_reply).
READ = LUA + "return fields_reply(KEYS[1], KEYS[2], 1, {})"

# KEYS: tasks, names.  ARGV: task id, its record (MessagePack, names as text).
STORE = LUA + "store_new(KEYS[1], KEYS[2], ARGV[1], cmsgpack.unpack(ARGV[2]))"


async def read(
    client: Redis, keys: Keys, ids: Sequence[str], wanted: Sequence[str] = ALL_FIELDS
) -> list[dict[str, bytes | None] | None]:
    """The ``wanted`` fields of each task, None for one Redis does not know."""
    reply = await cast(
        Awaitable[list[Any]],
        client.eval(READ, 2, keys.tasks, keys.names, *fields_args(wanted, ids)),
    )
    return [decode_fields(wanted, found) for found in reply]


def read_sync(
    client: redis.Redis,
    keys: Keys,
    ids: Sequence[str],
    wanted: Sequence[str] = ALL_FIELDS,
) -> list[dict[str, bytes | None] | None]:
    """`read` for a synchronous client (the command line)."""
    reply = cast(
        list[Any],
        client.eval(READ, 2, keys.tasks, keys.names, *fields_args(wanted, ids)),
    )
    return [decode_fields(wanted, found) for found in reply]


_encode = msgspec.msgpack.Encoder().encode


def pack(task: list[Any]) -> bytes:
    """A record as STORE takes it."""
    return _encode(lua_record(task))


async def write(client: Redis, keys: Keys, task_id: str, task: list[Any]) -> None:
    """Store one task's record (see `record`, `record_from`)."""
    packed = pack(task)
    await cast(
        Awaitable[Any], client.eval(STORE, 2, keys.tasks, keys.names, task_id, packed)
    )


def write_sync(client: redis.Redis, keys: Keys, task_id: str, task: list[Any]) -> None:
    """`write` for a synchronous client."""
    packed = pack(task)
    client.eval(STORE, 2, keys.tasks, keys.names, task_id, packed)
