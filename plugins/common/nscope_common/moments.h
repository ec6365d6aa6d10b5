// Streaming per-neuron moments: count, mean, central sums M2..M4 (double), min, max, and how often a
// value exceeds a threshold. Each batch is reduced on its own (see add()) and folded into the
// running state with the pairwise update of Chan et al. / Pébay, which is also how two shards merge:
//
//   n = na + nb, d = mean_b - mean_a
//   mean = mean_a + d nb / n
//   M2 = M2a + M2b + d² na nb / n
//   M3 = M3a + M3b + d³ na nb (na - nb) / n² + 3 d (na M2b - nb M2a) / n
//   M4 = M4a + M4b + d⁴ na nb (na² - na nb + nb²) / n³ + 6 d² (na² M2b + nb² M2a) / n² + 4 d (na M3b - nb M3a) / n
#pragma once

#include <map>
#include <string>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "nscope/error.h"
#include "nscope_common/hooks.h"
#include "nscope_common/kernels.h"

namespace nscope::common {

class NeuronMoments {
public:
    /// `higher`: also track M3 and M4 (skewness, kurtosis).
    void init(int64_t neurons, bool higher, double threshold) {
        n_ = static_cast<size_t>(neurons);
        higher_ = higher;
        // The float with the same answer to "x > threshold" for every float x: threshold rounded down.
        threshold_f_ = static_cast<float>(threshold);
        if (static_cast<double>(threshold_f_) > threshold)
            threshold_f_ = std::nextafter(threshold_f_, -std::numeric_limits<float>::infinity());
        count = 0;
        mean.assign(n_, 0.0);
        m2.assign(n_, 0.0);
        m3.assign(higher ? n_ : 0, 0.0);
        m4.assign(higher ? n_ : 0, 0.0);
        min.assign(n_, std::numeric_limits<double>::infinity());
        max.assign(n_, -std::numeric_limits<double>::infinity());
        above.assign(n_, 0);
        positive.assign(n_, 0);
    }

    size_t neurons() const { return n_; }

    /// Fold in a batch of token rows; each row points at `neurons()` floats. Power sums about a shift
    /// close to the mean (the batch's own mean, rounded to float) turn into the batch's central sums
    /// exactly, without the cancellation that sums about zero would suffer. The shift depends on the batch
    /// alone, never on what came before, so a batch reduces to the same bits whether it is the first batch
    /// of a shard or the hundredth of a single run: shards then differ from one pass only by the order of
    /// the double-precision pairwise updates (docs/scale.md, ≤ 1e-9 relative).
    void add(const std::vector<const float*>& rows) {
        if (rows.empty()) return;
        const double nb = static_cast<double>(rows.size());
        shift_.resize(n_);
        sum_.assign(rows.front(), rows.front() + n_);
        for (size_t r = 1; r < rows.size(); ++r) kernels::accumulate(sum_.data(), rows[r], n_);
        for (size_t j = 0; j < n_; ++j) shift_[j] = static_cast<float>(sum_[j] / nb);
        s1_.assign(n_, 0.0);
        s2_.assign(n_, 0.0);
        s3_.assign(higher_ ? n_ : 0, 0.0);
        s4_.assign(higher_ ? n_ : 0, 0.0);
        min_.assign(n_, std::numeric_limits<float>::infinity());
        max_.assign(n_, -std::numeric_limits<float>::infinity());
        above_.assign(n_, 0);
        positive_.assign(n_, 0);
        const auto batch_moments = higher_ ? kernels::batch_moments<true> : kernels::batch_moments<false>;
        batch_moments(rows.data(), rows.size(), n_, shift_.data(), threshold_f_, s1_.data(), s2_.data(), s3_.data(),
                      s4_.data(), min_.data(), max_.data(), above_.data(), positive_.data());
        // Central sums of the batch from its power sums about the shift (a = s1 / n is mean - shift):
        //   M2 = s2 - n a², M3 = s3 - 3 a s2 + 2 n a³, M4 = s4 - 4 a s3 + 6 a² s2 - 3 n a⁴.
        for (size_t j = 0; j < n_; ++j) {
            const double a = s1_[j] / nb, a2 = a * a;
            s1_[j] = shift_[j] + a;  // the batch mean
            if (higher_) {
                s4_[j] = s4_[j] - 4.0 * a * s3_[j] + 6.0 * a2 * s2_[j] - 3.0 * nb * a2 * a2;
                s3_[j] = s3_[j] - 3.0 * a * s2_[j] + 2.0 * nb * a2 * a;
            }
            s2_[j] = s2_[j] - nb * a2;
            min[j] = std::min<double>(min[j], min_[j]);
            max[j] = std::max<double>(max[j], max_[j]);
            above[j] += above_[j];
            positive[j] += positive_[j];
        }
        combine(rows.size(), s1_.data(), s2_.data(), higher_ ? s3_.data() : nullptr, higher_ ? s4_.data() : nullptr);
    }

