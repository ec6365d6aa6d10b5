// NeuronScope SDK — hook points: a name and a shape, as adapters declare them and analyzers receive them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace nscope {

/// One hook point with its symbolic and concrete shape; batch and position sizes are -1.
struct HookPoint {
    std::string name;               ///< "blocks.3.attn.hook_pattern"
    std::vector<std::string> dims;  ///< ["batch", "head", "query_pos", "key_pos"]
    std::vector<int64_t> shape;     ///< [-1, 12, -1, -1]
};

}  // namespace nscope
