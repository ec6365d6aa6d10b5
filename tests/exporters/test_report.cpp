// The report exporter: report.html from a real run (stats, dead, topk, compare, heatmap) opened in headless
// Chromium — the page's own script reports the plots it rendered and every JavaScript error into
// #nscope-status, which the dumped DOM shows. Also: self-containment (no URL the page would load), escaping of
// user strings (a label and a title with "</script>"), sections omitted for absent analyses, bad parameters,
// and the generic rendering of any analyzer's figures and tables (result.h conventions): every figure kind on
// synthetic results, malformed specs shown as notes, a real run with an out-of-tree plugin and next_token, and
// the section of an attached SAE (its metrics and density histogram equal to its sae.json).
#include <catch2/catch.hpp>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>

#include <nlohmann/json.hpp>

#include "core/util/files.h"
#include "tests/analyzers/synthetic.h"
#include "tests/support/cli.h"

namespace fs = std::filesystem;
using namespace nscope;
using nscope::test::run_nscope;

namespace {

const std::string kGpt2 = std::string(NSCOPE_SOURCE_DIR) + "/tests/fixtures/models/gpt2";
const char* kEvil = "</script><script>window.__pwned=1</script><b>&amp;";

std::string chromium_path() {
    if (const char* env = std::getenv("NSCOPE_CHROMIUM")) return fs::exists(env) ? env : "";
    for (const char* p : {"/usr/bin/chromium", "/usr/bin/chromium-browser"})
        if (fs::exists(p)) return p;
    return "";
}

std::string shell_quote(const std::string& s) {
    std::string out = "'";
    for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return out + "'";
}

/// Run headless Chromium on `html` with the given extra flags; returns stdout (the DOM for --dump-dom).
std::string chromium(const std::string& html, const std::string& flags) {
    const std::string bin = chromium_path();
    if (bin.empty()) FAIL("chromium not found (looked for /usr/bin/chromium, $NSCOPE_CHROMIUM): run scripts/install-deps.sh");
    const std::string dir = nscope::test::temp_dir("chromium");
    const std::string cmd = shell_quote(bin) +
                            " --headless --no-sandbox --disable-gpu --disable-quic --no-first-run"
                            " --disable-background-networking --disable-component-update --disable-sync"
                            " --user-data-dir=" + shell_quote(dir + "/profile") + " " + flags + " " +
                            shell_quote("file://" + html) + " > " + shell_quote(dir + "/out") + " 2> " +
                            shell_quote(dir + "/err");
    const int rc = std::system(cmd.c_str());
    INFO("chromium stderr: " << nscope::test::read_file(dir + "/err"));
    REQUIRE(rc == 0);
    return nscope::test::read_file(dir + "/out");
}

std::string attr(const std::string& dom, const std::string& name) {
    const std::regex re("<div id=\"nscope-status\"[^>]*\\s" + name + "=\"([^\"]*)\"");
    std::smatch m;
    return std::regex_search(dom, m, re) ? m[1].str() : "";
}

size_t count(const std::string& s, const std::string& what) {
    size_t n = 0;
    for (size_t at = s.find(what); at != std::string::npos; at = s.find(what, at + 1)) ++n;
    return n;
}

std::string recipe_file(const std::string& dir, const std::string& body) {
    const std::string p = dir + "/recipe.yaml";
    std::ofstream(p) << body;
    return p;
}

/// Run `recipe` (written into `dir`) and return the path of its report.html.
std::string run_for_report(const std::string& dir, const std::string& recipe) {
    const auto r = run_nscope({"run", recipe_file(dir, recipe), "--out", dir + "/runs"});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    std::string run = r.out;
    while (!run.empty() && run.back() == '\n') run.pop_back();
    return run + "/report.html";
}

/// The page's <script type="application/json"> data block.
nlohmann::json page_data(const std::string& page) {
    const size_t data_at = page.find("<script type=\"application/json\" id=\"nscope-data\">");
    REQUIRE(data_at != std::string::npos);
    const size_t data_begin = page.find('>', data_at) + 1;
    return nlohmann::json::parse(page.substr(data_begin, page.find("</script>", data_begin) - data_begin));
}

/// The markup of the section with this id (up to its end), or "".
std::string section(const std::string& dom, const std::string& id) {
    const size_t at = dom.find("<section id=\"" + id + "\"");
    return at == std::string::npos ? "" : dom.substr(at, dom.find("</section>", at) - at);
}

/// Names of the generic figures in the page's data block.
std::set<std::string> figure_names(const nlohmann::json& data) {
    std::set<std::string> out;
    for (const auto& f : data["figures"]) out.insert(f["name"].get<std::string>());
    return out;
}

/// A chart title Plotly drew (an SVG text of class gtitle), as opposed to the same text in the data block.
bool drawn_title(const std::string& dom, const std::string& title) {
    const std::string quoted = std::regex_replace(title, std::regex(R"([.^$|()\[\]{}*+?\\])"), R"(\$&)");
    return std::regex_search(dom, std::regex("class=\"gtitle\"[^>]*>" + quoted + "<"));
}

}  // namespace

