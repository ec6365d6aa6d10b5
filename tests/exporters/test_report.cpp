// The report exporter: report.html from a real run (stats, dead, topk, compare, heatmap) opened in headless
// Chromium — the page's own script reports the plots it rendered and every JavaScript error into
// #nscope-status, which the dumped DOM shows. Also: self-containment (no URL the page would load), escaping of
// user strings (a label and a title with "</script>"), sections omitted for absent analyses, bad parameters.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>

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
    const auto r = run_nscope({"run", recipe_file(dir, recipe), "--out", dir + "/runs"});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    std::string run = r.out;
    while (!run.empty() && run.back() == '\n') run.pop_back();
    const std::string report = run + "/report.html";
    REQUIRE(fs::exists(report));
    const std::string page = nscope::test::read_file(report);

    // Self-contained: plotly inlined, nothing the page would fetch.
    CHECK(page.find("plotly.js v") != std::string::npos);
    CHECK(page.find("<script src") == std::string::npos);
    CHECK(page.find("<link") == std::string::npos);
    // Escaping: four script elements (error trap, plotly, data, main), the evil strings only in escaped forms.
    CHECK(count(page, "</script>") == 4);
    CHECK(page.find("<script>window.__pwned") == std::string::npos);
    CHECK(page.find("&lt;/script&gt;&lt;script&gt;window.__pwned=1") != std::string::npos);  // title / labels
    // Every section of the recipe's analyses.
    for (const char* id : {"id=\"prompts\"", "id=\"heatmap-heat\"", "id=\"histograms\"", "id=\"stats-stats\"",
                           "id=\"dead-dead\"", "id=\"topk-top\"", "id=\"compare-cmp\""})
        CHECK(page.find(id) != std::string::npos);
    CHECK(page.find("<mark>#") != std::string::npos);  // highlighted token in a top-example context

    // The streamed histograms count every activation of every real token: 15 tokens x 256 neurons per hook.
    const size_t data_at = page.find("<script type=\"application/json\" id=\"nscope-data\">");
    REQUIRE(data_at != std::string::npos);
    const size_t data_begin = page.find('>', data_at) + 1;
    const auto data = nlohmann::json::parse(page.substr(data_begin, page.find("</script>", data_begin) - data_begin));
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
    CHECK(count(page, "</script>") == 4);
    CHECK(page.find("a &lt;/script&gt; prompt &amp; more") != std::string::npos);
    CHECK(page.find("id=\"prompts\"") != std::string::npos);
    for (const char* absent : {"id=\"histograms\"", "id=\"stats-", "id=\"dead-", "id=\"topk-", "id=\"compare-", "id=\"heatmap-"})
        CHECK(page.find(absent) == std::string::npos);

    CHECK_THROWS_AS(e->configure({{"bins", 3}}), InputError);
    CHECK_THROWS_AS(e->configure({{"bins", 81}}), InputError);
    CHECK_THROWS_AS(e->configure({{"bins", 8000}}), InputError);
    CHECK_THROWS_AS(e->configure({{"title", 5}}), InputError);
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
    const std::string page = nscope::test::read_file(dir + "/report.html");
    const size_t data_at = page.find("<script type=\"application/json\" id=\"nscope-data\">");
    REQUIRE(data_at != std::string::npos);
    const size_t data_begin = page.find('>', data_at) + 1;
    const auto data = nlohmann::json::parse(page.substr(data_begin, page.find("</script>", data_begin) - data_begin));
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
