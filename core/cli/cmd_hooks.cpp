// nscope hooks MODEL — every hook point of a model with its shape, from config.json alone.
#include <iostream>

#include <nlohmann/json.hpp>

#include "core/cli/cli.h"
#include "core/model/hook_match.h"
#include "core/model/model_loader.h"

namespace nscope {

void add_hooks_command(CLI::App& app, CliContext& ctx) {
    auto* cmd = app.add_subcommand("hooks", "List a model's hook points with their shapes (reads config.json only)");
    auto model = std::make_shared<std::string>();
    auto json_out = std::make_shared<bool>(false);
    auto filter = std::make_shared<std::vector<std::string>>();
    cmd->add_option("model", *model, "Model folder or HF hub id (HF cache)")->required();
    cmd->add_flag("--json", *json_out, "Print one JSON object");
    cmd->add_option("--filter", *filter, "Only hooks matching these patterns (globs, {a..b} ranges)");
    cmd->callback([&ctx, model, json_out, filter] {
        ctx.action = [&ctx, model, json_out, filter]() -> int {
            const ModelHandle h = describe_model(ctx.plugins(), *model);
            std::vector<std::string> names;
            if (!filter->empty()) names = match_hooks(h.hooks, *filter);
            auto selected = [&](const std::string& n) {
                return filter->empty() || std::find(names.begin(), names.end(), n) != names.end();
            };
            if (*json_out) {
                nlohmann::json j = {{"model", *model}, {"dir", h.files.dir.string()},
                                    {"architecture", h.info.architecture}, {"adapter", h.info.adapter},
                                    {"hooks", nlohmann::json::array()}};
                for (const auto& p : h.hooks)
                    if (selected(p.name))
                        j["hooks"].push_back({{"name", p.name}, {"dims", p.dims}, {"shape", p.shape},
                                              {"shape", hook_shape_string(p)}});
                std::cout << j.dump(2) << "\n";
            } else {
                for (const auto& p : h.hooks)
                    if (selected(p.name)) std::cout << p.name << " " << hook_shape_string(p) << "\n";
            }
            return 0;
        };
    });
}

}  // namespace nscope
