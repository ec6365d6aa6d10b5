// nscope serve [MODEL...] [--runs DIR] [--host 127.0.0.1] [--port 8080] [--token T] (docs/serve.md)
#include <chrono>
#include <thread>

#include <spdlog/spdlog.h>

#include "core/cli/cli.h"
#include "core/run/interrupt.h"
#include "core/serve/engine.h"
#include "core/serve/server.h"

namespace nscope {

namespace {
struct ServeArgs {
    std::vector<std::string> models;
    std::string dtype = "float32";
    serve::ServeOptions options;
    serve::EngineLimits limits;
};
}  // namespace

void add_serve_command(CLI::App& app, CliContext& ctx) {
    auto args = std::make_shared<ServeArgs>();
    auto* cmd = app.add_subcommand("serve", "Live dashboard and JSON API: prompt -> neurons, heads, logit lens, edits");
    cmd->add_option("models", args->models, "Models to serve (paths or hub ids, as recipes name them)")
        ->type_name("MODEL...");
    cmd->add_option("--runs", args->options.runs_dir, "Run directories to browse (reports, neuron databases)")
        ->type_name("DIR");
    cmd->add_option("--host", args->options.host, "Address to bind (default 127.0.0.1; others need --token)");
    cmd->add_option("--port", args->options.port, "Port (default 8080; 0 picks a free one)");
    cmd->add_option("--token", args->options.token, "Bearer token clients must send (required off loopback)");
    cmd->add_option("--dtype", args->dtype, "float32, bfloat16 or int8");
    cmd->add_option("--max-tokens", args->limits.max_tokens, "Tokens per prompt (default 256)");
    cmd->add_option("--max-body", args->options.max_body, "Request body limit in bytes (default 1 MiB)");
    cmd->callback([&ctx, args] {
        ctx.action = [&ctx, args]() -> int {
            serve::check_serve_options(args->options);  // before loading anything
            serve::Engine engine(ctx.plugins(), args->models, args->dtype, args->limits);
            serve::Server server(engine, args->options);
            const int port = server.bind();
            install_interrupt_handlers();
            // Signals only set a flag; this thread turns it into a clean stop.
            std::thread watcher([&server] {
                while (!interrupt_requested()) std::this_thread::sleep_for(std::chrono::milliseconds(100));
                server.stop();
            });
            watcher.detach();
            const std::string host = args->options.host.find(':') != std::string::npos ? "[" + args->options.host + "]"
                                                                                       : args->options.host;
            // Tests and scripts read this line to learn the port.
            spdlog::info("nscope serve: listening on http://{}:{}/", host, port);
            server.listen();
            spdlog::info("nscope serve: stopped");
            return 0;
        };
    });
}

}  // namespace nscope