TEST_CASE("report exporter: report.html of a real run renders every plot in headless Chromium without errors",
          "[exporters][report][chromium]") {
    const std::string dir = nscope::test::temp_dir("report-run");
    const std::string recipe =
        "name: report\nmodel: { path: " + kGpt2 + " }\nprompts:\n"
        "  - { ids: [[5, 17, 923, 17, 44], [404, 17, 8, 101]], labels: { note: " + nlohmann::json(kEvil).dump() + " } }\n"
        "  - { ids: [[5, 17, 923, 61, 44, 3]] }\n"
        "batch_size: 2\nhooks: [ \"blocks.*.mlp.hook_post\" ]\n"
        "analyses:\n"
        "  - { id: stats, use: stats }\n"
        "  - { id: dead, use: dead, epsilon: 0.5 }\n"
        "  - { id: top, use: topk, k: 3, context: 2 }\n"
        "  - { id: cmp, use: compare, pairs: [[0, 1], [0, 2]] }\n"
        "  - { id: heat, use: heatmap, top_n: 8 }\n"
        "exports:\n  - { use: report, title: " + nlohmann::json(std::string("Title ") + kEvil).dump() + " }\n";
    const std::string report = run_for_report(dir, recipe);
    REQUIRE(fs::exists(report));
    const std::string page = nscope::test::read_file(report);

    // Self-contained: plotly inlined, nothing the page would fetch.
    CHECK(page.find("plotly.js v") != std::string::npos);
    CHECK(page.find("<script src") == std::string::npos);
    CHECK(page.find("<link") == std::string::npos);
    // Escaping: five script elements (error trap, plotly, figures.js, data, main), the evil strings only in
    // escaped forms.
    CHECK(count(page, "</script>") == 5);
    CHECK(page.find("<script>window.__pwned") == std::string::npos);
    CHECK(page.find("&lt;/script&gt;&lt;script&gt;window.__pwned=1") != std::string::npos);  // title / labels
    // Every section of the recipe's analyses.
    for (const char* id : {"id=\"prompts\"", "id=\"heatmap-heat\"", "id=\"histograms\"", "id=\"stats-stats\"",
                           "id=\"dead-dead\"", "id=\"topk-top\"", "id=\"compare-cmp\""})
        CHECK(page.find(id) != std::string::npos);
    CHECK(page.find("<mark>#") != std::string::npos);  // highlighted token in a top-example context
    // What the bespoke sections do not show is rendered generically inside them; what they show is not repeated.
    const auto data = page_data(page);
    CHECK(section(page, "compare-cmp").find("<h3>Table top_neurons</h3>") != std::string::npos);
    CHECK(section(page, "dead-dead").find("<h3>Table neurons</h3>") != std::string::npos);
    CHECK(section(page, "heatmap-heat").find("<h3>Table selected_neurons</h3>") != std::string::npos);
    for (const char* covered : {"<h3>Table top_activations</h3>", "<h3>Table layers</h3>", "<h3>Table pairs</h3>"})
        CHECK(page.find(covered) == std::string::npos);
    CHECK(data["figures"].empty());  // cosine_by_hook, frac_active_by_hook and the heatmaps have bespoke charts
    CHECK(page.find("id=\"analysis-") == std::string::npos);

    // The streamed histograms count every activation of every real token: 15 tokens x 256 neurons per hook.
    size_t histograms = 0;
    for (const auto& p : data["plots"]) {
        if (p["div"].get<std::string>().rfind("p-hist-", 0) != 0) continue;
        ++histograms;
        int64_t total = 0;
        for (const auto& y : p["traces"][0]["y"]) total += y.get<int64_t>();
        CHECK(total == 15 * 256);
    }
    CHECK(histograms == 2);
    CHECK(data["heatmap_groups"][0]["prompts"].size() == 3);  // heatmap prompts default [0..7]: all 3 here

    const std::string dom = chromium(report, "--virtual-time-budget=10000 --dump-dom");
    REQUIRE(!dom.empty());
    INFO("status: " << dom.substr(dom.find("nscope-status") == std::string::npos ? 0 : dom.find("nscope-status"), 600));
    CHECK(attr(dom, "data-done") == "1");
    CHECK(attr(dom, "data-errors") == "0");
    CHECK(attr(dom, "data-invalid") == "0");
    // heatmaps 2 hooks + histograms 2 + stats 2 + dead 1 + compare 2
    CHECK(attr(dom, "data-expected") == "9");
    CHECK(attr(dom, "data-plots") == "9");
    CHECK(count(dom, "class=\"plot-container plotly\"") == 9);
    CHECK(std::stoi("0" + attr(dom, "data-svg")) >= 9);
    CHECK(dom.find("<script>window.__pwned") == std::string::npos);
    CHECK(count(dom, "class=\"hm") + count(dom, "class=\"heatmaplayer") >= 1);  // heatmap traces were drawn
}

