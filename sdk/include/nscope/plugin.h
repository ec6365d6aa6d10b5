// NeuronScope SDK — the plugin descriptor and the one-line entry macro.
//
// Every plugin is a shared library with one exported `extern "C"` function, `nscope_plugin_entry`, that
// returns a static descriptor. The host reads `struct_size`, `abi_version` and `build_tag` before it
// touches anything else, and refuses (with a message that says what to rebuild) a plugin built against
// another SDK ABI, another compiler / libstdc++ ABI, or another LibTorch.
//
//   NSCOPE_ANALYZER_PLUGIN(MyAnalyzer, "my-analyzer", "0.1.0", "what it computes")
//   NSCOPE_EXPORTER_PLUGIN(MyExporter, "my-exporter", "0.1.0", "what it writes")
//   NSCOPE_MODEL_PLUGIN(MyFactory, "my-arch", "0.1.0", "which HF architectures it runs")   // model_adapter.h
#pragma once

#include <cstdint>

#include "nscope/version.h"

#define NSCOPE_EXPORT extern "C" __attribute__((visibility("default")))

#define NSCOPE_STRINGIFY_(x) #x
#define NSCOPE_STRINGIFY(x) NSCOPE_STRINGIFY_(x)

// Compiler + libstdc++ ABI: C++ objects (std::string, nlohmann::json, exceptions) cross the plugin boundary,
// so host and plugin must agree on both.
#if defined(__clang__)
#define NSCOPE_COMPILER_TAG "clang-" NSCOPE_STRINGIFY(__clang_major__)
#elif defined(__GNUC__)
#define NSCOPE_COMPILER_TAG "gcc-" NSCOPE_STRINGIFY(__GNUC__)
#else
#define NSCOPE_COMPILER_TAG "unknown"
#endif
#if defined(_GLIBCXX_USE_CXX11_ABI)
#define NSCOPE_STDLIB_TAG "cxx11abi=" NSCOPE_STRINGIFY(_GLIBCXX_USE_CXX11_ABI)
#else
#define NSCOPE_STDLIB_TAG "cxx11abi=none"
#endif
/// "gcc-12;cxx11abi=1" — the part of the build tag every plugin must share with the host.
#define NSCOPE_BASE_BUILD_TAG NSCOPE_COMPILER_TAG ";" NSCOPE_STDLIB_TAG

namespace nscope {

class Analyzer;
class Exporter;
class ModelFactory;

enum class PluginKind : uint32_t { Model = 1, Analyzer = 2, Exporter = 3 };

/// What `nscope_plugin_entry` returns. Plain C layout; new fields are only ever appended, and
/// `struct_size` tells the host which fields a plugin has.
struct PluginDescriptor {
    uint32_t struct_size;   ///< sizeof(PluginDescriptor) when the plugin was built
    uint32_t abi_version;   ///< NSCOPE_SDK_ABI_VERSION when the plugin was built
    const char* build_tag;  ///< "gcc-12;cxx11abi=1;torch=none" or "...;torch=1.13.0"
    const char* id;         ///< unique plugin id, used as `use:` in recipes
    PluginKind kind;
    const char* version;    ///< the plugin's own version
    const char* summary;    ///< one line for `nscope plugins`
    Analyzer* (*create_analyzer)();          ///< kind == Analyzer
    Exporter* (*create_exporter)();          ///< kind == Exporter
    ModelFactory* (*create_model_factory)(); ///< kind == Model
};

using PluginEntryFn = const PluginDescriptor* (*)();

}  // namespace nscope

/// The name of the exported entry point the host looks up.
#define NSCOPE_PLUGIN_ENTRY_NAME "nscope_plugin_entry"

#define NSCOPE_PLUGIN_DESCRIPTOR_(KIND, TAG, ID, VERSION, SUMMARY, A, E, M)                              \
    NSCOPE_EXPORT const ::nscope::PluginDescriptor* nscope_plugin_entry() {                               \
        static const ::nscope::PluginDescriptor descriptor{sizeof(::nscope::PluginDescriptor),            \
                                                           NSCOPE_SDK_ABI_VERSION, TAG, ID, KIND, VERSION, \
                                                           SUMMARY, A, E, M};                              \
        return &descriptor;                                                                               \
    }

/// Declare an analyzer plugin: `Class` derives from nscope::Analyzer and is default-constructible.
#define NSCOPE_ANALYZER_PLUGIN(Class, ID, VERSION, SUMMARY)                                                 \
    NSCOPE_PLUGIN_DESCRIPTOR_(::nscope::PluginKind::Analyzer, NSCOPE_BASE_BUILD_TAG ";torch=none", ID,      \
                              VERSION, SUMMARY, []() -> ::nscope::Analyzer* { return new Class(); }, nullptr, \
                              nullptr)

/// Declare an exporter plugin: `Class` derives from nscope::Exporter and is default-constructible.
#define NSCOPE_EXPORTER_PLUGIN(Class, ID, VERSION, SUMMARY)                                                 \
    NSCOPE_PLUGIN_DESCRIPTOR_(::nscope::PluginKind::Exporter, NSCOPE_BASE_BUILD_TAG ";torch=none", ID,      \
                              VERSION, SUMMARY, nullptr, []() -> ::nscope::Exporter* { return new Class(); }, \
                              nullptr)
