// nscope — the NeuronScope host. See docs/architecture.md "CLI" for the contract.
#include <cstdio>
#include <iostream>

#include <spdlog/spdlog.h>

#include "core/cli/cli.h"
#include "core/model/tensor_allocator.h"
#include "core/util/allocator.h"
#include "core/util/log.h"
#include "core/util/text.h"
#include "nscope/error.h"
#include "nscope/version.h"

namespace nscope {

PluginRegistry& CliContext::plugins() {
    if (!registry_) {
        registry_ = std::make_unique<PluginRegistry>();
        std::vector<std::filesystem::path> extra(options.plugin_paths.begin(), options.plugin_paths.end());
        registry_->scan(PluginRegistry::search_path(extra));
    }
    return *registry_;
}

}  // namespace nscope

int main(int argc, char** argv) {
    using namespace nscope;
    tune_allocator();
    install_tensor_allocator();
    CliContext ctx;
    CLI::App app{"nscope " NSCOPE_VERSION_STRING " — look inside transformer language models", "nscope"};
    app.require_subcommand(0, 1);
    app.fallthrough();  // global options may follow the subcommand: `nscope plugins --plugin-path DIR`
    bool show_version = false;
    app.add_flag("--version", show_version, "Print versions, build tag, threads and the BLAS in use");
    app.add_option("--plugin-path", ctx.options.plugin_paths, "Extra plugin directory (repeatable)")
        ->type_name("DIR");
    app.add_option("--log-format", ctx.options.log_format, "Log format on stderr: human or json")
        ->check(CLI::IsMember({"human", "json"}));
    app.add_option("--log-level", ctx.options.log_level, "trace, debug, info, warn, error, off")
        ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));
    app.add_option("--threads", ctx.options.threads, "CPU threads for LibTorch (default: all cores)")
        ->check(CLI::NonNegativeNumber);

    add_plugins_command(app, ctx);
    add_hooks_command(app, ctx);
    add_info_command(app, ctx);
    add_tokenize_command(app, ctx);
    std::string command_line;
    for (int i = 0; i < argc; ++i) command_line += (i ? " " : "") + std::string(argv[i]);
    add_run_command(app, ctx, command_line);
    add_train_commands(app, ctx);
    add_script_command(app, ctx);
    add_serve_command(app, ctx);

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        const int rc = app.exit(e);
        return rc == 0 ? 0 : 2;  // usage errors are bad input
    }
    try {
        setup_logging(parse_log_format(ctx.options.log_format), ctx.options.log_level);
        configure_threads(ctx.options.threads);
        if (show_version) {
            std::cout << version_report() << "\n";
            return 0;
        }
        if (!ctx.action) {
            std::cout << app.help();
            return 0;
        }
        return ctx.action();
    } catch (const Error& e) {
        spdlog::error("{}", valid_utf8(e.what()));
        return e.exit_code();
    } catch (const std::exception& e) {
        spdlog::error("internal error: {}", valid_utf8(e.what()));
        return 3;
    }
}
