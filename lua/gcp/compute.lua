-- gcp.compute: Compute Engine helpers: managed instance groups (zonal and regional) and
-- Cloud Armor security policies. Mutating calls return the gcp.http response, ready for
-- gcp.wait; Compute's requestId makes their retries safe.
local http = require "gcp.http"
local lro = require "gcp.lro"

local M = {}

M.BASE = "https://compute.googleapis.com/compute/v1"
local esc = http.escape

-- "us-central1-a" is a zone, "us-central1" a region.
function M.is_zone(location) return location:find("^%l+%-%l+%d+%-%l$") ~= nil end

function M.location_path(project, location)
  if type(project) ~= "string" or type(location) ~= "string" then
    error("gcp.compute: project and zone/region must be strings", 3)
  end
  return ("%s/projects/%s/%s/%s"):format(M.BASE, esc(project), M.is_zone(location) and "zones" or "regions", esc(location))
end

-- ---- managed instance groups ----

function M.mig_url(project, location, name)
  local kind = M.is_zone(location) and "instanceGroupManagers" or "regionInstanceGroupManagers"
  return ("%s/%s/%s"):format(M.location_path(project, location), kind, esc(name))
end

function M.get_mig(project, location, name)
  return http.request{url = M.mig_url(project, location, name)}.json
end

function M.resize_mig(project, location, name, size)
  if math.type(size) ~= "integer" or size < 0 then error("gcp.compute.resize_mig: size must be an integer >= 0", 2) end
  return http.request{method = "POST", url = M.mig_url(project, location, name) .. "/resize", query = {size = size}}
end

local function actions(mig)
  local busy = {}
  for action, n in pairs(mig.currentActions or {}) do
    if action ~= "none" and n > 0 then busy[#busy + 1] = action .. " " .. n end
  end
  table.sort(busy)
  return #busy > 0 and table.concat(busy, ", ") or "settling"
end

-- Waits until the group reports status.isStable (its instances are all running and
-- nothing is being created, deleted or recreated). opts: timeout=, interval=.
function M.wait_mig_stable(project, location, name, opts)
  local mig = M.get_mig(project, location, name)
  return lro.poll(mig, {
    what = function(m) return "instance group " .. m.name end,
    state = function(m) return m.status.isStable and "stable" or ("not stable: " .. actions(m)) end,
    done = function(m) return m.status and m.status.isStable == true end,
    fetch = function() return M.get_mig(project, location, name) end,
  }, opts)
end

-- ---- Cloud Armor security policies (global) ----

function M.policy_url(project, policy)
  return ("%s/projects/%s/global/securityPolicies/%s"):format(M.BASE, esc(project), esc(policy))
end

function M.get_policy(project, policy)
  return http.request{url = M.policy_url(project, policy)}.json
end

function M.get_rule(project, policy, priority)
  return http.request{url = M.policy_url(project, policy) .. "/getRule", query = {priority = priority}}.json
end

function M.patch_rule(project, policy, priority, rule)
  return http.request{method = "POST", url = M.policy_url(project, policy) .. "/patchRule",
                      query = {priority = priority}, json = rule}
end

function M.add_rule(project, policy, rule)
  return http.request{method = "POST", url = M.policy_url(project, policy) .. "/addRule", json = rule}
end

function M.remove_rule(project, policy, priority)
  return http.request{method = "POST", url = M.policy_url(project, policy) .. "/removeRule",
                      query = {priority = priority}}
end

-- Changes the policy itself (description, adaptive protection, ...) under its fingerprint:
-- modify(policy) returns the fields to PATCH, or nil for no change. -> operation or nil.
function M.update_policy(project, policy, modify)
  local url = M.policy_url(project, policy)
  local op = require("gcp.rmw").update{
    get = {url = url},
    modify = modify,
    write = function(patch, old)
      patch.fingerprint = old.fingerprint
      return {method = "PATCH", url = url, json = patch}
    end,
  }
  return op
end

return M