TEST_CASE("report exporter: sections for absent analyses are omitted and parameters are checked", "[exporters][report]") {
    const std::string dir = nscope::test::temp_dir("report-min");
    PromptInfo p0{0, "a </script> prompt & more", nullptr, {"a", " </script>"}};
    RunContext run;
    run.model_name = "tiny";
    run.prompts = {&p0};
    ExportContext ctx;
    ctx.run_dir = dir;
    ctx.host = &host_services();
    ctx.run = &run;
    auto e = nscope::test::registry().create_exporter("report");
    e->configure(nlohmann::json::object());
    e->write(ctx);
    const std::string page = nscope::test::read_file(dir + "/report.html");
    CHECK(count(page, "</script>") == 5);
    CHECK(page.find("a &lt;/script&gt; prompt &amp; more") != std::string::npos);
    CHECK(page.find("id=\"prompts\"") != std::string::npos);
    for (const char* absent : {"id=\"histograms\"", "id=\"stats-", "id=\"dead-", "id=\"topk-", "id=\"compare-", "id=\"heatmap-"})
        CHECK(page.find(absent) == std::string::npos);

    CHECK_THROWS_AS(e->configure({{"bins", 3}}), InputError);
    CHECK_THROWS_AS(e->configure({{"bins", 81}}), InputError);
    CHECK_THROWS_AS(e->configure({{"bins", 8000}}), InputError);
    CHECK_THROWS_AS(e->configure({{"title", 5}}), InputError);
    CHECK_THROWS_AS(e->configure({{"max_rows", -1}}), InputError);
    CHECK_THROWS_AS(e->configure({{"max_rows", "all"}}), InputError);
    CHECK_THROWS_WITH(e->configure({{"max_row", 5}}), Catch::Contains("did you mean 'max_rows'"));
    CHECK_THROWS_WITH(e->configure({{"max_neuron", 5}}), Catch::Contains("did you mean 'max_neurons'"));
}

