-- Ablate or steer one MLP neuron with a Lua hook, and report what it does to the next-token distribution.
--
--   nscope script scripts/lua/ablate_neuron.lua -- [MODEL] [LAYER] [NEURON] [SCALE]
--
-- MODEL   model folder or hub id (default: the bundled models/kjv-tiny)
-- LAYER   block index as in hook names, 0-based (default 1)
-- NEURON  neuron of blocks.LAYER.mlp.hook_post, 1-based like every Lua index (default 5)
-- SCALE   0 ablates the neuron; e.g. 20 steers it (multiplies its activation) (default 0)
--
-- Shows: a Lua function as a hook that edits activations during the forward pass, capturing the edited hook,
-- KL divergence between clean and edited next-token distributions, top tokens before / after.
local model_path = arg[1] or "models/kjv-tiny"
local layer = math.tointeger(tonumber(arg[2] or "1"))
local neuron = math.tointeger(tonumber(arg[3] or "5"))
local scale = tonumber(arg[4] or "0")

local model = nscope.load(model_path)
local hook = ("blocks.%d.mlp.hook_post"):format(layer)
print(("model %s: %d layers, d_mlp %d; editing %s neuron %d (x%g)"):format(
  model.name, model.info.n_layers, model.info.d_mlp, hook, neuron, scale))

-- Text prompts when the model has a tokenizer, exact token ids otherwise.
local prompts
if model.info.has_tokenizer then
  prompts = { "In the beginning God created the heaven and the", "I stood upon the bank of the", "And the LORD spake unto" }
else
  prompts = { { ids = { 11, 42, 7, 300, 5 } }, { ids = { 250, 17, 999, 3 } }, { ids = { 1, 2, 3, 4, 5, 6 } } }
end

local clean = model:run(prompts, { hooks = { hook } })
local calls = 0
local edited = model:run(prompts, {
  hooks = {
    hook,  -- also capture it: captures see the tensor after the edit
    [hook] = function(t, ctx)
      -- t: [batch, pos, d_mlp] float32; edit in place (or return a new tensor of the same shape)
      calls = calls + 1
      t[{ {}, {}, neuron }] = t[{ {}, {}, neuron }] * scale
    end,
  },
})
assert(calls >= 1, "the hook function never ran")

local function top_list(logits)
  local parts = {}
  for _, tok in ipairs(model:top_tokens(logits, 5)) do
    parts[#parts + 1] = ("%q %.3f"):format(tok.token, tok.prob)
  end
  return table.concat(parts, ", ")
end

local total_kl = 0
for i = 1, #prompts do
  local last = clean.lengths[i]  -- the last real token of prompt i (prompts are right-padded)
  local before, after = clean.logits[{ i, last }], edited.logits[{ i, last }]
  local kl = nscope.kl_div(before, after)
  total_kl = total_kl + kl
  local was, now = clean[hook][{ i, last, neuron }], edited[hook][{ i, last, neuron }]
  assert(math.abs(now - was * scale) <= 1e-5 * (1 + math.abs(was * scale)),
    ("prompt %d: the edited neuron is %g, expected %g x %g"):format(i, now, was, scale))
  assert(kl >= 0, "KL divergence is negative")
  print(("prompt %d %s"):format(i, table.concat(clean.tokens[i], "")))
  print(("  neuron value at the last token: %.4f -> %.4f"):format(
    clean[hook][{ i, last, neuron }], edited[hook][{ i, last, neuron }]))
  print(("  KL(clean || edited) = %.6g"):format(kl))
  print("  top before: " .. top_list(before))
  print("  top after:  " .. top_list(after))
end
print(("mean KL over %d prompts: %.6g"):format(#prompts, total_kl / #prompts))
-- An edit that changes the neuron somewhere must move some next-token distribution.
if scale ~= 1 then assert(total_kl > 0, "editing the neuron changed no next-token distribution") end
print("ABLATION_OK")
