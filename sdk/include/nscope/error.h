// NeuronScope SDK — error types shared by the host and plugins.
//
// Errors carry the exit code the host reports (docs/architecture.md): InputError -> 2 (bad recipe, script, model
// files, plugin), RuntimeError -> 3 (a failure while running). Throw them from plugin code with a message
// that says what went wrong, where, and how to fix it; the host adds the plugin id.
#pragma once

#include <stdexcept>
#include <string>

// Exception types must be visible across shared objects so `catch (const nscope::InputError&)` in the host
// matches an exception thrown inside a plugin built with hidden visibility.
#define NSCOPE_VISIBLE __attribute__((visibility("default")))

namespace nscope {

/// Base of every NeuronScope error. `exit_code()` is what the CLI exits with.
class NSCOPE_VISIBLE Error : public std::runtime_error {
public:
    explicit Error(const std::string& what) : std::runtime_error(what) {}
    virtual int exit_code() const noexcept { return 3; }
};

/// Bad input: a recipe, script, model file, tokenizer file, plugin or parameter the user can fix. Exit 2.
class NSCOPE_VISIBLE InputError : public Error {
public:
    explicit InputError(const std::string& what) : Error(what) {}
    int exit_code() const noexcept override { return 2; }
};

/// A failure while running (out of memory, I/O error, a bug). Exit 3.
class NSCOPE_VISIBLE RuntimeError : public Error {
public:
    explicit RuntimeError(const std::string& what) : Error(what) {}
    int exit_code() const noexcept override { return 3; }
};

}  // namespace nscope
