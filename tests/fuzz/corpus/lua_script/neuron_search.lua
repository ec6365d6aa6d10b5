-- A small neuron search: which tokens make one MLP neuron fire most, and which neurons are most active
-- overall; then the same corpus through the `stats` analyzer plugin and the `json` exporter.
--
--   nscope script scripts/lua/neuron_search.lua -- [MODEL] [LAYER] [NEURON] [K]
--
-- Shows: masking padding, t:topk over flattened [prompt, position] activations, mapping flat 1-based
-- indices back to (prompt, position), nscope.analyze / nscope.export with a cache.
local model_path = arg[1] or "models/kjv-tiny"
local layer = math.tointeger(tonumber(arg[2] or "0"))
local neuron = math.tointeger(tonumber(arg[3] or "1"))
local k = math.tointeger(tonumber(arg[4] or "5"))

local model = nscope.load(model_path)
local hook = ("blocks.%d.mlp.hook_post"):format(layer)

local prompts = {}
if model.info.has_tokenizer then
  prompts = { "In the beginning God created the heaven and the earth.",
              "And Pharaoh said unto Joseph, In my dream, behold, I stood upon the bank of the river:",
              "The LORD is my shepherd; I shall not want.",
              "Wherefore then gavest not thou my money into the bank?",
              "And the king said unto the woman, What aileth thee?" }
else
  for i = 1, 6 do  -- pseudo-random token ids of different lengths
    local ids = {}
    for j = 1, 4 + i do ids[j] = (i * 131 + j * 37) % model.info.vocab_size end
    prompts[i] = { ids = ids, labels = { group = (i % 2 == 0) and "even" or "odd" } }
  end
end

local cache = model:run(prompts, { hooks = { hook }, batch_size = 4 })
local acts = cache[hook]                      -- [n_prompts, max_pos, d_mlp], zero at padding
local n, P = acts:size(1), acts:size(2)

-- Padding must never win: push padded positions far below any activation.
local col = acts[{ {}, {}, neuron }]          -- [n_prompts, max_pos]
local masked = col + (cache.mask - 1) * 1e9
local values, flat = masked:flatten():topk(k)
print(("top %d tokens for %s neuron %d:"):format(k, hook, neuron))
for r = 1, k do
  local idx = flat[r] - 1                     -- 0-based flat index over [n, P]
  local p, pos = idx // P + 1, idx % P + 1    -- back to 1-based (prompt, position)
  local toks = cache.tokens[p]
  local context = table.concat(toks, "", math.max(1, pos - 3), pos - 1)
  print(("  %d. %8.4f  prompt %d pos %d  %s[[%s]]"):format(r, values[r], p, pos, context, toks[pos]))
end

-- Most active neurons overall (mean over real tokens).
local real = cache.mask:unsqueeze(3):float()  -- [n, P, 1]
local mean = (acts * real):sum(1):sum(1) / real:sum()
local mv, mi = mean:topk(3)
for r = 1, 3 do print(("most active neuron #%d: %d (mean %.4f)"):format(r, mi[r], mv[r])) end

-- The same data through plugins: stats analyzer -> json exporter (into the script's run directory).
local stats = nscope.analyze("stats", cache, { threshold = 0.1 })
print(("stats: %d tokens, %d neurons"):format(stats.summary.tokens, stats.summary.neurons))
local plugin_mean = stats.arrays[hook .. ".mean"]
print(("stats mean of neuron %d: %.4f (script: %.4f)"):format(neuron, plugin_mean[neuron], mean[neuron]))
assert(math.abs(plugin_mean[neuron] - mean[neuron]) <= 1e-4 * (1 + math.abs(mean[neuron])),
  "the stats plugin and the script disagree on the neuron's mean")
for r = 2, k do assert(values[r] <= values[r - 1], "top values are not in descending order") end
assert(values[k] > -1e8, "a padded position made the top list")
print("exported to " .. nscope.export("json", { stats = stats }))
print("NEURON_SEARCH_OK")
