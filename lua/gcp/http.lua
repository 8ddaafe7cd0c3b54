-- gcp.http: one HTTP call from a recipe. Builds the URL and body, hands the request to the C
-- primitive (which attaches an access token where allowed and waits on the loop), and turns
-- every failure into a gcp.Error. In a dry run, mutating requests are printed, not sent.
local core = require "gcpr.core"
local auth = require "gcp.auth"
local errors = require "gcp.errors"
local json = require "gcp.json"

local M = {}

local MUTATING = {POST = true, PUT = true, PATCH = true, DELETE = true}

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

local function accepted(spec, status)
  if status >= 200 and status < 300 then return true end
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

-- gcp.http{method=, url=, query=, headers=, json= | body=, timeout=, accept=, auth=,
--           scopes=, audience=, impersonate=, delegates=, subject=, quota_project=}
-- -> {status, headers, body, json}. auth: "auto" (an access token for https googleapis.com
-- hosts, none elsewhere), "access_token", "id_token" (audience defaults to the URL, as Cloud
-- Scheduler does) or "none". Raises a gcp.Error for a network failure or a status outside
-- 2xx (unless accept lists it, or accept = "any").
function M.request(spec)
  if type(spec) ~= "table" then error("gcp.http expects a table {url = ..., ...}", 2) end
  local url = spec.url
  if type(url) ~= "string" or not url:find("^https?://") then
    error("gcp.http: url must be an http(s) URL string, got " .. tostring(url), 2)
  end
  if spec.json ~= nil and spec.body ~= nil then error("gcp.http: give json= or body=, not both", 2) end
  local method = spec.method or ((spec.json ~= nil or spec.body ~= nil) and "POST" or "GET")
  if type(method) ~= "string" then error("gcp.http: method must be a string", 2) end
  method = method:upper()
  if spec.query ~= nil then
    if type(spec.query) ~= "table" then error("gcp.http: query must be a table", 2) end
    local q = M.encode_query(spec.query)
    if q ~= "" then url = url .. (url:find("?", 1, true) and "&" or "?") .. q end
  end
  local headers = {}
  if spec.headers ~= nil then
    if type(spec.headers) ~= "table" then error("gcp.http: headers must be a table", 2) end
    for k, v in pairs(spec.headers) do
      if type(k) ~= "string" or k:lower() == "authorization" and spec.auth ~= "none" then
        error("gcp.http: header '" .. tostring(k) .. "' is not allowed here (tokens are added by gcpr; pass auth = \"none\" to send your own)", 2)
      end
      headers[k] = tostring(v)
    end
  end
  local body = spec.body
  if spec.json ~= nil then
    body = json.encode(spec.json)
    if not headers["Content-Type"] then headers["Content-Type"] = "application/json" end
  elseif body ~= nil and type(body) ~= "string" then
    error("gcp.http: body must be a string (use json = for a table)", 2)
  end
  local mode = spec.auth or "auto"
  if mode ~= "auto" and mode ~= "access_token" and mode ~= "id_token" and mode ~= "none" then
    error("gcp.http: auth must be \"auto\", \"access_token\", \"id_token\" or \"none\"", 2)
  end
  local req = auth.spec(spec, mode == "id_token" and "id" or "access", 2)
  if mode == "id_token" and not req.audience then req.audience = default_audience(spec.url) end
  if core.dry_run() and MUTATING[method] then
    local will_auth = mode == "access_token" or mode == "id_token" or (mode == "auto" and core.token_allowed(url))
    print_dry_run(method, url, headers, body, will_auth)
    return {status = 200, headers = {}, body = "", json = {}, dry_run = true}
  end
  req.method, req.url, req.headers, req.body, req.timeout, req.auth = method, url, headers, body, spec.timeout, mode
  local res, err = core.http(req)
  if not res then
    errors.raise({kind = err.kind, message = err.message, exit = err.exit, method = method,
                  url = url, curl_code = err.curl_code}, 2)
  end
  if not accepted(spec, res.status) then
    local message, google_status, reason, details = google_error(res)
    errors.raise({kind = "http", status = res.status, method = method, url = url,
                  message = message, google_status = google_status, reason = reason,
                  details = details, response = res}, 2)
  end
  return res
end

return M
