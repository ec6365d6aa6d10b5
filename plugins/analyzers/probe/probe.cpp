// `probe` analyzer: linear probes that say which neurons of a hook carry a prompt label.
//
// Points: every real token of the labelled prompts (`points: tokens`, optionally one position per prompt), or
// one pooled point per prompt (`points: prompts`, `pool: mean | last`); each takes its prompt's label. A
// bounded, seeded bottom-k sample of the points is kept per hook (nscope_common/points.h; mergeable, the same
// points for every hook). At finish, per hook: the sampled prompts are split into train / test by a seeded
// hash (tokens of one prompt never sit on both sides), features are standardised with the training points'
// mean and standard deviation, and an elastic-net logistic regression (logistic.h) is fitted on the training
// points and scored on the test points. The control task of Hewitt & Liang (2019) gives every token type a
// random label drawn from the training label distribution and fits the same probe on it; selectivity =
// accuracy − control accuracy. Neurons are ranked by the probe's weight mass Σ_classes |W_cj| (standardised
// units, ties to the lower index); `top_neurons` refits on the top N only. Schema: docs/analyses.md#probe.
//
// Memory: max_points × width floats per hook (+ two copies of one hook's points at finish). Cost at finish per
// fit: iterations × 2 products of [train points, width] by [width, classes] (see logistic.h).
#include <nscope/eigen.h>
#include <nscope/sdk.h>

#include <map>
#include <numeric>
#include <optional>
#include <set>
#include <tuple>

#include "logistic.h"
#include "nscope_common/covariance.h"
#include "nscope_common/hooks.h"
#include "nscope_common/params.h"
#include "nscope_common/points.h"

namespace {

using nscope::RowMatrixXf;
using nscope::common::mix64;
using nscope::common::PointMode;
using nscope::common::PointOrigin;
using nscope::common::PointSample;

constexpr uint64_t kSplitSalt = 0x70726F6265737031ull, kControlSalt = 0x636F6E74726F6C31ull;

struct HookState {
    PointSample sample;
    std::vector<float> x;  // per-batch scratch
    std::vector<PointOrigin> origin;
};

/// One fitted probe and what it is scored on.
struct Fit {
    nscope::probe::LogisticModel model;
    double accuracy = std::numeric_limits<double>::quiet_NaN();
};

/// "#12" (GCC 12 warns falsely, -Wrestrict, on "#" + std::to_string(j)).
std::string neuron_name(int64_t j) {
    std::string s = std::to_string(j);
    s.insert(s.begin(), '#');
    return s;
}

nlohmann::json number_or_null(double x) { return std::isfinite(x) ? nlohmann::json(x) : nlohmann::json(); }

class Probe : public nscope::Analyzer {
public:
    void configure(const nscope::Params& params) override {
        nscope::common::ParamReader p("probe", params,
                                      {"label", "classes", "points", "pool", "position", "max_points", "test_fraction",
                                       "l1_ratio", "C", "alpha", "tol", "max_iter", "control", "top_neurons", "top",
                                       "missing", "hooks", "max_memory_mb"});
        if (!p.has("label") || !p.raw("label").is_string() || p.raw("label").get<std::string>().empty())
            p.fail("label", "is required: the prompt label the probe predicts (labels: {sense: river} -> label: sense)");
        label_ = p.raw("label").get<std::string>();
        classes_ = p.strings("classes");
        if (classes_.size() == 1) p.fail("classes", "needs at least two values, got only '" + classes_[0] + "'");
        points_ = p.choice("points", "tokens", {"tokens", "prompts"});
        if (p.has("pool") && points_ != "prompts") p.fail("pool", "applies to 'points: prompts' only");
        if (p.has("position") && points_ != "tokens") p.fail("position", "applies to 'points: tokens' only");
        const std::string pool = p.choice("pool", "mean", {"mean", "last"});
        mode_ = points_ == "prompts" ? nscope::common::point_mode(pool) : PointMode::Tokens;
        pool_ = points_ == "prompts" ? pool : "";
        if (p.has("position")) {
            const auto& v = p.raw("position");
            if (v.is_string() && v.get<std::string>() == "last") mode_ = PointMode::Last, position_label_ = "last";
            else if (v.is_string() && v.get<std::string>() == "all") position_label_ = "all";
            else if (v.is_number()) position_ = p.as_integer("position", v, -100000, 100000), position_label_ = v.dump();
            else p.fail("position", "must be last, all or a position index (negative: from the end), got " +
                                        nscope::common::describe(v));
        }
        cap_ = static_cast<size_t>(p.integer("max_points", 10000, 4, 10000000));
        test_fraction_ = p.number("test_fraction", 0.2, 0.01, 0.9);
        l1_ratio_ = p.number("l1_ratio", 0.5, 0.0, 1.0);
        if (p.has("C") && p.has("alpha")) p.fail("alpha", "and 'C' set the same penalty (alpha = 1 / (C n)); give one");
        c_ = p.number("C", 1.0, 1e-12, 1e12);
        alpha_ = p.number("alpha", -1.0, 0.0, 1e6);
        tol_ = p.number("tol", 1e-4, 1e-9, 1.0);
        max_iter_ = static_cast<int>(p.integer("max_iter", 2000, 1, 1000000));
        control_ = p.boolean("control", true);
        if (p.has("top_neurons")) {
            const auto& v = p.raw("top_neurons");
            top_neurons_ = v.is_array() ? p.as_integers("top_neurons", v, 1) : std::vector<int64_t>{p.integer("top_neurons", 1, 1)};
            std::sort(top_neurons_.begin(), top_neurons_.end());
            top_neurons_.erase(std::unique(top_neurons_.begin(), top_neurons_.end()), top_neurons_.end());
        }
        top_ = p.integer("top", 20, 1, 100000);
        skip_missing_ = p.choice("missing", "error", {"error", "skip"}) == "skip";
        filter_ = nscope::common::HookFilter(p.strings("hooks"));
        max_memory_mb_ = p.number("max_memory_mb", 4096, 1);
    }

