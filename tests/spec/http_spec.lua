-- Specs for the pure parts of gcp.http and gcp.errors: URL building and error text.
local http = require "gcp.http"
local errors = require "gcp.errors"

describe("gcp.http.escape", function()
  it("percent-encodes everything but RFC 3986 unreserved characters", function()
    assert.are.equal("a-b_c.d~e", http.escape("a-b_c.d~e"))
    assert.are.equal("a%2Fb%20c%3F%26%3D", http.escape("a/b c?&="))
    assert.are.equal("%C3%A9", http.escape("é"))
  end)
end)

describe("gcp.http.encode_query", function()
  it("sorts keys and repeats list values", function()
    assert.are.equal("a=1&b=x%20y&z=true", http.encode_query({z = true, b = "x y", a = 1}))
    assert.are.equal("f=1&f=2", http.encode_query({f = {1, 2}}))
  end)
  it("refuses tables as values", function()
    assert.has_error(function() http.encode_query({a = {b = {}}}) end)
  end)
end)

describe("gcp.http.request", function()
  it("rejects misuse before sending anything", function()
    assert.has_error(function() http.request("https://x") end, "gcp.http expects a table {url = ..., ...}")
    assert.has_error(function() http.request({url = "ftp://x"}) end)
    assert.has_error(function() http.request({url = "https://x", json = {}, body = "x"}) end,
      "gcp.http: give json= or body=, not both")
    assert.has_error(function()
      http.request({url = "https://x.googleapis.com", headers = {Authorization = "Bearer x"}})
    end)
  end)
end)

describe("gcp.errors", function()
  it("formats an HTTP failure as one line with method, URL, status and reason", function()
    local e = errors.new({kind = "http", method = "GET", url = "https://compute.googleapis.com/x",
                          status = 404, google_status = "NOT_FOUND", message = "The resource 'x' was not found",
                          reason = "notFound"})
    assert.are.equal("GET https://compute.googleapis.com/x: HTTP 404 NOT_FOUND: The resource 'x' was not found (reason: notFound)",
                     tostring(e))
    assert.are.equal(1, errors.exit_code(e))
    assert.are.equal(1, errors.exit_code("plain"))
  end)
  it("points at the caller outside the gcp modules", function()
    local function recipe_line() return errors.new({kind = "x", message = "m"}) end
    local e = recipe_line()
    assert.matches("http_spec%.lua:%d+$", e.where)
  end)
end)
