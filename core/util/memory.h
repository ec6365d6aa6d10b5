// Memory of this process and of the machine (Linux /proc), and byte sizes as people write them.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace nscope {

/// Peak resident set size (VmHWM of /proc/self/status; getrusage's ru_maxrss where /proc is missing).
uint64_t peak_rss_bytes();

/// Current resident set size (VmRSS), 0 when unknown.
uint64_t current_rss_bytes();

/// Reset the kernel's peak RSS to the current RSS (writes "5" to /proc/self/clear_refs, Linux >= 4.0).
/// False where the kernel or a sandbox does not allow it: peaks are then the running maximum.
bool reset_peak_rss();

/// Record the peak RSS of the phase that just ended as record["memory"]["<phase>_peak_rss_bytes"] and start
/// the next phase (reset_peak_rss). record["memory"]["peak_rss_scope"] says what the peaks cover: "phase"
/// (since the previous phase ended) or "process" (the kernel refused the reset: the running maximum).
void record_phase_peak(nlohmann::json& record, const std::string& phase);

/// MemAvailable of /proc/meminfo (what can be allocated without swapping), 0 when unknown.
uint64_t mem_available_bytes();

/// "1048576", "512K", "64MB", "1.5GiB", "2g" -> bytes. K, M, G, T (with or without a trailing B or iB,
/// any case) are powers of 1024. InputError naming `what` for anything else.
uint64_t parse_byte_size(const std::string& text, const std::string& what);

/// 1536 -> "1.5 KiB".
std::string human_bytes(double bytes);

}  // namespace nscope
