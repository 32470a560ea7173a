"""Lua sources for the Redis state store, and the EVALSHA wrapper that runs them.

Every state change that must be atomic across replicas is one script, so it is one round trip
and no other client can interleave between its reads and writes.

Numbers cross the Lua boundary only as strings: Python sends ``repr(float)`` (which ``tonumber``
parses exactly) and scripts reply with ``%.17g`` (which ``float`` parses exactly), because Redis
truncates Lua numbers in replies to integers. Lua numbers are IEEE doubles, so the window
arithmetic below yields bit-identical results to ``window_counter.WindowCounter``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError


class LuaScript:
    """A script run by EVALSHA; on NOSCRIPT (server restarted, SCRIPT FLUSH, failover) it is
    loaded again and retried once, so the source crosses the wire only when needed."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    async def __call__(self, client: Redis, keys: list[str], args: list[str | int | float]) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            self.sha = await client.script_load(self.source)
            return await client.evalsha(self.sha, len(keys), *keys, *args)


#: One script run: the script, its KEYS and its ARGV.
ScriptCall = tuple[LuaScript, list[str], list[str | int | float]]


async def run_pipelined(client: Redis, calls: Sequence[ScriptCall]) -> list[Any]:
    """Run several script calls in one round trip (not as a transaction: each script is atomic
    on its own, and none reads another's result); their replies, in order.

    A call whose script the server lost (NOSCRIPT) had no effect, so only those calls are run
    again, one by one, loading their script; any other error is raised after that, with every
    call that succeeded left applied."""
    if len(calls) == 1:
        script, keys, args = calls[0]
        return [await script(client, keys, args)]
    if not calls:
        return []
    async with client.pipeline(transaction=False) as pipe:
        for script, keys, args in calls:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        results = await pipe.execute(raise_on_error=False)
    failure: Exception | None = None
    for index, ((script, keys, args), result) in enumerate(zip(calls, results, strict=True)):
        if isinstance(result, NoScriptError):
            results[index] = await script(client, keys, args)
        elif isinstance(result, Exception) and failure is None:
            failure = result
    if failure is not None:
        raise failure
    return list(results)


_FMT = """
local function fmt(x) return string.format('%.17g', x) end
"""

# Sliding-window arithmetic, identical to WindowCounter: bucket index floor(t / width); a bucket
# counts while idx >= floor(now / width) - buckets; the total is summed in ring-slot order
# (idx mod (buckets + 1)) because that is the order the in-memory ring adds floats in, so even
# fractional amounts (spend) total bit for bit the same.
_WINDOW_LIB = (
    _FMT
    + """
local function window_state(key, width, now, buckets)
  local oldest = math.floor(now / width) - buckets
  local flat = redis.call('HGETALL', key)
  local live, stale = {}, {}
  for i = 1, #flat, 2 do
    local idx = tonumber(flat[i])
    if idx >= oldest then
      live[#live + 1] = {idx, tonumber(flat[i + 1])}
    else
      stale[#stale + 1] = flat[i]
    end
  end
  -- Place each live bucket at its ring slot (no sort: this runs on every reserve). Two live
  -- buckets share a slot only if a caller's clock went backwards; those are added last.
  local size = buckets + 1
  local ring, extra = {}, {}
  for _, b in ipairs(live) do
    local slot = b[1] % size + 1
    if ring[slot] == nil then ring[slot] = b[2] else extra[#extra + 1] = b[2] end
  end
  local used = 0.0
  for slot = 1, size do
    local amount = ring[slot]
    if amount ~= nil then used = used + amount end
  end
  for _, amount in ipairs(extra) do used = used + amount end
  return live, used, stale
end

-- math.nextafter(x, math.inf), which Lua 5.1 lacks: one unit in the last place up.
local function next_up(x)
  if x ~= x or x == math.huge then return x end
  local tiny = math.ldexp(1, -1074)
  if x == 0 then return tiny end
  local m, e = math.frexp(math.abs(x))
  local ulp = math.ldexp(1, e - 53)
  if x < 0 and m == 0.5 then ulp = math.ldexp(1, e - 54) end
  return x + math.max(ulp, tiny)
end

-- First time at which bucket idx no longer counts, robust to float rounding.
local function expiry(idx, width, buckets)
  local at = (idx + buckets + 1) * width
  while math.floor(at / width) <= idx + buckets do at = next_up(at) end
  return at
end

local function retry_at(live, used, now, width, amount, limit, buckets)
  if amount > limit then return nil end
  if used + amount <= limit then return now end
  local ordered = {}
  for _, b in ipairs(live) do
    if b[2] > 0 then ordered[#ordered + 1] = b end
  end
  table.sort(ordered, function(a, b) return a[1] < b[1] end)
  for _, b in ipairs(ordered) do
    used = used - b[2]
    if used + amount <= limit then return expiry(b[1], width, buckets) end
  end
  -- Float rounding can leave a sliver after every live bucket is gone: by the time the newest
  -- one expires, the window is empty.
  if #ordered > 0 then return expiry(ordered[#ordered][1], width, buckets) end
  return now
end

local function ttl_ms(window, width) return math.ceil((window + width) * 1000) end
"""
)

