-- Prelude for tests/argocd_lua.rs. The test appends two lines to it:
--
--   obj = <the fixture's object as a Lua table>
--   run(<the script's text, in a long bracket>)
--
-- and feeds the whole program to `lua5.1 -`. It prints "OK\n" and the script's result as
-- JSON, "ERROR\n" and the error pcall caught, or "COMPILE\n" and loadstring's message.

local __fmt, __gsub, __byte = string.format, string.gsub, string.byte
local __sort, __concat = table.sort, table.concat
local __floor = math.floor
local __write = io.write
local __os = { time = os.time, date = os.date }
local __loadstring, __pcall, __pairs, __type, __tostring = loadstring, pcall, pairs, type, tostring

-- The sandbox Argo CD gives scripts: base, table, package and an os with time and date only.
string, math, io, debug, coroutine = nil, nil, nil, nil, nil
os = __os
package.loaded.string, package.loaded.math, package.loaded.io = nil, nil, nil
package.loaded.debug, package.loaded.coroutine = nil, nil
package.loaded.os = __os
dofile, loadfile = nil, nil
getmetatable("").__index = nil   -- no ("text"):method() either

-- A Lua value as JSON: keys sorted, integral numbers without a fraction, an empty table
-- as [] (as Argo CD's luajson does), a table with keys 1..n as an array.
local function enc(v)
  local t = __type(v)
  if t == "nil" then return "null" end
  if t == "boolean" then return v and "true" or "false" end
  if t == "number" then
    if v == __floor(v) and v > -1e15 and v < 1e15 then return __fmt("%d", v) end
    return __fmt("%.17g", v)
  end
  if t == "string" then
    return '"' .. __gsub(v, '[%c"\\]', function(c)
      return __fmt("\\u%04x", __byte(c))
    end) .. '"'
  end
  if t == "table" then
    if next(v) == nil then return "[]" end
    local n, count = 0, 0
    for k in __pairs(v) do
      count = count + 1
      if __type(k) == "number" and k >= 1 and k == __floor(k) and k > n then n = k end
    end
    local parts = {}
    if n == count then
      for i = 1, n do parts[i] = enc(v[i]) end
      return "[" .. __concat(parts, ",") .. "]"
    end
    local keys = {}
    for k in __pairs(v) do keys[#keys + 1] = __tostring(k) end
    __sort(keys)
    for i, k in ipairs(keys) do
      local val = v[k]
      if val == nil then val = v[tonumber(k)] end
      parts[i] = enc(k) .. ":" .. enc(val)
    end
    return "{" .. __concat(parts, ",") .. "}"
  end
  error("cannot encode a " .. t)
end

-- Runs a script as Argo CD does: compiled with loadstring, called under pcall, reading the
-- global `obj`.
local function run(src)
  local chunk, err = __loadstring(src, "=script")
  if chunk == nil then
    __write("COMPILE\n", __tostring(err))
    return
  end
  local ok, res = __pcall(chunk)
  if ok then
    __write("OK\n", enc(res))
  else
    __write("ERROR\n", __tostring(res))
  end
end
