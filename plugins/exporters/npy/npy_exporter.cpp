// `npy` exporter: every result array as results/<analysis-id>.<array>.npy (arrays only, no JSON).
#include <nscope/sdk.h>

#include "nscope_common/params.h"

namespace {

class NpyExporter : public nscope::Exporter {
public:
    void configure(const nscope::Params& params) override { nscope::common::ParamReader("npy", params, {}); }

    void write(const nscope::ExportContext& ctx) override {
        for (const auto& id : ctx.analysis_order) {
            const auto it = ctx.results.find(id);
            if (it == ctx.results.end() || !it->second) continue;
            for (const auto& [name, array] : it->second->arrays)
                ctx.write_file("results/" + id + "." + name + ".npy", nscope::npy_encode(array));
        }
    }
};

}  // namespace

NSCOPE_EXPORTER_PLUGIN(NpyExporter, "npy", "1.0.0", "results/<analysis>.<array>.npy for every result array")
