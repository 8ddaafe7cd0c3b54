-- Call an app behind Identity-Aware Proxy: the ID token's audience is IAP's OAuth client ID.
local gcp = require "gcp"

return gcp.recipe {
  description = "Call an app behind Identity-Aware Proxy with an ID token for its OAuth client ID.",
  params = {
    {name = "url", type = "string", help = "https URL of the IAP-protected app"},
    {name = "client_id", type = "string", help = "IAP OAuth client ID (…apps.googleusercontent.com)"},
    {name = "method", type = "string", default = "GET", choices = {"GET", "POST", "PUT", "PATCH", "DELETE"}, help = "HTTP method"},
    {name = "body", type = "json", required = false, help = "JSON body to send"},
  },
  run = function(p)
    local res = gcp.iap.call(p.url, p.client_id, {method = p.method, json = p.body})
    if res.json ~= nil then return res.json end
    return res.body
  end,
}
