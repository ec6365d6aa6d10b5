// Builds the precompiled ATen header that nscope_model, the model plugins and the tests reuse.