TEST_CASE("report exporter: streamed histograms put every value in the bin a direct computation gives",
          "[exporters][report]") {
    // Values spanning several powers of two (the range grows while streaming), zeros before the first
    // nonzero value, NaN and inf (counted apart), exact zeros and bin edges.
    const nscope::test::SynthCorpus c({{"blocks.0.mlp.hook_post", {37}}}, 23, 9, 11, 77);
    std::vector<float> all;
    auto e = nscope::test::registry().create_exporter("report");
    e->configure({{"bins", 40}});
    e->begin(c.run_context());
    size_t b = 0;
    for (auto sb : c.batches(4)) {
        auto& v = sb.acts.at("blocks.0.mlp.hook_post");
        for (size_t i = 0; i < v.size(); ++i) {
            if (b == 0 && i < 40) v[i] = 0.0f;                                   // zeros first
            if (i % 97 == 13) v[i] = std::numeric_limits<float>::quiet_NaN();
            if (i % 89 == 5) v[i] = -std::numeric_limits<float>::infinity();
            if (i % 53 == 7) v[i] = static_cast<float>(b + 1) * 37.5f;          // grows batch by batch
            if (i % 61 == 3) v[i] = 0.25f;                                       // a bin edge
        }
        e->consume(sb.view());
        for (size_t r = 0; r < sb.rows; ++r)
            for (size_t p = 0; p < sb.positions; ++p)
                if (sb.mask[r * sb.positions + p])
                    for (size_t j = 0; j < 37; ++j) all.push_back(v[(r * sb.positions + p) * 37 + j]);
        ++b;
    }
    const std::string dir = nscope::test::temp_dir("report-hist");
    ExportContext ctx;
    ctx.run_dir = dir;
    ctx.host = &host_services();
    e->write(ctx);
    const auto data = page_data(nscope::test::read_file(dir + "/report.html"));
    const nlohmann::json* hist = nullptr;
    for (const auto& p : data["plots"])
        if (p["div"].get<std::string>().rfind("p-hist-", 0) == 0) hist = &p;
    REQUIRE(hist != nullptr);

    // Direct: the first nonzero finite value sets the range (a power of two above it), doubled until every
    // finite value fits in [-range, range); 40 bins of equal width, bin = floor((x + range) * 40 / (2 range)).
    double range = 0, lo = INFINITY, hi = -INFINITY;
    for (float x : all) {
        if (!std::isfinite(x)) continue;
        if (range == 0 && x != 0) range = std::ldexp(1.0, std::ilogb(std::fabs(x)) + 1);
        lo = std::min<double>(lo, x), hi = std::max<double>(hi, x);
    }
    while (hi >= range || lo < -range) range *= 2;
    const double width = 2 * range / 40;
    std::map<long, int64_t> expected;
    for (float x : all)
        if (std::isfinite(x)) ++expected[std::min(static_cast<long>((x + range) * (40 / (2 * range))), 39L)];
    const auto& trace = (*hist)["traces"][0];
    std::map<long, int64_t> got;
    for (size_t i = 0; i < trace["x"].size(); ++i)
        if (trace["y"][i].get<int64_t>() != 0)
            got[std::lround((trace["x"][i].get<double>() + range) / width - 0.5)] = trace["y"][i].get<int64_t>();
    CHECK(got == expected);
}

