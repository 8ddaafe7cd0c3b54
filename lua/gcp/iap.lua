-- gcp.iap: call an app behind Identity-Aware Proxy: an ID token whose audience is the
-- IAP OAuth client ID (not the URL), with the caller's email in it.
local http = require "gcp.http"

local M = {}

-- gcp.iap.call(url, client_id, {method=, json=, body=, query=, headers=, accept=}) -> response
function M.call(url, client_id, opts)
  if type(client_id) ~= "string" or client_id == "" then
    error("gcp.iap.call: client_id (the IAP OAuth client ID, e.g. 1234-abc.apps.googleusercontent.com) is required", 2)
  end
  local spec = {}
  for k, v in pairs(opts or {}) do spec[k] = v end
  spec.url, spec.auth, spec.audience = url, "id_token", client_id
  return http.request(spec)
end

return M
