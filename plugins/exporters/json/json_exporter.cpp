// `json` exporter: results/<analysis-id>.json for every analysis, arrays beside it as
// results/<analysis-id>.<array>.npy (referenced from the JSON under "arrays").
#include <nscope/sdk.h>

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

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
            nlohmann::json arrays = nlohmann::json::object();
            for (const auto& [name, array] : result.arrays) {
                const std::string file = id + "." + name + ".npy";
                ctx.write_file("results/" + file, nscope::npy_encode(array));
                arrays[name] = {{"file", file}, {"shape", array.shape}, {"dtype", array.is_int64 ? "int64" : "float32"}};
            }
            // The document refers to the result's data instead of copying it (top-k tables run to
            // hundreds of thousands of rows).
            const nlohmann::json id_json = id;
            std::vector<std::pair<std::string, const nlohmann::json*>> fields{{"id", &id_json}};
            nlohmann::json analyzer;
            if (auto plugin = ctx.analysis_plugins.find(id); plugin != ctx.analysis_plugins.end()) {
                analyzer = plugin->second;
                fields.emplace_back("analyzer", &analyzer);
            }
            if (!arrays.empty()) fields.emplace_back("arrays", &arrays);
            fields.emplace_back("data", &result.data);
            std::string out;
            write_object(out, fields, 0);
            out += "\n";
            ctx.write_file("results/" + id + ".json", out);
            index[id] = "results/" + id + ".json";
        }
        ctx.write_file("results/index.json", index.dump(2) + "\n");
    }

private:
    static std::string dump(const nlohmann::json& j) {
        return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    }

    void newline(std::string& out, int depth) const {
        out += '\n';
        out.append(static_cast<size_t>(indent_ * depth), ' ');
    }

    void write_object(std::string& out, const std::vector<std::pair<std::string, const nlohmann::json*>>& fields,
                      int depth) const {
        out += '{';
        for (size_t i = 0; i < fields.size(); ++i) {
            if (i) out += ',';
            if (indent_ >= 0) newline(out, depth + 1);
            out += dump(fields[i].first);
            out += indent_ >= 0 ? ": " : ":";
            write_value(out, *fields[i].second, depth + 1);
        }
        if (indent_ >= 0 && !fields.empty()) newline(out, depth);
        out += '}';
    }

    /// Indented like json.dump(indent), except that an array holding no objects or arrays of its own (a
    /// table row, a shape) stays on one line: a table is then one row per line.
    void write_value(std::string& out, const nlohmann::json& j, int depth) const {
        if (indent_ < 0 || j.is_primitive()) {
            out += dump(j);
        } else if (j.is_object()) {
            std::vector<std::pair<std::string, const nlohmann::json*>> fields;
            for (auto it = j.begin(); it != j.end(); ++it) fields.emplace_back(it.key(), &it.value());
            write_object(out, fields, depth);
        } else if (std::none_of(j.begin(), j.end(), [](const nlohmann::json& e) { return e.is_structured(); })) {
            out += dump(j);
        } else {
            out += '[';
            for (size_t i = 0; i < j.size(); ++i) {
                if (i) out += ',';
                newline(out, depth + 1);
                write_value(out, j[i], depth + 1);
            }
            if (!j.empty()) newline(out, depth);
            out += ']';
        }
    }

    int indent_ = 2;
};

}  // namespace

NSCOPE_EXPORTER_PLUGIN(JsonExporter, "json", "1.0.0", "results/<analysis>.json (+ .npy arrays)")
