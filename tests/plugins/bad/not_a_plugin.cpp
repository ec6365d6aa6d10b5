// A valid shared library that is not a NeuronScope plugin (exports no nscope_plugin_entry).
extern "C" __attribute__((visibility("default"))) int some_unrelated_function(int x) { return x + 1; }
