-- Call any HTTPS service that checks Google-signed ID tokens (Cloud Run, Cloud Functions):
-- the audience defaults to the URL, as Cloud Scheduler does.
local gcp = require "gcp"

return gcp.recipe {
  description = "Call an HTTPS service with a Google-signed ID token (Cloud Run, Cloud Functions).",
  params = {
    {name = "url", type = "string", help = "https URL to call"},
    {name = "method", type = "string", default = "GET", choices = {"GET", "POST", "PUT", "PATCH", "DELETE"}, help = "HTTP method"},
    {name = "body", type = "json", required = false, help = "JSON body to send"},
    {name = "audience", type = "string", required = false, help = "ID token audience (default: the URL without its query)"},
  },
  run = function(p)
    local res = gcp.run.call(p.url, {method = p.method, json = p.body, audience = p.audience})
    if res.json ~= nil then return res.json end
    return res.body
  end,
}
