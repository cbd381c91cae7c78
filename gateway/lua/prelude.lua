-- The helpers the scripts share, put between a script's generated header and its body
-- (gateway/adapters/lua_scripts.py; Redis scripts cannot import). Nothing here reads KEYS or
-- ARGV: a script hands its keys and values in. The clock, integers and money as Redis and the
-- API want them written, the business-event stream, and the token buckets with the key and
-- tenant checks that admit.lua and gate.lua both make.
-- Buckets are token buckets kept in exact integer arithmetic: a level in units of 1/60000 of
-- a request (or token), refilled by `rate` units per millisecond; full buckets are deleted.

local PERIOD = 60000
local EXACT = 2 ^ 53  -- every integer below this is exact in a Lua double

local function clock(given)  -- tests may give the time; otherwise the server's, shared by all callers
  local now = tonumber(given or '')
  if now then return now end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- An integer as Redis takes it: the digits (Lua would write 1e+15), never '-0'; a fraction is
-- rounded to the nearest (half to even). '%d' is the cheap exact path for integers below 2^53.
local function int(n)
  if n > -EXACT and n < EXACT and n == math.floor(n) then return string.format('%d', n) end
  local text = string.format('%.0f', n)
  return text == '-0' and '0' or text
end

-- Nano units (10^-9 of the currency) as a plain decimal string, sign kept: -1500000000 -> '-1.5'.
-- A fraction of a nano (never in a price: those are whole nano per token) rounds half away from zero.
local function money(n)
  local sign = ''
  if n < 0 then sign, n = '-', -n end
  if n ~= math.floor(n) then n = math.floor(n + 0.5) end
  if n == 0 then return '0' end
  local whole = math.floor(n / 1e9)
  local frac = n - whole * 1e9
  local text = int(whole)
  if frac > 0 then
    text = text .. '.' .. string.gsub(string.format('%09.0f', frac), '0+$', '')
  end
  return sign .. text
end

-- A business event on the tenant's events stream; its id derives from its cause, so a
-- re-emission (after Redis lost its flags) is stored and delivered once all the same.
local function emit(stream, tenant_id, now, kind, cause, data)
  redis.call('XADD', stream, '*', 'id', 'evt_' .. string.sub(redis.sha1hex(cause), 1, 24), 'type', kind,
             'created', int(math.floor(now / 1000)), 'tenant_id', tenant_id, 'data', cjson.encode(data))
end

local function refill(stored, rate, elapsed)
  local cap = rate * PERIOD
  if not stored then
    return cap, cap
  end
  return math.min(cap, tonumber(stored) + elapsed * rate), cap
end

-- A TTL is set with this much to spare and its deadline kept beside it, so a busy tenant's
-- hash or lease set gets a PEXPIRE about once a minute, not on every request (a script's
-- PEXPIRE costs several times a field write). A deadline only ever moves later.
local SLACK = 60000

-- The deadline to keep a key alive to at least `until_ms`, given the one last set (`known`,
-- nil when unknown or the key is new); and whether it is new, so the caller's PEXPIRE is due.
local function deadline(known, until_ms)
  known = tonumber(known)
  if known and known >= until_ms then return known, false end
  return until_ms + SLACK, true
end

-- The tenant's request and token buckets and, where its settings (kcfg) give the key rates of
-- its own, the key's: one hash, fields r, t, ts (the tenant's) and k:<key id>:r, :t, :ts, with
-- x, its deadline, and ix, that of the tenant's lease set. Refilled to `now`.
local function load_buckets(hash, key_id, rpm, tpm, kcfg, now)
  local b = {rpm = rpm, tpm = tpm, krpm = tonumber(kcfg.rpm), ktpm = tonumber(kcfg.tpm), key = 'k:' .. key_id .. ':'}
  local keyed = b.krpm or b.ktpm
  local stored
  if keyed then
    stored = redis.call('HMGET', hash, 'r', 't', 'ts', 'x', 'ix', b.key .. 'r', b.key .. 't', b.key .. 'ts')
  else
    stored = redis.call('HMGET', hash, 'r', 't', 'ts', 'x', 'ix')
  end
  b.x, b.ix = stored[4], stored[5]
  local elapsed = stored[3] and math.max(0, now - tonumber(stored[3])) or 0
  b.rq, b.rq_cap = refill(stored[1], rpm, elapsed)
  b.tk, b.tk_cap = refill(stored[2], tpm, elapsed)
  if keyed then
    local kelapsed = stored[8] and math.max(0, now - tonumber(stored[8])) or 0
    if b.krpm then b.krq, b.krq_cap = refill(stored[6], b.krpm, kelapsed) end
    if b.ktpm then b.ktk, b.ktk_cap = refill(stored[7], b.ktpm, kelapsed) end
  end
  return b
