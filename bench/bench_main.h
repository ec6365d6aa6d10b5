// The common tail of the benchmark programs' main(): quiet logging, the thread count, the installed plugins,
// and any error as one line on stderr with exit code 2 (as nscope itself reports bad input).
#pragma once

#include <ATen/Parallel.h>

#include <exception>
#include <iostream>

#include "core/plugin/registry.h"
#include "core/util/log.h"

namespace nscope::bench {

/// Runs body(registry) with logging at warn, `threads` intra-op threads (0: LibTorch's default) and every
/// plugin on the default search path; returns its exit code, or 2 after printing an exception.
template <typename Body>
int run_main(int threads, Body&& body) {
    setup_logging(LogFormat::Human, "warn");
    if (threads > 0) at::set_num_threads(threads);
    PluginRegistry reg;
    reg.scan(PluginRegistry::search_path({}));
    try {
        return body(reg);
    } catch (const std::exception& e) {
        std::cerr << "error: " << e.what() << "\n";
        return 2;
    }
}

}  // namespace nscope::bench