# KEYS: distinct window hashes. ARGV[1]: one space-separated string of numbers: buckets, now,
# candidate count, then per candidate its check count and per check (key index, window
# seconds, limit, amount). One string rather than one argument each: redis-py encodes every
# argument in Python, which for four candidates (about 50 arguments) was measured at a quarter
# of the client's CPU for the call. Each token is still parsed by tonumber, exactly.
# Reply: {1, candidate number} or {0, earliest retry time or ''}.
RESERVE = LuaScript(
    _WINDOW_LIB
    + """
local A = {}
for token in string.gmatch(ARGV[1], '%S+') do A[#A + 1] = token end
local buckets = tonumber(A[1])
local now = tonumber(A[2])
local ncand = tonumber(A[3])
local pos = 4
local cache = {}

local function counter(ki, window)
  local c = cache[ki]
  if c == nil then
    local width = window / buckets
    local live, used, stale = window_state(KEYS[ki], width, now, buckets)
    if #stale > 0 then redis.call('HDEL', KEYS[ki], unpack(stale)) end
    c = {live = live, used = used, width = width, window = window}
    cache[ki] = c
  end
  return c
end

local function add(ki, c, amount)
  local key = KEYS[ki]
  local field = fmt(math.floor(now / c.width))
  local value = math.max(0, tonumber(redis.call('HGET', key, field) or '0') + amount)
  if value > 0 then
    redis.call('HSET', key, field, fmt(value))
  else
    redis.call('HDEL', key, field)
  end
  redis.call('PEXPIRE', key, ttl_ms(c.window, c.width))
end

local earliest = nil
for cand = 1, ncand do
  local nchecks = tonumber(A[pos])
  pos = pos + 1
  local checks = {}
  local blocked, never, blocked_until = false, false, now
  for i = 1, nchecks do
    local ki = tonumber(A[pos])
    local window = tonumber(A[pos + 1])
    local limit = tonumber(A[pos + 2])
    local amount = tonumber(A[pos + 3])
    pos = pos + 4
    local c = counter(ki, window)
    checks[i] = {ki, c, amount}
    if not (c.used + amount <= limit) then
      blocked = true
      local at = retry_at(c.live, c.used, now, c.width, amount, limit, buckets)
      if at == nil then never = true else blocked_until = math.max(blocked_until, at) end
    end
  end
  if not blocked then
    for _, ch in ipairs(checks) do add(ch[1], ch[2], ch[3]) end
    return {1, cand}
  end
  if not never and (earliest == nil or blocked_until < earliest) then
    earliest = blocked_until
  end
end
if earliest == nil then return {0, ''} end
return {0, fmt(earliest)}
"""
)

# Commit, release and charge: add a delta to the bucket of ``at`` in each window, never below 0.
# A missing bucket is only recreated (for a positive delta) if no bucket a whole window newer
# exists, i.e. if ``at`` has not expired. A positive write makes the hash live at least one
# window plus one bucket from now (a charge lands in the newest bucket). KEYS: window hashes.
# ARGV: buckets, at, then per key (window seconds, delta).
ADJUST = LuaScript(
    _WINDOW_LIB
    + """
local buckets = tonumber(ARGV[1])
local at = tonumber(ARGV[2])
for i = 1, #KEYS do
  local key = KEYS[i]
  local window = tonumber(ARGV[1 + 2 * i])
  local delta = tonumber(ARGV[2 + 2 * i])
  local width = window / buckets
  local idx = math.floor(at / width)
  local field = fmt(idx)
  local current = redis.call('HGET', key, field)
  local value = nil
  if current then
    value = math.max(0, tonumber(current) + delta)
  elseif delta > 0 then
    value = delta
    for _, name in ipairs(redis.call('HKEYS', key)) do
      if tonumber(name) >= idx + buckets + 1 then value = nil end
    end
  end
  if value ~= nil and value > 0 then
    redis.call('HSET', key, field, fmt(value))
    local ttl = ttl_ms(window, width)
    if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
  elseif value ~= nil then
    redis.call('HDEL', key, field)
  end
end
return 1
"""
)

