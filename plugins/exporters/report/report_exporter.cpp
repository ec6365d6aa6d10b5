// `report` exporter: report.html in the run directory — one self-contained HTML file (plotly.js inlined,
// no network, no other files) with the run's facts, activation histograms (streamed here), a section per
// attached SAE (its metrics and feature density histogram from the manifest's `saes`, drawn as a generic
// table and figure) and one per analysis. The built-in analyzers have bespoke sections: heatmaps (heatmap), per-hook statistics (stats),
// dead / always-on / flat counts (dead), top examples with the triggering token highlighted (topk), prompt
// comparisons (compare). Every other analysis — and whatever a bespoke section does not show — is rendered
// generically from the result conventions of sdk/include/nscope/result.h: summary, figures (converted to
// Plotly in the page by figures.js, embedded at build time) and tables (first max_rows rows).
// docs/report.md describes every section.
//
// Escaping: every user string goes through html() for markup, and all chart data travels in one
// <script type="application/json"> block in which '<', '>' and '&' are written as \u003c, \u003e, \u0026,
// so no string (a prompt containing "</script>", say) can end the element.
#include <nscope/sdk.h>
#include <nscope/utf8.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <set>

#include "nscope_common/hooks.h"
#include "nscope_common/params.h"
#include "nscope_common/tables.h"

namespace nscope_report {  // embedded at build time (CMakeLists.txt)
std::string_view plotly_js();
std::string_view figures_js();
}  // namespace nscope_report

namespace {

using nlohmann::json;
using nscope::common::TableView;

// ---- text ---------------------------------------------------------------------------------------------------

/// Valid UTF-8 (invalid bytes become U+FFFD) with C0 controls other than tab / newline shown as \xNN.
std::string clean_text(std::string_view raw) {
    const std::string s = nscope::valid_utf8(raw);
    std::string out;
    out.reserve(s.size());
    for (const char ch : s) {
        const auto c = static_cast<unsigned char>(ch);
        if ((c < 0x20 && c != '\t' && c != '\n') || c == 0x7f) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\x%02x", c);
            out += buf;
        } else {
            out += ch;
        }
    }
    return out;
}

/// Escape for HTML text and attribute values.
std::string html(std::string_view raw) {
    const std::string s = clean_text(raw);
    std::string out;
    out.reserve(s.size() + 16);
    for (char c : s) {
        switch (c) {
            case '&': out += "&amp;"; break;
            case '<': out += "&lt;"; break;
            case '>': out += "&gt;"; break;
            case '"': out += "&quot;"; break;
            case '\'': out += "&#39;"; break;
            default: out += c;
        }
    }
    return out;
}

/// JSON for a <script type="application/json"> element: no '<', '>', '&' (they only occur inside strings,
/// where the \u escapes mean the same), U+2028 / U+2029 escaped too.
std::string script_json(const json& j) {
    const std::string s = j.dump(-1, ' ', false, json::error_handler_t::replace);
    std::string out;
    out.reserve(s.size() + s.size() / 16);
    for (size_t i = 0; i < s.size(); ++i) {
        const char c = s[i];
        if (c == '<') out += "\\u003c";
        else if (c == '>') out += "\\u003e";
        else if (c == '&') out += "\\u0026";
        else if (c == '\xe2' && i + 2 < s.size() && s[i + 1] == '\x80' && (s[i + 2] == '\xa8' || s[i + 2] == '\xa9')) {
            out += s[i + 2] == '\xa8' ? "\\u2028" : "\\u2029";
            i += 2;
        } else out += c;
    }
    return out;
}

/// Text for Plotly labels: valid UTF-8, and Plotly's pseudo-HTML neutralised (it decodes these entities).
std::string plot_text(std::string_view raw) {
    const std::string s = clean_text(raw);
    std::string out;
    for (char c : s) {
        if (c == '&') out += "&amp;";
        else if (c == '<') out += "&lt;";
        else if (c == '>') out += "&gt;";
        else if (c == '\n') out += "\xe2\x86\xb5";  // ↵
        else out += c;
    }
    return out;
}

std::string shorten(const std::string& s, size_t n) {
    const std::string c = clean_text(s);
    if (c.size() <= n) return c;
    size_t cut = n;
    while (cut > 0 && (static_cast<unsigned char>(c[cut]) & 0xc0) == 0x80) --cut;  // keep whole characters
    return c.substr(0, cut) + "\xe2\x80\xa6";
}

std::string num(double v, int precision = 4) {
    if (!std::isfinite(v)) return "–";
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.*g", precision, v);
    return buf;
}

json finite_or_null(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }

// ---- streaming histogram ------------------------------------------------------------------------------------

/// Fixed number of bins over a symmetric range [-R, R) that doubles (merging neighbouring bins) when a value
/// falls outside: bounded memory, one pass, exact counts; the bin width is R * 2 / bins.
class Histogram {
public:
    explicit Histogram(int bins = 200) : bins_(static_cast<size_t>(bins)), counts_((bins_ + 1) * kLanes, 0) {}

    /// Add the n values of a row, in two passes. First the row's finite count, sum, min and max, so that
    /// the range grows at most once per row; then one bin per value, counted in kLanes interleaved copies of
    /// the histogram so that runs of values in the same bin (most activations sit near 0) do not wait on
    /// each other's increments. Lanes also keep the sums independent (one running sum would be a chain).
    void add_row(const float* v, size_t n) {
        uint32_t finite_l[kLanes] = {};
        double sum_l[kLanes] = {};
        float lo_l[kLanes], hi_l[kLanes];
        std::fill(lo_l, lo_l + kLanes, std::numeric_limits<float>::infinity());
        std::fill(hi_l, hi_l + kLanes, -std::numeric_limits<float>::infinity());
        const auto take = [&](size_t l, float x) {
            const bool ok = finite(x);
            finite_l[l] += ok;
            sum_l[l] += ok ? x : 0.0f;
            lo_l[l] = ok && x < lo_l[l] ? x : lo_l[l];
            hi_l[l] = ok && x > hi_l[l] ? x : hi_l[l];
        };
        size_t i = 0;
        for (; i + kLanes <= n; i += kLanes)  // whole blocks: the compiler unrolls the lanes
            for (size_t l = 0; l < kLanes; ++l) take(l, v[i + l]);
        for (; i < n; ++i) take(i % kLanes, v[i]);
        size_t count = 0;
        float lo = lo_l[0], hi = hi_l[0];
        for (size_t l = 0; l < kLanes; ++l) {
            count += finite_l[l];
            sum_ += sum_l[l];
            lo = std::min(lo, lo_l[l]);
            hi = std::max(hi, hi_l[l]);
        }
        nonfinite_ += n - count;
        if (count == 0) return;
        n_ += count;
        min_ = std::min(min_, static_cast<double>(lo));
        max_ = std::max(max_, static_cast<double>(hi));
        if (range_ == 0) {
            if (lo == 0 && hi == 0) {  // zeros only: their bin is known once the range is
                pending_zeros_ += count;
                return;
            }
            size_t first = 0;  // the first finite nonzero value sets the scale: a power of two above it
            while (!(finite(v[first]) && v[first] != 0)) ++first;
            range_ = std::ldexp(1.0, std::ilogb(std::fabs(static_cast<double>(v[first]))) + 1);
            counts_[bins_ / 2 * kLanes] += pending_zeros_;
            pending_zeros_ = 0;
        }
        while (hi >= range_ || lo < -range_) grow();
        // bins / (2 range) is exact (range is a power of two); non-finite values go to the unreported bin.
        const double per_unit = static_cast<double>(bins_) / (2 * range_), last = static_cast<double>(bins_ - 1);
        bin_.resize(n);
        for (size_t i = 0; i < n; ++i) {
            const float x = v[i];
            bin_[i] = finite(x) ? static_cast<uint32_t>(std::min((x + range_) * per_unit, last))
                                : static_cast<uint32_t>(bins_);
        }
        for (size_t i = 0; i < n; ++i) counts_[bin_[i] * kLanes + i % kLanes] += 1;
    }

