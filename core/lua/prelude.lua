-- NeuronScope Lua prelude. Runs once, before the user's script, with the standard library still whole.
-- It defines the Lua-side parts of the `nscope` module and, unless --unsafe, installs the allow-list
-- sandbox: dangerous functions are replaced by stubs that raise a clear error, file access goes through
-- the host's path policy. The originals live on only as upvalues of the closures below.
--
-- Arguments: nscope (module table), internal (host functions), unsafe (boolean), script (path), args (list)
local nscope, internal, unsafe, script, args = ...

-- `arg` as lua.c sets it: arg[0] = script path, arg[1..n] = arguments after `--`.
local argt = { [0] = script }
for i, a in ipairs(args) do argt[i] = a end
arg = argt

-- nscope.log.info/warn/error/debug(...): arguments joined by spaces, like print.
local function join(...)
  local n, parts = select("#", ...), {}
  for i = 1, n do parts[i] = tostring((select(i, ...))) end
  return table.concat(parts, " ")
end
nscope.log = {}
for _, level in ipairs({ "debug", "info", "warn", "error" }) do
  nscope.log[level] = function(...) internal.log(level, join(...)) end
end

-- nscope.run_dir: the script's run directory, created on first use.
setmetatable(nscope, {
  __index = function(_, key)
    if key == "run_dir" then return internal.run_dir() end
    return nil
  end,
})

-- KL(P || Q) between the distributions of two logit tensors, over the last dimension.
function nscope.kl_div(p_logits, q_logits)
  local lp, lq = p_logits:log_softmax(), q_logits:log_softmax()
  return (lp:exp() * (lp - lq)):sum(-1)
end

local Model = internal.model_methods
if Model then
  -- The k most likely next tokens of a logits vector [vocab]: { {id=, token=, prob=}, ... }.
  -- `id` is the model's 0-based token id (topk returns 1-based positions, hence the - 1).
  function Model.top_tokens(model, logits, k)
    k = k or 10
    local probs = logits:softmax()
    local p, idx = probs:topk(k)
    local out = {}
    for i = 1, k do
      local id = idx[i] - 1
      out[i] = { id = id, token = model:token_text(id), prob = p[i] }
    end
    return out
  end
end

package.loaded.nscope = nscope  -- require "nscope"
if unsafe then return end

-- ---- sandbox ----------------------------------------------------------------------------------------------
local function disabled(name)
  return function()
    error(name .. " is disabled in the nscope sandbox (run `nscope script --unsafe` to allow it)", 2)
  end
end
os.execute = disabled("os.execute")
os.exit = disabled("os.exit")
os.tmpname = disabled("os.tmpname")
os.setlocale = disabled("os.setlocale")
io.popen = disabled("io.popen")
io.tmpfile = disabled("io.tmpfile")
loadfile = disabled("loadfile")
dofile = disabled("dofile")
package.loadlib = disabled("package.loadlib")
debug = setmetatable({}, {
  __index = function(_, key)
    error("the debug library is disabled in the nscope sandbox (debug." .. tostring(key) ..
          "; run `nscope script --unsafe` to allow it)", 2)
  end,
})

-- Path policy: the host answers an absolute path, or nil and the reason.
local function checked(check, path, what)
  if type(path) ~= "string" then
    error("bad argument #1 to '" .. what .. "' (string expected, got " .. type(path) .. ")", 4)
  end
  local resolved, why = check(path, what)
  if not resolved then error(why, 4) end
  return resolved
end
-- (no tail calls: error levels count io.open -> readable -> checked)
local function readable(path, what) local p = checked(internal.check_read, path, what); return p end
local function writable(path, what) local p = checked(internal.check_write, path, what); return p end

local raw_open, raw_lines, raw_input, raw_output = io.open, io.lines, io.input, io.output
local raw_remove, raw_rename, raw_load = os.remove, os.rename, load

function io.open(path, mode)
  mode = mode or "r"
  if type(mode) == "string" and mode:find("[wa+]") then
    return raw_open(writable(path, "io.open"), mode)
  end
  return raw_open(readable(path, "io.open"), mode)
end

function io.lines(path, ...)
  if path == nil then return raw_lines() end
  return raw_lines(readable(path, "io.lines"), ...)
end

function io.input(file)
  if type(file) == "string" then return raw_input(readable(file, "io.input")) end
  return raw_input(file)
end

function io.output(file)
  if type(file) == "string" then return raw_output(writable(file, "io.output")) end
  return raw_output(file)
end

function os.remove(path) return raw_remove(writable(path, "os.remove")) end
function os.rename(from, to) return raw_rename(writable(from, "os.rename"), writable(to, "os.rename")) end

-- load: text chunks only (binary chunks can crash the VM).
function load(chunk, name, mode, ...)
  if mode ~= nil and mode ~= "t" then
    error("load: binary chunks are disabled in the nscope sandbox (mode must be \"t\"; " ..
          "run `nscope script --unsafe` to allow them)", 2)
  end
  if type(chunk) == "string" and chunk:byte(1) == 27 then
    error("load: binary chunks are disabled in the nscope sandbox (run `nscope script --unsafe` to allow them)", 2)
  end
  if select("#", ...) > 0 then return raw_load(chunk, name, "t", (...)) end
  return raw_load(chunk, name, "t")
end

-- require: preloaded modules (nscope) and Lua source files next to the script or below the current
-- directory; no C modules.
local script_dir = internal.script_dir
package.path = script_dir .. "/?.lua;" .. script_dir .. "/?/init.lua;./?.lua;./?/init.lua"
package.cpath = ""
local function lua_searcher(name)
  local path, err = package.searchpath(name, package.path)
  if not path then return "\n\t" .. err end
  local f = assert(raw_open(readable(path, "require"), "r"))
  local text = f:read("a")
  f:close()
  local chunk, msg = raw_load(text, "@" .. path, "t")
  if not chunk then error("error loading module '" .. name .. "' from file '" .. path .. "':\n\t" .. msg, 2) end
  return chunk, path
end
package.searchers = { package.searchers[1], lua_searcher }
