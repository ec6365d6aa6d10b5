-- Compare a prompt pair layer by layer: cosine similarity of the residual stream at the last token.
--
--   nscope script scripts/lua/compare_prompts.lua -- [MODEL] ["PROMPT A" "PROMPT B"]
--
-- Shows: capturing every block's hook_resid_post with one pattern, slicing [prompt, position, :] with
-- 1-based indices, t:cosine, and writing the per-layer numbers as .npy into the script's run directory.
local model_path = arg[1] or "models/kjv-tiny"
local model = nscope.load(model_path)

local pair
if arg[2] and arg[3] then
  pair = { arg[2], arg[3] }
elseif model.info.has_tokenizer then
  pair = { "The engineer is a man", "The engineer is a woman" }
else
  -- Same context, different last token (the tiny test model has no tokenizer).
  pair = { { ids = { 464, 8, 318, 257, 582 } }, { ids = { 464, 8, 318, 257, 99 } } }
end

local cache = model:run(pair, { hooks = { "hook_embed", "blocks.*.hook_resid_post" } })
local la, lb = cache.lengths[1], cache.lengths[2]
print("A: " .. table.concat(cache.tokens[1], "|"))
print("B: " .. table.concat(cache.tokens[2], "|"))

local names = { "hook_embed" }
for _, h in ipairs(model:hooks("blocks.*.hook_resid_post")) do names[#names + 1] = h end

local cosines = nscope.zeros { #names }
for k, name in ipairs(names) do
  local a = cache[name][{ 1, la }]  -- [d_model], last token of A
  local b = cache[name][{ 2, lb }]
  cosines[k] = a:cosine(b)
  local by_hand = a:dot(b) / (a:norm() * b:norm())  -- the definition, as a check of t:cosine
  assert(math.abs(cosines[k] - by_hand) < 1e-4, ("%s: cosine %g, by hand %g"):format(name, cosines[k], by_hand))
  print(("%-28s cosine(A, B) = %.4f   |A-B| = %.4f"):format(name, cosines[k], (a - b):norm()))
end

local most = cosines:argmin()
for k = 1, #names do assert(cosines[most] <= cosines[k], "argmin is not the smallest cosine") end
print(("most different: %s (cosine %.4f)"):format(names[most], cosines[most]))
print("saved " .. cosines:save("cosine_by_layer.npy"))
print("COMPARE_OK")