    /// {x: bin centres, y: counts, width} over the non-empty span of bins.
    json to_json() const {
        json out = {{"n", n_}, {"min", finite_or_null(n_ ? min_ : NAN)}, {"max", finite_or_null(n_ ? max_ : NAN)},
                    {"mean", finite_or_null(n_ ? sum_ / static_cast<double>(n_) : NAN)}, {"nonfinite", nonfinite_}};
        json x = json::array(), y = json::array();
        double width = 1;
        if (range_ == 0) {
            if (pending_zeros_) x.push_back(0.0), y.push_back(pending_zeros_);
        } else {
            std::vector<uint64_t> counts(bins_, 0);
            for (size_t i = 0; i < bins_ * kLanes; ++i) counts[i / kLanes] += counts_[i];
            width = 2 * range_ / static_cast<double>(bins_);
            size_t lo = 0, hi = bins_;
            while (lo < hi && counts[lo] == 0) ++lo;
            while (hi > lo && counts[hi - 1] == 0) --hi;
            for (size_t i = lo; i < hi; ++i) {
                x.push_back(-range_ + (static_cast<double>(i) + 0.5) * width);
                y.push_back(counts[i]);
            }
        }
        out["x"] = x;
        out["y"] = y;
        out["width"] = width;
        return out;
    }

private:
    static constexpr size_t kLanes = 8;

    static bool finite(float x) { return x - x == 0.0f; }  // false for inf and NaN; branch-free

    void grow() {  // double the range: bin i of the old layout lands in bin bins/4 + i/2 of the new one
        std::vector<uint64_t> next(counts_.size(), 0);
        for (size_t i = 0; i < bins_ * kLanes; ++i) next[(bins_ / 4 + i / kLanes / 2) * kLanes + i % kLanes] += counts_[i];
        counts_.swap(next);
        range_ *= 2;
    }

    size_t bins_;
    std::vector<uint64_t> counts_;  // [bins + 1, kLanes]; the extra bin takes non-finite values, unreported
    std::vector<uint32_t> bin_;     // scratch: a row's bins
    double range_ = 0;
    uint64_t pending_zeros_ = 0, n_ = 0, nonfinite_ = 0;
    double sum_ = 0, min_ = std::numeric_limits<double>::infinity(), max_ = -std::numeric_limits<double>::infinity();
};

// ---- the exporter -------------------------------------------------------------------------------------------