    void begin(const nscope::RunContext& ctx) override {
        parallel_for_ = ctx.parallel_for;
        seed_ = ctx.seed;
        double bytes = 0, widest = 0;
        for (const auto& h : nscope::common::planned_hooks("probe", ctx, filter_)) {
            const double sample = (4.0 * static_cast<double>(h.width) + 64.0) * static_cast<double>(cap_);
            bytes += sample;
            widest = std::max(widest, 2.0 * sample);  // the standardised train / test copies of one hook at finish
        }
        nscope::common::check_memory("probe", bytes + widest, max_memory_mb_, "the sampled points",
                                     "lower 'max_points', or select fewer / narrower hooks with 'hooks'");
        if (!ctx.prompts.empty()) check_labels(ctx.prompts);
    }

    void consume(const nscope::Batch& batch) override {
        // Which rows take part, and (for `position: N`) which position of each.
        std::vector<int64_t> wanted(batch.rows, -2);  // -2: row skipped; -1: every selected point
        for (size_t r = 0; r < batch.rows; ++r) {
            const nscope::PromptInfo* info = r < batch.prompts.size() ? batch.prompts[r] : nullptr;
            const auto label = label_of(info);
            if (!label) {
                ++unlabelled_;
                if (info && missing_.size() < 10) missing_.push_back(static_cast<int64_t>(info->index));
                continue;
            }
            if (!classes_.empty() && std::find(classes_.begin(), classes_.end(), *label) == classes_.end()) continue;
            wanted[r] = -1;
            if (position_) {
                const auto len = static_cast<int64_t>(batch.length(r));
                const int64_t pos = *position_ < 0 ? len + *position_ : *position_;
                if (pos < 0 || pos >= len) {
                    ++short_prompts_;
                    wanted[r] = -2;
                } else {
                    wanted[r] = pos;
                }
            }
        }
        std::vector<HookState*> tasks;
        std::vector<int64_t> widths;
        std::vector<const float*> data;
        for (const auto& act : batch.activations) {
            nscope::common::TokenLayout lay;
            if (!filter_.accept(act.hook, act.view, batch, lay)) continue;
            tasks.push_back(&state(act.hook));
            widths.push_back(lay.neurons);
            data.push_back(act.view.f32());
        }
        std::map<int64_t, int64_t> wanted_by_prompt;  // prompt index -> wanted (row order is per batch)
        for (size_t r = 0; r < batch.rows && r < batch.prompts.size(); ++r)
            if (batch.prompts[r]) wanted_by_prompt[static_cast<int64_t>(batch.prompts[r]->index)] = wanted[r];
        nscope::run_tasks(parallel_for_, tasks.size(), [&](size_t i) {
            HookState& s = *tasks[i];
            nscope::common::batch_points(batch, data[i], widths[i], mode_, s.x, s.origin);
            for (size_t k = 0; k < s.origin.size(); ++k) {
                const auto it = wanted_by_prompt.find(s.origin[k].prompt);
                if (it == wanted_by_prompt.end() || it->second == -2) continue;
                if (it->second >= 0 && s.origin[k].position != it->second) continue;
                s.sample.offer(s.origin[k], s.x.data() + k * static_cast<size_t>(widths[i]), widths[i]);
            }
        });
    }

