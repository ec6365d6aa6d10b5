-- Sandbox escape: rename a file outside the run directory.
os.rename("/etc/hostname", "/tmp/nscope-hostname")
