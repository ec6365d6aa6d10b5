-- NeuronLens range study ("Neurons speak in ranges", arXiv 2502.06809): per concept, mask that concept's
-- activation ranges in its salient MLP neurons (op mask_ranges) against zeroing the same neurons entirely, and
-- measure the next-token loss and accuracy on held-out prompts of the concept itself (the target) and of the
-- other concepts (collateral damage). Mode "none" is the control: the same evaluation without a mask.
--
--   nscope script scripts/lua/ranges_study.lua -- [MODEL] [SALIENT] [TAU]
--
-- Concepts: four books of the KJV (ranges_study_prompts.lua, 24 verses each; odd verses fit the ranges, even
-- verses are held out). Writes ranges_study.csv and ranges_study.json to the run directory and prints the table.
local model_path = arg[1] or "models/kjv-tiny"
local salient = tonumber(arg[2] or "0.05")
local tau = tonumber(arg[3] or "2")
local data = require("ranges_study_prompts")

local model = nscope.load(model_path)
local hooks = "blocks.*.mlp.hook_post"

local fit, eval = {}, {}
for _, concept in ipairs(data.concepts) do
  for i, text in ipairs(data.verses[concept]) do
    local p = { text = text, labels = { concept = concept } }
    if i % 2 == 1 then fit[#fit + 1] = p else eval[#eval + 1] = p end
  end
end

-- 1. The ranges of each concept's salient neurons, from the fit prompts.
local fit_cache = model:run(fit, { hooks = { hooks }, logits = false })
local lens = nscope.analyze("ranges", fit_cache, { label = "concept", salient = salient, tau = tau })

-- 2. Loss and accuracy per concept on the held-out prompts, with a list of interventions.
local function evaluate(interventions)
  local cache = model:run(eval, { hooks = { "hook_logits" }, interventions = interventions, logits = false })
  local r = nscope.analyze("next_token", cache, { k = 1, loss_by = "concept" })
  local out = {}
  for _, row in ipairs(r.tables.loss_by_label.rows) do   -- value, prompts, predicted, loss, accuracy
    out[row[1]] = { loss = row[4], accuracy = row[5], predicted = row[3] }
  end
  return out
end

-- The interventions a recipe's `{from: lens.json, concept: C}` (mode ranges) or `mode: neurons` expands to.
local function masks(concept, mode)
  local list, count = {}, 0
  for hook, h in pairs(lens.concepts[concept].hooks) do
    count = count + #h.neurons
    if mode == "ranges" then
      list[#list + 1] = { hook = hook, op = "mask_ranges", neurons = h.neurons, lo = h.lo, hi = h.hi }
    else
      list[#list + 1] = { hook = hook, op = "zero", neurons = h.neurons }
    end
  end
  return list, count
end

local base = evaluate({})
local again = evaluate({})   -- the control: an unmasked run again (mode "none"), every delta 0
local rows = {}
for _, target in ipairs(data.concepts) do
  for _, mode in ipairs({ "none", "ranges", "neurons" }) do
    local list, count = {}, 0
    if mode ~= "none" then list, count = masks(target, mode) end
    local m = mode == "none" and again or evaluate(list)
    local other_dl, other_da, n = 0, 0, 0
    for _, c in ipairs(data.concepts) do
      if c ~= target then
        other_dl = other_dl + (m[c].loss - base[c].loss)
        other_da = other_da + (m[c].accuracy - base[c].accuracy)
        n = n + 1
      end
    end
    rows[#rows + 1] = {
      concept = target, mode = mode, neurons = count,
      target_loss = base[target].loss, target_loss_masked = m[target].loss,
      target_delta_loss = m[target].loss - base[target].loss,
      other_delta_loss = other_dl / n,
      target_accuracy = base[target].accuracy, target_accuracy_masked = m[target].accuracy,
      target_delta_accuracy = m[target].accuracy - base[target].accuracy,
      other_delta_accuracy = other_da / n,
    }
  end
end

-- 3. The table: printed, as CSV and as JSON.
local columns = { "concept", "mode", "neurons", "target_loss", "target_loss_masked", "target_delta_loss",
                  "other_delta_loss", "target_accuracy", "target_accuracy_masked", "target_delta_accuracy",
                  "other_delta_accuracy" }
local function cell(v)
  if type(v) == "number" and math.type(v) == "float" then return string.format("%.6f", v) end
  return tostring(v)
end
local csv = { table.concat(columns, ",") }
local json = {}
for _, r in ipairs(rows) do
  local cells, fields = {}, {}
  for _, c in ipairs(columns) do
    cells[#cells + 1] = cell(r[c])
    fields[#fields + 1] = string.format("%q: %s", c, type(r[c]) == "string" and string.format("%q", r[c]) or cell(r[c]))
  end
  csv[#csv + 1] = table.concat(cells, ",")
  json[#json + 1] = "    {" .. table.concat(fields, ", ") .. "}"
end
local f = assert(io.open("ranges_study.csv", "w"))
f:write(table.concat(csv, "\n"), "\n")
f:close()
f = assert(io.open("ranges_study.json", "w"))
f:write(string.format('{\n  "model": %q,\n  "salient": %s,\n  "tau": %s,\n  "fit_prompts": %d,\n  "eval_prompts": %d,\n',
                      model_path, cell(salient), cell(tau), #fit, #eval))
f:write('  "rows": [\n', table.concat(json, ",\n"), "\n  ]\n}\n")
f:close()

print(string.format("NeuronLens range study: %d concepts, salient %.3f of each MLP layer, tau %.1f, %d fit / %d held-out prompts",
                    #data.concepts, salient, tau, #fit, #eval))
print(string.format("%-9s %-8s %7s %9s %9s %9s %9s %8s %8s", "concept", "mask", "neurons", "loss", "masked",
                    "d_target", "d_others", "d_acc", "d_acc_o"))
for _, r in ipairs(rows) do
  print(string.format("%-9s %-8s %7d %9.4f %9.4f %9.4f %9.4f %8.4f %8.4f", r.concept, r.mode, r.neurons, r.target_loss,
                      r.target_loss_masked, r.target_delta_loss, r.other_delta_loss, r.target_delta_accuracy,
                      r.other_delta_accuracy))
end
print("table: " .. nscope.run_dir .. "/ranges_study.csv")
print("RANGES_STUDY_OK")
