-- Activation drift under fine-tuning, from a script: run the same prompts through a base model and one or more
-- fine-tuned checkpoints, compare them with the `drift` analyzer (per neuron: 1 − profile correlation with the
-- base, mean shift, top-k overlap; per layer: CKA to the base), then dig into the result by hand: the most
-- drifted neurons of each layer, and whether a neuron's mean moved as much as its profile.
--
--   nscope script scripts/lua/drift.lua -- BASE CHECKPOINT [CHECKPOINT ...]
--
-- Make a fine-tuning series first (a few minutes): bash scripts/make-finetune-series.sh
-- The same analysis runs from a recipe with `models:` (configs/drift.yaml, docs/analyses.md#drift), streamed
-- over the models batch by batch; here each model's activations are cached first (fine for a few prompts).
-- Shows: loading several models in one script, nscope.analyze with a list of caches (analyses that compare
-- models), reading a result's tables and arrays, and exporting it as JSON + report; writes drift.npy
-- ([checkpoints, layers] mean drift) into the run directory.
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

-- Every model sees the same prompts with the same hooks; the base comes first.
local base = nscope.load(base_path)
local hooks = base:hooks("blocks.*.mlp.hook_post")
local caches, labels = { base:run(prompts, { hooks = hooks }) }, { "base" }
for c, path in ipairs(checkpoints) do
  caches[#caches + 1] = nscope.load(path):run(prompts, { hooks = hooks })
  labels[#labels + 1] = "ckpt" .. c
end

local result = nscope.analyze("drift", caches, { k = 5, top_neurons = 3, labels = labels })

-- Tables: `layers` has one row per checkpoint and hook, `neurons` the most drifted neurons of each.
local function columns(t)
  local cols = {}
  for i, name in ipairs(t.columns) do cols[name] = i end
  return cols
end
local lc, nc = columns(result.tables.layers), columns(result.tables.neurons)
local drift = nscope.zeros { #checkpoints, #hooks }
for _, row in ipairs(result.tables.layers.rows) do
  drift[{ row[lc.checkpoint], row[lc.layer] + 1 }] = row[lc.mean_drift]
end
for c, path in ipairs(checkpoints) do
  print(("checkpoint %s"):format(path))
  for l, h in ipairs(hooks) do
    -- The analyzer's per-neuron arrays are [checkpoints, neurons]: this checkpoint's row.
    local shift = result.arrays[h .. ".mean_shift"][c]:abs()
    local top = {}
    for _, row in ipairs(result.tables.neurons.rows) do
      if row[nc.model] == labels[c + 1] and row[nc.hook] == h then
        top[#top + 1] = ("%d (%.2f)"):format(row[nc.neuron], row[nc.drift])
      end
    end
    print(("  %-24s mean drift %.4f  mean |shift| %.4f  most drifted neurons %s"):format(
      h, drift[{ c, l }], shift:mean(), table.concat(top, " ")))
  end
end
-- A fine-tuned checkpoint differs from its base somewhere (the base against itself would be all zeros).
assert(drift:max() > 0, "no neuron drifted between the base model and its checkpoints")
print("saved " .. drift:save("drift.npy"))
nscope.export("json", { drift = result })
print("DRIFT_OK")
