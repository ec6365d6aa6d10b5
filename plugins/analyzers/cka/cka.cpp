// `cka` analyzer: linear CKA (Kornblith et al. 2019) between every pair of hooks of one model, token by token
// (padding excluded), as a hooks × hooks matrix with a heatmap. Schema: docs/analyses.md#cka.
//
// For centred token matrices X [tokens, p] and Y [tokens, q] of two hooks,
//   CKA(X, Y) = ‖Xᵀ Y‖²_F / (‖Xᵀ X‖_F · ‖Yᵀ Y‖_F),
// which needs only the cross-covariances, never the tokens × tokens Gram matrices. They are blocks of the
// covariance of the concatenated hooks (D = Σ widths), accumulated streaming and mergeable (CoMoments):
// memory D² doubles, cost D²/2 multiply-adds per token; the finish is O(D²). The memory is estimated
// before the first batch and refused above `max_memory_mb`. Deterministic.
#include <nscope/eigen.h>
#include <nscope/sdk.h>

#include "nscope_common/covariance.h"
#include "nscope_common/hooks.h"
#include "nscope_common/params.h"

namespace {

using nscope::common::CoMoments;

class Cka : public nscope::Analyzer {
public:
    void configure(const nscope::Params& params) override {
        nscope::common::ParamReader p("cka", params, {"hooks", "max_memory_mb", "min_tokens"});
        filter_ = nscope::common::HookFilter(p.strings("hooks"));
        max_memory_mb_ = p.number("max_memory_mb", 2048, 1);
        min_tokens_ = p.integer("min_tokens", 2, 2);
    }

    void begin(const nscope::RunContext& ctx) override {
        double width = 0;
        std::string widest;
        int64_t widest_n = 0;
        for (const auto& h : nscope::common::planned_hooks("cka", ctx, filter_)) {
            width += static_cast<double>(h.width);
            if (h.width > widest_n) widest_n = h.width, widest = h.name;
        }
        // Joint covariance (double) + the per-chunk float Gram of the same size.
        nscope::common::check_memory("cka", 1.5 * nscope::common::comoments_bytes(static_cast<int64_t>(width)),
                                     max_memory_mb_,
                                     "the joint covariance of " + std::to_string(static_cast<int64_t>(width)) +
                                         " features (the widths of all selected hooks together)",
                                     "select fewer hooks with 'hooks' (the widest is '" + widest + "', " +
                                         std::to_string(widest_n) + ")");
    }

    void consume(const nscope::Batch& batch) override {
        std::vector<std::pair<std::string, const nscope::ActivationView*>> acts;
        std::vector<int64_t> widths;
        for (const auto& act : batch.activations) {
            nscope::common::TokenLayout lay;
            if (!filter_.accept(act.hook, act.view, batch, lay)) continue;
            acts.emplace_back(act.hook, &act.view);
            widths.push_back(lay.neurons);
        }
        std::vector<size_t> order(acts.size());
        std::iota(order.begin(), order.end(), size_t{0});
        std::sort(order.begin(), order.end(),
                  [&](size_t a, size_t b) { return nscope::common::hook_order(acts[a].first, acts[b].first); });
        if (hooks_.empty()) {
            int64_t total = 0;
            for (size_t i : order) hooks_.push_back(acts[i].first), widths_.push_back(widths[i]), total += widths[i];
            cov_.init(total);
        }
        check_same_hooks(acts, widths, order);
        // One row per real token: the hooks' values side by side.
        const auto total = static_cast<size_t>(cov_.features());
        size_t tokens = 0;
        for (size_t r = 0; r < batch.rows; ++r) tokens += batch.length(r);
        joint_.resize(tokens * total);
        size_t offset = 0;
        for (size_t i : order) {
            const auto w = static_cast<size_t>(widths[i]);
            const float* data = acts[i].second->f32();
            size_t t = 0;
            for (size_t r = 0; r < batch.rows; ++r)
                for (size_t p = 0; p < batch.positions; ++p)
                    if (batch.valid(r, p)) {
                        std::copy_n(data + (r * batch.positions + p) * w, w, joint_.data() + t * total + offset);
                        ++t;
                    }
            offset += w;
        }
        cov_.add(joint_.data(), tokens);
    }

    bool mergeable() const override { return true; }

