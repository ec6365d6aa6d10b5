-- Sandbox escape: a precompiled binary chunk can crash the VM.
local bin = string.dump(function() return 1 end)
local f = load(bin, "bin", "b")
