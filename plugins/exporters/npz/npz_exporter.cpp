// `npz` exporter: one results/<analysis-id>.npz per analysis with arrays, a ZIP archive of stored
// (uncompressed) `<array>.npy` members that numpy.load opens: np.load("stats.npz")["blocks.0.mlp.hook_post.mean"].
#include <nscope/sdk.h>

#include "nscope_common/params.h"
#include "zip.h"

namespace {

class NpzExporter : public nscope::Exporter {
public:
    void configure(const nscope::Params& params) override { nscope::common::ParamReader("npz", params, {}); }

    void write(const nscope::ExportContext& ctx) override {
        for (const auto& id : ctx.analysis_order) {
            const auto it = ctx.results.find(id);
            if (it == ctx.results.end() || !it->second || it->second->arrays.empty()) continue;
            nscope::zip::Writer zip;
            for (const auto& [name, array] : it->second->arrays) zip.add(name + ".npy", nscope::npy_encode(array));
            ctx.write_file("results/" + id + ".npz", zip.finish());
        }
    }
};

}  // namespace

NSCOPE_EXPORTER_PLUGIN(NpzExporter, "npz", "1.0.0", "results/<analysis>.npz: every result array in one zip")
