"""The Lua scripts behind the Redis backend: each is one atomic step of the backend contract.

Conventions: job records, indexes and per-job keys arrive in KEYS; a few scripts derive a
per-job key from a prefix in ARGV (a queue entry names its job only once read), so the backend
targets a standalone Redis/Valkey (with replicas), not Redis Cluster.
"""

from __future__ import annotations

# Keys written for a job that has no live record TTL keep none; on a finished job (record with a
# TTL) they take its remaining TTL; with no record at all (deleted or never created) they get
# the default job TTL, so stray writes can never pile up forever.
_INHERIT_TTL = """
local function inherit_ttl(record, keys, orphan_ttl)
  local ttl = redis.call('PTTL', record)
  if ttl == -2 then ttl = tonumber(orphan_ttl) end
  if ttl > 0 then
    for _, key in ipairs(keys) do redis.call('PEXPIRE', key, ttl) end
  end
end
"""

# KEYS: record, all-jobs index, this status' index, then ARGV[3] status indexes, then the
# idempotency key when ARGV[4] == '1'. ARGV: record JSON, job id, status count, has idem key,
# record key prefix. Returns {1, ''} when stored, {0, existing JSON} for a used idempotency key.
CREATE_JOB = """
local n = tonumber(ARGV[3])
local idem = KEYS[4 + n]
if ARGV[4] == '1' then
  local existing = redis.call('GET', idem)
  if existing then
    local raw = redis.call('GET', ARGV[5] .. existing)
    if raw then return {0, raw} end
  end
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], 0, ARGV[2])
for i = 4, 3 + n do redis.call('ZREM', KEYS[i], ARGV[2]) end
redis.call('ZADD', KEYS[3], 0, ARGV[2])
if ARGV[4] == '1' then redis.call('SET', idem, ARGV[2]) end
return {1, ''}
"""

# KEYS: record, all-jobs index, this status' index, ARGV[3] status indexes, then the keys that
# share the job's lifetime. ARGV: record JSON, job id, status count, TTL ms (0 = keep forever).
# Saving an unknown (deleted, expired) job is a no-op, as in the memory backend.
SAVE_JOB = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local n = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
redis.call('SET', KEYS[1], ARGV[1])
for i = 4, 3 + n do redis.call('ZREM', KEYS[i], ARGV[2]) end
redis.call('ZADD', KEYS[3], 0, ARGV[2])
redis.call('ZADD', KEYS[2], 0, ARGV[2])
local function apply(key)
  if ttl > 0 then redis.call('PEXPIRE', key, ttl) else redis.call('PERSIST', key) end
end
apply(KEYS[1])
for i = 4 + n, #KEYS do apply(KEYS[i]) end
return 1
"""

# KEYS: record, all-jobs index, ARGV[2] status indexes, the job's other keys, then the
# idempotency key when ARGV[3] == '1'. ARGV: job id, status count, has idem key.
DELETE_JOB = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local n = tonumber(ARGV[2])
local last = #KEYS
if ARGV[3] == '1' then
  if redis.call('GET', KEYS[last]) == ARGV[1] then redis.call('DEL', KEYS[last]) end
  last = last - 1
end
for i = 2, 2 + n do redis.call('ZREM', KEYS[i], ARGV[1]) end
redis.call('DEL', KEYS[1])
for i = 3 + n, last do redis.call('DEL', KEYS[i]) end
return 1
"""

