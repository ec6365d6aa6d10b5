local f = assert(io.open("out.txt", "w"))
f:write("hello\n")
f:close()
for line in io.lines(nscope.run_dir and "out.txt" or "out.txt") do print(line) end
print(os.remove("out.txt"), io.open("/etc/passwd"))