# Read-only. KEYS: window hashes. ARGV: buckets, now, then per key (window seconds, limit).
# Reply: flat list of (used, resets_at or '') per key.
WINDOW_USAGE = LuaScript(
    _WINDOW_LIB
    + """
local buckets = tonumber(ARGV[1])
local now = tonumber(ARGV[2])
local out = {}
for i = 1, #KEYS do
  local window = tonumber(ARGV[1 + 2 * i])
  local limit = tonumber(ARGV[2 + 2 * i])
  local width = window / buckets
  local live, used = window_state(KEYS[i], width, now, buckets)
  local resets = ''
  if used ~= 0 then
    local at = retry_at(live, used, now, width, limit, limit, buckets)
    if at ~= nil then resets = fmt(at) end
  end
  out[#out + 1] = fmt(used)
  out[#out + 1] = resets
end
return out
"""
)

# Store a cooldown value. The key expires ``grace`` seconds after ``until`` by the server clock
# when that is still ahead; otherwise (a caller on a fake or skewed clock) it is kept without
# TTL, because correctness is judged against the caller's ``now``, not the server's.
_COOLDOWN_LIB = """
local function write_cooldown(key, until_text, grace)
  redis.call('SET', key, until_text)
  local t = redis.call('TIME')
  local server_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local expire_ms = math.floor((tonumber(until_text) + grace) * 1000)
  if expire_ms > server_ms and expire_ms < 1e15 then
    redis.call('PEXPIREAT', key, string.format('%d', expire_ms))
  end
end
"""

# KEYS: cooldown key. ARGV: until, grace seconds, channel, event. Max wins.
SET_COOLDOWN = LuaScript(
    _COOLDOWN_LIB
    + """
local current = redis.call('GET', KEYS[1])
if current and tonumber(current) >= tonumber(ARGV[1]) then return 0 end
write_cooldown(KEYS[1], ARGV[1], tonumber(ARGV[2]))
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
"""
)

# KEYS: key hash, cooldown key, audit list. ARGV: expected state, new state, reason (JSON),
# changed_at, cooldown_until ('' = none), audit entry, audit limit, cooldown grace, channel,
# event. The cooldown is set exactly (not max-wins), as the transition decides it.
COMPARE_AND_SET = LuaScript(
    _COOLDOWN_LIB
    + """
if redis.call('HGET', KEYS[1], 'state') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'state_reason', ARGV[3],
  'state_changed_at', ARGV[4], 'cooldown_until', ARGV[5])
if ARGV[5] == '' then
  redis.call('DEL', KEYS[2])
else
  write_cooldown(KEYS[2], ARGV[5], tonumber(ARGV[8]))
end
redis.call('RPUSH', KEYS[3], ARGV[6])
redis.call('LTRIM', KEYS[3], -tonumber(ARGV[7]), -1)
redis.call('PUBLISH', ARGV[9], ARGV[10])
return 1
"""
)

# KEYS: key hash, all-keys index, new provider index, sequence counter. ARGV: key id,
# provider index prefix, channel, event, then hash field/value pairs. Index scores keep
# first-insertion order, like a dict, so listings are stable and match the memory store.
PUT_KEY = LuaScript(
    """
local old_provider = redis.call('HGET', KEYS[1], 'provider_id')
local id = ARGV[1]
local score = redis.call('ZSCORE', KEYS[2], id)
if not score then
  score = redis.call('INCR', KEYS[4])
  redis.call('ZADD', KEYS[2], score, id)
end
if old_provider and ARGV[2] .. old_provider ~= KEYS[3] then
  redis.call('ZREM', ARGV[2] .. old_provider, id)
end
redis.call('ZADD', KEYS[3], score, id)
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
"""
)

# KEYS: key hash. ARGV: expected ciphertext, new ciphertext. Reply 1 if swapped. A record
# from before the ciphertext had its own field holds it only in doc (read, never rewritten:
# the field takes precedence). No event: replicas keep the ciphertext they hold until they
# restart with the new master key.
SWAP_MATERIAL = LuaScript(
    """
local current = redis.call('HGET', KEYS[1], 'encrypted_material')
if not current then
  local doc = redis.call('HGET', KEYS[1], 'doc')
  if not doc then return 0 end
  current = cjson.decode(doc)['encrypted_material']
end
if current ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'encrypted_material', ARGV[2])
return 1
"""
)

