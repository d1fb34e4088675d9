-- One wrk script for every scenario: builds each tools/call request and checks each answer.
-- Arguments (after --): mode tool token_file [limit]
--   mode "call":          tools/call tool(a=id, b=0.5) with the file's tokens round-robin; the answer must be
--                         200 with the id of a request in flight on this thread and structuredContent.result = id + 0.5
--   mode "bad_signature": the file's token with six signature characters replaced per request; must be a 401
--   mode "forged_payload": the file's token with six payload characters replaced per request; must be a 401
--   mode "reject":        the file's tokens (e.g. unknown kid) round-robin; must be a 401 invalid_token (with a
--                         Bearer or DPoP challenge, the error in the JSON body)
--   mode "dpop_call":     as "call", with the file's `token<TAB>proof` lines each used once, in order, as
--                         `Authorization: DPoP token` and `DPoP: proof` (a proof is good once); the thread stops
--                         when they run out (bench/dpop.py makes more than a run needs)
--   mode "bad_proof":     the file's first `token<TAB>proof` line with six proof-signature characters replaced
--                         per request; must be a 401 invalid_dpop_proof
-- limit > 0 stops the thread after that many requests (a bounded pass over distinct tokens).
-- A wrong answer is counted in `wrong` (and `errors` by kind); wrk's own counters still count it as a request.

local threads = {}
local counter = 0

function setup(thread)
   thread:set("thread_index", #threads)
   table.insert(threads, thread)
end

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

local function b64digits(n, width)
   local out = {}
   for i = 1, width do
      local d = n % 64
      out[i] = B64:sub(d + 1, d + 1)
      n = math.floor(n / 64)
   end
   return table.concat(out)
end

function init(args)
   mode = args[1]
   tool = args[2]
   limit = tonumber(args[4] or "0")
   tokens = {}
   proofs = {}
   if args[3] ~= nil and args[3] ~= "-" then
      for line in io.lines(args[3]) do
         if #line > 0 then
            local token, proof = line:match("^([^\t]+)\t(.+)$")
            if token ~= nil then
               table.insert(tokens, token)
               table.insert(proofs, proof)
            else
               table.insert(tokens, line)
            end
         end
      end
   end
   dpop = mode == "dpop_call" or mode == "bad_proof"
   expected_error = mode == "bad_proof" and "invalid_dpop_proof" or "invalid_token"
   if mode == "dpop_call" and (limit == 0 or limit > #proofs) then
      limit = #proofs  -- a proof is good once
   end
   -- ids are disjoint between threads; start each thread at a different token too
   next_id = thread_index * 100000000 + 1
   token_index = thread_index * 7919
   pending = {}
   sent = 0
   wrong = 0
   ok = 0
   kinds = {}
   meta = '"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28",'
      .. '"io.modelcontextprotocol/clientInfo":{"name":"bench","version":"1"},'
      .. '"io.modelcontextprotocol/clientCapabilities":{}}'
   headers = {
      ["Content-Type"] = "application/json",
      ["Accept"] = "application/json, text/event-stream",
      ["MCP-Protocol-Version"] = "2026-07-28",
      ["Mcp-Method"] = "tools/call",
      ["Mcp-Name"] = tool,
   }
end

-- six characters in the middle of a JWT's signature, different for every request
local function bad_signature(jwt)
   local dot = jwt:find(".", jwt:find(".", 1, true) + 1, true)
   local at = dot + 20
   return jwt:sub(1, at - 1) .. b64digits(token_index, 6) .. jwt:sub(at + 6)
end

local function next_proof()
   if mode == "bad_proof" then
      token_index = token_index + 1
      return tokens[1], bad_signature(proofs[1])
   end
   proof_index = math.min((proof_index or 0) + 1, #proofs)  -- the limit stops the thread before they run out
   return tokens[proof_index], proofs[proof_index]
end

local function next_token()
   if #tokens == 0 then return nil end
   token_index = token_index + 1
   local token = tokens[(token_index % #tokens) + 1]
   if mode == "bad_signature" then
      token = bad_signature(token)
   elseif mode == "forged_payload" then
      -- six characters in the middle of the payload, different for every request; the signature left as it was
      local at = token:find(".", 1, true) + 20
      token = token:sub(1, at - 1) .. b64digits(token_index, 6) .. token:sub(at + 6)
   end
   return token
end

function request()
   if limit > 0 and sent >= limit then
      wrk.thread:stop()
   end
   sent = sent + 1
   local id = next_id
   next_id = next_id + 1
   pending[id] = true
   if dpop then
      local token, proof = next_proof()
      headers["Authorization"] = "DPoP " .. token
      headers["DPoP"] = proof
   else
      local token = next_token()
      if token ~= nil then
         headers["Authorization"] = "Bearer " .. token
      end
   end
   local body = '{"jsonrpc":"2.0","id":' .. id .. ',"method":"tools/call","params":{"name":"' .. tool
      .. '","arguments":{"a":' .. id .. ',"b":0.5},' .. meta .. '}}'
   return wrk.format("POST", "/mcp", headers, body)
end

local function fail(kind)
   wrong = wrong + 1
   kinds[kind] = (kinds[kind] or 0) + 1
end

local function header(headers_in, name)
   for key, value in pairs(headers_in) do
      if key:lower() == name then return value end
   end
   return nil
end

function response(status, headers_in, body)
   if mode == "call" or mode == "dpop_call" then
      if status ~= 200 then return fail("status_" .. status) end
      local id = tonumber(body:match('^{"jsonrpc":"2.0","id":(%d+),') or body:match('"id":(%d+)'))
      if id == nil or not pending[id] then return fail("unknown_id") end
      pending[id] = nil
      if body:find('"isError":true', 1, true) then return fail("tool_error") end
      local result = tonumber(body:match('"structuredContent":{"result":([-%d.eE+]+)}'))
      if result == nil or result ~= id + 0.5 then return fail("wrong_result") end
      ok = ok + 1
   else
      if status ~= 401 then return fail("status_" .. status) end
      -- A Bearer refusal carries two WWW-Authenticate fields when DPoP is allowed (Bearer, then DPoP); wrk
      -- keeps one of them, so the challenge must be there and the error is checked in the body.
      local challenge = header(headers_in, "www-authenticate") or ""
      if not (challenge:find("^Bearer ") or challenge:find("^DPoP ")) then return fail("no_challenge") end
      if not body:find('"' .. expected_error .. '"', 1, true) then return fail("body") end
      ok = ok + 1
   end
end

function done(summary, latency, requests)
   local total_ok, total_wrong, kinds_all = 0, 0, {}
   for _, thread in ipairs(threads) do
      total_ok = total_ok + thread:get("ok")
      total_wrong = total_wrong + thread:get("wrong")
      local thread_kinds = thread:get("kinds")
      for kind, count in pairs(thread_kinds) do
         kinds_all[kind] = (kinds_all[kind] or 0) + count
      end
   end
   local kinds_json = {}
   for kind, count in pairs(kinds_all) do
      table.insert(kinds_json, string.format('"%s":%d', kind, count))
   end
   local errors = summary.errors
   io.write(string.format(
      'WRK_RESULT {"requests":%d,"duration_us":%d,"ok":%d,"wrong":%d,"wrong_kinds":{%s},'
         .. '"socket_errors":%d,"timeouts":%d,"non_2xx_3xx":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
      summary.requests, summary.duration, total_ok, total_wrong, table.concat(kinds_json, ","),
      errors.connect + errors.read + errors.write, errors.timeout, errors.status,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
