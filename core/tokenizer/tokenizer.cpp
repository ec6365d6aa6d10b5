// Tokenizer: loading tokenizer.json, added-token matching, and the encode / decode pipelines.
#include "core/tokenizer/tokenizer.h"

#include <fstream>
#include <sstream>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "core/tokenizer/components.h"
#include "core/tokenizer/unicode.h"
#include "nscope/error.h"

namespace nscope {

using json = nlohmann::json;
using namespace tok;

namespace {

struct AddedToken {
    int64_t id = 0;
    std::string content;
    std::u32string chars;
    bool single_word = false, lstrip = false, rstrip = false, normalized = false, special = false;
};

/// Code point trie over added tokens, matched leftmost-longest like HF's Aho-Corasick automaton.
class Trie {
public:
    void add(const std::u32string& s, int32_t token) {
        if (s.empty()) return;
        uint32_t node = 0;
        for (char32_t c : s) {
            auto [it, inserted] = edges_.try_emplace(edge(node, c), static_cast<uint32_t>(terminal_.size()));
            if (inserted) terminal_.push_back(-1);
            node = it->second;
        }
        if (terminal_[node] < 0) terminal_[node] = token;
    }
    bool empty() const { return edges_.empty(); }
    /// Longest token starting at text[i]: (token index, end) or (-1, i).
    std::pair<int32_t, size_t> longest_at(std::u32string_view text, size_t i) const {
        uint32_t node = 0;
        std::pair<int32_t, size_t> best{-1, i};
        for (size_t k = i; k < text.size(); ++k) {
            auto it = edges_.find(edge(node, text[k]));
            if (it == edges_.end()) break;
            node = it->second;
            if (terminal_[node] >= 0) best = {terminal_[node], k + 1};
        }
        return best;
    }

private:
    static uint64_t edge(uint32_t node, char32_t c) { return (static_cast<uint64_t>(node) << 21) | c; }
    std::unordered_map<uint64_t, uint32_t> edges_;
    std::vector<int32_t> terminal_{-1};  // node -> token index
};

/// A stretch of the input: plain text still to tokenize, or an added token already matched.
struct Segment {
    NormStr s;
    int32_t added = -1;  // index into added tokens
};

std::string read_text_file(const std::filesystem::path& p) {
    std::ifstream in(p, std::ios::binary);
    if (!in) throw InputError("cannot read tokenizer file " + p.string());
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

std::optional<std::string> config_token(const json& cfg, const char* key) {
    auto it = cfg.find(key);
    if (it == cfg.end()) return std::nullopt;
    if (it->is_string()) return it->get<std::string>();
    if (it->is_object() && it->contains("content") && (*it)["content"].is_string())
        return (*it)["content"].get<std::string>();
    return std::nullopt;
}

}  // namespace

struct Tokenizer::Impl {
    std::string origin;
    std::vector<AddedToken> added;
    std::unordered_map<int64_t, size_t> added_by_id;
    std::unordered_map<std::string, size_t> added_by_content;
    Trie raw_trie, norm_trie;
    std::unique_ptr<Normalizer> normalizer;
    std::unique_ptr<PreTokenizer> pre_tokenizer;
    std::unique_ptr<Model> model;
    std::unique_ptr<PostProcessor> post_processor;
    std::unique_ptr<Decoder> decoder;
    std::optional<int64_t> pad, bos, eos;

