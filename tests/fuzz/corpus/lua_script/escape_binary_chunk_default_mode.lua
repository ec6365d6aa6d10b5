-- Sandbox escape: a binary chunk without naming the mode.
local bin = string.dump(function() return 1 end)
local f = load(bin)
