-- gcp.rmw: read-modify-write for resources guarded by a fingerprint or an etag. The write
-- carries what the read saw; if someone changed the resource in between, the API answers
-- 412 (or Compute's fingerprint conflict) and the whole read-modify-write runs again, a
-- bounded number of times.
local errors = require "gcp.errors"
local http = require "gcp.http"
local log = require "gcp.log"

local M = {}

local function conflict(e)
  if not errors.is(e) then return false end
  if e.status == 412 then return true end
  local text = (e.message or ""):lower()
  return (e.status == 400 or e.status == 409) and (e.reason == "conditionNotMet" or
         text:find("fingerprint") ~= nil or text:find("etag") ~= nil)
end

-- gcp.update{get = spec, modify = function(resource) -> new resource or nil,
--            write = function(new, old) -> spec, attempts = 5}
-- -> the write's response JSON, or the resource as read when modify returned nil (nothing
-- to change), and whether a write happened.
function M.update(opts)
  if type(opts) ~= "table" or type(opts.get) ~= "table" or type(opts.modify) ~= "function" or
     type(opts.write) ~= "function" then
    error("gcp.update expects {get = <gcp.http spec>, modify = function(resource), write = function(new, old)}", 2)
  end
  local attempts = opts.attempts or 5
  for attempt = 1, attempts do
    local old = http.request(opts.get).json
    local new = opts.modify(old)
    if new == nil then return old, false end
    local ok, res = pcall(http.request, opts.write(new, old))
    if ok then return res.json, true end
    if not conflict(res) or attempt == attempts then
      if conflict(res) then res.text = res.text .. (" (still conflicting after %d read-modify-write attempts)"):format(attempts) end
      error(res, 0)
    end
    log.warn("%s changed while it was being updated (%s); reading it again (%d/%d)",
             opts.get.url, res.status and ("HTTP " .. res.status) or res.message, attempt, attempts - 1)
  end
end

return M
