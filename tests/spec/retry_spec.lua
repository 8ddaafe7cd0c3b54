-- Specs for gcp.http's retry policy: the classification table, backoff and Retry-After.
local http = require "gcp.http"

describe("gcp.http.retryable", function()
  -- {status or curl code, retried when idempotent, retried when a plain mutating call}
  local statuses = {
    {408, true, true}, {429, true, true},
    {500, true, false}, {502, true, false}, {503, true, false}, {504, true, false},
    {400, false, false}, {401, false, false}, {403, false, false}, {404, false, false},
    {409, false, false}, {412, false, false}, {501, false, false},
  }
  for _, row in ipairs(statuses) do
    it(("HTTP %d: idempotent %s, mutating %s"):format(row[1], row[2], row[3]), function()
      assert.are.equal(row[2], http.retryable(true, row[1], nil))
      assert.are.equal(row[3], http.retryable(false, row[1], nil))
    end)
  end

  -- curl codes: 6 resolve, 7 connect, 35 TLS handshake: the request never left;
  -- 28 timeout, 52 empty reply, 55 send, 56 receive: it may have arrived.
  local network = {{6, true, true}, {7, true, true}, {35, true, true}, {5, true, true},
                   {28, true, false}, {52, true, false}, {55, true, false}, {56, true, false}}
  for _, row in ipairs(network) do
    it(("curl error %d: idempotent %s, mutating %s"):format(row[1], row[2], row[3]), function()
      assert.are.equal(row[2], http.retryable(true, nil, row[1]))
      assert.are.equal(row[3], http.retryable(false, nil, row[1]))
    end)
  end
end)

describe("gcp.http.backoff", function()
  local policy = {initial = 1, max = 32}
  it("draws from [0, min(max, initial * 2^(n-1))) with full jitter", function()
    assert.are.equal(0, http.backoff(1, policy, function() return 0 end))
    assert.are.equal(0.5, http.backoff(1, policy, function() return 0.5 end))
    assert.are.equal(4, http.backoff(3, policy, function() return 1 end))
    assert.are.equal(32, http.backoff(10, policy, function() return 1 end))
    for n = 1, 8 do
      local d = http.backoff(n, policy)
      assert.is_true(d >= 0 and d <= math.min(32, 2 ^ (n - 1)))
    end
  end)
end)

describe("gcp.http.retry_after", function()
  it("reads delay-seconds and HTTP dates", function()
    assert.are.equal(7, http.retry_after("7"))
    assert.are.equal(120, http.retry_after(" 120 "))
    local now = 1445412480 -- Wed, 21 Oct 2015 07:28:00 GMT
    assert.are.equal(30, http.retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now))
    assert.are.equal(0, http.retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now))
    assert.is_nil(http.retry_after(nil))
    assert.is_nil(http.retry_after("soon"))
  end)
end)