    /// Fold another accumulator (same neurons, same settings) into this one.
    void merge(const NeuronMoments& o) {
        if (o.count == 0) return;
        for (size_t j = 0; j < n_; ++j) {
            min[j] = std::min(min[j], o.min[j]);
            max[j] = std::max(max[j], o.max[j]);
            above[j] += o.above[j];
            positive[j] += o.positive[j];
        }
        combine(o.count, o.mean.data(), o.m2.data(), higher_ ? o.m3.data() : nullptr, higher_ ? o.m4.data() : nullptr);
    }

    /// The width, then the accumulated sums (the settings come from init).
    void save(StateWriter& out) const {
        out.u64(n_);
        out.u64(count);
        for (const auto* v : {&mean, &m2, &m3, &m4, &min, &max}) out.array(*v);
        out.array(above);
        out.array(positive);
    }
    /// Read the sums save() wrote after the width (which the caller read to init this instance).
    void load_sums(StateReader& in) {
        count = in.u64();
        const size_t higher = higher_ ? n_ : 0;
        mean = in.array_of<double>(n_, "mean");
        m2 = in.array_of<double>(n_, "M2");
        m3 = in.array_of<double>(higher, "M3");
        m4 = in.array_of<double>(higher, "M4");
        min = in.array_of<double>(n_, "min");
        max = in.array_of<double>(n_, "max");
        above = in.array_of<uint64_t>(n_, "above");
        positive = in.array_of<uint64_t>(n_, "positive");
    }

    /// Population standard deviation sqrt(M2 / n).
    double stddev(size_t j) const { return count ? std::sqrt(std::max(0.0, m2[j]) / count) : 0.0; }
    double variance(size_t j) const { return count ? std::max(0.0, m2[j]) / count : 0.0; }
    /// Sample skewness g1 = sqrt(n) M3 / M2^1.5; 0 when the neuron is constant.
    double skewness(size_t j) const {
        if (!higher_ || count == 0 || m2[j] <= tiny(j)) return 0.0;
        return std::sqrt(static_cast<double>(count)) * m3[j] / std::pow(m2[j], 1.5);
    }
    /// Excess kurtosis g2 = n M4 / M2² - 3; 0 when the neuron is constant.
    double kurtosis(size_t j) const {
        if (!higher_ || count == 0 || m2[j] <= tiny(j)) return 0.0;
        return static_cast<double>(count) * m4[j] / (m2[j] * m2[j]) - 3.0;
    }

    uint64_t count = 0;
    std::vector<double> mean, m2, m3, m4, min, max;
    std::vector<uint64_t> above, positive;  ///< values > threshold, values > 0

private:
    // M2 below this is rounding noise of a constant neuron.
    double tiny(size_t j) const { return 1e-24 * count * std::max(1.0, mean[j] * mean[j]); }

    void combine(uint64_t nb_count, const double* mb, const double* m2b, const double* m3b, const double* m4b) {
        if (count == 0) {
            count = nb_count;
            std::copy(mb, mb + n_, mean.begin());
            std::copy(m2b, m2b + n_, m2.begin());
            if (higher_) {
                std::copy(m3b, m3b + n_, m3.begin());
                std::copy(m4b, m4b + n_, m4.begin());
            }
            return;
        }
        const double na = static_cast<double>(count), nb = static_cast<double>(nb_count), n = na + nb;
        for (size_t j = 0; j < n_; ++j) {
            const double d = mb[j] - mean[j], d2 = d * d;
            const double a2 = m2[j];
            if (higher_) {
                const double a3 = m3[j];
                m4[j] = m4[j] + m4b[j] + d2 * d2 * na * nb * (na * na - na * nb + nb * nb) / (n * n * n) +
                        6.0 * d2 * (na * na * m2b[j] + nb * nb * a2) / (n * n) + 4.0 * d * (na * m3b[j] - nb * a3) / n;
                m3[j] = a3 + m3b[j] + d2 * d * na * nb * (na - nb) / (n * n) + 3.0 * d * (na * m2b[j] - nb * a2) / n;
            }
            m2[j] = a2 + m2b[j] + d2 * na * nb / n;
            mean[j] += d * nb / n;
        }
        count += nb_count;
    }

