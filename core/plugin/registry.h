// Plugin discovery and loading.
//
// The host scans every plugin directory for lib*.so / *.so files (not recursively), opens each with
// Boost.DLL, looks up `nscope_plugin_entry`, and checks the descriptor (size, SDK ABI version, build tag,
// kind, id, duplicates) before calling any other plugin code. A file that fails a check is not loaded: it
// becomes a Refusal with a message that says what to rebuild. Loaded libraries stay mapped until exit, so
// objects created from them never outlive their code.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "nscope/analyzer.h"
#include "nscope/exporter.h"
#include "nscope/plugin.h"

namespace boost::dll {
class shared_library;
}

namespace nscope {

class ModelFactory;  // complete in nscope/model_adapter.h (LibTorch)

const char* plugin_kind_name(PluginKind kind);

/// The build tag of this host: plugins must share its compiler / libstdc++ part, and model plugins its
/// LibTorch version.
std::string host_build_tag();

struct LoadedPlugin {
    std::string id;
    PluginKind kind;
    std::string version;
    std::string summary;
    std::string build_tag;
    std::filesystem::path path;
    const PluginDescriptor* descriptor = nullptr;
    std::shared_ptr<boost::dll::shared_library> library;
};

struct PluginRefusal {
    std::filesystem::path path;
    std::string reason;
};

class PluginRegistry {
public:
    PluginRegistry();
    ~PluginRegistry();

    /// Directories searched, in order: `extra` (--plugin-path), $NSCOPE_PLUGIN_PATH (colon-separated),
    /// then the plugins next to the executable (build tree `<build>/plugins`, install `<prefix>/lib/nscope/plugins`).
    static std::vector<std::filesystem::path> search_path(const std::vector<std::filesystem::path>& extra);

    /// Load every plugin file in these directories (missing directories are skipped).
    void scan(const std::vector<std::filesystem::path>& dirs);

    /// Load one file; returns false and records a refusal when it is not an acceptable plugin.
    bool load(const std::filesystem::path& file);

    const std::vector<LoadedPlugin>& plugins() const { return plugins_; }
    const std::vector<PluginRefusal>& refusals() const { return refusals_; }

    const LoadedPlugin* find(std::string_view id, PluginKind kind) const;
    /// The plugin, or an InputError listing the plugins of that kind, a "did you mean", and any refusal
    /// that may explain why it is missing.
    const LoadedPlugin& require(std::string_view id, PluginKind kind) const;

    std::unique_ptr<Analyzer> create_analyzer(std::string_view id) const;
    std::unique_ptr<Exporter> create_exporter(std::string_view id) const;
    std::unique_ptr<ModelFactory> create_model_factory(std::string_view id) const;
    /// Every model factory, with its plugin id (for picking the adapter of a config.json).
    std::vector<std::pair<const LoadedPlugin*, std::shared_ptr<ModelFactory>>> model_factories() const;

private:
    void refuse(const std::filesystem::path& file, std::string reason);
    std::vector<LoadedPlugin> plugins_;
    std::vector<PluginRefusal> refusals_;
    mutable std::vector<std::pair<const LoadedPlugin*, std::shared_ptr<ModelFactory>>> factories_;
};

}  // namespace nscope
