#include "tests/model/model_support.h"

#include "core/util/npy.h"

namespace nscope::test {

const PluginRegistry& registry() {
    static PluginRegistry* reg = [] {
        auto* r = new PluginRegistry();
        r->scan(PluginRegistry::search_path({}));
        return r;
    }();
    return *reg;
}

std::string fixture_model(const std::string& name) {
    return std::string(NSCOPE_SOURCE_DIR) + "/tests/fixtures/models/" + name;
}

at::Tensor oracle(const std::string& model, const std::string& file) {
    const NpyArray a = read_npy(fixture_model(model) + "/" + file);
    if (a.descr == "<i8") {
        const auto v = a.to_i64();
        return at::tensor(v, at::kLong).view(a.shape).clone();
    }
    const auto v = a.to_f32();
    return at::tensor(v, at::kFloat).view(a.shape).clone();
}

std::vector<std::vector<int64_t>> oracle_rows(const std::string& model, const std::string& file) {
    const at::Tensor ids = oracle(model, file), mask = oracle(model, "attention_mask.npy");
    std::vector<std::vector<int64_t>> rows;
    for (int64_t r = 0; r < ids.size(0); ++r) {
        std::vector<int64_t> row;
        for (int64_t p = 0; p < ids.size(1); ++p)
            if (mask[r][p].item<int64_t>() != 0) row.push_back(ids[r][p].item<int64_t>());
        rows.push_back(row);
    }
    return rows;
}

double max_abs_valid(const at::Tensor& a, const at::Tensor& b, const at::Tensor& mask, int64_t pos_axis) {
    if (a.sizes() != b.sizes()) return 1e30;
    std::vector<int64_t> shape(static_cast<size_t>(a.dim()), 1);
    shape[0] = mask.size(0);
    shape[static_cast<size_t>(pos_axis)] = mask.size(1);
    const at::Tensor valid = mask.to(at::kBool).view(shape);
    return (a.to(at::kFloat) - b.to(at::kFloat)).abs().masked_fill(valid.logical_not(), 0).max().item<double>();
}

}  // namespace nscope::test
