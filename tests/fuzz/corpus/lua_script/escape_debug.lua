-- Sandbox escape: the debug library (upvalues, registry).
print(debug.getregistry())
