-- Sandbox escape: run another file.
dofile("/etc/hostname")
