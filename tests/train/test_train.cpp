// Tokenizer training and model training: round trips, falling loss, exact checkpoints, exact resume.
#include "tests/model/model_support.h"  // before Catch (drops glog's CHECK)

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include "core/model/safetensors.h"
#include "core/tokenizer/tokenizer.h"
#include "core/train/bpe_trainer.h"
#include "core/train/trainer.h"
#include "tests/support/cli.h"
#include "tests/support/safetensors_diff.h"

namespace fs = std::filesystem;
using namespace nscope;

namespace {
const std::string kText = std::string(NSCOPE_SOURCE_DIR) + "/tests/fixtures/text/genesis.txt";

nlohmann::json train_tokenizer(size_t vocab) {
    BpeTrainerOptions o;
    o.vocab_size = vocab;
    BpeTrainer t(o);
    std::istringstream in(read_corpus(kText));
    for (std::string line; std::getline(in, line);) t.add_text(line + "\n");
    return t.train();
}

TrainOptions tiny_options(const std::string& out) {
    TrainOptions o;
    o.data = {kText};
    o.out = out;
    o.layers = 2;
    o.d_model = 32;
    o.heads = 2;
    o.context = 32;
    o.vocab = 300;
    o.batch_size = 4;
    o.warmup = 5;
    o.lr = 5e-3;
    o.seed = 11;
    return o;
}

}  // namespace

TEST_CASE("the BPE trainer writes a deterministic tokenizer.json that encodes and decodes any text", "[train][bpe]") {
    const auto doc = train_tokenizer(600);
    REQUIRE(doc["model"]["vocab"].size() == 600);
    CHECK(doc["model"]["merges"].size() == 600 - 257);
    CHECK(doc["model"]["vocab"]["<|endoftext|>"] == 0);
    CHECK(doc["model"]["vocab"].contains("Ġthe"));  // the most frequent word of Genesis
    CHECK(doc["model"]["vocab"].contains("ĠGod"));
    CHECK(train_tokenizer(600) == doc);  // deterministic

    const Tokenizer tok = Tokenizer::from_json_string(doc.dump(), "trained");
    const std::string verse = "And God said, Let there be light: and there was light.";
    const auto enc = tok.encode(verse, false);
    CHECK(enc.ids.size() < verse.size() / 2);  // merges compress the text
    CHECK(tok.decode(enc.ids) == verse);
    // Byte-level: text the trainer never saw (CJK, emoji, control characters) still round-trips.
    std::ifstream cases(std::string(NSCOPE_SOURCE_DIR) + "/tests/fixtures/tokenizers/cases.txt");
    size_t n = 0;
    for (std::string line; std::getline(cases, line); ++n) {
        const std::string text = nlohmann::json::parse(line).get<std::string>();
        INFO(line);
        CHECK(tok.decode(tok.encode(text, false).ids, false) == text);  // keep special tokens
    }
    CHECK(n == 300);
    CHECK_THROWS_AS(BpeTrainer(BpeTrainerOptions{100, 2, {}}), InputError);
}

TEST_CASE("training from scratch lowers the loss within seconds", "[train]") {
    const std::string out = nscope::test::temp_dir("train-loss");
    TrainOptions o = tiny_options(out);
    o.steps = 60;
    const TrainReport r = train_from_scratch(nscope::test::registry(), o);
    INFO("loss " << r.first_loss << " -> " << r.last_loss);
    CHECK(r.steps_done == 60);
    CHECK(r.first_loss > std::log(300.0) - 0.5);  // starts near uniform over the vocabulary
    CHECK(r.last_loss < r.first_loss - 1.0);
    CHECK(fs::exists(fs::path(out) / "tokenizer.json"));
    CHECK(fs::exists(fs::path(out) / "config.json"));
    // The saved model is a normal HF folder that the runtime loads and scores.
    const double loss = evaluate_loss(nscope::test::registry(), out, kText, 8, 32, 5);
    CHECK(loss < r.first_loss - 1.0);
}

TEST_CASE("a saved model reloads with identical logits", "[train]") {
    const auto cfg = nlohmann::json::parse(R"({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": 97, "n_positions": 16, "n_ctx": 16, "n_embd": 24, "n_layer": 2, "n_head": 3,
        "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5})");
    ModelOptions mo;
    mo.trainable = true;
    LoadedModel m = init_random_model(nscope::test::registry(), cfg, 3, mo);
    const at::Tensor ids = at::randint(0, 97, {2, 9}, at::kLong);
    const ForwardInput in{ids, at::ones_like(ids), at::Tensor()};
    const at::Tensor before = m.adapter->forward(in, nullptr).detach();
    const std::string dir = nscope::test::temp_dir("save");
    save_model(dir, m, "");
    LoadedModel back = load_model(nscope::test::registry(), dir, ModelOptions{});
    const at::Tensor after = back.adapter->forward(in, nullptr);
    CHECK((before - after).abs().max().item<double>() == 0.0);
}