TEST_CASE("report exporter: any analyzer's figures (every kind, series, 3-D, frames) and tables render generically, "
          "malformed specs as notes",
          "[exporters][report][chromium]") {
    using nlohmann::json;
    // A third-party result: every figure kind of sdk/include/nscope/result.h, and four malformed specs.
    Result syn;
    syn.data["summary"] = {{"tokens", 15}, {"mean", 0.25}, {"name", kEvil}, {"skipped", json::array({"a", "b"})}};
    syn.set_figure("bar", {{"kind", "bar"}, {"title", "<b>bold</b> bars"}, {"x", {"a", "b", "a"}},
                           {"y", {1, nullptr, 3}}, {"x_label", "hook"}, {"y_label", "value"}});
    syn.set_figure("line_series", {{"kind", "line"}, {"title", "lines"}, {"x", {0, 1, 2}},
                                   {"series", {{{"name", "first"}, {"y", {1, 2, 3}}},
                                               {{"name", kEvil}, {"x", {0, 2, 4}}, {"y", {3, nullptr, 1}}}}}});
    syn.set_figure("scatter_categories", {{"kind", "scatter"}, {"title", "scatter by category"}, {"x", {1, 2, 3, 4}},
                                          {"y", {4, 3, 2, 1}}, {"text", {"one", "two", kEvil, "four"}},
                                          {"color", {"red", "blue", "red", "blue"}}});
    syn.set_figure("scatter_scale", {{"kind", "scatter"}, {"title", "scatter on a colour scale"}, {"x", {1, 2, 3}},
                                     {"y", {1, 4, 9}}, {"color", {0.1, 0.5, 0.9}}});
    syn.set_figure("scatter_3d", {{"kind", "scatter"}, {"title", "scatter in 3-D"}, {"x", {1, 2, 3}}, {"y", {3, 1, 2}},
                                  {"z", {2, 3, 1}}, {"x_label", "a"}, {"y_label", "b"}, {"z_label", "c"}});
    syn.set_figure("heat", {{"kind", "heatmap"}, {"title", "heatmap centred"}, {"x", {"n1", "n2", "n3"}},
                            {"y", {" the", " cat", " the"}}, {"z", {{1, -2, 0.5}, {0, nullptr, 2}, {-1, 1, 3}}},
                            {"zmid", 0}, {"z_label", "activation"}});
    syn.set_figure("heat_text", {{"kind", "heatmap"}, {"title", "heatmap with cell labels"}, {"x", {0, 1}},
                                 {"y", json::array({"embed", "layer 0"})}, {"z", {{0.9, 0.1}, {0.5, 0.7}}},
                                 {"text", json::array({json::array({" the", kEvil}), json::array({" cat", nullptr})})}});
    syn.set_figure("bad_text", {{"kind", "heatmap"}, {"z", {{1, 2}}}, {"text", json::array({json::array({"a"})})}});
    syn.set_figure("hist_values", {{"kind", "histogram"}, {"title", "histogram of values"},
                                   {"values", {0.1, 0.2, 0.2, 0.5, nullptr, 0.9}}});
    syn.set_figure("hist_counts", {{"kind", "histogram"}, {"title", "histogram of counts"}, {"x", {-1, 0, 1}},
                                   {"y", {2, 7, 3}}, {"width", 1}});
    syn.set_figure("anim_bar", {{"kind", "bar"}, {"title", "bars over checkpoints"}, {"x", {"h0", "h1"}},
                                {"frames", {{{"name", "step 1000"}, {"y", {1, 2}}},
                                            {{"name", "step 2000"}, {"y", {3, 1}}}}}});
    syn.set_figure("anim_heat", {{"kind", "heatmap"}, {"title", "heatmap over checkpoints"},
                                 {"frames", {{{"name", "step 1"}, {"z", {{1, 2}, {3, 4}}}},
                                             {{"name", "step 2"}, {"z", {{4, 3}, {2, 1}}}}}}});
    syn.set_figure("bad_kind", {{"kind", "pie"}, {"values", {1, 2}}});
    syn.set_figure("bad_types", {{"kind", "line"}, {"x", {1, 2}}, {"y", {"high", {{"a", 1}}}}});
    syn.set_figure("bad_ragged", {{"kind", "heatmap"}, {"z", {{1, 2}, {3}}}});
    syn.set_figure("bad_frame", {{"kind", "bar"}, {"x", {1}}, {"frames", {{{"y", {1}}}, {{"y", "none"}}}}});
    Table big;
    big.columns = {"row", "value", "label", "flag"};
    for (int i = 0; i < 23; ++i) big.add_row({i, i * 0.5, i == 0 ? kEvil : "r" + std::to_string(i), i % 2 == 0});
    syn.set_table("big", std::move(big));
    syn.data["tables"]["broken"] = {{"columns", "not a list"}};

    // A stats result: its bespoke section shows `layers` and the frac_active_by_hook figure, not `neurons`.
    Result stats;
    Table layers;
    layers.columns = {"hook", "layer", "neurons", "count", "mean", "std", "min", "max", "frac_active", "frac_positive",
                      "skewness", "kurtosis"};
    layers.add_row({"blocks.0.mlp.hook_post", 0, 4, 10, 0.1, 1.0, -2.0, 3.0, 0.4, 0.5, 0.0, 3.0});
    stats.set_table("layers", std::move(layers));
    Table neurons;
    neurons.columns = {"hook", "neuron", "mean"};
    neurons.add_row({"blocks.0.mlp.hook_post", 0, 0.1});
    stats.set_table("neurons", std::move(neurons));
    stats.set_figure("frac_active_by_hook", {{"kind", "bar"}, {"x", {"blocks.0.mlp.hook_post"}}, {"y", {0.4}}});

    const std::string dir = nscope::test::temp_dir("report-generic");
    ExportContext ctx;
    ctx.run_dir = dir;
    ctx.host = &host_services();
    ctx.analysis_order = {"syn", "st"};
    ctx.results = {{"syn", &syn}, {"st", &stats}};
    ctx.analysis_plugins = {{"syn", "third-party"}, {"st", "stats"}};
    auto e = nscope::test::registry().create_exporter("report");
    e->configure({{"max_rows", 10}});
    e->write(ctx);
    const std::string report = dir + "/report.html";
    const std::string page = nscope::test::read_file(report);
    CHECK(count(page, "</script>") == 5);
    CHECK(page.find("<script>window.__pwned") == std::string::npos);

    const auto data = page_data(page);
    CHECK(figure_names(data) == std::set<std::string>{"anim_bar", "anim_heat", "bad_frame", "bad_kind",
                                                       "bad_ragged", "bad_text", "bad_types", "bar", "heat", "heat_text", "hist_counts",
                                                       "hist_values", "line_series", "scatter_3d",
                                                       "scatter_categories", "scatter_scale"});
    const std::string generic = section(page, "analysis-syn");
    REQUIRE(!generic.empty());
    CHECK(generic.find("<h2>syn (third-party)</h2>") != std::string::npos);
    CHECK(generic.find("<th>mean</th><td class=\"num\">0.25</td>") != std::string::npos);  // summary
    CHECK(generic.find("&lt;/script&gt;&lt;script&gt;window.__pwned=1") != std::string::npos);
    CHECK(count(generic, "<tr><td class=\"num\">") == 10);  // max_rows of the 23 rows of `big`
    CHECK(generic.find("13 more rows in results/syn.json (table big).") != std::string::npos);
    CHECK(generic.find("<h3>Table broken</h3>\n<p class=\"note\">Not a table") != std::string::npos);
    const std::string st = section(page, "stats-st");
    CHECK(st.find("<h3>Table neurons</h3>") != std::string::npos);
    CHECK(st.find("<h3>Table layers</h3>") == std::string::npos);

    const std::string dom = chromium(report, "--virtual-time-budget=15000 --window-size=1400,3000 --dump-dom");
    REQUIRE(!dom.empty());
    INFO("status: " << dom.substr(dom.find("nscope-status") == std::string::npos ? 0 : dom.find("nscope-status"), 900));
    CHECK(attr(dom, "data-done") == "1");
    CHECK(attr(dom, "data-errors") == "0");
    // 11 valid generic figures + the 2 stats charts; the 5 malformed ones are notes.
    CHECK(attr(dom, "data-expected") == "13");
    CHECK(attr(dom, "data-plots") == "13");
    CHECK(attr(dom, "data-invalid") == "5");
    CHECK(count(dom, "class=\"note invalid\"") == 5);
    for (const char* why : {"bad_kind: this figure cannot be shown (unknown kind \"pie\"",
                            "bad_types: this figure cannot be shown (y[0] must be a number or null, not a string)",
                            "bad_ragged: this figure cannot be shown (ragged heatmap: z[0] has 2 values but z[1] has 1)",
                            "bad_frame: this figure cannot be shown (frames[1]: y must be an array, not a string)",
                            "bad_text: this figure cannot be shown (text[0] has 1 labels but z[0] has 2)"})
        CHECK(dom.find(why) != std::string::npos);
    for (const char* title : {"lines", "scatter by category", "scatter on a colour scale", "scatter in 3-D",
                              "heatmap centred", "heatmap with cell labels", "histogram of values", "histogram of counts", "bars over checkpoints",
                              "heatmap over checkpoints"})
        CHECK(drawn_title(dom, title));
    // Plotly's pseudo-HTML is neutralised: the title shows "<b>bold</b>" as text instead of bold type.
    CHECK(drawn_title(dom, "&lt;b&gt;bold&lt;/b&gt; bars"));
    CHECK(count(dom, "class=\"slider-container\"") == 2);  // the two animated figures: slider and play button
    CHECK(count(dom, "class=\"updatemenu-button\"") >= 4);
    CHECK(dom.find("class=\"gl-container\"") != std::string::npos);  // the 3-D scatter's WebGL scene
    CHECK((dom.find(">\u00a0cat<") != std::string::npos || dom.find("> cat<") != std::string::npos));  // a cell label
    CHECK(dom.find("<script>window.__pwned") == std::string::npos);
}

