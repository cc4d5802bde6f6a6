-- `wrk ... -s random_id.lua URL -- <max id> <path prefix>`: GET <prefix><random 1..max id>.
-- After numbered_threads.lua.
function init(args)
  max_id = tonumber(args[1])
  path_prefix = args[2]
  math.randomseed(os.time() + 7919 * (thread_number or 0))
end
request = function()
  return wrk.format("GET", path_prefix .. math.random(1, max_id))
end
