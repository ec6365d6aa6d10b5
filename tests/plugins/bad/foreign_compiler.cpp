// A plugin whose descriptor claims another compiler / libstdc++ ABI, as a plugin built elsewhere would.
#include <nscope/sdk.h>

namespace {
class Nothing : public nscope::Analyzer {
public:
    void begin(const nscope::RunContext&) override {}
    void consume(const nscope::Batch&) override {}
    nscope::Result finish() override { return {}; }
};
}  // namespace

NSCOPE_PLUGIN_DESCRIPTOR_(::nscope::PluginKind::Analyzer, "clang-9;cxx11abi=0;torch=none", "foreign", "1.0.0",
                          "built elsewhere", []() -> ::nscope::Analyzer* { return new Nothing(); }, nullptr, nullptr)
