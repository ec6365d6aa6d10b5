// The nscope command line: global options, a lazily scanned plugin registry, and one
// add_<name>_command() per subcommand (each in its own cmd_<name>.cpp).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "core/plugin/registry.h"

namespace nscope {

struct GlobalOptions {
    std::vector<std::string> plugin_paths;  ///< --plugin-path (repeatable)
    std::string log_format = "human";       ///< --log-format human|json
    std::string log_level = "info";         ///< --log-level
    int threads = 0;                        ///< --threads (0 = all cores)
};

class CliContext {
public:
    GlobalOptions options;
    /// What the chosen subcommand does; returns the exit code.
    std::function<int()> action;

    /// Plugins from the search path, scanned on first use. Refusals are logged as warnings.
    PluginRegistry& plugins();

private:
    std::unique_ptr<PluginRegistry> registry_;
};

void add_plugins_command(CLI::App& app, CliContext& ctx);
/// nscope hooks MODEL [--json] [--filter PATTERN...]
void add_hooks_command(CLI::App& app, CliContext& ctx);
/// nscope info MODEL [--json] [--dtype float32|bfloat16]
void add_info_command(CLI::App& app, CliContext& ctx);
void add_tokenize_command(CLI::App& app, CliContext& ctx);
/// nscope run RECIPE [--out DIR] [--set k=v]... [--dry-run]; nscope rerun RUN_DIR
void add_run_command(CLI::App& app, CliContext& ctx, const std::string& command_line);
/// nscope train / finetune / train-tokenizer (and train-sae)
void add_train_commands(CLI::App& app, CliContext& ctx);
/// nscope train-sae MODEL --hook H --data FILE --out DIR (cmd_train_sae.cpp; registered by add_train_commands)
void add_train_sae_command(CLI::App& app, CliContext& ctx);
void add_script_command(CLI::App& app, CliContext& ctx);
/// nscope serve [MODEL...] [--runs DIR] [--host H] [--port P] [--token T]
void add_serve_command(CLI::App& app, CliContext& ctx);

/// Text for `nscope --version`: versions, build tag, LibTorch threads and the BLAS library in use.
std::string version_report();

/// Apply --threads (0 = hardware concurrency) to LibTorch's intra-op pool; returns the count in use.
int configure_threads(int requested);

}  // namespace nscope
