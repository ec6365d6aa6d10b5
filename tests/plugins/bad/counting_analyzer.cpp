// A small working analyzer, compiled with a wrong SDK ABI version or a clashing id by the tests.
#include <nscope/sdk.h>

namespace {
class Counting : public nscope::Analyzer {
public:
    void begin(const nscope::RunContext&) override {}
    void consume(const nscope::Batch& b) override { rows_ += b.rows; }
    nscope::Result finish() override {
        nscope::Result r;
        r.data["rows"] = rows_;
        return r;
    }
private:
    size_t rows_ = 0;
};
}  // namespace

NSCOPE_ANALYZER_PLUGIN(Counting, TEST_PLUGIN_ID, "0.0.1", "test plugin")