const char* kStyle = R"CSS(
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:18px 28px}
header h1{margin:0 0 4px;font-size:22px}
header .sub{color:#b9c1d0}
nav{position:sticky;top:0;background:#fff;border-bottom:1px solid #dde1e8;padding:8px 28px;z-index:10}
nav a{margin-right:16px;color:#2456a6;text-decoration:none}
main{padding:8px 28px 40px}
section{background:#fff;border:1px solid #dde1e8;border-radius:6px;margin:18px 0;padding:14px 18px}
h2{font-size:18px;margin:0 0 8px}
h3{font-size:15px;margin:14px 0 6px}
p.note{color:#5b6474;margin:4px 0 10px}
table{border-collapse:collapse;margin:6px 0}
th,td{border-bottom:1px solid #e6e9ef;padding:3px 10px 3px 0;text-align:left;vertical-align:top}
th{color:#5b6474;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums}
table.facts td:first-child{color:#b9c1d0;padding-right:18px}
table.facts td{border:0;padding:1px 18px 1px 0}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(460px,1fr));gap:10px}
.grid.small{grid-template-columns:repeat(auto-fill,minmax(340px,1fr))}
.plot{min-height:260px}
.note.invalid{min-height:0;border:1px dashed #c9a227;border-radius:4px;padding:8px 10px;background:#fffbea}
.wide{overflow-x:auto}
table.summary th{padding-right:18px}
.ctx{font-family:ui-monospace,Menlo,Consolas,monospace;white-space:pre-wrap;word-break:break-word}
mark{background:#ffd54a;border-radius:2px;padding:0 1px}
details{margin:6px 0}
summary{cursor:pointer;font-weight:600}
.controls{margin:6px 0 8px}
#nscope-status{color:#5b6474;padding:0 28px 20px;font-size:12px}
)CSS";

// Runs before plotly.js: collects every error of the page.
const char* kErrorTrap = R"JS(
window.__nscopeErrors = [];
window.addEventListener('error', function (e) { window.__nscopeErrors.push(String(e.message || e)); });
window.addEventListener('unhandledrejection', function (e) { window.__nscopeErrors.push('unhandled rejection: ' + String(e.reason)); });
)JS";

// Draws every plot described in #nscope-data (the exporter's own plots, then the analyzers' figures converted
// by nscopeFigure from figures.js), wires the controls, then writes #nscope-status. One failing plot does not
// stop the others: its error is recorded and the page carries on. A figure spec that cannot be shown is not an
// error of the page (it comes from a plugin): a note takes the chart's place and data-invalid counts it.
const char* kMain = R"JS(
(function () {
  var errors = window.__nscopeErrors;
  var status = document.getElementById('nscope-status');
  var config = {responsive: true, displaylogo: false, modeBarButtonsToRemove: ['sendDataToCloud']};
  var expected = 0, invalid = 0, jobs = [];
  function finish() {
    var plots = document.querySelectorAll('.js-plotly-plot').length;
    var svgs = document.querySelectorAll('svg.main-svg').length;
    status.setAttribute('data-errors', String(errors.length));
    status.setAttribute('data-plots', String(plots));
    status.setAttribute('data-svg', String(svgs));
    status.setAttribute('data-expected', String(expected));
    status.setAttribute('data-invalid', String(invalid));
    status.setAttribute('data-done', '1');
    status.textContent = 'Rendered ' + plots + ' of ' + expected + ' plots' +
      (invalid ? '; ' + invalid + ' figure(s) could not be shown' : '') +
      (errors.length ? '; errors: ' + errors.join(' | ') : '; no errors') + '.';
  }
  // Runs draw() after the current task; a throw or a rejection is recorded, and never ends the waiting early.
  function job(draw) {
    jobs.push(Promise.resolve().then(draw).catch(function (e) { errors.push(String(e && e.message || e)); }));
  }
  try {
    if (typeof Plotly === 'undefined') throw new Error('plotly.js is missing from the page');
    if (typeof nscopeFigure === 'undefined') throw new Error('figures.js is missing from the page');
    var data = JSON.parse(document.getElementById('nscope-data').textContent);
    data.plots.forEach(function (p) {
      expected++;
      job(function () { return Plotly.newPlot(document.getElementById(p.div), p.traces, p.layout, config); });
    });
    data.figures.forEach(function (f) {
      var el = document.getElementById(f.div), fig;
      try {
        fig = nscopeFigure(f.spec, {name: f.name});
      } catch (e) {
        invalid++;
        el.className = 'note invalid';
        el.textContent = f.name + ': this figure cannot be shown (' + (e && e.message || e) + ')';
        if (!(e instanceof nscopeFigure.Error)) errors.push('figures.js: ' + String(e && e.message || e));
        return;
      }
      expected++;
      job(function () {
        return Plotly.newPlot(el, {data: fig.data, layout: fig.layout, frames: fig.frames, config: config});
      });
    });
    data.heatmap_groups.forEach(function (g) {
      var select = document.getElementById(g.select);
      function show(i) {
        var specs = g.prompts[i].plots;
        return Promise.all(g.divs.map(function (div, k) {
          var el = document.getElementById(div), s = specs[k];
          if (!s) { Plotly.purge(el); el.textContent = 'not captured for this prompt'; return null; }
          el.textContent = '';
          return Plotly.react(el, s.traces, s.layout, config);
        }));
      }
      expected += g.divs.length;
      job(function () { return show(0); });
      select.addEventListener('change', function () { show(Number(select.value)); });
    });
    var logBox = document.getElementById('hist-log');
    if (logBox) logBox.addEventListener('change', function () {
      data.histogram_divs.forEach(function (d) {
        Plotly.relayout(document.getElementById(d), {'yaxis.type': logBox.checked ? 'log' : 'linear'});
      });
    });
    Promise.all(jobs).then(finish);
  } catch (e) {
    errors.push(String(e && e.message || e));
    Promise.all(jobs).then(finish);
  }
})();
)JS";

class ReportExporter : public nscope::Exporter {
public:
    void configure(const nscope::Params& params) override {
        nscope::common::ParamReader p("report", params,
                                      {"title", "hooks", "histograms", "bins", "max_neurons", "max_examples", "max_prompts",
                                       "max_rows"});
        if (p.has("title")) {
            if (!p.raw("title").is_string()) p.fail("title", "must be a string, got " + nscope::common::describe(p.raw("title")));
            title_ = p.raw("title").get<std::string>();
        }
        filter_ = nscope::common::HookFilter(p.strings("hooks"));
        histograms_ = p.boolean("histograms", true);
        bins_ = static_cast<int>(p.integer("bins", 200, 8, 4000));
        if (bins_ % 4 != 0) p.fail("bins", "must be a multiple of 4 (bins merge in pairs when the range grows), got " + std::to_string(bins_));
        max_neurons_ = static_cast<size_t>(p.integer("max_neurons", 8, 1, 1000));
        max_examples_ = static_cast<size_t>(p.integer("max_examples", 5, 1, 1000));
        max_prompts_ = static_cast<size_t>(p.integer("max_prompts", 100, 0, 1000000));
        max_rows_ = static_cast<size_t>(p.integer("max_rows", 50, 0, 1000000));
    }

    bool wants_activations() const override { return histograms_; }

    void begin(const nscope::RunContext& ctx) override { parallel_for_ = ctx.parallel_for; }

    void consume(const nscope::Batch& batch) override {
        struct Task {
            Histogram* histogram;
            const nscope::ActivationView* view;
            nscope::common::TokenLayout lay;
        };
        std::vector<Task> tasks;  // one per hook
        for (const auto& act : batch.activations) {
            nscope::common::TokenLayout lay;
            if (!filter_.accept(act.hook, act.view, batch, lay)) continue;
            auto it = hists_.find(act.hook);
            if (it == hists_.end()) it = hists_.emplace(act.hook, Histogram(bins_)).first;
            tasks.push_back({&it->second, &act.view, lay});
        }
        nscope::run_tasks(parallel_for_, tasks.size(), [&](size_t t) {
            const Task& task = tasks[t];
            for (size_t r = 0; r < static_cast<size_t>(task.lay.rows); ++r)
                for (size_t p = 0; p < static_cast<size_t>(task.lay.positions); ++p)
                    if (batch.valid(r, p))
                        task.histogram->add_row(task.lay.at(*task.view, r, p), static_cast<size_t>(task.lay.neurons));
        });
    }

    void write(const nscope::ExportContext& ctx) override {
        const std::string_view bundle = nscope_report::plotly_js();
        if (bundle.size() < 1000)
            throw nscope::RuntimeError("report: the embedded plotly.js is missing or truncated; rebuild the plugin");
        plots_ = json::array();
        figures_ = json::array();
        heatmap_groups_ = json::array();
        histogram_divs_ = json::array();
        div_counter_ = 0;
        nav_.clear();
        body_.clear();

        prompt_texts_.clear();
        if (ctx.run)
            for (const auto* p : ctx.run->prompts)
                if (p) {
                    std::string text = p->text;
                    if (text.empty())
                        for (const auto& tok : p->tokens) text += tok;
                    prompt_texts_[static_cast<int64_t>(p->index)] = text;
                }
        section_histograms();
        section_saes(ctx);
        for (const auto& id : ctx.analysis_order) {
            const auto r = ctx.results.find(id);
            if (r == ctx.results.end() || !r->second) continue;
            const auto p = ctx.analysis_plugins.find(id);
            section_analysis(id, p == ctx.analysis_plugins.end() ? "" : p->second, *r->second);
        }
        section_prompts(ctx);  // last: a long prompt list should not push the analyses down

        const json data = {{"plots", plots_},
                           {"figures", figures_},
                           {"heatmap_groups", heatmap_groups_},
                           {"histogram_divs", histogram_divs_}};
        std::string page;
        page.reserve(bundle.size() + body_.size() + 65536);
        const std::string name = run_name(ctx);
        page += "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
                "<meta name=\"generator\" content=\"NeuronScope " NSCOPE_VERSION_STRING "\">\n<title>";
        page += html((title_.empty() ? name : title_) + " — NeuronScope report");
        page += "</title>\n<style>";
        page += kStyle;
        page += "</style>\n<script>";
        page += kErrorTrap;
        page += "</script>\n";
        add_script(page, "plotly.js-dist-min " + std::string(NSCOPE_PLOTLY_VERSION) + " (MIT license)",
                   bundle);
        add_script(page, "figures.js: NeuronScope figure specs -> Plotly", nscope_report::figures_js());
        page += "</head>\n<body>\n";
        page += header(ctx, name);
        page += "<nav>" + nav_ + "</nav>\n<main>\n" + body_ + "</main>\n";
        page += "<div id=\"nscope-status\" data-done=\"0\" data-errors=\"0\" data-plots=\"0\" data-invalid=\"0\">"
                "Charts need JavaScript.</div>\n";
        page += "<script type=\"application/json\" id=\"nscope-data\">" + script_json(data) + "</script>\n";
        page += "<script>";
        page += kMain;
        page += "</script>\n</body>\n</html>\n";
        ctx.write_file("report.html", page);
    }

private:
    /// The figures and tables of a result that its bespoke section shows (so they are not rendered again).
    struct Covered {
        std::set<std::string> figures, tables;
    };

    /// A prompt's text, or its tokens joined when it was given as ids.
    std::string prompt_text(int64_t index, const std::string& given) const {
        if (!given.empty()) return given;
        const auto it = prompt_texts_.find(index);
        return it == prompt_texts_.end() ? "" : it->second;
    }

    std::string new_div(const std::string& kind) { return "p-" + kind + "-" + std::to_string(div_counter_++); }

    void add_plot(const std::string& div, json traces, json layout) {
        plots_.push_back({{"div", div}, {"traces", std::move(traces)}, {"layout", std::move(layout)}});
    }

    void open_section(const std::string& anchor, const std::string& title) {
        nav_ += "<a href=\"#" + html(anchor) + "\">" + html(title) + "</a>";
        body_ += "<section id=\"" + html(anchor) + "\">\n<h2>" + html(title) + "</h2>\n";
    }
    void close_section() { body_ += "</section>\n"; }

    /// Appends a <script> element with `js`, which must not contain "</script" (any case): it would end the
    /// element early. plotly.js is checked when it is installed, figures.js here (it is small).
    static void add_script(std::string& page, const std::string& comment, std::string_view js) {
        for (size_t at = js.find("</"); at != std::string_view::npos; at = js.find("</", at + 1)) {
            std::string tag(js.substr(at, 8));
            std::transform(tag.begin(), tag.end(), tag.begin(), [](unsigned char c) { return std::tolower(c); });
            if (tag == "</script")
                throw nscope::RuntimeError("report: the embedded " + comment +
                                           " contains '</script'; rebuild the plugin");
        }
        page += "<script>/* " + comment + " */\n";
        page += js;
        page += "\n</script>\n";
    }

    /// One section per analysis: the plugin's bespoke section when there is one and the result has what it
    /// needs, followed by the figures and tables of the result that it does not show; otherwise a generic
    /// section with the summary, every figure and every table.
    void section_analysis(const std::string& id, const std::string& plugin, const nscope::Result& r) {
        using Bespoke = bool (ReportExporter::*)(const std::string&, const nscope::Result&, Covered&);
        static const std::map<std::string, Bespoke> bespoke = {{"heatmap", &ReportExporter::section_heatmap},
                                                               {"stats", &ReportExporter::section_stats},
                                                               {"dead", &ReportExporter::section_dead},
                                                               {"topk", &ReportExporter::section_topk},
                                                               {"compare", &ReportExporter::section_compare}};
        const auto b = bespoke.find(plugin);
        Covered covered;
        if (b != bespoke.end() && (this->*(b->second))(id, r, covered)) {
            generic_parts(id, r, covered, false);
        } else {
            open_section("analysis-" + id, plugin.empty() ? id : id + " (" + plugin + ")");
            generic_parts(id, r, Covered{}, true);
        }
        close_section();
    }

    /// The result's summary (optional), then its figures (Plotly charts drawn from the spec by figures.js)
    /// and tables (the first max_rows rows), except those in `covered`.
    void generic_parts(const std::string& id, const nscope::Result& r, const Covered& covered, bool summary) {
        const json& d = r.data;
        const auto part = [&](const char* key) -> const json* {
            if (!d.is_object() || !d.contains(key)) return nullptr;
            if (d[key].is_object()) return &d[key];
            body_ += "<p class=\"note\">data." + std::string(key) + " is not an object; see results/" + html(id) +
                     ".json.</p>\n";
            return nullptr;
        };
        const json* figures = part("figures");
        const json* tables = part("tables");
        const bool has_summary = summary && d.is_object() && d.contains("summary");
        if (has_summary) summary_table(d["summary"]);
        std::string grid;
        if (figures)
            for (const auto& [name, spec] : figures->items()) {
                if (covered.figures.count(name)) continue;
                const std::string div = new_div("fig");
                grid += "<div class=\"plot\" id=\"" + div + "\"></div>\n";
                figures_.push_back({{"div", div}, {"name", name}, {"spec", spec}});
            }
        if (!grid.empty()) body_ += "<div class=\"grid\">\n" + grid + "</div>\n";
        size_t n_tables = 0;
        if (tables)
            for (const auto& [name, t] : tables->items())
                if (!covered.tables.count(name)) generic_table(id, name, t), ++n_tables;
        if (summary && !has_summary && grid.empty() && n_tables == 0)
            body_ += "<p class=\"note\">No summary, figures or tables; the result is in results/" + html(id) +
                     ".json.</p>\n";
    }

    /// A JSON value as escaped HTML text: null is a non-finite number (result.h), long text is shortened.
    static std::string value_html(const json& v) {
        if (v.is_number_integer()) return v.dump();
        if (v.is_number() || v.is_null()) return num(v.is_null() ? NAN : v.get<double>());
        if (v.is_string()) return html(shorten(v.get<std::string>(), 200));
        return html(shorten(v.dump(-1, ' ', false, json::error_handler_t::replace), 200));
    }
    static std::string cell(const json& v) {
        return (v.is_number() || v.is_null() ? "<td class=\"num\">" : "<td>") + value_html(v) + "</td>";
    }

    void summary_table(const json& s) {
        if (!s.is_object()) {
            body_ += "<p class=\"note\">Summary: " + value_html(s) + "</p>\n";
            return;
        }
        if (s.empty()) return;
        body_ += "<table class=\"summary\">\n";
        for (const auto& [k, v] : s.items()) body_ += "<tr><th>" + html(k) + "</th>" + cell(v) + "</tr>\n";
        body_ += "</table>\n";
    }

    void generic_table(const std::string& id, const std::string& name, const json& t) {
        body_ += "<h3>Table " + html(name) + "</h3>\n";
        if (!t.is_object() || !t.contains("columns") || !t["columns"].is_array() || !t.contains("rows") ||
            !t["rows"].is_array()) {
            body_ += "<p class=\"note\">Not a table ({\"columns\": [...], \"rows\": [[...], ...]}); see results/" +
                     html(id) + ".json.</p>\n";
            return;
        }
        if (t.contains("title") && t["title"].is_string())
            body_ += "<p class=\"note\">" + html(t["title"].get<std::string>()) + "</p>\n";
        const json& columns = t["columns"];
        const json& rows = t["rows"];
        body_ += "<div class=\"wide\"><table>\n<tr>";
        for (const auto& c : columns) body_ += "<th>" + html(c.is_string() ? c.get<std::string>() : c.dump()) + "</th>";
        body_ += "</tr>\n";
        const size_t n = std::min(rows.size(), max_rows_);
        for (size_t i = 0; i < n; ++i) {
            // A row that is not an array is shown whole in the first column rather than dropped.
            const json& row = rows[i];
            body_ += "<tr>";
            for (size_t c = 0; c < std::max<size_t>(columns.size(), 1); ++c) {
                const json* v = row.is_array() ? (c < row.size() ? &row[c] : nullptr) : c == 0 ? &row : nullptr;
                body_ += v ? cell(*v) : "<td></td>";
            }
            body_ += "</tr>\n";
        }
        body_ += "</table></div>\n";
        if (rows.empty()) body_ += "<p class=\"note\">No rows.</p>\n";
        if (rows.size() > n)
            body_ += "<p class=\"note\">" + std::to_string(rows.size() - n) + " more rows in results/" + html(id) +
                     ".json (table " + html(name) + ").</p>\n";
    }

    static json base_layout(const std::string& title, int height) {
        // Title on the left: the mode bar sits top right.
        return {{"title", {{"text", plot_text(title)}, {"font", {{"size", 13}}}, {"x", 0.01}, {"xanchor", "left"}}},
                {"height", height},
                {"margin", {{"l", 60}, {"r", 20}, {"t", 48}, {"b", 60}}},
                {"font", {{"size", 11}}}};
    }

    std::string run_name(const nscope::ExportContext& ctx) const {
        if (ctx.manifest && ctx.manifest->is_object() && ctx.manifest->contains("name"))
            return ctx.manifest->value("name", "");
        return ctx.run_dir.filename().string();
    }

    std::string header(const nscope::ExportContext& ctx, const std::string& name) const {
        static const json empty = json::object();
        const json& m = ctx.manifest && ctx.manifest->is_object() ? *ctx.manifest : empty;
        const nscope::RunContext* run = ctx.run;
        std::vector<std::pair<std::string, std::string>> facts;
        auto fact = [&](const std::string& k, const std::string& v) {
            if (!v.empty()) facts.emplace_back(k, v);
        };
        auto str = [&](const json& j, const char* k) -> std::string {
            if (!j.is_object() || !j.contains(k) || j[k].is_null()) return "";
            return j[k].is_string() ? j[k].get<std::string>() : j[k].dump();
        };
        fact("run", str(m, "run_id"));
        if (run) {
            std::string model = run->model_name;
            const json& info = run->model_info;
            if (info.is_object()) {
                std::string arch = str(info, "architecture");
                std::string dims;
                for (const char* k : {"n_layers", "d_model", "d_mlp", "n_heads", "vocab_size"})
                    if (info.contains(k) && info[k].is_number()) dims += (dims.empty() ? "" : ", ") + std::string(k) + " " + info[k].dump();
                if (!arch.empty()) model += " — " + arch;
                if (!dims.empty()) model += " (" + dims + ")";
            }
            fact("model", model);
            size_t tokens = 0;
            for (const auto* p : run->prompts) tokens += p ? p->tokens.size() : 0;
            fact("prompts", std::to_string(run->prompts.size()) + " prompts, " + std::to_string(tokens) + " tokens");
            std::string hooks;
            for (const auto& h : run->hooks) hooks += (hooks.empty() ? "" : ", ") + h.name;
            fact("hooks", shorten(hooks, 400));
        }
        std::string analyses;
        for (const auto& id : ctx.analysis_order) {
            const auto p = ctx.analysis_plugins.find(id);
            analyses += (analyses.empty() ? "" : ", ") + id + (p != ctx.analysis_plugins.end() && p->second != id ? " (" + p->second + ")" : "");
        }
        fact("analyses", analyses);
        fact("started", str(m, "started"));
        std::string build = str(m, "nscope_version");
        if (!build.empty()) build = "nscope " + build;
        if (m.contains("seed")) build += (build.empty() ? "" : ", ") + std::string("seed ") + m["seed"].dump();
        if (m.contains("threads")) build += ", " + m["threads"].dump() + " threads";
        fact("setup", build);
        if (m.contains("interventions") && m["interventions"].is_array() && !m["interventions"].empty()) {
            std::string iv;
            for (const auto& i : m["interventions"]) iv += (iv.empty() ? "" : "; ") + i.dump(-1, ' ', false, json::error_handler_t::replace);
            fact("interventions", shorten(iv, 600));
        }
        fact("run directory", m.value("run_dir", ctx.run_dir.string()));  // a merge names its final folder
        std::string out = "<header>\n<h1>" + html(title_.empty() ? name : title_) + "</h1>\n";
        out += "<div class=\"sub\">NeuronScope report</div>\n<table class=\"facts\">\n";
        for (const auto& [k, v] : facts) out += "<tr><td>" + html(k) + "</td><td>" + html(v) + "</td></tr>\n";
        return out + "</table>\n</header>\n";
    }

    void section_prompts(const nscope::ExportContext& ctx) {
        if (!ctx.run || ctx.run->prompts.empty() || max_prompts_ == 0) return;
        open_section("prompts", "Prompts");
        body_ += "<table>\n<tr><th>#</th><th>text</th><th>labels</th><th>tokens</th></tr>\n";
        size_t shown = 0;
        for (const auto* p : ctx.run->prompts) {
            if (!p) continue;
            if (shown++ == max_prompts_) break;
            const std::string text = prompt_text(static_cast<int64_t>(p->index), p->text);
            body_ += "<tr><td class=\"num\">" + std::to_string(p->index) + "</td><td class=\"ctx\">" + html(shorten(text, 300)) +
                     "</td><td>" + (p->labels.is_null() ? "" : html(p->labels.dump(-1, ' ', false, json::error_handler_t::replace))) +
                     "</td><td class=\"num\">" + std::to_string(p->tokens.size()) + "</td></tr>\n";
        }
        body_ += "</table>\n";
        if (ctx.run->prompts.size() > max_prompts_)
            body_ += "<p class=\"note\">" + std::to_string(ctx.run->prompts.size() - max_prompts_) + " more not shown.</p>\n";
        close_section();
    }

    bool section_heatmap(const std::string& id, const nscope::Result& r, Covered& covered) {
        const json& figs = r.data.contains("figures") ? r.data["figures"] : json::object();
        const json& shown = r.data.contains("heatmaps") ? r.data["heatmaps"] : json::array();
        std::vector<std::string> hooks;
        std::map<int64_t, std::map<std::string, const json*>> by_prompt;
        for (const auto& h : shown) {
            const std::string hook = h.value("hook", ""), fig = h.value("figure", "");
            if (!h.contains("prompt") || !h["prompt"].is_number_integer() || !figs.contains(fig)) continue;
            covered.figures.insert(fig);
            if (std::find(hooks.begin(), hooks.end(), hook) == hooks.end()) hooks.push_back(hook);
            by_prompt[h["prompt"].get<int64_t>()][hook] = &figs[fig];
        }
        if (by_prompt.empty()) return false;
        std::sort(hooks.begin(), hooks.end(), nscope::common::hook_order);
        open_section("heatmap-" + id, "Heatmaps: " + id);
        body_ += "<p class=\"note\">Activation of the selected neurons (columns) at every token (rows) of one prompt, one "
                 "chart per hook. Neurons: " +
                 html(r.data.contains("summary") && r.data["summary"].value("selection", "") == "neurons"
                          ? std::string("as listed in the recipe")
                          : std::string("highest variance over the selected prompts")) +
                 ". Red is positive, blue negative.</p>\n";
        const std::string select = "sel-" + std::to_string(div_counter_++);
        body_ += "<div class=\"controls\"><label>Prompt <select id=\"" + select + "\">";
        json group = {{"select", select}, {"divs", json::array()}, {"prompts", json::array()}};
        std::vector<std::string> divs;
        for (size_t i = 0; i < hooks.size(); ++i) divs.push_back(new_div("heat"));
        size_t k = 0;
        for (const auto& [prompt, figures] : by_prompt) {
            std::string label = "prompt " + std::to_string(prompt);
            json specs = json::array();
            for (size_t i = 0; i < hooks.size(); ++i) {
                const auto f = figures.find(hooks[i]);
                if (f == figures.end()) {
                    specs.push_back(nullptr);
                    continue;
                }
                const json& fig = *f->second;
                json y = json::array(), x = json::array();
                size_t pos = 0;
                std::string text;
                for (const auto& t : fig.value("y", json::array())) {
                    const std::string tok = t.is_string() ? t.get<std::string>() : t.dump();
                    text += tok;
                    y.push_back(std::to_string(pos++) + ": " + plot_text(tok));  // unique category per position
                }
                for (const auto& n : fig.value("x", json::array())) x.push_back(n.is_string() ? plot_text(n.get<std::string>()) : n.dump());
                if (i == 0) label += ": " + shorten(text, 60);
                const int height = std::max(260, 90 + 18 * static_cast<int>(pos));
                json layout = base_layout(hooks[i], height);
                layout["yaxis"] = {{"autorange", "reversed"}, {"type", "category"}, {"title", {{"text", "token"}}}};
                layout["xaxis"] = {{"type", "category"}, {"title", {{"text", "neuron"}}}};
                layout["margin"]["l"] = 110;
                json trace = {{"type", "heatmap"}, {"z", fig.value("z", json::array())}, {"x", x}, {"y", y},
                              {"colorscale", "RdBu"}, {"zmid", 0},  // plotly RdBu: high = red
                              {"hovertemplate", "token %{y}<br>neuron %{x}<br>value %{z:.4f}<extra></extra>"}};
                specs.push_back({{"traces", json::array({trace})}, {"layout", layout}});
            }
            body_ += "<option value=\"" + std::to_string(k++) + "\">" + html(label) + "</option>";
            group["prompts"].push_back({{"prompt", prompt}, {"plots", specs}});
        }
        body_ += "</select></label></div>\n<div class=\"grid\">\n";
        for (const auto& d : divs) {
            body_ += "<div class=\"plot\" id=\"" + d + "\"></div>\n";
            group["divs"].push_back(d);
        }
        body_ += "</div>\n";
        heatmap_groups_.push_back(group);
        return true;
    }

    void section_histograms() {
        if (hists_.empty()) return;
        open_section("histograms", "Activation histograms");
        body_ += "<p class=\"note\">Every activation value of every real token, per hook (fixed-bin histograms "
                 "computed while the run streamed; padding excluded).</p>\n"
                 "<div class=\"controls\"><label><input type=\"checkbox\" id=\"hist-log\"> log scale</label></div>\n"
                 "<div class=\"grid small\">\n";
        std::vector<std::string> hooks;
        for (const auto& [hook, h] : hists_) hooks.push_back(hook);
        std::sort(hooks.begin(), hooks.end(), nscope::common::hook_order);
        for (const auto& hook : hooks) {
            const json h = hists_.at(hook).to_json();
            const std::string div = new_div("hist");
            body_ += "<div class=\"plot\" id=\"" + div + "\"></div>\n";
            json layout = base_layout(hook, 280);
            layout["xaxis"] = {{"title", {{"text", "activation (n " + h["n"].dump() + ", mean " +
                                                       num(h["mean"].is_number() ? h["mean"].get<double>() : NAN) + ")"}}}};
            layout["yaxis"] = {{"title", {{"text", "count"}}}};
            layout["bargap"] = 0;
            add_plot(div,
                     json::array({{{"type", "bar"}, {"x", h["x"]}, {"y", h["y"]}, {"width", h["width"]},
                                   {"marker", {{"color", "#3b6fb6"}}},
                                   {"hovertemplate", "%{x:.4g}: %{y}<extra></extra>"}}}),
                     layout);
            histogram_divs_.push_back(div);
        }
        body_ += "</div>\n";
        close_section();
    }

    /// One section per SAE of the run (manifest `saes`, docs/sae.md): its sizes and the statistics train-sae
    /// measured on held-out tokens — a table `metrics` and a histogram `density_histogram` of the latents'
    /// log10 firing frequency, drawn by the generic path as any analyzer's table and figure.
    void section_saes(const nscope::ExportContext& ctx) {
        if (!ctx.manifest || !ctx.manifest->is_object() || !ctx.manifest->contains("saes")) return;
        const json& saes = (*ctx.manifest)["saes"];
        if (!saes.is_array()) return;
        for (size_t i = 0; i < saes.size(); ++i) {
            const json& e = saes[i];
            const json sae = e.value("sae", json::object());
            const json stats = sae.value("stats", json::object());
            const std::string point = e.value("point", "");
            open_section("sae-" + std::to_string(i), "Sparse autoencoder: " + point);
            const std::string arch = sae.value("architecture", "");
            const auto latents = sae.value("latents", int64_t{0});
            std::string what = arch + " SAE on " + e.value("hook", "") + ": " + std::to_string(sae.value("d_in", int64_t{0})) +
                               " → " + std::to_string(latents) + " latents" +
                               (arch == "topk" ? ", k " + std::to_string(sae.value("k", int64_t{0}))
                                               : ", l1 " + num(sae.value("l1", 0.0)));
            const json training = sae.value("training", json::object());
            if (training.contains("steps")) what += ", trained " + training["steps"].dump() + " steps";
            body_ += "<p class=\"note\">" + html(what) + " (" + html(e.value("path", "")) + "). ";
            if (!stats.is_object() || !stats.contains("mse")) {
                body_ += "Its sae.json has no statistics: they are written by <code>nscope train-sae</code>.</p>\n";
                close_section();
                continue;
            }
            body_ += "Measured by train-sae on " + html(stats.value("tokens", json(nullptr)).dump()) +
                     " held-out tokens of its training data (not on this run's prompts).</p>\n";
            nscope::Table metrics;
            metrics.columns = {"metric", "value", "meaning"};
            const auto row = [&](const char* key, const char* name, const std::string& meaning) {
                if (stats.contains(key)) metrics.add_row({name, stats[key], meaning});
            };
            row("mse", "reconstruction MSE", "mean over tokens and dimensions of (x − x̂)²");
            row("explained_variance", "explained variance", "1 − ‖x − x̂‖² / ‖x − mean(x)‖²");
            row("loss_recovered", "fraction of loss recovered", "(L_zero − L_sae) / (L_zero − L_clean), next-token loss");
            row("loss_clean", "loss, clean", "the model's next-token loss");
            row("loss_patched", "loss, reconstruction patched in", "with x̂ in place of the hook's activation");
            row("loss_zero_ablated", "loss, hook zero-ablated", "with the hook's activation set to 0");
            row("l0", "L0", "mean number of active latents per token");
            const auto count = [&](const char* key) {
                return json(stats.contains(key) && stats[key].is_number()
                                ? static_cast<int64_t>(std::llround(stats[key].get<double>() * static_cast<double>(latents)))
                                : 0);
            };
            row("dead_fraction", "dead latents (fraction)", "never fired on the held-out tokens");
            if (stats.contains("dead_fraction")) metrics.add_row({"dead latents", count("dead_fraction"), "of " + std::to_string(latents)});
            row("dense_fraction", "dense latents (fraction)", "fire on more than 10% of tokens");
            if (stats.contains("dense_fraction")) metrics.add_row({"dense latents", count("dense_fraction"), "of " + std::to_string(latents)});
            nscope::Result r;
            r.set_table("metrics", std::move(metrics));
            const json h = stats.value("density_histogram", json::object());
            if (h.contains("counts") && h["counts"].is_array()) {
                const double from = h.value("log10_frequency_from", -6.0), width = h.value("bin_width", 0.5);
                json x = json::array();
                for (size_t b = 0; b < h["counts"].size(); ++b) x.push_back(from + (static_cast<double>(b) + 0.5) * width);
                r.set_figure("density_histogram",
                             {{"kind", "histogram"},
                              {"title", "feature density: latents by log10 firing frequency (" +
                                            h.value("never_fired", json(0)).dump() + " never fired, not shown)"},
                              {"x_label", "log10(fraction of tokens the latent fires on)"},
                              {"y_label", "latents"},
                              {"x", x},
                              {"y", h["counts"]},
                              {"width", width}});
            }
            generic_parts("sae-" + std::to_string(i), r, Covered{}, false);
            close_section();
        }
    }

    bool section_stats(const std::string& id, const nscope::Result& r, Covered& covered) {
        const TableView t(r.data, "layers");
        if (!t.size()) return false;
        open_section("stats-" + id, "Statistics per hook: " + id);
        json hooks = json::array(), mean = json::array(), sd = json::array(), fa = json::array(), mn = json::array(),
             mx = json::array();
        body_ += "<div class=\"grid\"><div class=\"plot\" id=\"";
        const std::string d1 = new_div("stats"), d2 = new_div("stats");
        body_ += d1 + "\"></div><div class=\"plot\" id=\"" + d2 + "\"></div></div>\n";
        body_ += "<table>\n<tr><th>hook</th><th>layer</th><th>neurons</th><th>tokens</th><th>mean</th><th>std</th>"
                 "<th>min</th><th>max</th><th>frac active</th><th>skewness</th><th>kurtosis</th></tr>\n";
        for (size_t i = 0; i < t.size(); ++i) {
            const std::string hook = t.text(i, "hook");
            hooks.push_back(plot_text(hook));
            mean.push_back(finite_or_null(t.number(i, "mean")));
            sd.push_back(finite_or_null(t.number(i, "std")));
            fa.push_back(finite_or_null(t.number(i, "frac_active")));
            mn.push_back(finite_or_null(t.number(i, "min")));
            mx.push_back(finite_or_null(t.number(i, "max")));
            body_ += "<tr><td>" + html(hook) + "</td><td class=\"num\">" + std::to_string(t.integer(i, "layer")) +
                     "</td><td class=\"num\">" + std::to_string(t.integer(i, "neurons", 0)) + "</td><td class=\"num\">" +
                     std::to_string(t.integer(i, "count", 0)) + "</td>";
            for (const char* c : {"mean", "std", "min", "max", "frac_active", "skewness", "kurtosis"})
                body_ += "<td class=\"num\">" + num(t.number(i, c)) + "</td>";
            body_ += "</tr>\n";
        }
        body_ += "</table>\n";
        json l1 = base_layout("mean ± std (averaged over neurons), min / max", 320);
        l1["xaxis"] = {{"type", "category"}, {"automargin", true}};
        add_plot(d1,
                 json::array({{{"type", "scatter"}, {"mode", "lines+markers"}, {"name", "mean"}, {"x", hooks}, {"y", mean},
                               {"error_y", {{"type", "data"}, {"array", sd}, {"visible", true}}}},
                              {{"type", "scatter"}, {"mode", "markers"}, {"name", "min"}, {"x", hooks}, {"y", mn}},
                              {{"type", "scatter"}, {"mode", "markers"}, {"name", "max"}, {"x", hooks}, {"y", mx}}}),
                 l1);
        json l2 = base_layout("mean fraction of tokens active (threshold " +
                                  num(r.data.contains("summary") && r.data["summary"].contains("threshold") &&
                                              r.data["summary"]["threshold"].is_number()
                                          ? r.data["summary"]["threshold"].get<double>()
                                          : NAN) +
                                  ")",
                              320);
        l2["xaxis"] = {{"type", "category"}, {"automargin", true}};
        l2["yaxis"] = {{"range", {0, 1}}};
        add_plot(d2, json::array({{{"type", "bar"}, {"x", hooks}, {"y", fa}, {"marker", {{"color", "#3b8f5a"}}}}}), l2);
        covered.tables.insert("layers");
        covered.figures.insert("frac_active_by_hook");
        return true;
    }

    bool section_dead(const std::string& id, const nscope::Result& r, Covered& covered) {
        const TableView t(r.data, "layers");
        if (!t.size()) return false;
        open_section("dead-" + id, "Dead, always-on and flat neurons: " + id);
        const json s = r.data.value("summary", json::object());
        body_ += "<p class=\"note\">Dead: never above epsilon " + html(num(s.value("epsilon", NAN))) +
                 "; always-on: above it on at least " + html(num(s.value("on_fraction", NAN))) +
                 " of tokens; flat: not dead and std below " + html(num(s.value("flat_std", NAN))) + ".</p>\n";
        const std::string div = new_div("dead");
        body_ += "<div class=\"plot\" id=\"" + div + "\"></div>\n";
        body_ += "<table>\n<tr><th>hook</th><th>layer</th><th>neurons</th><th>tokens</th><th>dead</th><th>always on</th>"
                 "<th>flat</th></tr>\n";
        json hooks = json::array(), dead = json::array(), on = json::array(), flat = json::array();
        for (size_t i = 0; i < t.size(); ++i) {
            const std::string hook = t.text(i, "hook");
            hooks.push_back(plot_text(hook));
            dead.push_back(t.integer(i, "dead", 0));
            on.push_back(t.integer(i, "always_on", 0));
            flat.push_back(t.integer(i, "flat", 0));
            body_ += "<tr><td>" + html(hook) + "</td>";
            for (const char* c : {"layer", "neurons", "tokens", "dead", "always_on", "flat"})
                body_ += "<td class=\"num\">" + std::to_string(t.integer(i, c, 0)) + "</td>";
            body_ += "</tr>\n";
        }
        body_ += "</table>\n";
        json layout = base_layout("neurons per category and hook", 340);
        layout["barmode"] = "group";
        layout["xaxis"] = {{"type", "category"}, {"automargin", true}};
        layout["yaxis"] = {{"title", {{"text", "neurons"}}}, {"rangemode", "tozero"}};
        add_plot(div,
                 json::array({{{"type", "bar"}, {"name", "dead"}, {"x", hooks}, {"y", dead}, {"marker", {{"color", "#b33a3a"}}}},
                              {{"type", "bar"}, {"name", "always on"}, {"x", hooks}, {"y", on}, {"marker", {{"color", "#d99a2b"}}}},
                              {{"type", "bar"}, {"name", "flat"}, {"x", hooks}, {"y", flat}, {"marker", {{"color", "#7a7f8c"}}}}}),
                 layout);
        covered.tables.insert("layers");
        return true;
    }

    bool section_topk(const std::string& id, const nscope::Result& r, Covered& covered) {
        const TableView t(r.data, "top_activations");
        if (!t.size()) return false;
        // source -> neuron -> rows (rank order as in the table)
        std::map<std::string, std::map<int64_t, std::vector<size_t>>> rows;
        for (size_t i = 0; i < t.size(); ++i) rows[t.text(i, "source")][t.integer(i, "neuron")].push_back(i);
        std::vector<std::string> sources;
        for (const auto& [s, _] : rows) sources.push_back(s);
        std::sort(sources.begin(), sources.end(), [](const std::string& a, const std::string& b) {
            const bool ga = a.rfind("group:", 0) == 0, gb = b.rfind("group:", 0) == 0;
            return ga != gb ? gb : nscope::common::hook_order(a, b);
        });
        open_section("topk-" + id, "Top examples: " + id);
        body_ += "<p class=\"note\">Per hook, the " + std::to_string(max_neurons_) +
                 " neurons with the highest single activation, each with its top " + std::to_string(max_examples_) +
                 " token occurrences; the triggering token is highlighted in its context.</p>\n";
        size_t n_source = 0;
        for (const auto& source : sources) {
            auto& neurons = rows[source];
            std::vector<std::pair<double, int64_t>> order;
            for (auto& [neuron, idx] : neurons) {
                std::sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return t.integer(a, "rank") < t.integer(b, "rank"); });
                const double best = t.number(idx.front(), "value");
                order.emplace_back(std::isfinite(best) ? best : -INFINITY, neuron);
            }
            std::sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
                return a.first != b.first ? a.first > b.first : a.second < b.second;
            });
            body_ += std::string("<details") + (n_source++ < 2 ? " open" : "") + "><summary>" + html(source) + " — " +
                     std::to_string(neurons.size()) + " neurons</summary>\n";
            body_ += "<table>\n<tr><th>neuron</th><th>rank</th><th>value</th><th>prompt</th><th>pos</th><th>context</th></tr>\n";
            for (size_t k = 0; k < order.size() && k < max_neurons_; ++k) {
                const auto& idx = neurons[order[k].second];
                const size_t n = std::min(idx.size(), max_examples_);
                for (size_t e = 0; e < n; ++e) {
                    const size_t i = idx[e];
                    body_ += "<tr>";
                    if (e == 0) {
                        body_ += "<td rowspan=\"" + std::to_string(n) + "\">" +
                                 (order[k].second < 0 ? std::string("group") : "n" + std::to_string(order[k].second)) + "</td>";
                    }
                    body_ += "<td class=\"num\">" + std::to_string(t.integer(i, "rank")) + "</td><td class=\"num\">" +
                             num(t.number(i, "value")) + "</td><td class=\"num\">" + std::to_string(t.integer(i, "prompt")) +
                             "</td><td class=\"num\">" + std::to_string(t.integer(i, "position")) + "</td><td class=\"ctx\">" +
                             html(t.text(i, "before")) + "<mark>" + html(t.text(i, "token")) + "</mark>" +
                             html(t.text(i, "after")) + "</td></tr>\n";
                }
            }
            body_ += "</table>\n";
            if (order.size() > max_neurons_)
                body_ += "<p class=\"note\">" + std::to_string(order.size() - max_neurons_) +
                         " more neurons in results/" + html(id) + ".json (table top_activations).</p>\n";
            body_ += "</details>\n";
        }
        covered.tables.insert("top_activations");
        return true;
    }

    bool section_compare(const std::string& id, const nscope::Result& r, Covered& covered) {
        const TableView t(r.data, "pairs");
        if (!t.size()) return false;
        std::vector<std::string> hooks;
        if (r.data.contains("hooks") && r.data["hooks"].is_array())
            for (const auto& h : r.data["hooks"]) hooks.push_back(h.is_string() ? h.get<std::string>() : h.dump());
        std::map<int64_t, std::map<std::string, std::pair<double, double>>> values;  // pair -> hook -> (cos, mse)
        std::map<int64_t, std::string> names, a_names, b_names;
        for (size_t i = 0; i < t.size(); ++i) {
            const int64_t pair = t.integer(i, "pair");
            const std::string hook = t.text(i, "hook");
            if (std::find(hooks.begin(), hooks.end(), hook) == hooks.end()) hooks.push_back(hook);
            values[pair][hook] = {t.number(i, "cosine"), t.number(i, "mse")};
            a_names[pair] = "#" + std::to_string(t.integer(i, "a")) + " " + prompt_text(t.integer(i, "a"), t.text(i, "a_text"));
            b_names[pair] = "#" + std::to_string(t.integer(i, "b")) + " " + prompt_text(t.integer(i, "b"), t.text(i, "b_text"));
            names[pair] = shorten(a_names[pair], 32) + " | " + shorten(b_names[pair], 32);
        }
        open_section("compare-" + id, "Prompt comparisons: " + id);
        const std::string pool = r.data.contains("summary") ? r.data["summary"].value("pool", "") : "";
        body_ += "<p class=\"note\">Cosine similarity and mean squared difference of the pooled activations of each "
                 "prompt pair, per hook (pool: " + html(pool) + ").</p>\n";
        const std::string d1 = new_div("cmp"), d2 = new_div("cmp");
        body_ += "<div class=\"grid\"><div class=\"plot\" id=\"" + d1 + "\"></div><div class=\"plot\" id=\"" + d2 +
                 "\"></div></div>\n";
        json x = json::array();
        for (const auto& h : hooks) x.push_back(plot_text(h));
        json cos_traces = json::array(), mse_traces = json::array();
        for (const auto& [pair, by_hook] : values) {
            json yc = json::array(), ym = json::array();
            for (const auto& h : hooks) {
                const auto it = by_hook.find(h);
                yc.push_back(it == by_hook.end() ? json(nullptr) : finite_or_null(it->second.first));
                ym.push_back(it == by_hook.end() ? json(nullptr) : finite_or_null(it->second.second));
            }
            const std::string name = plot_text(shorten(names[pair], 70));
            cos_traces.push_back({{"type", "scatter"}, {"mode", "lines+markers"}, {"name", name}, {"x", x}, {"y", yc}});
            mse_traces.push_back({{"type", "scatter"}, {"mode", "lines+markers"}, {"name", name}, {"x", x}, {"y", ym}});
        }
        json l1 = base_layout("cosine similarity per hook", 360), l2 = base_layout("MSE per hook", 360);
        for (json* l : {&l1, &l2}) {
            (*l)["xaxis"] = {{"type", "category"}, {"automargin", true}};
            (*l)["legend"] = {{"orientation", "h"}, {"y", -0.35}};
            (*l)["margin"]["b"] = 120;
        }
        add_plot(d1, cos_traces, l1);
        add_plot(d2, mse_traces, l2);
        body_ += "<table>\n<tr><th>pair</th><th>a</th><th>b</th><th>mean cosine</th></tr>\n";
        for (const auto& [pair, by_hook] : values) {
            double s = 0;
            int n = 0;
            for (const auto& [h, v] : by_hook)
                if (std::isfinite(v.first)) s += v.first, ++n;
            body_ += "<tr><td class=\"num\">" + std::to_string(pair) + "</td><td class=\"ctx\">" + html(shorten(a_names[pair], 200)) +
                     "</td><td class=\"ctx\">" + html(shorten(b_names[pair], 200)) +
                     "</td><td class=\"num\">" + num(n ? s / n : NAN) + "</td></tr>\n";
        }
        body_ += "</table>\n";
        covered.tables.insert("pairs");
        covered.figures.insert("cosine_by_hook");
        return true;
    }

    // parameters
    std::string title_;
    nscope::common::HookFilter filter_;
    bool histograms_ = true;
    int bins_ = 200;
    size_t max_neurons_ = 8, max_examples_ = 5, max_prompts_ = 100, max_rows_ = 50;
    // streamed state: bins_ counters per hook
    std::map<std::string, Histogram> hists_;
    nscope::ParallelFor parallel_for_;
    // page under construction
    json plots_, heatmap_groups_, histogram_divs_;
    json figures_;  // generic figures: {div, name, spec}, drawn by figures.js
    size_t div_counter_ = 0;
    std::string nav_, body_;
    std::map<int64_t, std::string> prompt_texts_;
};

}  // namespace

NSCOPE_EXPORTER_PLUGIN(ReportExporter, "report", "1.0.0",
                       "report.html: one self-contained interactive HTML report (Plotly, works offline)")
