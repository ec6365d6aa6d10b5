-- An error deep inside a hook function called during the forward pass (line 5).
local model = nscope.load(arg[1] or "tests/fixtures/models/gpt2")
local function scale_neuron(t, factor)
  local missing = nil
  return t * missing.factor
end
local function hook(t, ctx)
  return scale_neuron(t, 2)
end
model:run({ { ids = { 1, 2, 3 } } }, { hooks = { ["blocks.1.mlp.hook_post"] = hook } })
print("not reached")
