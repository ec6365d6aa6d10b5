local t = nscope.tensor({1, 2, 3})
print(#arg, nscope.version, t)
local s = 0
for i = 1, 10 do s = s + i end
assert(s == 55)
local co = coroutine.wrap(function(x) coroutine.yield(x * 2) end)
print(co(4), string.format("%5.2f", math.pi), utf8.char(228, 8364))
local ok, err = pcall(error, {code = 1})
print(ok, type(err), table.concat({"a", "b"}, ","))
