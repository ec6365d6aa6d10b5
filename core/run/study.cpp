#include "core/run/study.h"

#include <charconv>
#include <fstream>
#include <set>
#include <sstream>

#include "core/plugin/call_plugin.h"
#include "core/plugin/registry.h"
#include "core/run/run_plan.h"
#include "core/util/files.h"
#include "core/util/sha256.h"
#include "nscope/error.h"

namespace nscope {
namespace fs = std::filesystem;

ShardSpec parse_shard(const std::string& text) {
    const auto slash = text.find('/');
    ShardSpec s;
    auto number = [&](std::string_view part, size_t& out) {
        const auto [end, ec] = std::from_chars(part.data(), part.data() + part.size(), out);
        return ec == std::errc() && end == part.data() + part.size() && !part.empty();
    };
    const std::string_view v(text);
    if (slash == std::string::npos || !number(v.substr(0, slash), s.index) || !number(v.substr(slash + 1), s.count) ||
        s.count == 0 || s.index >= s.count)
        throw InputError("--shard: expected i/n with 0 <= i < n (e.g. --shard 0/4), got '" + text + "'");
    return s;
}

BatchRange shard_batches(size_t batches, const ShardSpec& s) {
    return {batches * s.index / s.count, batches * (s.index + 1) / s.count};
}

std::string recipe_digest(const Recipe& recipe) { return sha256_hex(recipe.resolved.dump()); }

std::string model_digest(const nlohmann::json& files) {
    std::string lines;
    for (const auto& f : files)
        lines += fs::path(f.value("path", "")).filename().string() + " " + f.value("sha256", "") + "\n";
    return sha256_hex(lines);
}

void check_stateful_plan(const PluginRegistry& plugins, const RunPlan& plan, const std::string& feature,
                         bool needs_merge) {
    const Recipe& r = plan.recipe;
    if (plan.models.size() != 1)
        throw InputError(feature + " runs recipes with one model; this one compares " +
                         std::to_string(plan.models.size()) + " (models:)");
    if (plan.waves.size() > 1) {
        for (const auto& a : r.analyses)
            if (!a.inputs.empty())
                throw InputError(a.loc.text + ": " + feature + " cannot run analysis '" + a.id + "': it reads the result of '" +
                                 a.inputs.front() + "' (input:), which needs a second pass over the whole corpus");
    }
    for (const auto& e : r.exports) {
        const auto exporter = make_exporter(plugins, e);
        if (exporter->wants_activations())
            throw InputError(e.loc.text + ": " + feature + " cannot run export '" + e.use +
                             "': it consumes every batch's activations (run it without " + feature + ")");
    }
    for (const auto& a : r.analyses) {
        const auto analyzer = make_analyzer(plugins, a);
        const std::string role = analysis_role(a.id, a.use);
        if (analyzer->state_version() == 0)
            throw InputError(a.loc.text + ": " + feature + " needs every analysis to save its state; " + role +
                             " cannot (see docs/plugins.md \"Saved state\")");
        if (needs_merge && !analyzer->mergeable())
            throw InputError(a.loc.text + ": " + feature + " needs every analysis to merge shards; " + role +
                             " is not mergeable with these parameters");
    }
}

std::string analysis_fingerprint(const AnalysisSpec& spec) {
    const nlohmann::json j = {{"use", spec.use}, {"params", spec.params}, {"inputs", spec.inputs}};
    return sha256_hex(j.dump());
}

std::string save_analysis_state(const Analyzer& analyzer, const AnalysisSpec& spec, const std::string& plugin) {
    const std::string role = analysis_role(spec.id, spec.use);
    StateWriter out;
    call_plugin(role, "save_state", [&] { analyzer.save_state(out); });
    return seal_state(plugin, analyzer.state_version(), analysis_fingerprint(spec), out.bytes());
}

void load_analysis_state(Analyzer& analyzer, const AnalysisSpec& spec, const std::string& plugin,
                         const std::string& blob, const std::string& source) {
    const StateEnvelope env = open_state(blob, source);
    const std::string role = analysis_role(spec.id, spec.use);
    if (env.analyzer != plugin)
        throw InputError(source + ": a state of " + env.analyzer + ", but " + role + " runs " + plugin);
    if (env.version != analyzer.state_version())
        throw InputError(source + ": state layout version " + std::to_string(env.version) + ", but " + plugin +
                         " reads version " + std::to_string(analyzer.state_version()));
    if (env.fingerprint != analysis_fingerprint(spec))
        throw InputError(source + ": the state was saved with other parameters than " + role + " has now");
    StateReader in(env.payload, source);
    call_plugin(role, "load_state", [&] {
        analyzer.load_state(in);
        in.expect_end();
    });
}

std::string read_bytes(const fs::path& path) {
    // One read of the whole file into a buffer of its size (states are hundreds of MB in a large merge:
    // no stream buffering, no growing copies).
    std::ifstream in(path, std::ios::binary | std::ios::ate);
    if (!in) throw InputError("cannot read " + path.string());
    const std::streamoff size = in.tellg();
    if (size < 0) throw InputError("cannot read " + path.string());
    std::string bytes(static_cast<size_t>(size), '\0');
    in.seekg(0);
    if (size > 0 && !in.read(bytes.data(), size)) throw InputError("cannot read " + path.string() + " (it changed while read)");
    return bytes;
}

nlohmann::json read_manifest(const fs::path& run_dir) {
    const fs::path path = run_dir / "manifest.json";
    if (!fs::exists(path)) throw InputError(run_dir.string() + " is not a run directory (no manifest.json)");
    try {
        return nlohmann::json::parse(read_bytes(path));
    } catch (const nlohmann::json::exception& e) {
        throw InputError(path.string() + ": not valid JSON (" + e.what() + ")");
    }
}

Recipe recipe_from_manifest(const nlohmann::json& m, const fs::path& run_dir) {
    const fs::path manifest_path = run_dir / "manifest.json";
    if (!m.contains("recipe") || !m.contains("status"))
        throw InputError(manifest_path.string() + ": no resolved recipe recorded");
    const fs::path base = m.value("recipe_base_dir", run_dir.string());
    Recipe recipe = parse_recipe(json_to_yaml(m["recipe"]), manifest_path.string() + " (recorded recipe)", base);
    recipe.file = m.value("recipe_file", "");
    return recipe;
}

void write_checkpoint(const fs::path& run_dir, size_t next_batch, const std::map<std::string, std::string>& states) {
    const std::string name = std::to_string(next_batch);
    const fs::path dir = run_dir / "checkpoints" / name;
    fs::create_directories(dir);
    nlohmann::json j = {{"next_batch", next_batch}, {"dir", "checkpoints/" + name}, {"states", nlohmann::json::object()}};
    for (const auto& [id, blob] : states) {
        write_file_atomic(dir / (id + ".bin"), blob);
        j["states"][id] = sha256_hex(blob);
    }
    write_file_atomic(run_dir / "checkpoint.json", j.dump(2) + "\n");
    for (const auto& e : fs::directory_iterator(run_dir / "checkpoints"))
        if (e.path().filename() != name) fs::remove_all(e.path());
}

std::optional<Checkpoint> read_checkpoint(const fs::path& run_dir) {
    const fs::path path = run_dir / "checkpoint.json";
    if (!fs::exists(path)) return std::nullopt;
    Checkpoint cp;
    try {
        const auto j = nlohmann::json::parse(read_bytes(path));
        cp.next_batch = j.at("next_batch").get<size_t>();
        cp.dir = run_dir / j.at("dir").get<std::string>();
        for (const auto& [id, sha] : j.at("states").items()) cp.sha256[id] = sha.get<std::string>();
    } catch (const nlohmann::json::exception& e) {
        throw InputError(path.string() + ": not a checkpoint record (" + e.what() + ")");
    }
    return cp;
}

std::string read_checkpoint_state(const Checkpoint& cp, const std::string& analysis) {
    const auto it = cp.sha256.find(analysis);
    if (it == cp.sha256.end())
        throw InputError("the checkpoint in " + cp.dir.string() + " has no state of analysis '" + analysis + "'");
    const fs::path file = cp.dir / (analysis + ".bin");
    std::string blob = read_bytes(file);
    if (sha256_hex(blob) != it->second) throw InputError(file.string() + ": differs from the digest checkpoint.json recorded");
    return blob;
}

void remove_checkpoints(const fs::path& run_dir) {
    fs::remove(run_dir / "checkpoint.json");
    fs::remove_all(run_dir / "checkpoints");
}

std::vector<nlohmann::json> check_shard_set(const std::vector<fs::path>& dirs) {
    if (dirs.empty()) throw InputError("merge: no shard directories given");
    std::vector<nlohmann::json> manifests;
    for (const auto& d : dirs) {
        nlohmann::json m = read_manifest(d);
        if (!m.contains("shard"))
            throw InputError("merge: " + d.string() + " is not a shard (run with nscope run --shard i/n)");
        if (m.value("status", "") != "complete")
            throw InputError("merge: shard " + d.string() + " did not complete (status '" + m.value("status", "?") +
                             "'); resume it with nscope run --resume " + d.string());
        m["_dir"] = fs::absolute(d).lexically_normal().string();
        manifests.push_back(std::move(m));
    }
    const nlohmann::json& first = manifests.front();
    const size_t n = first["shard"].value("count", 0);
    // What must agree between shards, and how a mismatch is named.
    const std::vector<std::pair<std::string, nlohmann::json::json_pointer>> same = {
        {"recipe", nlohmann::json::json_pointer("/recipe_sha256")},
        {"model hash", nlohmann::json::json_pointer("/models/0/sha256")},
        {"nscope version", nlohmann::json::json_pointer("/nscope_version")},
        {"build", nlohmann::json::json_pointer("/build_tag")},
        {"analysis plugin versions", nlohmann::json::json_pointer("/analyses")},
        {"export plugin versions", nlohmann::json::json_pointer("/exports")},
        {"shard count", nlohmann::json::json_pointer("/shard/count")},
    };
    std::set<size_t> seen;
    for (const auto& m : manifests) {
        for (const auto& [what, ptr] : same) {
            const auto a = first.value(ptr, nlohmann::json()), b = m.value(ptr, nlohmann::json());
            if (a != b)
                throw InputError("merge: shards differ in " + what + ": " + first["_dir"].get<std::string>() + " has " +
                                 a.dump() + ", " + m["_dir"].get<std::string>() + " has " + b.dump());
        }
        const size_t i = m["shard"].value("index", n);
        if (!seen.insert(i).second)
            throw InputError("merge: shard " + std::to_string(i) + "/" + std::to_string(n) + " is given twice (" +
                             m["_dir"].get<std::string>() + ")");
    }
    std::string missing;
    for (size_t i = 0; i < n; ++i)
        if (!seen.count(i)) missing += (missing.empty() ? "" : ", ") + std::to_string(i);
    if (!missing.empty())
        throw InputError("merge: incomplete shard set: shard(s) " + missing + " of " + std::to_string(n) + " missing");
    std::sort(manifests.begin(), manifests.end(),
              [](const auto& a, const auto& b) { return a["shard"]["index"] < b["shard"]["index"]; });
    return manifests;
}

}  // namespace nscope
