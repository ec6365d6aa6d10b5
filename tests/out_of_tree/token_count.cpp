// The minimal plugin from the top of nscope/sdk.h: counts real tokens and sums activations per hook, and
// shows them as a table and a figure that the host renders without knowing this plugin (report, SQLite).
#include <nscope/eigen.h>
#include <nscope/sdk.h>

namespace {

class TokenCount : public nscope::Analyzer {
public:
    void configure(const nscope::Params& params) override {
        if (params.contains("scale")) scale_ = params["scale"].get<double>();
    }
    void begin(const nscope::RunContext&) override {}
    void consume(const nscope::Batch& b) override {
        for (size_t r = 0; r < b.rows; ++r) tokens_ += b.length(r);
        for (const auto& a : b.activations) sums_[a.hook] += nscope::as_matrix(a.view).sum();
    }
    nscope::Result finish() override {
        nscope::Result r;
        r.data["tokens"] = tokens_ * scale_;
        nscope::Table table;
        table.columns = {"hook", "sum", "mean_per_token"};
        nlohmann::json x = nlohmann::json::array(), y = nlohmann::json::array();
        for (const auto& [hook, sum] : sums_) {
            r.data["sums"][hook] = sum;
            table.add_row({hook, sum, tokens_ ? sum / static_cast<double>(tokens_) : 0.0});
            x.push_back(hook);
            y.push_back(sum);
        }
        r.set_table("sums_by_hook", std::move(table));
        r.set_figure("sum_by_hook", {{"kind", "bar"}, {"title", "activation sum per hook (token-count)"},
                                     {"x", x}, {"y", y}, {"x_label", "hook"}, {"y_label", "sum"}});
        return r;
    }
    bool mergeable() const override { return true; }
    void merge(const nscope::Analyzer& other) override {
        const auto& o = static_cast<const TokenCount&>(other);
        tokens_ += o.tokens_;
        for (const auto& [hook, sum] : o.sums_) sums_[hook] += sum;
    }

private:
    double scale_ = 1.0;
    size_t tokens_ = 0;
    std::map<std::string, double> sums_;
};

}  // namespace

NSCOPE_ANALYZER_PLUGIN(TokenCount, "token-count", "1.0.0", "counts real tokens (out-of-tree example)")
