-- Run a Cloud Build trigger on a branch, tag or commit, wait for the build, and fail with
-- its log URL unless it succeeded.
local gcp = require "gcp"

return gcp.recipe {
  description = "Run a Cloud Build trigger on a branch, tag or commit and wait for the build; fails unless it succeeds.",
  params = {
    {name = "project", type = "string", help = "project ID"},
    {name = "trigger", type = "string", help = "trigger name or ID"},
    {name = "branch", type = "string", required = false, help = "branch to build"},
    {name = "tag", type = "string", required = false, help = "tag to build"},
    {name = "commit", type = "string", required = false, help = "commit SHA to build"},
    {name = "substitutions", type = "json", required = false, help = 'JSON object of substitutions, e.g. {"_ENV":"dev"}'},
    {name = "region", type = "string", default = "global", help = "trigger region (global for global triggers)"},
    {name = "timeout", type = "integer", default = 3600, min = 1, help = "seconds to wait for the build"},
  },
  run = function(p)
    local given = (p.branch and 1 or 0) + (p.tag and 1 or 0) + (p.commit and 1 or 0)
    if given > 1 then error(gcp.usage_error("give at most one of branch=, tag= or commit="), 0) end
    if p.substitutions ~= nil and (type(p.substitutions) ~= "table" or #p.substitutions > 0) then
      error(gcp.usage_error('substitutions must be a JSON object such as {"_ENV":"dev"}'), 0)
    end
    local op = gcp.cloudbuild.run_trigger(p.project, p.trigger, {branch = p.branch, tag = p.tag, commit = p.commit,
                                                                 substitutions = p.substitutions, region = p.region})
    if gcp.dry_run() then return {trigger = p.trigger, dry_run = true} end
    local build = gcp.wait(op, {timeout = p.timeout})
    gcp.log.info("build %s: %s", build.id, build.status)
    return {build = build.id, status = build.status, logUrl = build.logUrl}
  end,
}
