// nscope tokenize — run a tokenizer.json over text and print JSONL {"ids","tokens","offsets"} per input.
#include <fstream>
#include <iostream>

#include <nlohmann/json.hpp>

#include "core/cli/cli.h"
#include "core/tokenizer/tokenizer.h"
#include "nscope/error.h"

namespace nscope {
namespace {

struct TokenizeOptions {
    std::string tokenizer;
    std::string text;
    std::string input;
    bool no_special = false;
};

void print_encoding(const Encoding& e) {
    nlohmann::ordered_json j;
    j["ids"] = e.ids;
    j["tokens"] = e.tokens;
    auto offsets = nlohmann::ordered_json::array();
    for (const auto& [b, en] : e.offsets) offsets.push_back({b, en});
    j["offsets"] = std::move(offsets);
    std::cout << j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) << "\n";
}

int run_tokenize(const TokenizeOptions& o, bool has_text) {
    const Tokenizer tok = Tokenizer::from_file(o.tokenizer);
    const bool add_special = !o.no_special;
    if (has_text) {
        print_encoding(tok.encode(o.text, add_special));
        return 0;
    }
    std::ifstream file;
    std::istream* in = &std::cin;
    if (o.input != "-") {
        file.open(o.input, std::ios::binary);
        if (!file) throw InputError("cannot read input file " + o.input);
        in = &file;
    }
    std::string line;
    size_t line_no = 0;
    while (std::getline(*in, line)) {
        ++line_no;
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line.find_first_not_of(" \t") == std::string::npos) continue;
        nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
        if (!j.is_string())
            throw InputError(o.input + ":" + std::to_string(line_no) +
                             ": expected one JSON string per line, e.g. \"Hello world\"");
        print_encoding(tok.encode(j.get<std::string>(), add_special));
    }
    return 0;
}

}  // namespace

void add_tokenize_command(CLI::App& app, CliContext& ctx) {
    auto opts = std::make_shared<TokenizeOptions>();
    auto* cmd = app.add_subcommand("tokenize", "Tokenize text with a HuggingFace tokenizer.json; prints JSONL");
    cmd->add_option("--tokenizer", opts->tokenizer, "tokenizer.json, or a model folder containing one")
        ->required()
        ->type_name("PATH");
    auto* text = cmd->add_option("--text", opts->text, "Text to tokenize")->type_name("S");
    auto* input = cmd->add_option("--input", opts->input, "File with one JSON string per line ('-': stdin)")
                      ->type_name("FILE");
    text->excludes(input);
    input->excludes(text);
    cmd->add_flag("--no-special", opts->no_special, "Do not add the post-processor's special tokens (BOS, CLS, ...)");
    cmd->callback([&ctx, opts, text, input] {
        const bool has_text = text->count() > 0;
        if (!has_text && input->count() == 0) throw CLI::ValidationError("tokenize", "give --text S or --input FILE");
        ctx.action = [opts, has_text]() -> int { return run_tokenize(*opts, has_text); };
    });
}

}  // namespace nscope
