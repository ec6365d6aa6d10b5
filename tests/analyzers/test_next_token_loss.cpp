// next_token's loss tables (`loss`, `loss_by`): per prompt and per label value, against a brute-force
// cross-entropy over planted logits, with padding and a one-token prompt.
#include <catch2/catch.hpp>

#include <cmath>
#include <random>

#include "tests/analyzers/synthetic.h"

using namespace nscope;
using namespace nscope::test;

TEST_CASE("next_token: loss and accuracy per prompt and per label value match brute force", "[analyzers][next_token]") {
    constexpr size_t kRows = 4, kPos = 5, kVocab = 7;
    const size_t lengths[kRows] = {5, 3, 1, 4};
    const char* books[kRows] = {"a", "b", "a", "b"};
    std::mt19937 rng(3);
    std::normal_distribution<float> normal(0.0f, 2.0f);
    std::uniform_int_distribution<int64_t> tok(0, kVocab - 1);
    std::vector<float> logits(kRows * kPos * kVocab, 0.0f);
    std::vector<int64_t> ids(kRows * kPos, 0), mask(kRows * kPos, 0);
    std::vector<PromptInfo> infos(kRows);
    for (size_t r = 0; r < kRows; ++r) {
        infos[r].index = r;
        infos[r].labels = {{"book", books[r]}};
        for (size_t q = 0; q < lengths[r]; ++q) {
            ids[r * kPos + q] = tok(rng), mask[r * kPos + q] = 1;
            for (size_t v = 0; v < kVocab; ++v) logits[(r * kPos + q) * kVocab + v] = normal(rng);
        }
    }
    // Make one prediction certainly right: row 0 position 0 predicts its next token with a large logit.
    logits[(0 * kPos + 0) * kVocab + static_cast<size_t>(ids[1])] = 50.0f;
    Batch b;
    b.rows = kRows;
    b.positions = kPos;
    b.input_ids = ids.data();
    b.attention_mask = mask.data();
    for (const auto& i : infos) b.prompts.push_back(&i);
    b.activations.push_back({"hook_logits", {logits.data(), DType::Float32,
                                             {static_cast<int64_t>(kRows), static_cast<int64_t>(kPos), static_cast<int64_t>(kVocab)}}});
    auto a = registry().create_analyzer("next_token");
    a->configure({{"k", 2}, {"loss_by", "book"}});
    a->begin(RunContext{});
    a->consume(b);
    const Result res = a->finish();

    double label_loss[2] = {0, 0}, label_correct[2] = {0, 0}, label_n[2] = {0, 0};
    const auto& rows = res.data["tables"]["loss"]["rows"];
    REQUIRE(rows.size() == kRows);
    for (size_t r = 0; r < kRows; ++r) {
        double loss = 0, correct = 0;
        for (size_t q = 0; q + 1 < lengths[r]; ++q) {
            const float* x = &logits[(r * kPos + q) * kVocab];
            double z = 0;
            size_t best = 0;
            for (size_t v = 0; v < kVocab; ++v) z += std::exp(static_cast<double>(x[v])), best = x[v] > x[best] ? v : best;
            const auto next = static_cast<size_t>(ids[r * kPos + q + 1]);
            loss += std::log(z) - x[next];
            correct += best == next;
        }
        const double n = static_cast<double>(lengths[r] - 1);
        CHECK(rows[r][2] == lengths[r] - 1);
        if (lengths[r] == 1) {
            CHECK(rows[r][3].is_null());  // nothing to predict
            CHECK(rows[r][4].is_null());
        } else {
            CHECK(rows[r][3].get<double>() == Approx(loss / n).epsilon(1e-9));
            CHECK(rows[r][4].get<double>() == Approx(correct / n).epsilon(1e-12));
        }
        const int l = books[r][0] == 'a' ? 0 : 1;
        label_loss[l] += loss, label_correct[l] += correct, label_n[l] += n;
    }
    CHECK(rows[0][4].get<double>() >= 0.25);  // the planted right prediction
    const auto& by = res.data["tables"]["loss_by_label"]["rows"];
    REQUIRE(by.size() == 2);
    for (int l = 0; l < 2; ++l) {
        CHECK(by[l][0] == (l == 0 ? "a" : "b"));
        CHECK(by[l][1] == 2);
        CHECK(by[l][2].get<double>() == label_n[l]);
        CHECK(by[l][3].get<double>() == Approx(label_loss[l] / label_n[l]).epsilon(1e-9));
        CHECK(by[l][4].get<double>() == Approx(label_correct[l] / label_n[l]).epsilon(1e-12));
    }
    CHECK(res.data["summary"]["loss"]["predicted"] == 4 + 2 + 0 + 3);

    // Without `loss` the tables are absent; loss_by with loss: false, or a non-string label, is refused.
    auto plain = registry().create_analyzer("next_token");
    plain->configure({{"k", 1}});
    plain->begin(RunContext{});
    plain->consume(b);
    CHECK_FALSE(plain->finish().data["tables"].contains("loss"));
    CHECK_THROWS_WITH(plain->configure({{"loss_by", "book"}, {"loss", false}}), Catch::Contains("'loss'"));
    CHECK_THROWS_WITH(plain->configure({{"loss_by", 3}}), Catch::Contains("'loss_by'"));
}
