// Prompt files (a recipe's `prompts: [{file: x.jsonl}]`): parse_prompt_lines on arbitrary bytes, as JSONL
// (the interesting case) with recipe-level labels to merge under each line's own.
#include <sstream>

#include "core/run/recipe.h"
#include "nscope/error.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static const nlohmann::json labels = {{"set", "fuzz"}};
    std::istringstream in{std::string(nscope::fuzz::as_view(data, size))};
    try {
        (void)nscope::parse_prompt_lines(in, "fuzz.jsonl", true, labels);
    } catch (const nscope::InputError&) {
    }
    return 0;
}
