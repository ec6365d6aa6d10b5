#include "core/model/metric.h"

#include <algorithm>

#include "core/util/text.h"
#include "nscope/error.h"

namespace nscope {
namespace {

size_t tokens_needed(const std::string& kind) {
    if (kind == "logprob") return 1;
    if (kind == "logit_diff") return 2;
    return 0;
}

/// A row's position: negative counts from its last real token.
int64_t row_position(int64_t p, int64_t length, size_t row) {
    const int64_t q = p < 0 ? length + p : p;
    if (q < 0 || q >= length)
        throw InputError("metric position " + std::to_string(p) + " is outside row " + std::to_string(row) + " (" +
                         std::to_string(length) + " tokens)");
    return q;
}

}  // namespace

void validate_metric(const Metric& m, int64_t vocab_size, size_t rows, const std::string& where) {
    const auto& kinds = metric_kinds();
    if (std::find(kinds.begin(), kinds.end(), m.kind) == kinds.end())
        throw InputError(where + ": unknown metric '" + m.kind + "'" + did_you_mean(m.kind, kinds) +
                         " (metrics: " + join(kinds, ", ") + ")");
    const size_t need = tokens_needed(m.kind);
    auto check_tokens = [&](const std::vector<int64_t>& t, const std::string& at) {
        if (t.size() != need)
            throw InputError(at + ": metric '" + m.kind + "' needs " +
                             (need == 0 ? std::string("no tokens")
                              : need == 1 ? std::string("one target token")
                                          : std::string("two tokens (the difference is first − second)")) +
                             ", got " + std::to_string(t.size()));
        for (int64_t id : t)
            if (id < 0 || (vocab_size > 0 && id >= vocab_size))
                throw InputError(at + ": token id " + std::to_string(id) + " is outside the vocabulary (0.." +
                                 std::to_string(vocab_size - 1) + ")");
    };
    if (!m.row_tokens.empty()) {
        if (m.row_tokens.size() != rows)
            throw InputError(where + ": " + std::to_string(m.row_tokens.size()) + " per-row token lists for " +
                             std::to_string(rows) + " rows");
        for (size_t r = 0; r < rows; ++r) check_tokens(m.row_tokens[r], where + " (row " + std::to_string(r) + ")");
    } else {
        check_tokens(m.tokens, where);
    }
}

at::Tensor metric_per_row(const Metric& m, const at::Tensor& logits, const at::Tensor& ids,
                          const std::vector<int64_t>& lengths, const at::Tensor& reference) {
    const auto B = static_cast<int64_t>(lengths.size());
    const at::Tensor logp = at::log_softmax(logits, -1);  // [b, p, V]
    std::vector<at::Tensor> out;
    out.reserve(static_cast<size_t>(B));
    for (int64_t r = 0; r < B; ++r) {
        const int64_t len = lengths[static_cast<size_t>(r)];
        const auto& toks = m.row_tokens.empty() ? m.tokens : m.row_tokens[static_cast<size_t>(r)];
        if (m.kind == "logprob" || m.kind == "logit_diff") {
            const int64_t q = row_position(m.position.value_or(-1), len, static_cast<size_t>(r));
            if (m.kind == "logprob") out.push_back(logp[r][q][toks[0]]);
            else out.push_back(logits[r][q][toks[0]] - logits[r][q][toks[1]]);
        } else if (m.kind == "loss") {
            // Cross-entropy of predicting token t+1 at position t.
            if (m.position) {
                const int64_t q = row_position(*m.position, len, static_cast<size_t>(r));
                if (q + 1 >= len)
                    throw InputError("metric 'loss' at position " + std::to_string(*m.position) + " of row " +
                                     std::to_string(r) + ": the last token has no next token to predict");
                out.push_back(-logp[r][q][ids[r][q + 1].item<int64_t>()]);
            } else {
                if (len < 2)
                    throw InputError("metric 'loss' needs rows of at least two tokens; row " + std::to_string(r) +
                                     " has one");
                const at::Tensor next = ids[r].narrow(0, 1, len - 1).unsqueeze(1);  // [len-1, 1]
                out.push_back(-logp[r].narrow(0, 0, len - 1).gather(1, next).mean());
            }
        } else {  // kl
            const at::Tensor ref = at::log_softmax(reference[r], -1);  // [p, V]
            auto kl_at = [&](int64_t from, int64_t n) {
                const at::Tensor lp = ref.narrow(0, from, n), lq = logp[r].narrow(0, from, n);
                return (lp.exp() * (lp - lq)).sum(-1).mean();
            };
            if (m.position) out.push_back(kl_at(row_position(*m.position, len, static_cast<size_t>(r)), 1));
            else out.push_back(kl_at(0, len));
        }
    }
    return at::stack(out);
}

}  // namespace nscope
