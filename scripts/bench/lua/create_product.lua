-- `wrk ... -s create_product.lua URL -- <run tag>`: POST a product with a SKU no other request
-- uses. After numbered_threads.lua.
function init(args)
  -- The warm-up and the measured run share the arguments: the start time tells them apart.
  run = args[1] .. "-" .. os.time()
  counter = 0
  -- Added to the --header ones (a headers table given to wrk.format would replace them).
  wrk.headers["Content-Type"] = "application/json"
end
request = function()
  counter = counter + 1
  local body = string.format(
    '{"sku": "W-%s-%d-%d", "name": "Written by wrk", "price": "9.99", "stock_quantity": 3}',
    run, thread_number or 0, counter)
  return wrk.format("POST", nil, nil, body)
end
