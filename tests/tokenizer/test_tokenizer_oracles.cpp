// Exact agreement with HuggingFace tokenizers 0.22 on the 300 oracle cases: ids, tokens, offsets (code
// points), type ids, special token masks, with and without special tokens, and decoding.
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/tokenizer/tokenizer.h"
#include "tests/tokenizer/tokenizer_test_util.h"

using namespace nscope;
using nlohmann::json;

namespace {

std::vector<json> read_jsonl(const std::filesystem::path& p) {
    std::ifstream in(p);
    REQUIRE(in.good());
    std::vector<json> out;
    std::string line;
    while (std::getline(in, line))
        if (!line.empty()) out.push_back(json::parse(line));
    return out;
}

json offsets_json(const Encoding& e) {
    json a = json::array();
    for (const auto& [b, en] : e.offsets) a.push_back({b, en});
    return a;
}

/// Compares one case; returns "" or a description of the first difference.
std::string compare_case(const Tokenizer& tok, const json& want) {
    const std::string text = want["text"].get<std::string>();
    std::ostringstream diff;
    for (bool special : {true, false}) {
        const std::string sfx = special ? "" : "_no_special";
        const Encoding e = tok.encode(text, special);
        const json ids = e.ids, tokens = e.tokens, offsets = offsets_json(e);
        if (ids != want["ids" + sfx]) diff << "ids" << sfx << ": got " << ids.dump() << " want " << want["ids" + sfx].dump();
        else if (tokens != want["tokens" + sfx])
            diff << "tokens" << sfx << ": got " << tokens.dump() << " want " << want["tokens" + sfx].dump();
        else if (offsets != want["offsets" + sfx])
            diff << "offsets" << sfx << ": got " << offsets.dump() << " want " << want["offsets" + sfx].dump();
        else if (special && json(e.type_ids) != want["type_ids"])
            diff << "type_ids: got " << json(e.type_ids).dump();
        else if (special && json(e.special_tokens_mask) != want["special_tokens_mask"])
            diff << "special_tokens_mask: got " << json(e.special_tokens_mask).dump() << " want "
                 << want["special_tokens_mask"].dump();
        if (!diff.str().empty()) break;
    }
    if (diff.str().empty()) {
        const std::vector<int64_t> ids = want["ids"].get<std::vector<int64_t>>();
        const std::string dec = tok.decode(ids, true), keep = tok.decode(ids, false);
        if (dec != want["decoded"].get<std::string>())
            diff << "decoded: got " << json(dec).dump() << " want " << want["decoded"].dump();
        else if (want.contains("decoded_keep_special") && keep != want["decoded_keep_special"].get<std::string>())
            diff << "decoded_keep_special: got " << json(keep).dump() << " want " << want["decoded_keep_special"].dump();
    }
    if (diff.str().empty()) return "";
    return "case " + json(text).dump() + ": " + diff.str();
}

/// Runs every oracle case; all 300 must match. Prints up to 5 differences.
void check_oracle(const Tokenizer& tok, const std::string& jsonl) {
    const auto cases = read_jsonl(test::tokenizer_fixtures() / jsonl);
    REQUIRE(cases.size() == 300);
    size_t matched = 0;
    std::vector<std::string> failures;
    for (const auto& c : cases) {
        const std::string d = compare_case(tok, c);
        if (d.empty())
            ++matched;
        else if (failures.size() < 5)
            failures.push_back(d);
    }
    for (const auto& f : failures) UNSCOPED_INFO(f);
    INFO(jsonl << ": " << matched << "/" << cases.size() << " cases match");
    CHECK(matched == cases.size());
}

}  // namespace

TEST_CASE("gpt2 byte-level BPE matches HF tokenizers on all 300 oracle cases", "[tokenizer][oracle]") {
    const auto tok = Tokenizer::from_file(test::tokenizer_fixtures() / "gpt2" / "tokenizer.json");
    check_oracle(tok, "gpt2.jsonl");
}

TEST_CASE("bert-base-uncased WordPiece matches HF tokenizers on all 300 oracle cases", "[tokenizer][oracle]") {
    const auto tok = Tokenizer::from_file(test::tokenizer_fixtures() / "bert" / "tokenizer.json");
    check_oracle(tok, "bert.jsonl");
}

TEST_CASE("mistral SentencePiece-style BPE with byte fallback matches HF on all 300 oracle cases",
          "[tokenizer][oracle]") {
    const auto tok = Tokenizer::from_file(test::tokenizer_fixtures() / "mistral" / "tokenizer.json");
    check_oracle(tok, "llama2_mistral.jsonl");
}

TEST_CASE("llama3 (ignore_merges, regex Split + ByteLevel) matches HF on all 300 oracle cases",
          "[tokenizer][oracle]") {
    const auto tok = Tokenizer::from_file(test::npm_tokenizer("llama3"));
    check_oracle(tok, "llama3.jsonl");
}