end

-- The reply's figures: verdict, requests remaining, requests reset ms, tokens remaining, tokens
-- reset ms, retry after ms, cost nano, debits, tier tokens, then the key's requests remaining
-- and reset ms and tokens remaining and reset ms (-1 and 0 when the key has no such limit), and
-- what admission holds on the key's own counters for settle.lua ('m' its month, 'l' a lease).
local function reply(b, verdict, retry_ms, cost, debits, tier_tokens, key_holds)
  local out = {
    verdict,
    math.floor(b.rq / PERIOD), math.ceil((b.rq_cap - b.rq) / b.rpm),
    math.floor(b.tk / PERIOD), math.ceil((b.tk_cap - b.tk) / b.tpm),
    retry_ms, int(cost), debits, tier_tokens,
    -1, 0, -1, 0, key_holds or '',
  }
  if b.krq then
    out[10], out[11] = math.floor(b.krq / PERIOD), math.ceil((b.krq_cap - b.krq) / b.krpm)
  end
  if b.ktk then
    out[12], out[13] = math.floor(b.ktk / PERIOD), math.ceil((b.ktk_cap - b.ktk) / b.ktpm)
  end
  return out
end

-- Whether the buckets hold `requests` and `tokens`: the first limit that trips, and how long
-- until the slowest of them would.
local function shortfall(b, requests, tokens)
  local verdict, retry_ms = nil, 0
  local function need(level, amount, rate, name)
    if level and amount > 0 and level < amount then
      verdict = verdict or name
      retry_ms = math.max(retry_ms, math.ceil((amount - level) / rate))
    end
  end
  need(b.rq, requests * PERIOD, b.rpm, 'requests')
  need(b.tk, tokens * PERIOD, b.tpm, 'tokens')
  need(b.krq, requests * PERIOD, b.krpm, 'key_requests')
  need(b.ktk, tokens * PERIOD, b.ktpm, 'key_tokens')
  return verdict, retry_ms
end

-- Take `requests` and `tokens` and write the buckets back as of `now`, with `extra` fields
-- (admit.lua's ix). The hash expires when every bucket in it would be full again (give or
-- take SLACK): a full bucket is the same as none.
local function take(b, hash, requests, tokens, now, extra)
  local fields, need = extra or {}, 1000
  local function write(prefix, level, cap, rate, amount, field)
    if not level then return nil end
    level = level - amount * PERIOD
    fields[#fields + 1], fields[#fields + 2] = prefix .. field, int(level)
    need = math.max(need, math.ceil((cap - level) / rate) + 1000)
    return level
  end
  fields[#fields + 1], fields[#fields + 2] = 'ts', int(now)
  b.rq = write('', b.rq, b.rq_cap, b.rpm, requests, 'r')
  b.tk = write('', b.tk, b.tk_cap, b.tpm, tokens, 't')
  if b.krq or b.ktk then
    fields[#fields + 1], fields[#fields + 2] = b.key .. 'ts', int(now)
    b.krq = write(b.key, b.krq, b.krq_cap, b.krpm, requests, 'r')
    b.ktk = write(b.key, b.ktk, b.ktk_cap, b.ktpm, tokens, 't')
  end
  local x, due = deadline(b.x, now + need)
  fields[#fields + 1], fields[#fields + 2] = 'x', int(x)
  redis.call('HSET', hash, unpack(fields))
  if due then redis.call('PEXPIRE', hash, int(x - now)) end
end

-- Revocation, rotation and suspension are written here by the billing API, so they take
-- effect on the very next request: nil when the key may be used.
local function key_refusal(states, status, key_id, record_expiry, now)
  local override = redis.call('HGET', states, key_id)
  local expiry = record_expiry
  if override then
    override = tonumber(override)
    if override == 0 then
      return 'key_revoked'
    end
    expiry = override
  end
  if expiry > 0 and now >= expiry then
    return 'key_expired'
  end
  if redis.call('GET', status) == 'suspended' then
    return 'suspended'
  end
  return nil
end

