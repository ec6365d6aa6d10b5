// Recipe YAML (core/run/recipe.cpp): parse_recipe_text on arbitrary text, as `nscope run` reads a recipe
// (no model is opened: that is plan_run's job, after parsing). Relative files resolve in a scratch folder.
#include "core/run/recipe.h"
#include "nscope/error.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    try {
        const nscope::Recipe r = nscope::parse_recipe_text(std::string(nscope::fuzz::as_view(data, size)),
                                                           "fuzz.yaml", nscope::fuzz::scratch_dir());
        (void)r.resolved.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    } catch (const nscope::InputError&) {
    }
    return 0;
}