TEST_CASE("resuming from a checkpoint gives exactly the weights of an uninterrupted run", "[train]") {
    const std::string a = nscope::test::temp_dir("train-a"), b = nscope::test::temp_dir("train-b");
    TrainOptions full = tiny_options(a);
    full.steps = 16;
    full.checkpoint_every = 8;
    train_from_scratch(nscope::test::registry(), full);
    REQUIRE(fs::exists(fs::path(a) / "checkpoint-8/optimizer.safetensors"));

    TrainOptions resumed = tiny_options(b);
    resumed.steps = 16;
    resumed.resume = fs::path(a) / "checkpoint-8";
    const TrainReport r = train_from_scratch(nscope::test::registry(), resumed);
    CHECK(r.steps_done == 8);
    CHECK(test::max_safetensors_diff(fs::path(a) / "model.safetensors", fs::path(b) / "model.safetensors") == 0.0);

    // A damaged trainer_state.json is bad input (exit 2) naming the file, not an uncaught JSON exception.
    const fs::path damaged = fs::path(nscope::test::temp_dir("train-damaged")) / "checkpoint-8";
    fs::copy(fs::path(a) / "checkpoint-8", damaged, fs::copy_options::recursive);
    std::ofstream(damaged / "trainer_state.json", std::ios::trunc) << "{\"step\": 8, \"losses\": [1.5,";
    TrainOptions broken = tiny_options(nscope::test::temp_dir("train-c"));
    broken.steps = 16;
    broken.resume = damaged;
    CHECK_THROWS_AS(train_from_scratch(nscope::test::registry(), broken), InputError);
    CHECK_THROWS_WITH(train_from_scratch(nscope::test::registry(), broken),
                      Catch::Contains((damaged / "trainer_state.json").string()) && Catch::Contains("damaged"));
}

TEST_CASE("nscope train rejects bad options with exit 2", "[train]") {
    const std::string out = nscope::test::temp_dir("train-bad");
    auto r = nscope::test::run_nscope({"train", "--data", "/nonexistent.txt", "--out", out});
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.err, Catch::Contains("training data '/nonexistent.txt' does not exist"));
    r = nscope::test::run_nscope({"train", "--data", kText, "--out", out, "--d-model", "30", "--heads", "4"});
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.err, Catch::Contains("must be divisible by --heads"));
}

TEST_CASE("nscope finetune trains phi, gemma and gpt_neox and saves HF names that reload", "[train][finetune]") {
    // A tokenizer trained on the corpus (vocab 400 < the models' 1000) stands in for each model's own.
    const auto tok = train_tokenizer(400);
    for (const std::string name : {"phi", "gemma", "gpt_neox"}) {
        DYNAMIC_SECTION(name) {
            const std::string src = nscope::test::fixture_model(name);
            const std::string dir = nscope::test::temp_dir("ft-src-" + name);
            fs::copy_file(src + "/config.json", dir + "/config.json");
            fs::copy_file(src + "/model.safetensors", dir + "/model.safetensors");
            std::ofstream(dir + "/tokenizer.json") << tok.dump();
            const std::string out = nscope::test::temp_dir("ft-out-" + name);
            const auto r = nscope::test::run_nscope({"--threads", "2", "finetune", dir, "--data", kText, "--out", out,
                                                     "--steps", "30", "--batch-size", "4", "--context", "32", "--lr",
                                                     "3e-3", "--warmup", "3"});
            INFO(r.err);
            REQUIRE(r.exit_code == 0);
            // The checkpoint carries the architecture's own HF names (base prefix, heads outside it): the same
            // tensor names as the original checkpoint, so HF and nscope both load it.
            SafetensorsFile before(src + "/model.safetensors"), after(out + "/model.safetensors");
            std::vector<std::string> a, b;
            for (const auto& e : before.entries()) a.push_back(e.name);
            for (const auto& e : after.entries()) b.push_back(e.name);
            std::sort(a.begin(), a.end());
            std::sort(b.begin(), b.end());
            CHECK(a == b);
            const double loss_before = evaluate_loss(nscope::test::registry(), dir, kText, 8, 32, 5);
            const double loss_after = evaluate_loss(nscope::test::registry(), out, kText, 8, 32, 5);
            INFO(name << " loss " << loss_before << " -> " << loss_after);
            CHECK(loss_after < loss_before - 0.5);
        }
    }
}