    bool mergeable() const override { return true; }

    void merge(const nscope::Analyzer& other) override {
        const auto& o = static_cast<const Probe&>(other);
        for (const auto& [hook, s] : o.hooks_) state(hook).sample.merge(s.sample);
        unlabelled_ += o.unlabelled_;
        short_prompts_ += o.short_prompts_;
        for (int64_t m : o.missing_)
            if (missing_.size() < 10) missing_.push_back(m);
        filter_.merge(o.filter_);
    }

    nscope::Result finish() override {
        if (unlabelled_ > 0 && !skip_missing_) throw missing_error(unlabelled_);
        nscope::Result res;
        const std::vector<std::string> names = nscope::common::hooks_in_order(hooks_);
        nscope::Table hooks_table, neurons_table, curve_table;
        hooks_table.columns = {"hook", "layer", "neurons", "points", "test_points", "classes", "accuracy",
                               "control_accuracy", "selectivity", "majority", "train_accuracy", "converged"};
        neurons_table.columns = {"hook", "layer", "rank", "neuron", "weight_mass", "weights"};
        curve_table.columns = {"hook", "layer", "neurons", "accuracy", "control_accuracy"};
        nlohmann::json by_hook = nlohmann::json::object(), curve_series = nlohmann::json::array();
        nlohmann::json bar_x = nlohmann::json::array(), bar_acc = nlohmann::json::array(),
                       bar_ctl = nlohmann::json::array(), bar_maj = nlohmann::json::array();
        std::vector<std::string> all_classes;
        for (const auto& hook : names) {
            const HookResult h = fit_hook(hook, hooks_.at(hook));
            const int layer = nscope::common::hook_layer(hook);
            const int64_t n = h.width;
            const auto k = static_cast<int64_t>(h.classes.size());
            if (all_classes.empty()) all_classes = h.classes;
            const auto& m = h.main.model;
            std::vector<float> weights(static_cast<size_t>(k * n)), intercept(static_cast<size_t>(k));
            for (int64_t c = 0; c < k; ++c) {
                intercept[static_cast<size_t>(c)] = static_cast<float>(m.intercept(c));
                for (int64_t j = 0; j < n; ++j) weights[static_cast<size_t>(c * n + j)] = static_cast<float>(m.coef(c, j));
            }
            res.set_array(hook + ".ranking", nscope::NdArray::ints({n}, h.ranking));
            res.set_array(hook + ".weights", nscope::NdArray::floats({k, n}, std::move(weights)));
            res.set_array(hook + ".intercept", nscope::NdArray::floats({k}, std::move(intercept)));
            res.set_array(hook + ".mean", nscope::NdArray::floats({n}, to_floats(h.standardiser.mean)));
            res.set_array(hook + ".scale", nscope::NdArray::floats({n}, to_floats(h.standardiser.scale)));
            res.set_array(hook + ".points", nscope::NdArray::ints({static_cast<int64_t>(h.where.size() / 3), 3}, h.where));

            const double control = h.control ? h.control->accuracy : std::numeric_limits<double>::quiet_NaN();
            const double selectivity = h.main.accuracy - control;
            nlohmann::json top = nlohmann::json::array(), fig_x = nlohmann::json::array();
            std::vector<nlohmann::json> fig_y(static_cast<size_t>(k == 2 ? 1 : k), nlohmann::json::array());
            for (int64_t rank = 0; rank < std::min<int64_t>(top_, n); ++rank) {
                const int64_t j = h.ranking[static_cast<size_t>(rank)];
                nlohmann::json w = nlohmann::json::object();
                for (int64_t c = 0; c < k; ++c) w[h.classes[static_cast<size_t>(c)]] = m.coef(c, j);
                top.push_back({{"neuron", j}, {"weight_mass", h.mass(j)}, {"weights", w}});
                neurons_table.add_row({hook, layer, rank + 1, j, h.mass(j), w.dump()});
                fig_x.push_back(neuron_name(j));
                if (k == 2) fig_y[0].push_back(m.coef(1, j) - m.coef(0, j));
                else
                    for (int64_t c = 0; c < k; ++c) fig_y[static_cast<size_t>(c)].push_back(m.coef(c, j));
            }
            nlohmann::json series = nlohmann::json::array();
            for (size_t s = 0; s < fig_y.size(); ++s)
                series.push_back({{"name", k == 2 ? h.classes[1] + " vs " + h.classes[0] : h.classes[s]},
                                  {"y", std::move(fig_y[s])}});
            res.set_figure("top_neurons." + hook,
                           {{"kind", "bar"},
                            {"title", hook + ": '" + label_ + "' probe, top " + std::to_string(fig_x.size()) +
                                          " neurons' weights"},
                            {"x", std::move(fig_x)}, {"series", std::move(series)}, {"x_label", "neuron (by rank)"},
                            {"y_label", "weight"}});

            nlohmann::json curve = nlohmann::json::array(), cx = nlohmann::json::array(), cy = nlohmann::json::array();
            for (const auto& [count, acc, ctl] : h.curve) {
                curve.push_back({{"neurons", count}, {"accuracy", number_or_null(acc)},
                                 {"control_accuracy", number_or_null(ctl)}});
                curve_table.add_row({hook, layer, count, number_or_null(acc), number_or_null(ctl)});
                cx.push_back(count);
                cy.push_back(number_or_null(acc));
            }
            if (!top_neurons_.empty()) curve_series.push_back({{"name", hook}, {"x", cx}, {"y", cy}});

            nlohmann::json counts = nlohmann::json::object();
            for (size_t c = 0; c < h.classes.size(); ++c) counts[h.classes[c]] = h.counts[c];
            by_hook[hook] = {{"layer", layer},
                             {"neurons", n},
                             {"points", h.points},
                             {"train_points", h.train},
                             {"test_points", h.test},
                             {"classes", h.classes},
                             {"counts", counts},
                             {"accuracy", number_or_null(h.main.accuracy)},
                             {"train_accuracy", number_or_null(h.train_accuracy)},
                             {"majority", number_or_null(h.majority)},
                             {"control_accuracy", number_or_null(control)},
                             {"selectivity", number_or_null(selectivity)},
                             {"token_types", h.token_types},
                             {"alpha", h.alpha},
                             {"iterations", m.iterations},
                             {"converged", m.converged},
                             {"nonzero_neurons", h.nonzero},
                             {"top_neurons", std::move(top)},
                             {"curve", std::move(curve)}};
            hooks_table.add_row({hook, layer, n, h.points, h.test, k, number_or_null(h.main.accuracy),
                                 number_or_null(control), number_or_null(selectivity), number_or_null(h.majority),
                                 number_or_null(h.train_accuracy), m.converged});
            bar_x.push_back(hook);
            bar_acc.push_back(number_or_null(h.main.accuracy));
            bar_ctl.push_back(number_or_null(control));
            bar_maj.push_back(number_or_null(h.majority));
        }
        nlohmann::json acc_series = nlohmann::json::array({{{"name", "probe"}, {"y", bar_acc}}});
        if (control_ && mode_ != PointMode::Mean) acc_series.push_back({{"name", "control task"}, {"y", bar_ctl}});
        acc_series.push_back({{"name", "majority class"}, {"y", bar_maj}});
        res.set_figure("accuracy_by_hook", {{"kind", "bar"}, {"title", "held-out accuracy of the '" + label_ + "' probe"},
                                            {"x", bar_x}, {"series", std::move(acc_series)}, {"x_label", "hook"},
                                            {"y_label", "accuracy"}});
        if (!curve_series.empty())
            res.set_figure("accuracy_vs_neurons",
                           {{"kind", "line"}, {"title", "held-out accuracy with only the top-N ranked neurons"},
                            {"series", std::move(curve_series)}, {"x_label", "neurons (top N by weight mass)"},
                            {"y_label", "accuracy"}});
        res.set_table("hooks", std::move(hooks_table));
        res.set_table("neurons", std::move(neurons_table));
        if (!top_neurons_.empty()) res.set_table("curve", std::move(curve_table));
        res.data["hooks"] = std::move(by_hook);
        nlohmann::json summary = {{"label", label_},
                                  {"classes", all_classes},
                                  {"points", points_},
                                  {"hooks", names.size()},
                                  {"test_fraction", test_fraction_},
                                  {"l1_ratio", l1_ratio_},
                                  {"control", control_ && mode_ != PointMode::Mean},
                                  {"unlabelled_prompts", unlabelled_},
                                  {"seed", seed_},
                                  {"skipped", filter_.skipped_json()}};
        if (alpha_ >= 0) summary["alpha"] = alpha_;
        else summary["C"] = c_;
        if (!pool_.empty()) summary["pool"] = pool_;
        if (!position_label_.empty()) summary["position"] = position_label_;
        if (position_) summary["short_prompts"] = short_prompts_;
        res.data["summary"] = std::move(summary);
        return res;
    }

private:
    struct HookResult {
        int64_t width = 0, points = 0, train = 0, test = 0, nonzero = 0, token_types = 0;
        std::vector<std::string> classes;
        std::vector<int64_t> counts;  // per class, over every sampled point
        nscope::probe::Standardiser standardiser;
        Fit main;
        std::optional<Fit> control;
        double train_accuracy = 0, majority = 0, alpha = 0;
        std::vector<int64_t> ranking, where;
        std::vector<std::tuple<int64_t, double, double>> curve;  // neurons, accuracy, control accuracy
        double mass(int64_t j) const { return main.model.coef.col(j).cwiseAbs().sum(); }
    };