TEST_CASE("report exporter: an out-of-tree plugin's table and figure, and next_token's, render in a real run",
          "[exporters][report][chromium][oot]") {
    const std::string oot = std::string(NSCOPE_OOT_DIR) + "/build";
    REQUIRE(fs::exists(oot + "/libtoken_count.so"));
    const std::string dir = nscope::test::temp_dir("report-oot");
    const std::string recipe =
        "name: report-oot\nmodel: { path: " + kGpt2 + " }\nprompts:\n"
        "  - { ids: [[5, 17, 923, 17, 44], [404, 17, 8, 101], [5, 17, 923, 61, 44, 3]] }\n"
        "batch_size: 2\nhooks: [ \"blocks.*.mlp.hook_post\" ]\n"
        "analyses:\n"
        "  - { id: tc, use: token-count }\n"
        "  - { id: nt, use: next_token, k: 3, pairs: [[0, 1], [0, 2]] }\n"
        "exports:\n  - { use: report, histograms: false }\n";
    const auto r = run_nscope({"run", recipe_file(dir, recipe), "--out", dir + "/runs", "--plugin-path", oot});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    std::string run = r.out;
    while (!run.empty() && run.back() == '\n') run.pop_back();
    const std::string report = run + "/report.html";
    REQUIRE(fs::exists(report));
    const auto figures = figure_names(page_data(nscope::test::read_file(report)));
    CHECK(figures == std::set<std::string>{"kl_by_pair", "sum_by_hook"});

    const std::string dom = chromium(report, "--virtual-time-budget=10000 --dump-dom");
    REQUIRE(!dom.empty());
    INFO("status: " << dom.substr(dom.find("nscope-status") == std::string::npos ? 0 : dom.find("nscope-status"), 600));
    CHECK(attr(dom, "data-done") == "1");
    CHECK(attr(dom, "data-errors") == "0");
    CHECK(attr(dom, "data-invalid") == "0");
    CHECK(attr(dom, "data-expected") == "2");  // sum_by_hook and kl_by_pair (histograms are off)
    CHECK(attr(dom, "data-plots") == "2");
    CHECK(count(dom, "class=\"plot-container plotly\"") == 2);

    const std::string tc = section(dom, "analysis-tc");
    REQUIRE(!tc.empty());
    CHECK(tc.find("<h2>tc (token-count)</h2>") != std::string::npos);
    CHECK(drawn_title(tc, "activation sum per hook (token-count)"));
    CHECK(tc.find("<h3>Table sums_by_hook</h3>") != std::string::npos);
    for (const char* hook : {"blocks.0.mlp.hook_post", "blocks.1.mlp.hook_post"})
        CHECK(tc.find(std::string("<tr><td>") + hook + "</td>") != std::string::npos);

    const std::string nt = section(dom, "analysis-nt");
    REQUIRE(!nt.empty());
    CHECK(nt.find("<h2>nt (next_token)</h2>") != std::string::npos);
    CHECK(drawn_title(nt, "KL(a || b) of the next-token distribution"));
    CHECK(std::regex_search(nt, std::regex(">0 vs 1</text>")));  // a bar's category label on the x axis
    for (const char* table : {"changed_tokens", "pair_effects", "top_tokens"})
        CHECK(nt.find(std::string("<h3>Table ") + table + "</h3>") != std::string::npos);
    CHECK(nt.find("<th>mean_kl</th>") != std::string::npos);  // summary
}

