#include "core/run/progress.h"

#include <unistd.h>

#include <cstdio>

#include <nlohmann/json.hpp>

#include "core/util/log.h"

namespace nscope {

Progress::Progress(std::string label, uint64_t total)
    : label_(std::move(label)), total_(total), start_(std::chrono::steady_clock::now()), last_draw_(start_) {
    json_ = log_format() == LogFormat::Json;
    tty_ = !json_ && ::isatty(STDERR_FILENO);
}

Progress::~Progress() {
    if (!finished_ && tty_ && done_ > 0) std::fputc('\n', stderr);
}

double Progress::tokens_per_second() const {
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    return s > 0 ? static_cast<double>(done_) / s : 0.0;
}

void Progress::advance(uint64_t tokens) {
    done_ += tokens;
    const auto now = std::chrono::steady_clock::now();
    const double since = std::chrono::duration<double>(now - last_draw_).count();
    if (since >= (json_ ? 1.0 : 0.1)) {
        last_draw_ = now;
        draw(false);
    }
}

void Progress::finish() {
    if (finished_) return;
    draw(true);
    finished_ = true;
}

void Progress::draw(bool final) {
    if (!tty_ && !json_) return;
    const double rate = tokens_per_second();
    const double eta = rate > 0 && total_ > done_ ? static_cast<double>(total_ - done_) / rate : 0.0;
    if (json_) {
        nlohmann::json j = {{"event", "progress"}, {"stage", label_}, {"done", done_}, {"total", total_},
                            {"tokens_per_s", rate}, {"eta_s", eta}, {"final", final}};
        if (!note_.empty()) j["note"] = note_;
        std::fprintf(stderr, "%s\n", j.dump().c_str());
        return;
    }
    const int width = 30;
    const double frac = total_ ? static_cast<double>(done_) / static_cast<double>(total_) : 1.0;
    const int filled = static_cast<int>(frac * width + 0.5);
    std::string bar(static_cast<size_t>(filled), '#');
    bar.resize(width, '.');
    std::fprintf(stderr, "\r%-8s [%s] %3.0f%% %llu/%llu tok  %.0f tok/s  ETA %.0fs  %s   ", label_.c_str(),
                 bar.c_str(), frac * 100, static_cast<unsigned long long>(done_),
                 static_cast<unsigned long long>(total_), rate, eta, note_.c_str());
    if (final) std::fputc('\n', stderr);
    std::fflush(stderr);
}

}  // namespace nscope
