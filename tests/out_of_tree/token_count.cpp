// The minimal plugin from the top of nscope/sdk.h: counts real tokens and mean activation per hook.
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
        for (const auto& [hook, sum] : sums_) r.data["sums"][hook] = sum;
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
