// The host side of the SDK's ModelAccess (nscope/model_access.h): an analyzer's requests for further
// forwards, metrics, gradients and the unembedding, served by the run's ModelSession. Calls are serialised
// (one forward at a time, on the run's threads) because analyzers may consume concurrently.
#pragma once

#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "core/model/session.h"
#include "nscope/model_access.h"

namespace nscope {

class SessionModelAccess {
public:
    /// `tokenize`: text -> ids without special tokens (null when the model has no tokenizer).
    SessionModelAccess(ModelSession& session, std::function<std::vector<int64_t>(const std::string&)> tokenize);
    SessionModelAccess(const SessionModelAccess&) = delete;
    SessionModelAccess& operator=(const SessionModelAccess&) = delete;

    /// The function table to put in RunContext::model; valid while this object lives.
    const ModelAccess* access() const { return &access_; }

    ModelOutput run(const ModelCall& call);
    OwnedTensor unembed(const ActivationView& resid);

private:
    ModelSession& session_;
    std::function<std::vector<int64_t>(const std::string&)> tokenize_;
    std::mutex mutex_;
    ModelAccess access_;
};

/// A tensor as an owned float32 buffer (copied).
OwnedTensor to_owned(const at::Tensor& t);

}  // namespace nscope
