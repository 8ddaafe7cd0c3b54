-- gcp.http: one HTTP call from a recipe. Builds the URL and body, hands the request to the C
-- primitive (which attaches an access token where allowed and waits on the loop), and turns
-- every failure into a gcp.Error. In a dry run, mutating requests are printed, not sent.
local core = require "gcpr.core"
local auth = require "gcp.auth"
local errors = require "gcp.errors"
local json = require "gcp.json"
local log = require "gcp.log"

local M = {}

local MUTATING = {POST = true, PUT = true, PATCH = true, DELETE = true}
local EMPTY = setmetatable({}, {__newindex = function() error("internal: shared empty headers", 2) end})
-- Fixed for the whole run (the module is loaded inside it).
local dry_run = core.dry_run()

-- Percent-encodes s for a URL path segment or query value (RFC 3986 unreserved kept).
function M.escape(s)
  return (tostring(s):gsub("[^%w%-%._~]", function(c) return ("%%%02X"):format(c:byte()) end))
end
local escape = M.escape

local function scalar(v, key)
  local t = type(v)
  if t == "string" or t == "number" or t == "boolean" then return tostring(v) end
  error("gcp.http: query value for '" .. key .. "' must be a string, number, boolean or list of them", 4)
end

-- Sorted keys, so the same call builds the same URL (logs and dry runs compare cleanly).
function M.encode_query(q)
  local keys = {}
  for k in pairs(q) do keys[#keys + 1] = tostring(k) end
  table.sort(keys)
  local out = {}
  for _, k in ipairs(keys) do
    local v = q[k]
    if type(v) == "table" then
      if next(v) ~= nil and #v == 0 then scalar(v, k) end
      for _, item in ipairs(v) do out[#out + 1] = escape(k) .. "=" .. escape(scalar(item, k)) end
    else
      out[#out + 1] = escape(k) .. "=" .. escape(scalar(v, k))
    end
  end
  return table.concat(out, "&")
end

-- The audience Cloud Scheduler would use: the URL without its query or fragment.
local function default_audience(url)
  return (url:gsub("[?#].*$", ""))
end

-- Google's error body, in either of its shapes: {"error": {code, message, status,
-- errors: [{reason}]}} for APIs, {"error": "...", "error_description": "..."} for OAuth.
local function google_error(res)
  local body = res.json
  local e = type(body) == "table" and body.error
  if type(e) == "table" then
    local first = type(e.errors) == "table" and e.errors[1] or nil
    return e.message, e.status, first and first.reason, e.details
  elseif type(e) == "string" then
    return body.error_description or e, nil, e
  end
  local text = (res.body or ""):sub(1, 300):gsub("%s+", " ")
  return text ~= "" and text or "(empty body)"
end

-- Whether a status outside 2xx is an answer the caller takes (accept = {404} or "any").
local function accepted(spec, status)
  local accept = spec.accept
  if accept == "any" then return true end
  if type(accept) == "table" then
    for _, s in ipairs(accept) do if s == status then return true end end
  end
  return false
end

local function print_dry_run(method, url, headers, body, will_auth)
  local lines = {"[dry-run] " .. method .. " " .. url}
  if will_auth then lines[#lines + 1] = "Authorization: Bearer REDACTED" end
  local names = {}
  for k in pairs(headers) do names[#names + 1] = k end
  table.sort(names)
  for _, k in ipairs(names) do lines[#lines + 1] = k .. ": " .. headers[k] end
  if body then
    local ok, decoded = pcall(json.decode, body)
    lines[#lines + 1] = ok and json.encode(decoded, {pretty = true}) or body
  end
  core.write(table.concat(lines, "\n") .. "\n")
end

-- ---- retries ----
--
-- What is retried, and when:
--   GET/HEAD/OPTIONS, a Compute mutating call (it carries a requestId, the same on every
--   attempt, so Compute runs it once) and any call marked idempotent = true:
--     408, 429, 500, 502, 503, 504 and every network failure.
--   Any other mutating call: only what provably did not reach the server (it could not
--     resolve, connect or finish the TLS handshake) and 408/429, which refuse a request
--     before acting on it.
-- Backoff: exponential from 1 s, doubling, capped at 32 s, full jitter; Retry-After (in
-- seconds or as an HTTP date) is honoured; the retries of one call stop after 60 s.
-- Per call: retry = false, or retry = {attempts=, initial=, max=, deadline=}.

local RETRY_STATUS = {[408] = true, [429] = true, [500] = true, [502] = true, [503] = true, [504] = true}
local REFUSED_UNPROCESSED = {[408] = true, [429] = true}
-- curl: could not resolve proxy or host, could not connect, TLS handshake failed.
local NOT_SENT = {[5] = true, [6] = true, [7] = true, [35] = true}
local IDEMPOTENT_METHOD = {GET = true, HEAD = true, OPTIONS = true}
local DEFAULT_RETRY = {attempts = 6, initial = 1, max = 32, deadline = 60}

-- Whether a failed attempt may be tried again. status for an HTTP answer, curl_code for a
-- network failure; idempotent: whether running the call twice is harmless.
function M.retryable(idempotent, status, curl_code)
  if curl_code then return NOT_SENT[curl_code] == true or idempotent == true end
  if not RETRY_STATUS[status] then return false end
  return idempotent == true or REFUSED_UNPROCESSED[status] == true
end

-- Seconds to wait before retry number n (1-based): full jitter over min(max, initial*2^(n-1)).
function M.backoff(n, policy, random)
  local cap = math.min(policy.max, policy.initial * 2 ^ (n - 1))
  return (random or math.random)() * cap
end

-- Retry-After: delay-seconds or an HTTP-date; nil when absent or unreadable.
function M.retry_after(value, now)
  if type(value) ~= "string" then return nil end
  local secs = value:match("^%s*(%d+)%s*$")
  if secs then return tonumber(secs) end
  local t = core.http_date(value)
  if t then return math.max(0, t - (now or core.time())) end
  return nil
end

local function is_compute(url)
  local host, path = url:match("^https://([^/]+)(/[^?]*)")
  return host and (host == "compute.googleapis.com" or host == "www.googleapis.com" and path:find("^/compute/"))
end

-- ---- the call ----

local function bad_url(url, level)
  error("gcp.http: url must be an http(s) URL string, got " .. tostring(url), level + 1)
end

-- s for an error message: control characters as \xNN, at most 60 characters.
local function shown(s)
  s = tostring(s)
  local cut = #s > 60 and s:sub(1, 60) .. "..." or s
  return (cut:gsub("%c", function(c) return ("\\x%02X"):format(c:byte()) end))
end

-- RFC 9110 token: what a method or a header name may be made of.
local TOKEN = "^[%w!#$%%&'*+%-%.^_`|~]+$"
local METHOD_MAX = 23 -- GCPR_HTTP_METHOD_MAX in src/http.h

local UPPER = {GET = "GET", POST = "POST", PUT = "PUT", PATCH = "PATCH", DELETE = "DELETE",
               HEAD = "HEAD", get = "GET", post = "POST", put = "PUT", patch = "PATCH",
               delete = "DELETE", head = "HEAD"}
local AUTH_MODES = {auto = true, access_token = true, id_token = true, none = true}

-- gcp.http{method=, url=, query=, headers=, json= | body=, timeout=, accept=, retry=,
--           idempotent=, auth=, scopes=, audience=, impersonate=, delegates=, subject=,
--           quota_project=}
-- -> {status, headers, body, json, url}. auth: "auto" (an access token for https
-- googleapis.com hosts, none elsewhere), "access_token", "id_token" (audience defaults to the
-- URL, as Cloud Scheduler does) or "none". Raises a gcp.Error for a network failure or a
-- status outside 2xx (unless accept lists it, or accept = "any"), after the retries above.
-- This runs for every request, so the common case (a GET with no options) takes no detour
-- and builds no table of its own.
function M.request(spec)
  if type(spec) ~= "table" then error("gcp.http expects a table {url = ..., ...}", 2) end
  local url, method, query, body = spec.url, spec.method, spec.query, spec.body
  -- core.http checks the scheme (a dry run checks it here before printing).
  if type(url) ~= "string" then bad_url(url, 2) end
  local json_value = spec.json
  if json_value ~= nil and body ~= nil then error("gcp.http: give json= or body=, not both", 2) end
  if method == nil then
    method = (json_value ~= nil or body ~= nil) and "POST" or "GET"
  elseif type(method) ~= "string" then
    error("gcp.http: method must be a string", 2)
  elseif UPPER[method] then
    method = UPPER[method]
  else
    if #method > METHOD_MAX or not method:find(TOKEN) then
      error(("gcp.http: method '%s' is not an HTTP method (a token of at most %d characters)"):format(shown(method), METHOD_MAX), 2)
    end
    method = method:upper()
  end
  if query ~= nil and type(query) ~= "table" then error("gcp.http: query must be a table", 2) end
  local idempotent = spec.idempotent
  if idempotent == nil then idempotent = IDEMPOTENT_METHOD[method] or false end
  local mutating = MUTATING[method]
  if mutating and is_compute(url) then
    if url:find("/wait$") or url:find("/wait%?") then
      idempotent = spec.idempotent ~= false
    elseif not (query and query.requestId) and not url:find("[?&]requestId=") then
      -- Compute de-duplicates by requestId: every attempt of this call is the same request.
      local q = {}
      for k, v in pairs(query or {}) do q[k] = v end
      q.requestId = core.uuid4()
      query = q
      idempotent = spec.idempotent ~= false
    end
  end
  if query ~= nil then
    local q = M.encode_query(query)
    if q ~= "" then url = url .. (url:find("?", 1, true) and "&" or "?") .. q end
  end
  local headers -- nil: none
  if spec.headers ~= nil then
    headers = {}
    if type(spec.headers) ~= "table" then error("gcp.http: headers must be a table", 2) end
    for k, v in pairs(spec.headers) do
      if type(k) ~= "string" or not k:find(TOKEN) then
        error(("gcp.http: header name '%s' is not a valid HTTP header name"):format(shown(k)), 2)
      end
      if k:lower() == "authorization" and spec.auth ~= "none" then
        error("gcp.http: header '" .. k .. "' is not allowed here (tokens are added by gcpr; pass auth = \"none\" to send your own)", 2)
      end
      v = tostring(v)
      -- A line break would start another header (or the body) of the caller's choosing.
      if v:find("[\r\n\0]") then
        error("gcp.http: the value of header '" .. k .. "' contains a line break or a NUL byte", 2)
      end
      headers[k] = v
    end
  end
  if json_value ~= nil then
    body = json.encode(json_value)
    headers = headers or {}
    if not headers["Content-Type"] then headers["Content-Type"] = "application/json" end
  elseif body ~= nil and type(body) ~= "string" then
    error("gcp.http: body must be a string (use json = for a table)", 2)
  end
  local mode = spec.auth
  if mode ~= nil and not AUTH_MODES[mode] then
    error("gcp.http: auth must be \"auto\", \"access_token\", \"id_token\" or \"none\"", 2)
  end
  local policy = DEFAULT_RETRY
  local retry = spec.retry
  if retry == false then
    policy = nil
  elseif type(retry) == "table" then
    policy = {}
    for k, v in pairs(DEFAULT_RETRY) do policy[k] = retry[k] or v end
  elseif retry ~= nil and retry ~= true then
    error("gcp.http: retry must be false or a table {attempts=, initial=, max=, deadline=}", 2)
  end
  local timeout = spec.timeout
  if timeout ~= nil and (type(timeout) ~= "number" or timeout <= 0) then
    error("gcp.http: timeout must be a positive number of seconds, got " .. tostring(timeout), 2)
  end
  local token
  if mode == "id_token" then
    token = auth.fill({}, spec, "id", 2)
    if not token.audience then token.audience = default_audience(spec.url) end
  else
    token = auth.for_call(spec, "access", 2)
  end
  if dry_run and mutating and not url:find("/wait$") then
    if not url:find("^[Hh][Tt][Tt][Pp][Ss]?://") then bad_url(spec.url, 2) end
    local will_auth = mode == "access_token" or mode == "id_token" or
                      ((mode == nil or mode == "auto") and core.token_allowed(url))
    print_dry_run(method, url, headers or EMPTY, body, will_auth)
    return {status = 200, headers = {}, body = "", json = {}, dry_run = true, url = url}
  end
  local started = core.now()
  local attempt = 0
  while true do
    attempt = attempt + 1
    local res, err = core.http(method, url, headers, body, timeout, mode, token)
    local failure
    if not res then
      if err.kind == "usage" then bad_url(spec.url, 2) end
      failure = {kind = err.kind, message = err.message, exit = err.exit, method = method,
                 url = url, curl_code = err.curl_code}
    else
      local status = res.status
      if status >= 200 and status < 300 or accepted(spec, status) then
        res.url = url
        return res
      end
      local message, google_status, reason, details = google_error(res)
      failure = {kind = "http", status = status, method = method, url = url,
                 message = message, google_status = google_status, reason = reason,
                 details = details, response = res}
    end
    local can_retry = policy and failure.kind ~= "auth" and attempt < policy.attempts and
                      M.retryable(idempotent, failure.status, failure.curl_code)
    local delay = can_retry and (M.retry_after(res and res.headers["retry-after"]) or M.backoff(attempt, policy))
    if not can_retry or core.now() + delay - started > policy.deadline then
      if attempt > 1 then failure.message = failure.message .. (" (after %d attempts)"):format(attempt) end
      failure.attempts = attempt
      errors.raise(failure, 2)
    end
    log.warn("%s %s: %s; retry %d/%d in %.1fs", method, url,
             failure.status and ("HTTP " .. failure.status) or failure.message, attempt, policy.attempts - 1, delay)
    core.sleep(delay)
  end
end

return M
