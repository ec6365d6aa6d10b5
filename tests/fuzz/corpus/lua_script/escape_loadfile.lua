-- Sandbox escape: run another file.
local f = loadfile("/etc/hostname")