TEST_CASE("report exporter: a run with saes shows each SAE's metrics and its feature-density histogram from sae.json",
          "[exporters][report][sae][chromium]") {
    const std::string dir = nscope::test::temp_dir("report-sae");
    const std::string model = std::string(NSCOPE_SOURCE_DIR) + "/models/kjv-tiny";
    const auto trained = run_nscope({"--threads", "2", "train-sae", model, "--hook", "blocks.1.hook_resid_post", "--data",
                                     std::string(NSCOPE_SOURCE_DIR) + "/tests/fixtures/text/genesis.txt", "--out",
                                     dir + "/sae", "--latents", "256", "--k", "8", "--steps", "12", "--batch-tokens", "256",
                                     "--context", "32"});
    INFO(trained.err);
    REQUIRE(trained.exit_code == 0);
    std::ifstream in(dir + "/sae/sae.json");
    const auto stats = nlohmann::json::parse(in)["stats"];
    // A copy without statistics (as Sae::save writes it outside train-sae) on another hook.
    fs::create_directories(dir + "/bare");
    fs::copy_file(dir + "/sae/sae.safetensors", dir + "/bare/sae.safetensors");
    {
        std::ifstream bare_in(dir + "/sae/sae.json");
        auto j = nlohmann::json::parse(bare_in);
        j.erase("stats");
        std::ofstream(dir + "/bare/sae.json") << j.dump();
    }
    const std::string recipe = "name: report-sae\nmodel: { path: " + model + " }\nsaes:\n" +
                               "  - { hook: blocks.1.hook_resid_post, path: " + dir + "/sae }\n" +
                               "  - { hook: blocks.2.hook_resid_post, path: " + dir + "/bare }\n" +
                               "prompts:\n  - In the beginning God created the heaven and the earth.\n"
                               "hooks: [ blocks.1.hook_resid_post.sae ]\nanalyses:\n  - { use: stats }\n"
                               "exports:\n  - { use: report, histograms: false }\n";
    const std::string report = run_for_report(dir, recipe);
    const std::string page = nscope::test::read_file(report);

    // The first SAE: its table of metrics and the histogram, whose counts are sae.json's.
    const std::string s0 = section(page, "sae-0");
    REQUIRE(!s0.empty());
    CHECK(s0.find("<h2>Sparse autoencoder: blocks.1.hook_resid_post.sae</h2>") != std::string::npos);
    CHECK(s0.find("topk SAE on blocks.1.hook_resid_post: 256 → 256 latents, k 8, trained 12 steps") != std::string::npos);
    for (const char* key : {"explained_variance", "loss_recovered", "l0", "mse"}) {
        char want[64];
        std::snprintf(want, sizeof want, "<td class=\"num\">%.4g</td>", stats[key].get<double>());
        INFO(key << " " << want);
        CHECK(s0.find(want) != std::string::npos);
    }
    for (const char* row : {"fraction of loss recovered", "dead latents", "dense latents", "L0", "reconstruction MSE"})
        CHECK(s0.find(std::string("<tr><td>") + row + "</td>") != std::string::npos);
    const auto data = page_data(page);
    REQUIRE(data["figures"].size() == 1);
    const auto& fig = data["figures"][0];
    CHECK(fig["name"] == "density_histogram");
    CHECK(fig["spec"]["kind"] == "histogram");
    CHECK(fig["spec"]["y"] == stats["density_histogram"]["counts"]);
    REQUIRE(fig["spec"]["x"].size() == 12);
    CHECK(fig["spec"]["x"][0].get<double>() == -5.75);
    CHECK(fig["spec"]["x"][11].get<double>() == -0.25);
    int64_t latents = stats["density_histogram"]["never_fired"].get<int64_t>();
    for (const auto& c : fig["spec"]["y"]) latents += c.get<int64_t>();
    CHECK(latents == 256);  // every latent is in a bin or never fired
    // The second SAE has no statistics: a note instead of numbers.
    const std::string s1 = section(page, "sae-1");
    CHECK(s1.find("<h2>Sparse autoencoder: blocks.2.hook_resid_post.sae</h2>") != std::string::npos);
    CHECK(s1.find("has no statistics") != std::string::npos);
    CHECK(s1.find("<table") == std::string::npos);

    const std::string dom = chromium(report, "--virtual-time-budget=10000 --dump-dom");
    INFO("status: " << dom.substr(dom.find("nscope-status") == std::string::npos ? 0 : dom.find("nscope-status"), 600));
    CHECK(attr(dom, "data-errors") == "0");
    CHECK(attr(dom, "data-invalid") == "0");
    CHECK(attr(dom, "data-expected") == "3");  // stats 2 + the density histogram
    CHECK(attr(dom, "data-plots") == "3");
    CHECK(drawn_title(section(dom, "sae-0"), "feature density: latents by log10 firing frequency (" +
                                                 stats["density_histogram"]["never_fired"].dump() + " never fired, not shown)"));
}
