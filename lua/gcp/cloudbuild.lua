-- gcp.cloudbuild: run build triggers (on a branch, tag or commit, with substitutions) and
-- look at or cancel builds. gcp.wait on a trigger run follows it to its build.
local http = require "gcp.http"

local M = {}

M.BASE = "https://cloudbuild.googleapis.com/v1"
local esc = http.escape

local function parent(project, region)
  if region and region ~= "global" then
    return ("%s/projects/%s/locations/%s"):format(M.BASE, esc(project), esc(region))
  end
  return ("%s/projects/%s"):format(M.BASE, esc(project))
end

-- gcp.cloudbuild.run_trigger(project, trigger, {branch= | tag= | commit=, substitutions=,
-- region=}) -> the response holding the operation (pass it to gcp.wait for the build).
function M.run_trigger(project, trigger, opts)
  opts = opts or {}
  local given = 0
  for _, k in ipairs({"branch", "tag", "commit"}) do if opts[k] ~= nil then given = given + 1 end end
  if given > 1 then error("gcp.cloudbuild.run_trigger: give one of branch, tag or commit", 2) end
  local source = {projectId = project, branchName = opts.branch, tagName = opts.tag, commitSha = opts.commit,
                  substitutions = opts.substitutions}
  local url = parent(project, opts.region) .. "/triggers/" .. esc(trigger) .. ":run"
  local body = source
  if opts.region and opts.region ~= "global" then
    body = {projectId = project, triggerId = trigger, source = source}
  end
  -- Running a trigger twice starts two builds: only retried when it provably did not arrive.
  return http.request{method = "POST", url = url, json = body}
end

function M.get_build(project, id, region)
  return http.request{url = parent(project, region) .. "/builds/" .. esc(id)}.json
end

function M.cancel_build(project, id, region)
  return http.request{method = "POST", url = parent(project, region) .. "/builds/" .. esc(id) .. ":cancel",
                      json = {}, idempotent = true}.json
end

return M
