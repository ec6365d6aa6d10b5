-- Sandbox escape: write outside the run directory.
local f = io.open("/tmp/nscope-escaped.txt", "w")
f:write("escaped")
f:close()