    void merge(const nscope::Analyzer& other) override {
        const auto& o = static_cast<const Cka&>(other);
        if (o.hooks_.empty()) return;
        if (hooks_.empty()) {
            hooks_ = o.hooks_, widths_ = o.widths_;
            cov_.init(o.cov_.features());
        } else if (hooks_ != o.hooks_) {
            throw nscope::RuntimeError("cka: cannot merge shards that saw different hooks");
        }
        cov_.merge(o.cov_);
        filter_.merge(o.filter_);
    }

    nscope::Result finish() override {
        nscope::Result res;
        const auto h = static_cast<int64_t>(hooks_.size());
        if (h == 0) throw nscope::InputError("cka: no token-wise hook was selected; check parameter 'hooks'");
        if (cov_.count < static_cast<uint64_t>(min_tokens_))
            throw nscope::InputError("cka: too few tokens: " + std::to_string(cov_.count) + " (at least " +
                                     std::to_string(min_tokens_) + " needed, parameter 'min_tokens'); add prompts");
        std::vector<int64_t> start(static_cast<size_t>(h) + 1, 0);
        for (int64_t i = 0; i < h; ++i) start[i + 1] = start[i] + widths_[i];
        auto block = [&](int64_t i, int64_t j) {
            return cov_.m2.block(start[i], start[j], widths_[i], widths_[j]);
        };
        std::vector<double> self(static_cast<size_t>(h));
        for (int64_t i = 0; i < h; ++i) self[i] = block(i, i).norm();
        std::vector<float> matrix(static_cast<size_t>(h * h));
        nlohmann::json z = nlohmann::json::array();
        nscope::Table pairs;
        pairs.columns = {"hook_a", "layer_a", "hook_b", "layer_b", "cka"};
        for (int64_t i = 0; i < h; ++i) {
            nlohmann::json row = nlohmann::json::array();
            for (int64_t j = 0; j < h; ++j) {
                // A constant hook has no variance to compare: CKA is undefined (NaN, null in JSON).
                const double denom = self[i] * self[j];
                const double v = denom > 0 ? block(i, j).squaredNorm() / denom
                                           : std::numeric_limits<double>::quiet_NaN();
                matrix[static_cast<size_t>(i * h + j)] = static_cast<float>(v);
                row.push_back(std::isfinite(v) ? nlohmann::json(v) : nlohmann::json());
                if (j > i)
                    pairs.add_row({hooks_[i], nscope::common::hook_layer(hooks_[i]), hooks_[j],
                                   nscope::common::hook_layer(hooks_[j]),
                                   std::isfinite(v) ? nlohmann::json(v) : nlohmann::json()});
            }
            z.push_back(std::move(row));
        }
        res.set_array("matrix", nscope::NdArray::floats({h, h}, std::move(matrix)));
        res.data["rows"] = hooks_;
        res.data["cols"] = hooks_;
        res.set_table("pairs", std::move(pairs));
        res.set_figure("cka", {{"kind", "heatmap"}, {"title", "linear CKA between hooks (token by token)"},
                               {"z", std::move(z)}, {"x", hooks_}, {"y", hooks_}, {"z_label", "CKA"}});
        res.data["summary"] = {{"hooks", h}, {"tokens", cov_.count}, {"features", cov_.features()},
                               {"skipped", filter_.skipped_json()}};
        return res;
    }

private:
    // Every batch must carry the same hooks with the same widths: the joint covariance has fixed columns.
    void check_same_hooks(const std::vector<std::pair<std::string, const nscope::ActivationView*>>& acts,
                          const std::vector<int64_t>& widths, const std::vector<size_t>& order) const {
        bool same = order.size() == hooks_.size();
        for (size_t k = 0; same && k < order.size(); ++k)
            same = acts[order[k]].first == hooks_[k] && widths[order[k]] == widths_[k];
        if (!same)
            throw nscope::RuntimeError("cka: a batch carries different hooks or widths than the first one (" +
                                       nscope::common::join(hooks_) + ")");
    }

    nscope::common::HookFilter filter_;
    double max_memory_mb_ = 2048;
    int64_t min_tokens_ = 2;
    std::vector<std::string> hooks_;
    std::vector<int64_t> widths_;
    CoMoments cov_;
    std::vector<float> joint_;
};

}  // namespace

NSCOPE_ANALYZER_PLUGIN(Cka, "cka", "1.0.0", "linear CKA between the hooks of one model, token by token, streaming")