    static std::vector<float> to_floats(const Eigen::VectorXd& v) {
        std::vector<float> out(static_cast<size_t>(v.size()));
        for (Eigen::Index i = 0; i < v.size(); ++i) out[static_cast<size_t>(i)] = static_cast<float>(v(i));
        return out;
    }

    /// The label of a prompt as text (strings as is, other JSON values dumped), or nothing.
    std::optional<std::string> label_of(const nscope::PromptInfo* info) const {
        if (!info || !info->labels.is_object() || !info->labels.contains(label_)) return std::nullopt;
        const auto& v = info->labels[label_];
        if (v.is_null()) return std::nullopt;
        return v.is_string() ? v.get<std::string>() : v.dump();
    }

    nscope::InputError missing_error(size_t count) const {
        std::string list;
        for (size_t i = 0; i < missing_.size(); ++i) list += (i ? ", " : "") + std::to_string(missing_[i]);
        if (count > missing_.size()) list += " (and " + std::to_string(count - missing_.size()) + " more)";
        return nscope::InputError("probe: " + std::to_string(count) + " prompt(s) have no label '" + label_ +
                                  "': prompt(s) " + list + "; label them, or set 'missing: skip' to leave them out");
    }

    /// Before the first batch: the label exists, and (unless missing: skip) on every prompt.
    void check_labels(const std::vector<const nscope::PromptInfo*>& prompts) {
        std::vector<int64_t> missing;
        std::set<std::string> keys;
        for (const auto* p : prompts) {
            if (!p) continue;
            if (!label_of(p)) missing.push_back(static_cast<int64_t>(p->index));
            if (p->labels.is_object())
                for (const auto& [k, v] : p->labels.items()) keys.insert(k);
        }
        if (missing.size() == prompts.size()) {
            const std::vector<std::string> known(keys.begin(), keys.end());
            throw nscope::InputError("probe: parameter 'label': no prompt has a label '" + label_ + "' (" +
                                     std::to_string(prompts.size()) + " prompts; " +
                                     (known.empty() ? std::string("they carry no labels at all")
                                                    : "their label keys: " + nscope::common::join(known) +
                                                          nscope::common::did_you_mean(label_, known)) +
                                     ")");
        }
        if (!missing.empty() && !skip_missing_) {
            missing_.assign(missing.begin(), missing.begin() + static_cast<int64_t>(std::min<size_t>(10, missing.size())));
            throw missing_error(missing.size());
        }
    }

