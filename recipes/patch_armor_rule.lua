-- Set, or add to, the source IP ranges a Cloud Armor rule matches, and wait until the
-- change is applied.
local gcp = require "gcp"

return gcp.recipe {
  description = "Set (or with mode=add, extend) the source IP ranges of a Cloud Armor security policy rule.",
  params = {
    {name = "project", type = "string", help = "project ID"},
    {name = "policy", type = "string", help = "security policy name"},
    {name = "priority", type = "integer", min = 0, max = 2147483647, help = "priority of the rule to change"},
    {name = "src_ip_ranges", type = "list", help = "IP ranges in CIDR form, comma-separated (at most 10 per rule)"},
    {name = "mode", type = "string", choices = {"set", "add"}, default = "set",
     help = "set: replace the rule's ranges; add: keep them and add these"},
  },
  run = function(p)
    local rule = gcp.compute.get_rule(p.project, p.policy, p.priority)
    local ranges, seen = gcp.json.array(), {}
    local function add(r) if not seen[r] then seen[r] = true; ranges[#ranges + 1] = r end end
    if p.mode == "add" then
      local config = rule.match and rule.match.config
      for _, r in ipairs(config and config.srcIpRanges or {}) do add(r) end
    end
    for _, r in ipairs(p.src_ip_ranges) do add(r) end
    if #ranges == 0 then error(gcp.usage_error("src_ip_ranges is empty: a rule needs at least one range"), 0) end
    if #ranges > 10 then
      error(gcp.usage_error(("a rule matches at most 10 ranges; this would be %d"):format(#ranges)), 0)
    end
    local op = gcp.compute.patch_rule(p.project, p.policy, p.priority, {
      priority = p.priority,
      match = {versionedExpr = "SRC_IPS_V1", config = {srcIpRanges = ranges}},
    })
    gcp.wait(op)
    local now = gcp.dry_run() and rule or gcp.compute.get_rule(p.project, p.policy, p.priority)
    return {policy = p.policy, priority = p.priority, action = now.action,
            srcIpRanges = gcp.dry_run() and ranges or now.match.config.srcIpRanges}
  end,
}
