-- token: prints an access token for the fake's service account, so bench/run can hand the
-- same credentials to the raw libcurl floor and the curl CLI. bench/run sends this output
-- straight into a mode-600 file in its temporary directory; it is never shown.
local gcp = require "gcp"

return gcp.recipe{
  description = "Prints an access token (benchmark helper; keep the output secret).",
  run = function() return gcp.token{} end,
}
