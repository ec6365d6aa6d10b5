// `json` exporter: results/<analysis-id>.json for every analysis, arrays beside it as
// results/<analysis-id>.<array>.npy (referenced from the JSON under "arrays").
#include <nscope/sdk.h>

namespace {

class JsonExporter : public nscope::Exporter {
public:
    void configure(const nscope::Params& params) override {
        for (const auto& [key, value] : params.items()) {
            if (key == "indent") {
                if (!value.is_number_integer() || value.get<int>() < -1 || value.get<int>() > 8)
                    throw nscope::InputError("json exporter: 'indent' must be an integer from -1 (compact) to 8");
                indent_ = value.get<int>();
            } else {
                throw nscope::InputError("json exporter: unknown parameter '" + key + "' (accepted: indent)");
            }
        }
    }

    void write(const nscope::ExportContext& ctx) override {
        nlohmann::json index = nlohmann::json::object();
        for (const auto& id : ctx.analysis_order) {
            const auto it = ctx.results.find(id);
            if (it == ctx.results.end() || it->second == nullptr) continue;
            const nscope::Result& result = *it->second;
            nlohmann::json doc = {{"id", id}, {"data", result.data}};
            if (auto plugin = ctx.analysis_plugins.find(id); plugin != ctx.analysis_plugins.end())
                doc["analyzer"] = plugin->second;
            for (const auto& [name, array] : result.arrays) {
                const std::string file = id + "." + name + ".npy";
                ctx.write_file("results/" + file, nscope::npy_encode(array));
                doc["arrays"][name] = {{"file", file}, {"shape", array.shape},
                                       {"dtype", array.is_int64 ? "int64" : "float32"}};
            }
            ctx.write_file("results/" + id + ".json", doc.dump(indent_, ' ', false,
                                                               nlohmann::json::error_handler_t::replace) + "\n");
            index[id] = "results/" + id + ".json";
        }
        ctx.write_file("results/index.json", index.dump(2) + "\n");
    }

private:
    int indent_ = 2;
};

}  // namespace

NSCOPE_EXPORTER_PLUGIN(JsonExporter, "json", "1.0.0", "results/<analysis>.json (+ .npy arrays)")
