#include "core/plugin/registry.h"

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <cstring>

#include <boost/dll/runtime_symbol_info.hpp>
#include <boost/dll/shared_library.hpp>
#include <spdlog/spdlog.h>

#include "core/util/text.h"
#include "nscope/analyzer.h"
#include "nscope/exporter.h"
#include "nscope/model_adapter.h"

namespace nscope {
namespace fs = std::filesystem;

namespace {

// The descriptor fields a plugin must have for the host to read it (everything up to the factories).
constexpr size_t kMinDescriptorSize = offsetof(PluginDescriptor, create_model_factory) + sizeof(void*);

std::string tag_part(const std::string& tag, const std::string& key) {
    // tag = "gcc-12;cxx11abi=1;torch=1.13.0"; key "torch" -> "1.13.0", key "" -> "gcc-12;cxx11abi=1"
    if (key.empty()) {
        const auto p = tag.find(";torch=");
        return p == std::string::npos ? tag : tag.substr(0, p);
    }
    const auto p = tag.find(key + "=");
    if (p == std::string::npos) return "";
    const auto end = tag.find(';', p);
    return tag.substr(p + key.size() + 1, end == std::string::npos ? std::string::npos : end - p - key.size() - 1);
}

bool valid_id(const std::string& id) {
    if (id.empty() || id.size() > 64) return false;
    return std::all_of(id.begin(), id.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
    });
}

bool looks_like_plugin_file(const fs::path& p) {
    const std::string name = p.filename().string();
    return p.extension() == ".so" || name.find(".so.") != std::string::npos;
}

}  // namespace

const char* plugin_kind_name(PluginKind kind) {
    switch (kind) {
        case PluginKind::Model: return "model";
        case PluginKind::Analyzer: return "analyzer";
        case PluginKind::Exporter: return "exporter";
    }
    return "unknown";
}

std::string host_build_tag() { return NSCOPE_BASE_BUILD_TAG ";" NSCOPE_TORCH_TAG; }

PluginRegistry::PluginRegistry() = default;
PluginRegistry::~PluginRegistry() {
    // Factories are code from the libraries: destroy them before the libraries could go.
    factories_.clear();
}

std::vector<fs::path> PluginRegistry::search_path(const std::vector<fs::path>& extra) {
    std::vector<fs::path> dirs(extra.begin(), extra.end());
    if (const char* env = std::getenv("NSCOPE_PLUGIN_PATH"); env && *env) {
        std::string s = env;
        size_t start = 0;
        while (start <= s.size()) {
            const size_t end = std::min(s.find(':', start), s.size());
            if (end > start) dirs.emplace_back(s.substr(start, end - start));
            start = end + 1;
        }
    }
    std::error_code ec;
    const fs::path exe_dir = boost::dll::program_location(ec).parent_path();
    if (!ec) {
        for (const fs::path& rel : {fs::path("../plugins"), fs::path("../lib/nscope/plugins")}) {
            const fs::path dir = fs::weakly_canonical(exe_dir / rel, ec);
            if (!ec && fs::is_directory(dir)) dirs.push_back(dir);
        }
    }
    return dirs;
}

void PluginRegistry::scan(const std::vector<fs::path>& dirs) {
    std::vector<fs::path> seen;
    for (const auto& dir : dirs) {
        std::error_code ec;
        const fs::path canon = fs::weakly_canonical(dir, ec);
        if (ec || !fs::is_directory(canon)) {
            spdlog::debug("plugin directory {} does not exist; skipped", dir.string());
            continue;
        }
        if (std::find(seen.begin(), seen.end(), canon) != seen.end()) continue;
        seen.push_back(canon);
        std::vector<fs::path> files;
        for (const auto& entry : fs::directory_iterator(canon, ec))
            if (entry.is_regular_file() && looks_like_plugin_file(entry.path())) files.push_back(entry.path());
        std::sort(files.begin(), files.end());  // deterministic order
        for (const auto& f : files) load(f);
    }
}

void PluginRegistry::refuse(const fs::path& file, std::string reason) {
    spdlog::debug("refused plugin {}: {}", file.string(), reason);
    refusals_.push_back({file, std::move(reason)});
}

