// Runtime facts for `nscope --version` and run manifests: LibTorch threads and the BLAS actually loaded.
#include <dlfcn.h>

#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include <ATen/Parallel.h>
#include <torch/version.h>

#include "core/cli/cli.h"
#include "nscope/version.h"

namespace nscope {
namespace {

// LibTorch's show_config() only says "BLAS_INFO=generic" on Debian: the BLAS is whatever libblas.so.3
// the alternatives system points at. Report the file actually mapped and, for OpenBLAS, its own config.
std::string blas_report() {
    std::ifstream maps("/proc/self/maps");
    std::string line, path;
    while (std::getline(maps, line)) {
        const auto slash = line.find('/');
        if (slash == std::string::npos) continue;
        const std::string file = line.substr(slash);
        if (file.find("blas") != std::string::npos && file.find(".so") != std::string::npos) {
            path = file;
            break;
        }
    }
    std::string report = path.empty() ? "no BLAS library mapped" : path;
    using ConfigFn = char* (*)();
    using ParallelFn = int (*)();
    if (auto cfg = reinterpret_cast<ConfigFn>(dlsym(RTLD_DEFAULT, "openblas_get_config"))) {
        report = std::string(cfg()) + " — " + report;
        if (auto par = reinterpret_cast<ParallelFn>(dlsym(RTLD_DEFAULT, "openblas_get_parallel"))) {
            const int mode = par();
            report += mode == 2 ? " (OpenMP threading)" : mode == 1 ? " (pthreads threading: install libopenblas0-openmp)"
                                                                   : " (single-threaded)";
        }
    } else if (path.find("/blas/") != std::string::npos) {
        report += " (reference BLAS: slow; install libopenblas0-openmp)";
    }
    return report;
}

}  // namespace

int configure_threads(int requested) {
    const int n = requested > 0 ? requested : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    at::set_num_threads(n);
    return n;
}

std::string version_report() {
    std::ostringstream os;
    os << "nscope " << NSCOPE_VERSION_STRING << "\n"
       << "SDK ABI " << NSCOPE_SDK_ABI_VERSION << ", build tag " << host_build_tag() << "\n"
       << "LibTorch " << TORCH_VERSION << ", " << at::get_num_threads() << " intra-op threads\n"
       << "BLAS: " << blas_report();
    return os.str();
}

}  // namespace nscope
