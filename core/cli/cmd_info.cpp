// nscope info MODEL — architecture, adapter, parameter count, dimensions, dtype and the memory estimate per
// dtype (weights + the forward + captures at --batch x --tokens of the --hooks selection).
#include <cstdio>
#include <filesystem>
#include <iostream>

#include <nlohmann/json.hpp>

#include "core/cli/cli.h"
#include "core/model/hook_match.h"
#include "core/model/memory_estimate.h"
#include "core/model/model_loader.h"
#include "core/model/safetensors.h"
#include "core/util/memory.h"

namespace nscope {
void add_info_command(CLI::App& app, CliContext& ctx) {
    auto* cmd = app.add_subcommand("info", "Describe a model: architecture, adapter, parameters, dims, memory");
    auto model = std::make_shared<std::string>();
    auto dtype = std::make_shared<std::string>("float32");
    auto json_out = std::make_shared<bool>(false);
    auto batch = std::make_shared<int64_t>(8);
    auto tokens = std::make_shared<int64_t>(128);
    auto hooks = std::make_shared<std::string>("*");
    cmd->add_option("model", *model, "Model folder or HF hub id (HF cache)")->required();
    cmd->add_option("--dtype", *dtype, "dtype of the headline weight figure: float32, bfloat16 or int8");
    cmd->add_option("--batch", *batch, "Batch size of the memory estimate (default 8)")->check(CLI::Range(1, 1 << 20));
    cmd->add_option("--tokens", *tokens, "Tokens per prompt of the memory estimate (default 128)")
        ->check(CLI::Range(1, 1 << 24));
    cmd->add_option("--hooks", *hooks, "Hooks captured in the memory estimate (pattern; default '*': every hook)")
        ->type_name("PATTERN");
    cmd->add_flag("--json", *json_out, "Print one JSON object");
    cmd->callback([&ctx, model, dtype, json_out, batch, tokens, hooks] {
        ctx.action = [&ctx, model, dtype, json_out, batch, tokens, hooks]() -> int {
            const ModelHandle h = describe_model(ctx.plugins(), *model);
            const ModelOptions chosen = parse_model_dtype(*dtype);
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
            const double weight_mem = static_cast<double>(weight_bytes(h.info, chosen));
            const std::string dtname = model_dtype_name(chosen);
            std::vector<HookPoint> captured;
            const auto names = match_hooks(h.hooks, {*hooks});
            bool logits = false;
            for (const auto& hp : h.hooks)
                if (std::find(names.begin(), names.end(), hp.name) != names.end())
                    captured.push_back(hp), logits |= hp.name == "hook_logits";
            std::vector<std::pair<std::string, MemoryEstimate>> per_dtype;
            for (const auto& d : model_dtype_names())
                per_dtype.emplace_back(d, estimate_memory(h.info, captured, parse_model_dtype(d), *batch, *tokens,
                                                          logits, current_rss_bytes()));
            if (*json_out) {
                nlohmann::json j = h.info.to_json();
                j["model"] = *model;
                j["dir"] = h.files.dir.string();
                std::vector<std::string> files;
                for (const auto& f : h.files.weight_files) files.push_back(f.string());
                j["weight_files"] = files;
                j["tokenizer"] = h.files.tokenizer_json.string();
                j["stored_dtype"] = stored;
                j["dtype"] = dtname;
                j["compute_dtype"] = chosen.int8_weights ? std::string("float32") : dtname;
                j["weight_file_bytes"] = file_bytes;
                j["weight_memory_bytes"] = static_cast<uint64_t>(weight_mem);
                nlohmann::json est = {{"batch", *batch}, {"tokens", *tokens}, {"hooks", *hooks}};
                for (const auto& [d, e] : per_dtype) est[d] = e.to_json();
                j["memory_estimate"] = est;
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
            std::printf("dtype         stored %s, %s\n", stored.c_str(),
                        chosen.int8_weights ? "int8 linear weights, compute float32" : ("compute " + dtname).c_str());
            std::printf("memory        weights %s in %s (files %s, memory-mapped)\n", human_bytes(weight_mem).c_str(),
                        dtname.c_str(), human_bytes(static_cast<double>(file_bytes)).c_str());
            std::printf("memory        estimated peak at batch %lld x %lld tokens, capturing %zu hook%s ('%s'):\n",
                        static_cast<long long>(*batch), static_cast<long long>(*tokens), captured.size(),
                        captured.size() == 1 ? "" : "s", hooks->c_str());
            std::printf("              %-9s %11s %11s %11s %11s %11s\n", "dtype", "weights", "forward", "captures",
                        "runtime", "total");
            for (const auto& [d, e] : per_dtype)
                std::printf("              %-9s %11s %11s %11s %11s %11s\n", d.c_str(),
                            human_bytes(static_cast<double>(e.weights)).c_str(),
                            human_bytes(static_cast<double>(e.forward)).c_str(),
                            human_bytes(static_cast<double>(e.captures)).c_str(),
                            human_bytes(static_cast<double>(e.runtime)).c_str(),
                            human_bytes(static_cast<double>(e.total())).c_str());
            std::printf("hooks         %zu (nscope hooks %s)\n", h.hooks.size(), model->c_str());
            std::printf("tokenizer     %s\n", h.files.tokenizer_json.empty() ? "(none)" : h.files.tokenizer_json.c_str());
            return 0;
        };
    });
}

}  // namespace nscope