    HookState& state(const std::string& hook) {
        auto [it, fresh] = hooks_.try_emplace(hook);
        if (fresh) it->second.sample.init(cap_, seed_);
        return it->second;
    }

    HookResult fit_hook(const std::string& hook, const HookState& s) const {
        const auto pts = s.sample.sorted();
        HookResult h;
        if (pts.empty())
            throw nscope::InputError("probe: hook '" + hook + "' has no labelled points" +
                                     (position_ ? " (no prompt is long enough for position " + position_label_ + ")" : ""));
        h.width = static_cast<int64_t>(pts[0].x.size());
        h.points = static_cast<int64_t>(pts.size());
        // Classes: the `classes` parameter's order, else the labels seen, sorted.
        std::vector<std::string> labels;
        for (const auto& p : pts) labels.push_back(*label_of(p.origin.info));
        h.classes = classes_;
        if (h.classes.empty()) {
            std::set<std::string> seen(labels.begin(), labels.end());
            h.classes.assign(seen.begin(), seen.end());
        }
        std::map<std::string, int> index;
        for (size_t c = 0; c < h.classes.size(); ++c) index[h.classes[c]] = static_cast<int>(c);
        std::vector<int> y;
        h.counts.assign(h.classes.size(), 0);
        for (const auto& l : labels) y.push_back(index.at(l)), ++h.counts[static_cast<size_t>(index.at(l))];
        const auto present = std::count_if(h.counts.begin(), h.counts.end(), [](int64_t n) { return n > 0; });
        if (present < 2)
            throw nscope::InputError("probe: label '" + label_ + "' has only one value ('" + labels[0] + "') among the " +
                                     std::to_string(pts.size()) + " points of hook '" + hook +
                                     "'; a probe needs at least two classes (add prompts with other values)");

        // Split by prompt: the prompts with the smallest seeded hash keys are the test prompts.
        std::vector<std::pair<uint64_t, int64_t>> prompt_keys;
        for (const auto& p : pts)
            if (prompt_keys.empty() || prompt_keys.back().second != p.origin.prompt)
                prompt_keys.emplace_back(mix64(mix64(seed_ ^ kSplitSalt) ^ static_cast<uint64_t>(p.origin.prompt)),
                                         p.origin.prompt);
        const auto prompts = static_cast<int64_t>(prompt_keys.size());
        const int64_t n_test = std::min<int64_t>(prompts - 1, std::max<int64_t>(1, std::llround(test_fraction_ * prompts)));
        if (prompts < 2)
            throw nscope::InputError("probe: too few prompts for a train / test split: hook '" + hook + "' has " +
                                     std::to_string(pts.size()) + " points from " + std::to_string(prompts) +
                                     " prompt(s); the split is by prompt and needs at least 2 (add prompts)");
        std::sort(prompt_keys.begin(), prompt_keys.end());
        std::set<int64_t> test_prompts;
        for (int64_t i = 0; i < n_test; ++i) test_prompts.insert(prompt_keys[static_cast<size_t>(i)].second);

        std::vector<int64_t> train_rows, test_rows;
        RowMatrixXf x(h.points, h.width);
        for (int64_t i = 0; i < h.points; ++i) {
            const auto& p = pts[static_cast<size_t>(i)];
            x.row(i) = Eigen::Map<const Eigen::RowVectorXf>(p.x.data(), h.width);
            const bool test = test_prompts.count(p.origin.prompt) != 0;
            (test ? test_rows : train_rows).push_back(i);
            h.where.insert(h.where.end(), {p.origin.prompt, p.origin.position, test ? 1 : 0});
        }
        h.train = static_cast<int64_t>(train_rows.size());
        h.test = static_cast<int64_t>(test_rows.size());
        std::set<int> train_classes;
        for (int64_t r : train_rows) train_classes.insert(y[static_cast<size_t>(r)]);
        if (train_classes.size() < 2)
            throw nscope::InputError("probe: too few points for the split: the " + std::to_string(h.train) +
                                     " training points of hook '" + hook + "' have one class only ('" +
                                     h.classes[static_cast<size_t>(*train_classes.begin())] +
                                     "'); add prompts, or lower 'test_fraction'");

        h.standardiser.fit(x, train_rows);
        const RowMatrixXf z = h.standardiser.standardise(x);
        x.resize(0, 0);
        RowMatrixXf xtrain(h.train, h.width), xtest(h.test, h.width);
        std::vector<int> ytrain, ytest;
        for (int64_t i = 0; i < h.train; ++i) {
            xtrain.row(i) = z.row(train_rows[static_cast<size_t>(i)]);
            ytrain.push_back(y[static_cast<size_t>(train_rows[static_cast<size_t>(i)])]);
        }
        for (int64_t i = 0; i < h.test; ++i) {
            xtest.row(i) = z.row(test_rows[static_cast<size_t>(i)]);
            ytest.push_back(y[static_cast<size_t>(test_rows[static_cast<size_t>(i)])]);
        }
        h.alpha = alpha_ >= 0 ? alpha_ : 1.0 / (c_ * static_cast<double>(h.train));
        const int k = static_cast<int>(h.classes.size());
        h.main = fit(xtrain, ytrain, xtest, ytest, k, h.alpha);
        h.train_accuracy = nscope::probe::accuracy(h.main.model, xtrain, ytrain);
        std::vector<int64_t> train_counts(static_cast<size_t>(k), 0);
        for (int c : ytrain) ++train_counts[static_cast<size_t>(c)];
        const int majority = static_cast<int>(std::max_element(train_counts.begin(), train_counts.end()) - train_counts.begin());
        h.majority = static_cast<double>(std::count(ytest.begin(), ytest.end(), majority)) / static_cast<double>(h.test);

        // Control task: a random label per token type, drawn from the training label distribution.
        std::vector<int> ctrain, ctest;
        const bool control = control_ && mode_ != PointMode::Mean;
        if (control) {
            std::set<int64_t> types;
            for (const auto& p : pts) types.insert(p.origin.token);
            h.token_types = static_cast<int64_t>(types.size());
            std::vector<double> cdf;
            double acc = 0;
            for (int64_t n : train_counts) cdf.push_back(acc += static_cast<double>(n) / static_cast<double>(h.train));
            auto control_label = [&](int64_t token) {
                const double u = static_cast<double>(mix64(mix64(seed_ ^ kControlSalt) ^ static_cast<uint64_t>(token)) >> 11) *
                                 0x1.0p-53;
                return static_cast<int>(std::min<size_t>(cdf.size() - 1, std::upper_bound(cdf.begin(), cdf.end(), u) - cdf.begin()));
            };
            for (int64_t r : train_rows) ctrain.push_back(control_label(pts[static_cast<size_t>(r)].origin.token));
            for (int64_t r : test_rows) ctest.push_back(control_label(pts[static_cast<size_t>(r)].origin.token));
            if (std::set<int>(ctrain.begin(), ctrain.end()).size() >= 2) h.control = fit(xtrain, ctrain, xtest, ctest, k, h.alpha);
        }

        // Ranking by weight mass, ties to the lower index.
        std::vector<double> mass(static_cast<size_t>(h.width));
        for (int64_t j = 0; j < h.width; ++j) mass[static_cast<size_t>(j)] = h.mass(j), h.nonzero += mass[static_cast<size_t>(j)] > 0;
        h.ranking.resize(static_cast<size_t>(h.width));
        std::iota(h.ranking.begin(), h.ranking.end(), int64_t{0});
        std::stable_sort(h.ranking.begin(), h.ranking.end(),
                         [&](int64_t a, int64_t b) { return mass[static_cast<size_t>(a)] > mass[static_cast<size_t>(b)]; });

        // Accuracy with only the top-N neurons (refits on those columns; the full probe closes the curve).
        for (int64_t count : top_neurons_) {
            if (count >= h.width) break;
            std::vector<Eigen::Index> cols(h.ranking.begin(), h.ranking.begin() + count);
            const RowMatrixXf sub_train = xtrain(Eigen::all, cols), sub_test = xtest(Eigen::all, cols);
            const Fit f = fit(sub_train, ytrain, sub_test, ytest, k, h.alpha);
            double ctl = std::numeric_limits<double>::quiet_NaN();
            if (h.control) ctl = fit(sub_train, ctrain, sub_test, ctest, k, h.alpha).accuracy;
            h.curve.emplace_back(count, f.accuracy, ctl);
        }
        if (!top_neurons_.empty())
            h.curve.emplace_back(h.width, h.main.accuracy, h.control ? h.control->accuracy : std::numeric_limits<double>::quiet_NaN());
        return h;
    }

