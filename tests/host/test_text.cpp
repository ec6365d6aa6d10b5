#include <catch2/catch.hpp>

#include "core/util/text.h"

using namespace nscope;

TEST_CASE("did_you_mean suggests the nearest hook names and nothing for unrelated words", "[text]") {
    const std::vector<std::string> hooks = {"blocks.0.mlp.hook_post", "blocks.0.mlp.hook_pre", "hook_embed"};
    CHECK_THAT(did_you_mean("blocks.0.mlp.hook_pst", hooks), Catch::StartsWith(" (did you mean 'blocks.0.mlp.hook_post'"));
    CHECK(did_you_mean("zzzzzz", hooks).empty());
    CHECK(edit_distance("kitten", "sitting") == 3);
}

TEST_CASE("glob_match handles stars and question marks", "[text]") {
    CHECK(glob_match("blocks.*.mlp.hook_post", "blocks.11.mlp.hook_post"));
    CHECK_FALSE(glob_match("blocks.*.mlp.hook_post", "blocks.11.mlp.hook_pre"));
    CHECK(glob_match("*", "hook_logits"));
    CHECK(glob_match("blocks.?.hook_resid_pre", "blocks.3.hook_resid_pre"));
    CHECK_FALSE(glob_match("blocks.?.hook_resid_pre", "blocks.13.hook_resid_pre"));
}