# KEYS: key hash, all-keys index, cooldown key, circuit key. ARGV: key id, provider index
# prefix, channel, event. Reply 1 if the key existed.
DELETE_KEY = LuaScript(
    """
local provider = redis.call('HGET', KEYS[1], 'provider_id')
redis.call('DEL', KEYS[3], KEYS[4])
redis.call('ZREM', KEYS[2], ARGV[1])
if not provider then return 0 end
redis.call('ZREM', ARGV[2] .. provider, ARGV[1])
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
"""
)

# KEYS: all-keys index (or a provider index). ARGV: key hash prefix. Reply: per key in index
# order, its id and flat HGETALL list (empty if the hash vanished).
LIST_KEYS = LuaScript(
    """
local out = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGETALL', ARGV[1] .. id)
end
return out
"""
)

# Circuit breaker, one script for every operation so each is one atomic round trip.
# KEYS: circuit hash. ARGV: mode (read|success|failure|probe), now, failure threshold, open
# seconds. Reply: {state, failures, open_until or '', probe 0/1, acquired 0/1}.
CIRCUIT = LuaScript(
    _FMT
    + """
local mode = ARGV[1]
local now = tonumber(ARGV[2])
local f = redis.call('HMGET', KEYS[1], 'state', 'failures', 'open_until', 'probe')
local c = {state = f[1] or 'closed', failures = tonumber(f[2] or '0'), open_until = nil,
  probe = f[4] == '1'}
if f[3] and f[3] ~= '' then c.open_until = tonumber(f[3]) end
if c.state == 'open' and c.open_until ~= nil and now >= c.open_until then
  c.state = 'half_open'
  c.probe = false
end

local function save()
  local open_until = ''
  if c.open_until ~= nil then open_until = fmt(c.open_until) end
  local probe = '0'
  if c.probe then probe = '1' end
  redis.call('HSET', KEYS[1], 'state', c.state, 'failures', tostring(c.failures),
    'open_until', open_until, 'probe', probe)
end

local acquired = 0
if mode == 'success' then
  redis.call('DEL', KEYS[1])
  c = {state = 'closed', failures = 0, open_until = nil, probe = false}
elseif mode == 'failure' then
  c.failures = c.failures + 1
  if c.state == 'half_open' or c.failures >= tonumber(ARGV[3]) then
    c.state = 'open'
    c.open_until = now + tonumber(ARGV[4])
    c.probe = false
  end
  save()
elseif mode == 'probe' then
  if c.state == 'half_open' and not c.probe then
    c.probe = true
    acquired = 1
    save()
  end
end
local open_until = ''
if c.open_until ~= nil then open_until = fmt(c.open_until) end
local probe = 0
if c.probe then probe = 1 end
return {c.state, tostring(c.failures), open_until, probe, acquired}
"""
)

# Read-only. KEYS: audit list. ARGV: entry prefix identifying the key, limit, chunk size.
# Scans from the newest entry back and stops once ``limit`` matches are found, so a per-key
# listing costs what it returns, not the whole capped list. Reply: matches, newest first.
AUDIT_FOR_KEY = LuaScript(
    """
local needle = ARGV[1]
local limit = tonumber(ARGV[2])
local chunk = tonumber(ARGV[3])
local out = {}
local stop = redis.call('LLEN', KEYS[1]) - 1
while stop >= 0 and #out < limit do
  local start = math.max(0, stop - chunk + 1)
  local items = redis.call('LRANGE', KEYS[1], start, stop)
  for i = #items, 1, -1 do
    if string.sub(items[i], 1, #needle) == needle then
      out[#out + 1] = items[i]
      if #out >= limit then break end
    end
  end
  stop = start - 1
end
return out
"""
)

# KEYS: list. ARGV: max length, TTL seconds (0 = none), then the entries. Append and cap in
# one step; several entries in one call for a batch of decision records.
APPEND_CAPPED = LuaScript(
    """
redis.call('RPUSH', KEYS[1], unpack(ARGV, 3))
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[1]), -1)
if tonumber(ARGV[2]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return 1
"""
)


#: Every script above: loaded ahead of traffic by ``RedisStateStore.prepare``.
ALL_SCRIPTS: tuple[LuaScript, ...] = (
    RESERVE,
    ADJUST,
    WINDOW_USAGE,
    SET_COOLDOWN,
    COMPARE_AND_SET,
    PUT_KEY,
    DELETE_KEY,
    LIST_KEYS,
    CIRCUIT,
    AUDIT_FOR_KEY,
    APPEND_CAPPED,
)
