-- Put before a script whose threads must differ (their random seeds, their SKUs): wrk calls
-- `setup` once per thread, before `init`, and each thread reads its own `thread_number`.
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("thread_number", threads)
end