    Fit fit(const RowMatrixXf& xtrain, const std::vector<int>& ytrain, const RowMatrixXf& xtest,
            const std::vector<int>& ytest, int classes, double alpha) const {
        nscope::probe::LogisticOptions opt;
        opt.alpha = alpha;
        opt.l1_ratio = l1_ratio_;
        opt.tol = tol_;
        opt.max_iter = max_iter_;
        opt.parallel_for = parallel_for_;
        Fit f;
        f.model = nscope::probe::fit_logistic(xtrain, ytrain, classes, opt);
        f.accuracy = nscope::probe::accuracy(f.model, xtest, ytest);
        return f;
    }

    std::string label_, points_ = "tokens", pool_, position_label_;
    std::vector<std::string> classes_;
    PointMode mode_ = PointMode::Tokens;
    std::optional<int64_t> position_;
    size_t cap_ = 10000;
    double test_fraction_ = 0.2, l1_ratio_ = 0.5, c_ = 1.0, alpha_ = -1.0, tol_ = 1e-4;
    int max_iter_ = 2000;
    bool control_ = true, skip_missing_ = false;
    std::vector<int64_t> top_neurons_;
    int64_t top_ = 20;
    nscope::common::HookFilter filter_;
    double max_memory_mb_ = 4096;
    uint64_t seed_ = 0;
    size_t unlabelled_ = 0, short_prompts_ = 0;
    std::vector<int64_t> missing_;  // the first unlabelled prompts seen
    std::map<std::string, HookState> hooks_;
    nscope::ParallelFor parallel_for_;
};

}  // namespace

NSCOPE_ANALYZER_PLUGIN(Probe, "probe", "1.0.0",
                       "linear probes (elastic-net logistic regression) for a prompt label, with a control task and "
                       "neuron ranking")
