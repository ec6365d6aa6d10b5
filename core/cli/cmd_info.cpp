// nscope info MODEL — architecture, adapter, parameter count, dimensions, dtype and memory estimate.
#include <cstdio>
#include <filesystem>
#include <iostream>

#include <nlohmann/json.hpp>

#include "core/cli/cli.h"
#include "core/model/model_loader.h"
#include "core/model/safetensors.h"

namespace nscope {
namespace {

std::string human_bytes(double b) {
    const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (b >= 1024.0 && u < 4) b /= 1024.0, ++u;
    char buf[32];
    std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", b, units[u]);
    return buf;
}

}  // namespace

void add_info_command(CLI::App& app, CliContext& ctx) {
    auto* cmd = app.add_subcommand("info", "Describe a model: architecture, adapter, parameters, dims, memory");
    auto model = std::make_shared<std::string>();
    auto dtype = std::make_shared<std::string>("float32");
    auto json_out = std::make_shared<bool>(false);
    cmd->add_option("model", *model, "Model folder or HF hub id (HF cache)")->required();
    cmd->add_option("--dtype", *dtype, "Compute dtype for the memory estimate: float32 or bfloat16");
    cmd->add_flag("--json", *json_out, "Print one JSON object");
    cmd->callback([&ctx, model, dtype, json_out] {
        ctx.action = [&ctx, model, dtype, json_out]() -> int {
            const ModelHandle h = describe_model(ctx.plugins(), *model);
            const at::ScalarType dt = parse_model_dtype(*dtype);
            // Stored dtype and bytes from the safetensors headers (the data is mapped, not read).
            SafetensorsWeights w(h.files.weight_files);
            std::string stored;
            for (const auto& n : w.names()) {
                const auto t = w.get(n).scalar_type();
                stored = t == at::kFloat ? "float32" : t == at::kBFloat16 ? "bfloat16" : t == at::kHalf ? "float16"
                                                                                       : std::string(c10::toString(t));
                break;
            }
            uint64_t file_bytes = 0;
            for (const auto& f : h.files.weight_files) file_bytes += std::filesystem::file_size(f);
            const double weight_mem = static_cast<double>(h.info.n_params) * static_cast<double>(c10::elementSize(dt));
            const std::string dtname = dt == at::kFloat ? "float32" : "bfloat16";
            if (*json_out) {
                nlohmann::json j = h.info.to_json();
                j["model"] = *model;
                j["dir"] = h.files.dir.string();
                std::vector<std::string> files;
                for (const auto& f : h.files.weight_files) files.push_back(f.string());
                j["weight_files"] = files;
                j["tokenizer"] = h.files.tokenizer_json.string();
                j["stored_dtype"] = stored;
                j["compute_dtype"] = dtname;
                j["weight_file_bytes"] = file_bytes;
                j["weight_memory_bytes"] = static_cast<uint64_t>(weight_mem);
                j["n_hooks"] = h.hooks.size();
                std::cout << j.dump(2) << "\n";
                return 0;
            }
            const auto& i = h.info;
            std::printf("model         %s\n", model->c_str());
            std::printf("folder        %s\n", h.files.dir.c_str());
            std::printf("architecture  %s (model_type %s)\n", i.architecture.c_str(), i.model_type.c_str());
            std::printf("adapter       %s %s\n", h.plugin->id.c_str(), h.plugin->version.c_str());
            std::printf("parameters    %lld (%.2fM)\n", static_cast<long long>(i.n_params), i.n_params / 1e6);
            std::printf("layers        %lld\n", static_cast<long long>(i.n_layers));
            std::printf("d_model       %lld\n", static_cast<long long>(i.d_model));
            std::printf("heads         %lld (kv heads %lld, d_head %lld)\n", static_cast<long long>(i.n_heads),
                        static_cast<long long>(i.n_kv_heads), static_cast<long long>(i.d_head));
            std::printf("d_mlp         %lld%s\n", static_cast<long long>(i.d_mlp), i.gated_mlp ? " (gated)" : "");
            std::printf("vocab         %lld\n", static_cast<long long>(i.vocab_size));
            std::printf("positions     %lld (%s)\n", static_cast<long long>(i.max_positions), i.positional.c_str());
            std::printf("attention     %s\n", i.causal ? "causal" : "bidirectional");
            std::printf("activation    %s, norm %s\n", i.activation.c_str(), i.norm.c_str());
            std::printf("dtype         stored %s, compute %s\n", stored.c_str(), dtname.c_str());
            std::printf("memory        weights %s in %s (files %s, memory-mapped)\n", human_bytes(weight_mem).c_str(),
                        dtname.c_str(), human_bytes(static_cast<double>(file_bytes)).c_str());
            std::printf("hooks         %zu (nscope hooks %s)\n", h.hooks.size(), model->c_str());
            std::printf("tokenizer     %s\n", h.files.tokenizer_json.empty() ? "(none)" : h.files.tokenizer_json.c_str());
            return 0;
        };
    });
}

}  // namespace nscope