    void split_added(const NormStr& s, const Trie& trie, std::vector<Segment>& out) const;
    std::optional<int64_t> find_token(std::initializer_list<const char*> names) const {
        for (const char* n : names) {
            auto it = added_by_content.find(n);
            if (it != added_by_content.end()) return added[it->second].id;
        }
        return std::nullopt;
    }
};

void Tokenizer::Impl::split_added(const NormStr& s, const Trie& trie, std::vector<Segment>& out) const {
    if (trie.empty()) {
        if (!s.empty()) out.push_back({s, -1});
        return;
    }
    const std::u32string& t = s.chars;
    size_t emitted = 0;  // end of the last segment pushed
    size_t i = 0;
    while (i < t.size()) {
        auto [tok, end] = trie.longest_at(t, i);
        if (tok < 0) {
            ++i;
            continue;
        }
        const AddedToken& a = added[static_cast<size_t>(tok)];
        size_t start = i, stop = end;
        i = end;
        if (a.single_word) {
            const bool start_ok = start == 0 || !unicode::is_alphanumeric(t[start - 1]);
            const bool stop_ok = stop == t.size() || !unicode::is_alphanumeric(t[stop]);
            if (!start_ok || !stop_ok) continue;
        }
        if (a.lstrip) {
            while (start > emitted && unicode::is_whitespace(t[start - 1])) --start;
        }
        if (a.rstrip) {
            while (stop < t.size() && unicode::is_whitespace(t[stop])) ++stop;
            i = stop;
        }
        if (start > emitted) out.push_back({s.slice(emitted, start), -1});
        out.push_back({s.slice(start, stop), tok});
        emitted = stop;
    }
    if (emitted < t.size()) out.push_back({s.slice(emitted, t.size()), -1});
}

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

std::filesystem::path Tokenizer::resolve_path(const std::filesystem::path& path) {
    std::error_code ec;
    if (std::filesystem::is_directory(path, ec)) {
        const auto f = path / "tokenizer.json";
        if (!std::filesystem::is_regular_file(f, ec))
            throw InputError("no tokenizer.json in model folder " + path.string());
        return f;
    }
    if (!std::filesystem::exists(path, ec)) throw InputError("tokenizer file not found: " + path.string());
    return path;
}

Tokenizer Tokenizer::from_file(const std::filesystem::path& tokenizer_json) {
    const auto file = resolve_path(tokenizer_json);
    Tokenizer t = from_json_string(read_text_file(file), file.string());
    // Optional: special tokens named in a tokenizer_config.json next to the file.
    const auto cfg_path = file.parent_path() / "tokenizer_config.json";
    std::error_code ec;
    if (std::filesystem::is_regular_file(cfg_path, ec)) {
        const json cfg = json::parse(read_text_file(cfg_path), nullptr, /*allow_exceptions=*/false);
        if (cfg.is_object()) {  // a malformed config is ignored: tokenizer.json alone defines tokenization
            auto set = [&](const char* key, std::optional<int64_t>& slot) {
                if (auto name = config_token(cfg, key))
                    if (auto id = t.token_to_id(*name)) slot = id;
            };
            set("bos_token", t.impl_->bos);
            set("eos_token", t.impl_->eos);
            set("pad_token", t.impl_->pad);
        }
    }
    return t;
}

Tokenizer Tokenizer::from_json_string(std::string_view text, const std::string& origin) {
    auto impl = std::make_unique<Impl>();
    impl->origin = origin;
    json j;
    try {
        j = json::parse(text);
    } catch (const json::exception& e) {  // parse_error, and out_of_range for a number too large for a double
        throw InputError(origin + ": malformed JSON: " + e.what());
    }
    const JsonPath root{&impl->origin, ""};
    if (!j.is_object()) root.fail("expected a JSON object (a HuggingFace tokenizer.json)");
    impl->model = make_model(field(j, root, "model"), root / "model");
    if (j.contains("normalizer")) impl->normalizer = make_normalizer(j["normalizer"], root / "normalizer");
    if (j.contains("pre_tokenizer")) impl->pre_tokenizer = make_pre_tokenizer(j["pre_tokenizer"], root / "pre_tokenizer");
    if (j.contains("post_processor"))
        impl->post_processor = make_post_processor(j["post_processor"], root / "post_processor");
    if (j.contains("decoder")) impl->decoder = make_decoder(j["decoder"], root / "decoder");

    if (j.contains("added_tokens") && !j["added_tokens"].is_null()) {
        const json& list = j["added_tokens"];
        const JsonPath lp = root / "added_tokens";
        if (!list.is_array()) lp.fail("expected an array");
        for (size_t i = 0; i < list.size(); ++i) {
            const json& a = list[i];
            const JsonPath ap = lp[i];
            AddedToken t;
            t.id = get_int(a, ap, "id", -1);
            if (t.id < 0) (ap / "id").fail("expected a non-negative integer id");
            t.content = get_string(a, ap, "content");
            t.chars = unicode::decode_utf8(t.content);
            t.special = get_bool(a, ap, "special", false);
            t.single_word = get_bool(a, ap, "single_word", false);
            t.lstrip = get_bool(a, ap, "lstrip", false);
            t.rstrip = get_bool(a, ap, "rstrip", false);
            t.normalized = get_bool(a, ap, "normalized", !t.special);
            const size_t idx = impl->added.size();
            impl->added_by_id[t.id] = idx;
            impl->added_by_content.emplace(t.content, idx);
            (t.normalized ? impl->norm_trie : impl->raw_trie).add(t.chars, static_cast<int32_t>(idx));
            impl->added.push_back(std::move(t));
        }
    }

    // Special ids known from the file itself.
    if (j.contains("padding") && j["padding"].is_object())
        impl->pad = get_int(j["padding"], root / "padding", "pad_id", 0);
    if (impl->post_processor) {
        const auto pre = impl->post_processor->prefix_ids();
        const auto post = impl->post_processor->suffix_ids();
        if (!pre.empty()) impl->bos = pre.front();
        if (!post.empty()) impl->eos = post.back();
    }
    if (!impl->bos) impl->bos = impl->find_token({"<s>", "<|begin_of_text|>", "<bos>", "<|startoftext|>", "[CLS]"});
    if (!impl->eos)
        impl->eos = impl->find_token({"</s>", "<|end_of_text|>", "<eos>", "<|endoftext|>", "[SEP]"});
    if (!impl->pad) impl->pad = impl->find_token({"<pad>", "[PAD]", "<|pad|>", "<|padding|>"});
    return Tokenizer(std::move(impl));
}

Encoding Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
    const Impl& m = *impl_;
    NormStr input;
    input.chars = unicode::decode_utf8(text);
    input.align.resize(input.chars.size());
    for (uint32_t i = 0; i < input.chars.size(); ++i) input.align[i] = {i, i + 1};

