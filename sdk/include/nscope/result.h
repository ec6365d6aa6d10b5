// NeuronScope SDK — analysis results.
//
// A Result is JSON data (scalars, tables, figure data) plus named numeric arrays. The `json` exporter
// writes `results/<analysis-id>.json`; arrays are written beside it as `results/<analysis-id>.<name>.npy`
// and referenced from the JSON. The report, the SQLite neuron database and the dashboard render every
// analyzer's tables and figures generically (a built-in analyzer may have a bespoke report section, which
// then stands in for the tables / figures it shows). Conventions:
//
//   data["summary"]       = small object of headline numbers
//   data["tables"][name]  = {"columns": ["hook", "kl", ...], "rows": [["blocks.0...", 0.25, ...], ...],
//                            "title": "optional caption"}
//       Cells are numbers, strings, booleans or null. In SQLite every row becomes one JSON object keyed by
//       column (tables `result_tables` / `result_rows`, docs/sqlite.md).
//   data["figures"][name] = {"kind": K, "title": "...", "x_label": "...", "y_label": "...", ...data...}
//       K = "bar" | "line" | "scatter":
//             "x": [...], "y": [...]                       one series; or
//             "x": [...], "series": [{"name": "a", "y": [...]}, ...]   several (a series may give its own "x")
//             scatter also: "text": [...] hover label per point, "color": [...] numbers (colour scale) or
//             strings (one colour per category), "z": [...] for a 3-D scatter (and "z_label")
//       K = "heatmap":   "z": [[...], ...] rows of values, "x": column labels, "y": row labels,
//                        optional "zmid": 0 for a diverging colour scale centred there, "z_label", and
//                        "text": [[...], ...] a label written in each cell (same shape as z)
//       K = "histogram": "values": [...] (binned by the viewer), or "x": bin centres + "y": counts
//                        (+ optional "width")
//       Animation (a series over checkpoints or steps): "frames": [{"name": "step 1000", <the same data
//       keys as the kind uses>}, ...]; the viewer shows a slider and a play button, starting at frame 0.
//       Non-finite numbers are written as null in JSON and shown as gaps.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace nscope {

/// A dense row-major array (float32 or int64) owned by a result.
struct NdArray {
    std::vector<int64_t> shape;
    std::vector<float> f32;    ///< used when is_int64 == false
    std::vector<int64_t> i64;  ///< used when is_int64 == true
    bool is_int64 = false;

    static NdArray floats(std::vector<int64_t> shape, std::vector<float> values) {
        NdArray a;
        a.shape = std::move(shape);
        a.f32 = std::move(values);
        return a;
    }
    static NdArray ints(std::vector<int64_t> shape, std::vector<int64_t> values) {
        NdArray a;
        a.shape = std::move(shape);
        a.i64 = std::move(values);
        a.is_int64 = true;
        return a;
    }
    int64_t numel() const {
        int64_t n = 1;
        for (int64_t s : shape) n *= s;
        return n;
    }
};

/// A simple column table, stored in JSON as {"columns": [...], "rows": [[...], ...]}.
struct Table {
    std::vector<std::string> columns;
    nlohmann::json rows = nlohmann::json::array();

    void add_row(nlohmann::json row) { rows.push_back(std::move(row)); }
    nlohmann::json to_json() const { return {{"columns", columns}, {"rows", rows}}; }
};

/// What an analyzer returns from `finish()`.
struct Result {
    nlohmann::json data = nlohmann::json::object();
    std::map<std::string, NdArray> arrays;

    void set_table(const std::string& name, const Table& t) { data["tables"][name] = t.to_json(); }
    /// Moves the rows instead of copying them (tables of top examples run to hundreds of thousands of rows).
    void set_table(const std::string& name, Table&& t) {
        data["tables"][name] = {{"columns", std::move(t.columns)}, {"rows", std::move(t.rows)}};
    }
    void set_figure(const std::string& name, nlohmann::json fig) { data["figures"][name] = std::move(fig); }
    void set_array(const std::string& name, NdArray a) { arrays[name] = std::move(a); }
};

}  // namespace nscope
