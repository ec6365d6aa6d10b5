// `nscope tokenize`: JSONL output, --no-special, --input files, model folders, and its error paths.
#include <fstream>

#include "tests/support/cli.h"
#include "tests/tokenizer/tokenizer_test_util.h"

using nscope::test::run_nscope;
using Catch::Matchers::Contains;

namespace {
std::string fixture(const char* name) { return (nscope::test::tokenizer_fixtures() / name).string(); }
}  // namespace

TEST_CASE("nscope tokenize prints ids, tokens and code point offsets as one JSON line", "[cli][tokenizer]") {
    auto r = run_nscope({"tokenize", "--tokenizer", fixture("bert") + "/tokenizer.json", "--text", "Héllo, wörld!"});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    CHECK(r.out ==
          "{\"ids\":[101,7592,1010,2088,999,102],\"tokens\":[\"[CLS]\",\"hello\",\",\",\"world\",\"!\",\"[SEP]\"],"
          "\"offsets\":[[0,0],[0,5],[5,6],[7,12],[12,13],[0,0]]}\n");
}

TEST_CASE("nscope tokenize --no-special leaves out the post-processor's tokens, PATH may be a folder",
          "[cli][tokenizer]") {
    auto r = run_nscope({"tokenize", "--tokenizer", fixture("mistral"), "--text", "Hi 🦙", "--no-special"});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    CHECK(r.out ==
          "{\"ids\":[15359,28705,243,162,169,156],\"tokens\":[\"▁Hi\",\"▁\",\"<0xF0>\",\"<0x9F>\",\"<0xA6>\","
          "\"<0x99>\"],\"offsets\":[[0,2],[2,3],[3,4],[3,4],[3,4],[3,4]]}\n");
    auto with = run_nscope({"tokenize", "--tokenizer", fixture("mistral"), "--text", "Hi 🦙"});
    CHECK_THAT(with.out, Catch::StartsWith("{\"ids\":[1,15359,"));
}

TEST_CASE("nscope tokenize --input reads one JSON string per line", "[cli][tokenizer]") {
    const auto dir = nscope::test::temp_dir("tok-cli");
    const auto input = dir + "/prompts.jsonl";
    std::ofstream(input) << "\"Hello world\"\n\"\"\n\"a\\tb\\n\"\n";
    auto r = run_nscope({"tokenize", "--tokenizer", fixture("gpt2"), "--input", input});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    CHECK(r.out ==
          "{\"ids\":[15496,995],\"tokens\":[\"Hello\",\"Ġworld\"],\"offsets\":[[0,5],[5,11]]}\n"
          "{\"ids\":[],\"tokens\":[],\"offsets\":[]}\n"
          "{\"ids\":[64,197,65,198],\"tokens\":[\"a\",\"ĉ\",\"b\",\"Ċ\"],\"offsets\":[[0,1],[1,2],[2,3],[3,4]]}\n");
}

TEST_CASE("nscope tokenize exits 2 with a clear message on bad input", "[cli][tokenizer][errors]") {
    const auto dir = nscope::test::temp_dir("tok-cli-err");
    SECTION("missing tokenizer file") {
        auto r = run_nscope({"tokenize", "--tokenizer", dir + "/nope.json", "--text", "x"});
        CHECK(r.exit_code == 2);
        CHECK_THAT(r.err, Contains("tokenizer file not found") && Contains("nope.json"));
    }
    SECTION("malformed JSON") {
        std::ofstream(dir + "/tokenizer.json") << "{ not json";
        auto r = run_nscope({"tokenize", "--tokenizer", dir, "--text", "x"});
        CHECK(r.exit_code == 2);
        CHECK_THAT(r.err, Contains("malformed JSON") && Contains("tokenizer.json"));
    }
    SECTION("unsupported model type") {
        std::ofstream(dir + "/tokenizer.json") << R"({"model": {"type": "Unigram", "vocab": []}})";
        auto r = run_nscope({"tokenize", "--tokenizer", dir + "/tokenizer.json", "--text", "x"});
        CHECK(r.exit_code == 2);
        CHECK_THAT(r.err, Contains("model.type") && Contains("unsupported model type 'Unigram'") &&
                              Contains("supported: BPE, WordPiece, WordLevel"));
    }
    SECTION("input line that is not a JSON string") {
        std::ofstream(dir + "/in.jsonl") << "\"ok\"\nnot json\n";
        auto r = run_nscope({"tokenize", "--tokenizer", fixture("gpt2"), "--input", dir + "/in.jsonl"});
        CHECK(r.exit_code == 2);
        CHECK_THAT(r.err, Contains("in.jsonl:2") && Contains("one JSON string per line"));
    }
    SECTION("missing input file, or neither --text nor --input") {
        auto r = run_nscope({"tokenize", "--tokenizer", fixture("gpt2"), "--input", dir + "/none.jsonl"});
        CHECK(r.exit_code == 2);
        CHECK_THAT(r.err, Contains("cannot read input file"));
        r = run_nscope({"tokenize", "--tokenizer", fixture("gpt2")});
        CHECK(r.exit_code == 2);
        CHECK_THAT(r.err, Contains("--text") && Contains("--input"));
    }
}
