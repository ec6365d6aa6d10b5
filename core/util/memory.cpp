#include "core/util/memory.h"

#include <sys/resource.h>

#include <cctype>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>

#include "nscope/error.h"

namespace nscope {
namespace {

/// The value of a "Key:   123 kB" line of a /proc file, in bytes; 0 when absent.
uint64_t proc_kb_field(const char* file, const std::string& key) {
    std::ifstream in(file);
    std::string line;
    while (std::getline(in, line)) {
        if (line.compare(0, key.size(), key) != 0 || line.size() <= key.size() || line[key.size()] != ':') continue;
        return std::stoull(line.substr(key.size() + 1)) * 1024;
    }
    return 0;
}

}  // namespace

uint64_t peak_rss_bytes() {
    if (const uint64_t v = proc_kb_field("/proc/self/status", "VmHWM")) return v;
    rusage ru{};
    if (::getrusage(RUSAGE_SELF, &ru) == 0) return static_cast<uint64_t>(ru.ru_maxrss) * 1024;
    return 0;
}

uint64_t current_rss_bytes() { return proc_kb_field("/proc/self/status", "VmRSS"); }

bool reset_peak_rss() {
    {
        std::ofstream out("/proc/self/clear_refs");
        if (!out) return false;
        out << "5";
        out.flush();
        if (!out) return false;
    }
    // Believe it only if the peak now reads as the current size (some kernels accept the write and ignore it).
    const uint64_t peak = proc_kb_field("/proc/self/status", "VmHWM");
    const uint64_t now = current_rss_bytes();
    return peak != 0 && peak <= now + (64u << 20);
}

void record_phase_peak(nlohmann::json& record, const std::string& phase) {
    nlohmann::json& m = record["memory"];
    m[phase + "_peak_rss_bytes"] = peak_rss_bytes();
    const bool per_phase = reset_peak_rss();
    if (!m.contains("peak_rss_scope") || !per_phase) m["peak_rss_scope"] = per_phase ? "phase" : "process";
}

uint64_t mem_available_bytes() { return proc_kb_field("/proc/meminfo", "MemAvailable"); }

uint64_t parse_byte_size(const std::string& text, const std::string& what) {
    auto fail = [&] {
        return InputError(what + ": '" + text + "' is not a size; write bytes or a number with K, M, G or T " +
                          "(powers of 1024), e.g. 512MB, 1.5G, 2GiB");
    };
    size_t i = 0;
    while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.')) ++i;
    if (i == 0) throw fail();
    double value = 0;
    try {
        size_t used = 0;
        value = std::stod(text.substr(0, i), &used);
        if (used != i) throw fail();
    } catch (const std::logic_error&) {
        throw fail();
    }
    std::string unit;
    for (size_t k = i; k < text.size(); ++k)
        if (!std::isspace(static_cast<unsigned char>(text[k]))) unit += static_cast<char>(std::toupper(static_cast<unsigned char>(text[k])));
    double mult = 1;
    if (!unit.empty() && unit != "B") {
        const std::string rest = unit.substr(1);
        if (rest != "" && rest != "B" && rest != "IB") throw fail();
        switch (unit[0]) {
            case 'K': mult = 1024.0; break;
            case 'M': mult = 1024.0 * 1024; break;
            case 'G': mult = 1024.0 * 1024 * 1024; break;
            case 'T': mult = 1024.0 * 1024 * 1024 * 1024; break;
            default: throw fail();
        }
    }
    const double bytes = std::round(value * mult);
    if (!(bytes >= 1) || bytes > 1.8e19) throw InputError(what + ": '" + text + "' must be at least 1 byte");
    return static_cast<uint64_t>(bytes);
}

std::string human_bytes(double b) {
    const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (b >= 1024.0 && u < 4) b /= 1024.0, ++u;
    char buf[32];
    std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", b, units[u]);
    return buf;
}

}  // namespace nscope
