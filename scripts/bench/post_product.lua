-- wrk script: POST /api/products with a fresh SKU per request.
-- TOKEN comes from the environment (an admin access token).
local counter = 0
local thread_id = 0
local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  thread_id = id
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. os.getenv("TOKEN")
end

function request()
  counter = counter + 1
  local body = string.format(
    '{"sku":"BENCH-%d-%d-%d","name":"Bench product","price":"9.99","currency":"EUR","category":"bench","supplier_id":"bench"}',
    os.time(), thread_id, counter)
  return wrk.format(nil, "/api/products", nil, body)
end
