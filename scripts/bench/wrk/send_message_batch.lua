-- wrk script: SendMessageBatch of ten 256-byte messages over the SQS JSON protocol.
-- Usage: wrk -t2 -c64 -d10s -s scripts/bench/wrk/send_message_batch.lua http://127.0.0.1:7481/ -- QUEUE_URL
local queue_url
function init(args)
  queue_url = args[1] or "http://127.0.0.1:7481/000000000000/wrk"
end
function request()
  local body = string.rep("x", 256)
  local entries = {}
  for i = 1, 10 do
    entries[i] = string.format('{"Id":"e%d","MessageBody":"%s"}', i, body)
  end
  local payload = string.format('{"QueueUrl":"%s","Entries":[%s]}', queue_url, table.concat(entries, ","))
  return wrk.format("POST", "/", {
    ["Content-Type"] = "application/x-amz-json-1.0",
    ["X-Amz-Target"] = "AmazonSQS.SendMessageBatch",
  }, payload)
end
function done(summary, latency, requests)
  io.write(string.format("non-2xx or socket errors: %d\n", summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
  io.write(string.format("p50 %.2f ms, p99 %.2f ms\n", latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
