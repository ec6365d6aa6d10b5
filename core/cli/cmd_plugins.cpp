// nscope plugins — list loaded plugins (id, kind, version, path) and refused files.
#include <iostream>

#include <nlohmann/json.hpp>

#include "core/cli/cli.h"

namespace nscope {

void add_plugins_command(CLI::App& app, CliContext& ctx) {
    auto* cmd = app.add_subcommand("plugins", "List the plugins found on the plugin path");
    auto json_out = std::make_shared<bool>(false);
    cmd->add_flag("--json", *json_out, "Print one JSON object instead of a table");
    cmd->callback([&ctx, json_out] {
        ctx.action = [&ctx, json_out]() -> int {
            const PluginRegistry& reg = ctx.plugins();
            if (*json_out) {
                nlohmann::json j = {{"plugins", nlohmann::json::array()}, {"refused", nlohmann::json::array()}};
                for (const auto& p : reg.plugins())
                    j["plugins"].push_back({{"id", p.id}, {"kind", plugin_kind_name(p.kind)}, {"version", p.version},
                                            {"summary", p.summary}, {"build_tag", p.build_tag},
                                            {"path", p.path.string()}});
                for (const auto& r : reg.refusals())
                    j["refused"].push_back({{"path", r.path.string()}, {"reason", r.reason}});
                std::cout << j.dump(2) << "\n";
            } else {
                std::printf("%-16s %-9s %-9s %s\n", "ID", "KIND", "VERSION", "PATH");
                for (const auto& p : reg.plugins())
                    std::printf("%-16s %-9s %-9s %s\n", p.id.c_str(), plugin_kind_name(p.kind), p.version.c_str(),
                                p.path.c_str());
                if (reg.plugins().empty()) std::printf("(no plugins found)\n");
                for (const auto& r : reg.refusals())
                    std::fprintf(stderr, "refused %s: %s\n", r.path.c_str(), r.reason.c_str());
            }
            // A refused file in the plugin path is a problem the user must fix: exit 2.
            return reg.refusals().empty() ? 0 : 2;
        };
    });
}

}  // namespace nscope