    // 1. Added tokens in the raw text; 2. normalize the rest; 3. added tokens in the normalized text.
    std::vector<Segment> raw, segments;
    m.split_added(input, m.raw_trie, raw);
    for (auto& seg : raw) {
        if (seg.added >= 0) {
            segments.push_back(std::move(seg));
            continue;
        }
        if (m.normalizer) m.normalizer->normalize(seg.s);
        m.split_added(seg.s, m.norm_trie, segments);
    }

    Encoding e;
    std::vector<NormStr> pieces;
    std::vector<ModelToken> toks;
    for (const auto& seg : segments) {
        if (seg.added >= 0) {
            const AddedToken& a = m.added[static_cast<size_t>(seg.added)];
            e.ids.push_back(a.id);
            e.tokens.push_back(a.content);
            e.offsets.emplace_back(seg.s.empty() ? std::pair<size_t, size_t>{0, 0} : seg.s.source(0, seg.s.size()));
            continue;
        }
        pieces.assign(1, seg.s);
        if (m.pre_tokenizer) m.pre_tokenizer->pre_tokenize(pieces);
        for (const auto& piece : pieces) {
            toks.clear();
            m.model->tokenize(piece.chars, toks);
            for (const auto& t : toks) {
                e.ids.push_back(t.id);
                e.tokens.push_back(id_to_token(t.id));
                e.offsets.push_back(piece.source(t.begin, t.end));
            }
        }
    }
    e.type_ids.assign(e.ids.size(), 0);
    e.special_tokens_mask.assign(e.ids.size(), 0);
    if (m.post_processor) m.post_processor->process(e, add_special_tokens);
    return e;
}

std::string Tokenizer::normalize(std::string_view text) const {
    const Impl& m = *impl_;
    NormStr input;
    input.chars = unicode::decode_utf8(text);
    input.align.assign(input.chars.size(), {0, 0});
    std::vector<Segment> raw;
    m.split_added(input, m.raw_trie, raw);
    std::u32string out;
    for (auto& seg : raw) {
        if (seg.added < 0 && m.normalizer) m.normalizer->normalize(seg.s);
        out += seg.s.chars;
    }
    return unicode::encode_utf8(out);
}

std::string Tokenizer::decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const {
    const Impl& m = *impl_;
    std::vector<std::string> tokens;
    tokens.reserve(ids.size());
    for (int64_t id : ids) {
        auto it = m.added_by_id.find(id);
        if (it != m.added_by_id.end()) {
            const AddedToken& a = m.added[it->second];
            if (!(skip_special_tokens && a.special)) tokens.push_back(a.content);
            continue;
        }
        const std::string& t = m.model->id_to_token(id);
        if (!t.empty()) tokens.push_back(t);
    }
    std::string out;
    if (m.decoder) {
        m.decoder->decode_chain(tokens);
        for (const auto& t : tokens) out += t;
    } else {
        for (size_t i = 0; i < tokens.size(); ++i) {
            if (i) out += ' ';
            out += tokens[i];
        }
    }
    return out;
}

std::string Tokenizer::id_to_token(int64_t id) const {
    auto it = impl_->added_by_id.find(id);
    if (it != impl_->added_by_id.end()) return impl_->added[it->second].content;
    return impl_->model->id_to_token(id);
}

std::optional<int64_t> Tokenizer::token_to_id(std::string_view token) const {
    auto it = impl_->added_by_content.find(std::string(token));
    if (it != impl_->added_by_content.end()) return impl_->added[it->second].id;
    return impl_->model->token_to_id(token);
}

std::string Tokenizer::token_text(int64_t id) const { return decode({id}, false); }

std::string token_text_or_id(const Tokenizer* tok, int64_t id) {
    if (tok) return tok->token_text(id);
    std::string s = std::to_string(id);  // (built in place: GCC 12 warns falsely on "#" + string)
    s.insert(s.begin(), '#');
    return s;
}

int64_t single_token_id(const Tokenizer& tok, const std::string& text, const std::string& where) {
    const Encoding e = tok.encode(text, /*add_special_tokens=*/false);
    if (e.ids.size() == 1) return e.ids[0];
    std::string pieces;
    for (size_t i = 0; i < e.ids.size(); ++i) pieces += (i ? ", '" : "'") + tok.token_text(e.ids[i]) + "'";
    throw InputError(where + ": '" + text + "' is " + std::to_string(e.ids.size()) +
                     " tokens under this model's tokenizer" + (pieces.empty() ? "" : " (" + pieces + ")") +
                     "; name a single token (`nscope tokenize --text` shows the pieces) or give its id");
}

size_t Tokenizer::vocab_size() const {
    size_t n = impl_->model->vocab_r.size();
    for (const auto& a : impl_->added) n = std::max(n, static_cast<size_t>(a.id) + 1);
    return n;
}

bool Tokenizer::is_special(int64_t id) const {
    auto it = impl_->added_by_id.find(id);
    return it != impl_->added_by_id.end() && impl_->added[it->second].special;
}

std::optional<int64_t> Tokenizer::pad_id() const { return impl_->pad; }
std::optional<int64_t> Tokenizer::bos_id() const { return impl_->bos; }
std::optional<int64_t> Tokenizer::eos_id() const { return impl_->eos; }
std::optional<int64_t> Tokenizer::unk_id() const { return impl_->model->unk_id; }
const std::string& Tokenizer::model_type() const { return impl_->model->type; }
const std::string& Tokenizer::origin() const { return impl_->origin; }
ModelStats Tokenizer::model_stats() const { return impl_->model->stats(); }

}  // namespace nscope
