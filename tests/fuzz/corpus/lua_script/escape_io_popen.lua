-- Sandbox escape: read a command's output.
local p = io.popen("echo escaped")
print(p:read("a"))