    size_t n_ = 0;
    bool higher_ = true;
    float threshold_f_ = 0.0f;
    // Per-batch scratch.
    std::vector<float> shift_, min_, max_;
    std::vector<double> sum_, s1_, s2_, s3_, s4_;
    std::vector<uint32_t> above_, positive_;
};

/// Moments per hook, of every hook of a batch that a filter accepts: the streaming state that `stats` and
/// `dead` share. Hooks are independent, so a batch is one task per hook on the run's threads.
class MomentsByHook {
public:
    /// `plugin` names the analyzer in errors; `higher` and `threshold` as for NeuronMoments::init.
    void init(std::string plugin, bool higher, double threshold) {
        plugin_ = std::move(plugin);
        higher_ = higher;
        threshold_ = threshold;
        hooks_.clear();
    }

    void consume(const Batch& batch, HookFilter& filter, const ParallelFor& parallel_for) {
        std::vector<NeuronMoments*> tasks;
        if (rows_.size() < batch.activations.size()) rows_.resize(batch.activations.size());
        for (const auto& act : batch.activations) {
            TokenLayout lay;
            if (!filter.accept(act.hook, act.view, batch, lay)) continue;
            auto& rows = rows_[tasks.size()];
            rows.clear();
            for (size_t r = 0; r < batch.rows; ++r)
                for (size_t p = 0; p < batch.positions; ++p)
                    if (batch.valid(r, p)) rows.push_back(lay.at(act.view, r, p));
            tasks.push_back(&state(act.hook, lay.neurons));
        }
        run_tasks(parallel_for, tasks.size(), [&](size_t i) { tasks[i]->add(rows_[i]); });
    }

    /// Fold in another instance's hooks (same settings, another shard of prompts).
    void merge(const MomentsByHook& o) {
        for (const auto& [hook, m] : o.hooks_) state(hook, static_cast<int64_t>(m.neurons())).merge(m);
    }

    const std::map<std::string, NeuronMoments>& hooks() const { return hooks_; }

    void save(StateWriter& out) const {
        out.u64(hooks_.size());
        for (const auto& [hook, m] : hooks_) {
            out.str(hook);
            m.save(out);
        }
    }
    /// Replace the hooks with saved ones (after init with the same settings).
    void load(StateReader& in) {
        hooks_.clear();
        const uint64_t n = in.count(2 * sizeof(uint64_t), "hooks");
        for (uint64_t i = 0; i < n; ++i) {
            const std::string hook = in.str();
            const uint64_t width = in.u64();
            if (width > in.left() / sizeof(double)) in.fail("hook '" + hook + "' claims " + std::to_string(width) + " neurons");
            NeuronMoments& m = hooks_.emplace(hook, NeuronMoments{}).first->second;
            m.init(static_cast<int64_t>(width), higher_, threshold_);
            m.load_sums(in);
        }
    }

private:
    // Created on first sight; a hook whose width changes between batches is an error upstream.
    NeuronMoments& state(const std::string& hook, int64_t neurons) {
        auto it = hooks_.find(hook);
        if (it == hooks_.end()) {
            it = hooks_.emplace(hook, NeuronMoments{}).first;
            it->second.init(neurons, higher_, threshold_);
        } else if (static_cast<int64_t>(it->second.neurons()) != neurons) {
            throw RuntimeError(plugin_ + ": hook '" + hook + "' changed width from " +
                               std::to_string(it->second.neurons()) + " to " + std::to_string(neurons));
        }
        return it->second;
    }

    std::string plugin_;
    bool higher_ = true;
    double threshold_ = 0.0;
    std::map<std::string, NeuronMoments> hooks_;
    std::vector<std::vector<const float*>> rows_;  // per hook of a batch, kept to reuse the memory
};

/// Base of the analyzers whose whole streaming state is per-hook moments plus their hook filter (stats,
/// dead): merging shards and saving / loading that state live here once.
class MomentsAnalyzer : public Analyzer {
public:
    bool mergeable() const override { return true; }
    void merge(const Analyzer& other) override {
        const auto& o = static_cast<const MomentsAnalyzer&>(other);
        moments_.merge(o.moments_);
        filter_.merge(o.filter_);
    }
    uint32_t state_version() const override { return 1; }
    void save_state(StateWriter& out) const override {
        moments_.save(out);
        filter_.save(out);
    }
    void load_state(StateReader& in) override {
        moments_.load(in);
        filter_.load(in);
    }

protected:
    HookFilter filter_;
    MomentsByHook moments_;
};

}  // namespace nscope::common