# The event log. Entry ids are `<seq>-0`: the stream's own ordering *is* the gapless seq, so
# `after=N` maps to the id `N-0` with no side index, and XREAD BLOCK from `N-0` is race-free.
# One round of an agent lands in one step: its sources, its events, its checkpoint (an append
# is a round of one event). Sources are checked before anything is written, so a clash leaves
# the store as it was.
# KEYS: events, event keys, record, checkpoints, source urls, sources.
# ARGV: orphan TTL ms, event count n, then n × (payload JSON, dedupe key, has key '1'/'0'),
# then the checkpoint's agent ('' for none) and JSON, then × (source id, url, Source JSON).
# Returns {1, seq…} (seq 0 for a dedupe key already appended), or {0, clashing id…}.
COMMIT_ROUND = (
    _INHERIT_TTL
    + """
local n = tonumber(ARGV[2])
local cp = 3 + 3 * n
local clashes = {0}
for i = cp + 2, #ARGV, 3 do
  local id = redis.call('HGET', KEYS[5], ARGV[i + 1])
  if (id and id ~= ARGV[i]) or (not id and redis.call('HEXISTS', KEYS[6], ARGV[i]) == 1) then
    table.insert(clashes, ARGV[i])
  end
end
if #clashes > 1 then return clashes end
for i = cp + 2, #ARGV, 3 do
  if redis.call('HSETNX', KEYS[5], ARGV[i + 1], ARGV[i]) == 1 then
    redis.call('HSET', KEYS[6], ARGV[i], ARGV[i + 2])
  end
end
local seq = 0
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #last > 0 then seq = tonumber(string.match(last[1][1], '^(%d+)')) end
local seqs = {1}
for i = 3, cp - 1, 3 do
  if ARGV[i + 2] == '1' and redis.call('SADD', KEYS[2], ARGV[i + 1]) == 0 then
    table.insert(seqs, 0)
  else
    seq = seq + 1
    redis.call('XADD', KEYS[1], seq .. '-0', 'e', ARGV[i])
    table.insert(seqs, seq)
  end
end
if ARGV[cp] ~= '' then redis.call('HSET', KEYS[4], ARGV[cp], ARGV[cp + 1]) end
inherit_ttl(KEYS[3], {KEYS[1], KEYS[2], KEYS[4], KEYS[5], KEYS[6]}, ARGV[1])
return seqs
"""
)

# KEYS: checkpoints, record. ARGV: agent, checkpoint JSON, orphan TTL ms.
SAVE_CHECKPOINT = (
    _INHERIT_TTL
    + """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
inherit_ttl(KEYS[2], {KEYS[1]}, ARGV[3])
return 1
"""
)

# KEYS: cancel flag, record. ARGV: orphan TTL ms.
REQUEST_CANCEL = (
    _INHERIT_TTL
    + """
redis.call('SET', KEYS[1], '1')
inherit_ttl(KEYS[2], {KEYS[1]}, ARGV[1])
return 1
"""
)

# Same url, same id; ids count up from S1 (the url hash's size is the counter).
# KEYS: url -> id hash, id -> Source JSON hash, record. ARGV: url, title, orphan TTL ms.
REGISTER_SOURCE = (
    _INHERIT_TTL
    + """
local id = redis.call('HGET', KEYS[1], ARGV[1])
if id then return redis.call('HGET', KEYS[2], id) end
id = 'S' .. (redis.call('HLEN', KEYS[1]) + 1)
local source = cjson.encode({id = id, url = ARGV[1], title = ARGV[2]})
redis.call('HSET', KEYS[1], ARGV[1], id)
redis.call('HSET', KEYS[2], id, source)
inherit_ttl(KEYS[3], {KEYS[1], KEYS[2]}, ARGV[3])
return source
"""
)

# Jobs waiting to be claimed: entries never delivered, plus released ones parked under the
# released consumer. Claimed entries (pending under a worker) are running, not waiting.
_BACKLOG = """
local function backlog(queue, group, released)
  local depth = redis.call('XLEN', queue)
  local pending = redis.call('XPENDING', queue, group)
  depth = depth - pending[1]
  if pending[4] then
    for _, consumer in ipairs(pending[4]) do
      if consumer[1] == released then depth = depth + tonumber(consumer[2]) end
    end
  end
  return depth
end
"""

# KEYS: queue, entries. ARGV: group, released consumer.
QUEUE_DEPTH = _BACKLOG + "return backlog(KEYS[1], ARGV[1], ARGV[2])\n"

# KEYS: queue, entries. ARGV: group, released consumer, max queued, job id.
# Returns {1, entry id}, or {0, depth} when full (checked and added in one step, so concurrent
# enqueues cannot overshoot the cap).
ENQUEUE = (
    _BACKLOG
    + """
local depth = backlog(KEYS[1], ARGV[1], ARGV[2])
if depth >= tonumber(ARGV[3]) then return {0, tostring(depth)} end
local id = redis.call('XADD', KEYS[1], '*', 'job', ARGV[4])
redis.call('HSET', KEYS[2], ARGV[4], id)
return {1, id}
"""
)

