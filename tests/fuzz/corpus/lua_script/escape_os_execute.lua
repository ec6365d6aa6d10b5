-- Sandbox escape: run a shell command.
os.execute("echo escaped")
