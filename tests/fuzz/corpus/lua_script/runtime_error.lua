-- A runtime error two calls deep, raised on line 3.
local function inner(t)
  return t.missing.field
end
local function outer()
  local v = inner({})
  return v
end
outer()