# One non-blocking claim. First any entry idle for a whole lease (its worker stopped
# heartbeating, or it was released), then the oldest never-delivered entry.
# Heartbeats reset an entry's idle time and its lease key together, so "idle >= lease" is the
# same fact as "the lease key expired", read from the stream itself.
# KEYS: queue, entries. ARGV: group, worker, lease ms, lease key head, lease key tail.
# Returns {job id, entry id} or nil.
CLAIM = """
local function take(id, fields)
  local job
  for i = 1, #fields, 2 do
    if fields[i] == 'job' then job = fields[i + 1] end
  end
  if not job then
    -- Not one of ours: drop it rather than hand it out again every lease.
    redis.call('XACK', KEYS[1], ARGV[1], id)
    redis.call('XDEL', KEYS[1], id)
    return nil
  end
  redis.call('HSET', KEYS[2], job, id)
  redis.call('SET', ARGV[4] .. job .. ARGV[5], ARGV[2], 'PX', ARGV[3])
  return job
end
local cursor = '0-0'
repeat
  local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], cursor, 'COUNT', 1)
  cursor = r[1]
  for _, entry in ipairs(r[2]) do
    local job = take(entry[1], entry[2])
    if job then return {job, entry[1]} end
  end
until cursor == '0-0'
local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', 1, 'STREAMS', KEYS[1], '>')
if r then
  for _, entry in ipairs(r[1][2]) do
    local job = take(entry[1], entry[2])
    if job then return {job, entry[1]} end
  end
end
return nil
"""

# Only the worker the entry is pending under may extend it: a worker whose lease lapsed and
# whose job another worker reclaimed must not take it back.
# KEYS: queue, entries, lease. ARGV: group, worker, lease ms, job id. Returns 1 if extended.
HEARTBEAT = """
local id = redis.call('HGET', KEYS[2], ARGV[4])
if not id then return 0 end
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
if #pending == 0 or pending[1][2] ~= ARGV[2] then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id, 'JUSTID')
redis.call('SET', KEYS[3], ARGV[2], 'PX', ARGV[3])
return 1
"""

# The entry stays where it is but is parked under the released consumer with an idle time past
# the lease, so the next claim by any worker takes it ahead of newer jobs.
# KEYS: queue, entries, lease. ARGV: group, released consumer, idle ms, job id.
RELEASE = """
local id = redis.call('HGET', KEYS[2], ARGV[4])
if not id then return 0 end
if #redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1) == 0 then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id, 'IDLE', ARGV[3], 'JUSTID')
redis.call('DEL', KEYS[3])
return 1
"""

# KEYS: queue, entries, lease. ARGV: group, job id.
ACK = """
local id = redis.call('HGET', KEYS[2], ARGV[2])
if id and redis.call('XACK', KEYS[1], ARGV[1], id) == 1 then
  redis.call('XDEL', KEYS[1], id)
  redis.call('HDEL', KEYS[2], ARGV[2])
end
redis.call('DEL', KEYS[3])
return 1
"""

# KEYS: lock. ARGV: token. Deletes the lock only if this holder still owns it.
UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# Every worker start joins the group as a new consumer (`host-pid-random`); without cleanup
# they pile up forever. Drops consumers with nothing pending that are either this process's own
# (ARGV[3..]) or idle for ARGV[2] ms (crashed workers, whose entries were reclaimed already).
# A consumer with pending entries is never dropped: that would lose them from the group.
# KEYS: queue. ARGV: group, idle ms, own consumer names…
FORGET_CONSUMERS = """
local own = {}
for i = 3, #ARGV do own[ARGV[i]] = true end
local dropped = 0
for _, fields in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local info = {}
  for i = 1, #fields, 2 do info[fields[i]] = fields[i + 1] end
  if info['pending'] == 0 and (own[info['name']] or info['idle'] >= tonumber(ARGV[2])) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
    dropped = dropped + 1
  end
end
return dropped
"""

# KEYS: counter. ARGV: amount, TTL ms. The TTL is set once, when the counter is made.
COUNTER_ADD = """
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return value
"""