bool PluginRegistry::load(const fs::path& file) {
    auto lib = std::make_shared<boost::dll::shared_library>();
    try {
        lib->load(file, boost::dll::load_mode::rtld_now | boost::dll::load_mode::rtld_local);
    } catch (const std::exception& e) {
        refuse(file, std::string("not a loadable shared library (") + e.what() +
                         "). Remove it from the plugin path, or rebuild it as a NeuronScope plugin.");
        return false;
    }
    if (!lib->has(NSCOPE_PLUGIN_ENTRY_NAME)) {
        refuse(file, "not a NeuronScope plugin: it exports no `" NSCOPE_PLUGIN_ENTRY_NAME
                     "` function. Declare one with NSCOPE_ANALYZER_PLUGIN / NSCOPE_EXPORTER_PLUGIN / "
                     "NSCOPE_MODEL_PLUGIN, or remove the file from the plugin path.");
        return false;
    }
    const auto entry = lib->get<const PluginDescriptor*()>(NSCOPE_PLUGIN_ENTRY_NAME);
    const PluginDescriptor* d = entry();
    if (d == nullptr || d->struct_size < 2 * sizeof(uint32_t)) {
        refuse(file, "its plugin entry returned no valid descriptor. Rebuild it against this nscope's SDK.");
        return false;
    }
    if (d->abi_version != NSCOPE_SDK_ABI_VERSION) {
        refuse(file, "built for NeuronScope SDK ABI version " + std::to_string(d->abi_version) +
                         ", but this nscope (" NSCOPE_VERSION_STRING ") uses ABI version " +
                         std::to_string(NSCOPE_SDK_ABI_VERSION) +
                         ". Rebuild the plugin against this nscope's SDK (find_package(NeuronScope) from its "
                         "install prefix).");
        return false;
    }
    if (d->struct_size < kMinDescriptorSize) {
        refuse(file, "its descriptor is truncated (" + std::to_string(d->struct_size) + " bytes, need " +
                         std::to_string(kMinDescriptorSize) + "). Rebuild it against this nscope's SDK.");
        return false;
    }
    const std::string tag = d->build_tag ? d->build_tag : "";
    const std::string host = host_build_tag();
    if (tag_part(tag, "") != tag_part(host, "")) {
        refuse(file, "built with '" + tag_part(tag, "") + "' but this nscope was built with '" +
                         tag_part(host, "") +
                         "'. Rebuild the plugin with the same compiler and libstdc++ ABI as nscope.");
        return false;
    }
    const std::string id = d->id ? d->id : "";
    if (!valid_id(id)) {
        refuse(file, "invalid plugin id '" + id + "': use 1-64 characters from a-z, 0-9, '-', '_', '.'.");
        return false;
    }
    const bool kind_ok = (d->kind == PluginKind::Analyzer && d->create_analyzer) ||
                         (d->kind == PluginKind::Exporter && d->create_exporter) ||
                         (d->kind == PluginKind::Model && d->create_model_factory);
    if (!kind_ok) {
        refuse(file, "plugin '" + id + "' declares kind " + std::to_string(static_cast<uint32_t>(d->kind)) +
                         " without the matching factory. Declare it with one of the NSCOPE_*_PLUGIN macros.");
        return false;
    }
    if (d->kind == PluginKind::Model && tag_part(tag, "torch") != tag_part(host, "torch")) {
        refuse(file, "model plugin '" + id + "' was built against LibTorch " + tag_part(tag, "torch") +
                         " but this nscope uses LibTorch " + tag_part(host, "torch") +
                         ". Rebuild the plugin against the same LibTorch.");
        return false;
    }
    for (const auto& p : plugins_) {
        if (p.id == id) {
            refuse(file, "duplicate plugin id '" + id + "': already loaded from " + p.path.string() +
                             ". Remove one of the two files from the plugin path, or give one another id.");
            return false;
        }
    }
    plugins_.push_back({id, d->kind, d->version ? d->version : "", d->summary ? d->summary : "", tag, file, d,
                        std::move(lib)});
    spdlog::debug("loaded {} plugin '{}' {} from {}", plugin_kind_name(d->kind), id, plugins_.back().version,
                  file.string());
    return true;
}

const LoadedPlugin* PluginRegistry::find(std::string_view id, PluginKind kind) const {
    for (const auto& p : plugins_)
        if (p.id == id && p.kind == kind) return &p;
    return nullptr;
}

const LoadedPlugin& PluginRegistry::require(std::string_view id, PluginKind kind) const {
    if (const auto* p = find(id, kind)) return *p;
    std::vector<std::string> names;
    for (const auto& p : plugins_)
        if (p.kind == kind) names.push_back(p.id);
    std::string msg = std::string("unknown ") + plugin_kind_name(kind) + " plugin '" + std::string(id) + "'" +
                      did_you_mean(id, names) + ". Available: " + (names.empty() ? "none" : join(names, ", ")) + ".";
    for (const auto& p : plugins_)
        if (p.id == id) msg += " ('" + p.id + "' exists but is a " + plugin_kind_name(p.kind) + " plugin.)";
    for (const auto& r : refusals_)
        msg += "\n  note: refused " + r.path.string() + ": " + r.reason;
    throw InputError(msg);
}

std::unique_ptr<Analyzer> PluginRegistry::create_analyzer(std::string_view id) const {
    return std::unique_ptr<Analyzer>(require(id, PluginKind::Analyzer).descriptor->create_analyzer());
}

std::unique_ptr<Exporter> PluginRegistry::create_exporter(std::string_view id) const {
    return std::unique_ptr<Exporter>(require(id, PluginKind::Exporter).descriptor->create_exporter());
}

std::unique_ptr<ModelFactory> PluginRegistry::create_model_factory(std::string_view id) const {
    return std::unique_ptr<ModelFactory>(require(id, PluginKind::Model).descriptor->create_model_factory());
}

std::vector<std::pair<const LoadedPlugin*, std::shared_ptr<ModelFactory>>> PluginRegistry::model_factories() const {
    if (factories_.empty()) {
        for (const auto& p : plugins_)
            if (p.kind == PluginKind::Model)
                factories_.emplace_back(&p, std::shared_ptr<ModelFactory>(p.descriptor->create_model_factory()));
    }
    return factories_;
}

}  // namespace nscope
