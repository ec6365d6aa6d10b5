// `csv` exporter: every table of every result as results/<analysis-id>.<table>.csv (RFC 4180: CRLF line
// ends, a header row, fields with a comma, quote, CR or LF quoted with quotes doubled).
// Cells: strings as is, numbers in shortest round-trip form, booleans true/false, null and NaN empty,
// lists / objects as compact JSON text.
#include <nscope/sdk.h>

#include <cmath>

#include "nscope_common/params.h"

namespace {

std::string cell(const nlohmann::json& v) {
    if (v.is_null()) return "";
    if (v.is_string()) return v.get<std::string>();
    if (v.is_boolean()) return v.get<bool>() ? "true" : "false";
    if (v.is_number_float() && !std::isfinite(v.get<double>())) return "";
    return v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string quote(const std::string& s) {
    if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
    std::string out = "\"";
    for (char c : s) {
        if (c == '"') out += '"';
        out += c;
    }
    return out + "\"";
}

class CsvExporter : public nscope::Exporter {
public:
    void configure(const nscope::Params& params) override { nscope::common::ParamReader("csv", params, {}); }

    void write(const nscope::ExportContext& ctx) override {
        for (const auto& id : ctx.analysis_order) {
            const auto it = ctx.results.find(id);
            if (it == ctx.results.end() || !it->second) continue;
            const auto& data = it->second->data;
            if (!data.contains("tables") || !data["tables"].is_object()) continue;
            for (const auto& [name, table] : data["tables"].items()) {
                std::string out;
                const auto& cols = table.value("columns", nlohmann::json::array());
                for (size_t i = 0; i < cols.size(); ++i) {
                    if (i) out += ',';
                    out += quote(cell(cols[i]));
                }
                out += "\r\n";
                for (const auto& row : table.value("rows", nlohmann::json::array())) {
                    for (size_t i = 0; i < row.size(); ++i) {
                        if (i) out += ',';
                        out += quote(cell(row[i]));
                    }
                    out += "\r\n";
                }
                ctx.write_file("results/" + id + "." + name + ".csv", out);
            }
        }
    }
};

}  // namespace

NSCOPE_EXPORTER_PLUGIN(CsvExporter, "csv", "1.0.0", "results/<analysis>.<table>.csv for every result table")
