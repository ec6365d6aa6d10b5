-- Sandbox escape: climb out of the run directory with a relative path.
local t = nscope.zeros{2}
t:save("../../escaped.npy")
