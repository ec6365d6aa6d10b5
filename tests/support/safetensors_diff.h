// Test support: how far apart two safetensors files with the same tensor names are (exact-resume tests).
#pragma once

#include <algorithm>
#include <filesystem>
#include <limits>

#include "core/model/safetensors.h"

namespace nscope::test {

/// Max |a - b| over every tensor; infinity when the files do not hold the same names.
inline double max_safetensors_diff(const std::filesystem::path& a, const std::filesystem::path& b) {
    SafetensorsWeights wa({a}), wb({b});
    if (wa.names() != wb.names()) return std::numeric_limits<double>::infinity();
    double worst = 0;
    for (const auto& n : wa.names()) worst = std::max(worst, (wa.get(n) - wb.get(n)).abs().max().item<double>());
    return worst;
}

}  // namespace nscope::test
