-- Activation drift under fine-tuning: run the same prompts through a base model and one or more fine-tuned
-- checkpoints, and report per layer how far each checkpoint's MLP neurons moved from the base (cosine of
-- the per-neuron mean activation, mean |change|) and which neurons drifted most.
--
--   nscope script scripts/lua/drift.lua -- BASE CHECKPOINT [CHECKPOINT ...]
--
-- Make a fine-tuning series first (a few minutes): bash scripts/make-finetune-series.sh
-- The recommended way to measure drift is the `drift` analyzer in a recipe with `models:` (configs/drift.yaml,
-- docs/analyses.md#drift): per neuron profile correlation, mean shift, top-k overlap and per-hook CKA, streamed
-- over the models in lockstep. This script shows the same idea by hand, on per-neuron means.
-- Shows: loading several models in one script, pooling activations over real tokens with the mask, and
-- t:topk to rank neurons; writes drift.npy ([checkpoints, layers] mean |change|) into the run directory.
local base_path = arg[1] or "models/kjv-tiny"
local checkpoints = {}
for i = 2, #arg do checkpoints[#checkpoints + 1] = arg[i] end
if #checkpoints == 0 then error("give at least one fine-tuned checkpoint folder after the base model") end

local prompts = {
  "In the beginning God created the heaven and the earth.",
  "And the LORD spake unto Moses, saying,",
  "Blessed are the poor in spirit: for theirs is the kingdom of heaven.",
  "A fool and his money are soon parted.",
  "You will be successful in your work.",
  "There is no place like home.",
}

-- Mean activation of every neuron of every layer over the real tokens of all prompts: [layers][d_mlp].
local function neuron_means(model)
  local hooks = model:hooks("blocks.*.mlp.hook_post")
  local cache = model:run(prompts, { hooks = hooks })
  local mask = cache.mask:to("float32")            -- [n, p]
  local tokens = mask:sum()
  local means = {}
  for l, h in ipairs(hooks) do
    local acts = cache[h]                           -- [n, p, d_mlp], zero at padding
    means[l] = acts:sum(1):sum(1) / tokens          -- [d_mlp]
  end
  return hooks, means
end

local base = nscope.load(base_path)
local hooks, base_means = neuron_means(base)
local drift = nscope.zeros { #checkpoints, #hooks }
for c, path in ipairs(checkpoints) do
  local _, means = neuron_means(nscope.load(path))
  print(("checkpoint %s"):format(path))
  for l, h in ipairs(hooks) do
    local change = (means[l] - base_means[l]):abs()
    drift[{ c, l }] = change:mean()
    local values, idx = change:topk(3, 1)
    print(("  %-24s cosine %.4f  mean |change| %.4f  most drifted neurons %d %d %d"):format(
      h, means[l]:cosine(base_means[l]), change:mean(), idx[1] - 1, idx[2] - 1, idx[3] - 1))
  end
end
-- A fine-tuned checkpoint differs from its base somewhere (the base against itself would be all zeros).
assert(drift:max() > 0, "no neuron mean changed between the base model and its checkpoints")
print("saved " .. drift:save("drift.npy"))
print("DRIFT_OK")
