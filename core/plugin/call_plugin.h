// Every call into plugin code goes through call_plugin: whatever the plugin throws leaves with its kind kept
// (InputError stays a bad-input error, exit 2; anything else becomes a RuntimeError, exit 3) and a prefix
// that names the plugin instance and the stage, e.g.
//
//   analysis 'top' (topk) in consume: <the plugin's message>
//   export 'report' in write: <the plugin's message>
//
// so the user knows which recipe entry failed, whatever the plugin's own message says.
#pragma once

#include <exception>
#include <new>
#include <string>
#include <string_view>
#include <utility>

#include "nscope/error.h"

namespace nscope {

/// "analysis 'top' (topk)"; the plugin id is left out when it equals the analysis id.
inline std::string analysis_role(const std::string& id, const std::string& plugin) {
    return "analysis '" + id + "'" + (plugin.empty() || plugin == id ? "" : " (" + plugin + ")");
}
/// "export 'report'".
inline std::string export_role(const std::string& plugin) { return "export '" + plugin + "'"; }

/// Run `f` (plugin code) on behalf of `role` at `stage` ("configure", "begin", "consume", "finish",
/// "write", "merge"); rethrow any exception as described above. Returns what `f` returns.
template <typename F>
auto call_plugin(const std::string& role, std::string_view stage, F&& f) -> decltype(f()) {
    const auto prefix = [&] { return role + " in " + std::string(stage) + ": "; };
    try {
        return std::forward<F>(f)();
    } catch (const InputError& e) {
        throw InputError(prefix() + e.what());
    } catch (const std::bad_alloc&) {
        throw RuntimeError(prefix() + "out of memory");
    } catch (const std::exception& e) {
        throw RuntimeError(prefix() + e.what());
    } catch (...) {
        throw RuntimeError(prefix() + "threw something that is not a std::exception");
    }
}

}  // namespace nscope
