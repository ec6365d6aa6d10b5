// Every malformed recipe in tests/fixtures/recipes/bad is rejected before any weights load: exit code 2,
// the message in its "# expect:" lines (file:line:column where it has one), and nothing written.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include "tests/support/cli.h"

namespace fs = std::filesystem;
using nscope::test::run_nscope;

namespace {
std::vector<std::string> expectations(const fs::path& file) {
    std::ifstream in(file);
    std::vector<std::string> out;
    for (std::string line; std::getline(in, line);)
        if (line.rfind("# expect: ", 0) == 0) out.push_back(line.substr(10));
    return out;
}
}  // namespace

TEST_CASE("malformed recipes are rejected with exit 2, a located message and no output", "[recipe][errors]") {
    const fs::path dir = fs::path(NSCOPE_SOURCE_DIR) / "tests/fixtures/recipes/bad";
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(dir))
        if (e.path().extension() == ".yaml") files.push_back(e.path());
    std::sort(files.begin(), files.end());
    REQUIRE(files.size() >= 25);
    for (const auto& f : files) {
        DYNAMIC_SECTION(f.filename().string()) {
            const auto expect = expectations(f);
            REQUIRE_FALSE(expect.empty());
            const std::string out = nscope::test::temp_dir("bad-recipe");
            const auto r = run_nscope({"run", f.string(), "--out", out});
            INFO(r.err);
            CHECK(r.exit_code == 2);
            for (const auto& e : expect) CHECK_THAT(r.err, Catch::Contains(e));
            CHECK(fs::is_empty(out));  // validation happens before the run folder exists
        }
    }
}
