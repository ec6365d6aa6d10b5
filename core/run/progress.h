// Progress of a long run: a bar with tokens/s and ETA on a terminal, JSON events with --log-format json,
// nothing when stderr is not a terminal (cron, Slurm, pipes).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace nscope {

class Progress {
public:
    /// `total` tokens expected; `label` e.g. "forward".
    Progress(std::string label, uint64_t total);
    ~Progress();
    void advance(uint64_t tokens);
    /// Extra text shown after the rate (e.g. "loss 3.21"); included in JSON events as "note".
    void set_note(std::string note) { note_ = std::move(note); }
    void finish();
    double tokens_per_second() const;

private:
    void draw(bool final);
    std::string label_, note_;
    uint64_t total_, done_ = 0;
    std::chrono::steady_clock::time_point start_, last_draw_;
    bool tty_, json_, finished_ = false;
};

}  // namespace nscope
