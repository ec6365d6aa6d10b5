// NeuronScope SDK — exporters: turn a run's results (and optionally its raw activations) into files.
//
// Contract: `configure` once, `begin` once, `consume` per batch only when `wants_activations()` is true,
// then `write` once at the end of the run. Every file goes through `ExportContext::write_file` (atomic:
// temp + rename) and inside the run directory.
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "nscope/analyzer.h"
#include "nscope/error.h"
#include "nscope/host.h"
#include "nscope/io.h"

namespace nscope {

struct ExportContext {
    std::filesystem::path run_dir;
    const nlohmann::json* manifest = nullptr;              ///< the run manifest so far
    std::vector<std::string> analysis_order;               ///< analysis ids in execution order
    std::map<std::string, const Result*> results;          ///< by analysis id
    std::map<std::string, std::string> analysis_plugins;   ///< analysis id -> plugin id (`use:`)
    const RunContext* run = nullptr;
    const HostServices* host = nullptr;                    ///< file services of the host (nscope/host.h)

    /// Atomically write `bytes` to `run_dir / relative` (through the host).
    void write_file(const std::filesystem::path& relative, std::string_view bytes) const {
        if (host == nullptr || host->write_file_atomic == nullptr)
            throw RuntimeError("ExportContext::host is not set: the host must lend its file services");
        host->write_file_atomic(run_dir / relative, bytes);
    }
};

class Exporter {
public:
    virtual ~Exporter() = default;
    virtual void configure(const Params& params) { (void)params; }
    /// True if this exporter must see every batch's activations (e.g. raw captures).
    virtual bool wants_activations() const { return false; }
    virtual void begin(const RunContext& ctx) { (void)ctx; }
    virtual void consume(const Batch& batch) { (void)batch; }
    /// Write the outputs. Called once, after every analysis finished.
    virtual void write(const ExportContext& ctx) = 0;
};

}  // namespace nscope
