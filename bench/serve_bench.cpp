// Latency of `nscope serve`'s prompt -> heatmap (POST /api/activations over loopback HTTP: tokenize-free ids,
// forward with every mlp.hook_post captured, top-32 neurons per layer, JSON) against one bare forward of the
// same prompt (ModelSession, no hooks, logits) timed in the same process, interleaved. Prints p50 / p95 of
// both and their ratios (no timed assertions anywhere).
//
//   nscope_bench_serve models/kjv-tiny --tokens 32 --rounds 200
//   nscope_bench_serve build/bench-gpt2-small --tokens 32 --rounds 50
#include <algorithm>
#include <chrono>
#include <iostream>
#include <thread>

#include <ATen/Parallel.h>
#include <CLI/CLI.hpp>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "core/model/model_loader.h"
#include "core/model/session.h"
#include "core/model/tensor_allocator.h"
#include "core/plugin/registry.h"
#include "core/serve/engine.h"
#include "core/serve/server.h"
#include "core/util/allocator.h"
#include "core/util/log.h"

using namespace nscope;
using Clock = std::chrono::steady_clock;

namespace {

double pct(std::vector<double> v, double q) {
    std::sort(v.begin(), v.end());
    return v[std::min(v.size() - 1, static_cast<size_t>(q * (v.size() - 1) + 0.5))];
}

}  // namespace

int main(int argc, char** argv) {
    tune_allocator();
    install_tensor_allocator();
    CLI::App app{"nscope serve latency benchmark"};
    std::string model;
    int64_t tokens = 32;
    int rounds = 100, threads = 0, top = 32;
    app.add_option("model", model)->required();
    app.add_option("--tokens", tokens);
    app.add_option("--rounds", rounds);
    app.add_option("--top", top);
    app.add_option("--threads", threads);
    CLI11_PARSE(app, argc, argv);
    setup_logging(LogFormat::Human, "warn");
    if (threads > 0) at::set_num_threads(threads);
    try {
        PluginRegistry reg;
        reg.scan(PluginRegistry::search_path({}));
        serve::Engine engine(reg, {model}, "float32");
        serve::ServeOptions o;
        o.port = 0;
        serve::Server server(engine, o);
        const int port = server.bind();
        std::thread th([&] { server.listen(); });

        // The baseline: a second copy of the model, so that the two never share a lock.
        LoadedModel bare = load_model(reg, model, ModelOptions{});
        ModelSession session(bare);
        const int64_t vocab = bare.handle.info.vocab_size;
        std::vector<int64_t> ids;
        for (int64_t i = 0; i < tokens; ++i) ids.push_back((i * 37 + 11) % vocab);
        const nlohmann::json body = {{"ids", ids}, {"top", top}, {"hook", "mlp.hook_post"}};
        httplib::Client client("127.0.0.1", port);
        client.set_read_timeout(120, 0);

        std::vector<double> forward_ms, heatmap_ms;
        for (int r = -5; r < rounds; ++r) {  // 5 warm-up rounds
            auto t0 = Clock::now();
            {
                at::NoGradGuard no_grad;
                ForwardRequest req;
                session.forward({ids}, nullptr, {0}, req);
            }
            auto t1 = Clock::now();
            auto res = client.Post("/api/activations", body.dump(), "application/json");
            auto t2 = Clock::now();
            if (!res || res->status != 200) throw std::runtime_error("heatmap request failed: " + (res ? res->body : "no answer"));
            if (r < 0) continue;
            forward_ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
            heatmap_ms.push_back(std::chrono::duration<double, std::milli>(t2 - t1).count());
        }
        server.stop();
        th.join();
        const double f50 = pct(forward_ms, 0.5), f95 = pct(forward_ms, 0.95);
        const double h50 = pct(heatmap_ms, 0.5), h95 = pct(heatmap_ms, 0.95);
        std::cout << nlohmann::json{{"model", model}, {"tokens", tokens}, {"rounds", rounds}, {"top", top},
                                    {"forward_p50_ms", f50}, {"forward_p95_ms", f95},
                                    {"heatmap_p50_ms", h50}, {"heatmap_p95_ms", h95},
                                    {"ratio_p50", h50 / f50}, {"ratio_p95", h95 / f95}}
                         .dump()
                  << "\n";
        return 0;
    } catch (const std::exception& e) {
        std::cerr << "error: " << e.what() << "\n";
        return 2;
    }
}
