#include "core/model/model_files.h"

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>

#include "core/util/text.h"
#include "nscope/error.h"

namespace fs = std::filesystem;

namespace nscope {
namespace {

nlohmann::json read_json(const fs::path& p) {
    std::ifstream in(p);
    if (!in) throw InputError(p.string() + ": cannot read");
    try {
        return nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
        throw InputError(p.string() + ": invalid JSON: " + e.what());
    }
}

std::string trim(std::string s) {
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
    size_t i = 0;
    while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
    return s.substr(i);
}

bool looks_like_hub_id(const std::string& s) {
    if (s.empty() || s.front() == '/' || s.front() == '.' || s.front() == '~') return false;
    return std::count(s.begin(), s.end(), '/') <= 1;
}

}  // namespace

std::vector<fs::path> hf_cache_dirs() {
    std::vector<fs::path> dirs;
    auto add = [&](const fs::path& p) {
        if (std::find(dirs.begin(), dirs.end(), p) == dirs.end()) dirs.push_back(p);
    };
    if (const char* v = std::getenv("HF_HUB_CACHE"); v && *v) add(v);
    if (const char* v = std::getenv("HUGGINGFACE_HUB_CACHE"); v && *v) add(v);
    if (const char* v = std::getenv("HF_HOME"); v && *v) add(fs::path(v) / "hub");
    if (const char* v = std::getenv("XDG_CACHE_HOME"); v && *v) add(fs::path(v) / "huggingface" / "hub");
    if (const char* v = std::getenv("HOME"); v && *v) add(fs::path(v) / ".cache" / "huggingface" / "hub");
    return dirs;
}

ModelFiles read_model_dir(const fs::path& dir, const std::string& name) {
    ModelFiles m;
    m.name = name;
    m.dir = dir;
    const fs::path cfg = dir / "config.json";
    if (!fs::is_regular_file(cfg))
        throw InputError(dir.string() + ": no config.json. A model folder holds the HuggingFace config.json, "
                         "*.safetensors and usually tokenizer.json.");
    m.config = read_json(cfg);
    if (!m.config.is_object()) throw InputError(cfg.string() + ": expected a JSON object");

    const fs::path index = dir / "model.safetensors.index.json";
    if (fs::is_regular_file(index)) {
        const nlohmann::json j = read_json(index);
        if (!j.contains("weight_map") || !j["weight_map"].is_object())
            throw InputError(index.string() + ": no \"weight_map\" object (tensor name -> shard file)");
        std::set<std::string> seen;
        for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
            if (!it.value().is_string())
                throw InputError(index.string() + ": weight_map[\"" + it.key() + "\"] is not a file name");
            const std::string f = it.value().get<std::string>();
            if (!seen.insert(f).second) continue;
            // Shards are files in the model folder: a path would let an index point anywhere on the disk.
            if (f.empty() || f == "." || f == ".." || f.find('/') != std::string::npos || f.find('\0') != std::string::npos)
                throw InputError(index.string() + ": weight_map[\"" + valid_utf8(it.key()) + "\"] = \"" + valid_utf8(f) +
                                 "\" is not a file name in the model folder (shards sit next to the index)");
            if (!fs::is_regular_file(dir / f))
                throw InputError(index.string() + ": shard '" + f + "' (holding '" + it.key() + "') is missing from " +
                                 dir.string() + ". Download every shard listed in the index.");
            m.weight_files.push_back(dir / f);
        }
        if (m.weight_files.empty()) throw InputError(index.string() + ": weight_map is empty");
    } else {
        for (const auto& e : fs::directory_iterator(dir))
            if (e.path().extension() == ".safetensors") m.weight_files.push_back(e.path());
        std::sort(m.weight_files.begin(), m.weight_files.end());
    }
    if (m.weight_files.empty()) {
        std::string hint;
        if (fs::exists(dir / "pytorch_model.bin"))
            hint = " Only pytorch_model.bin is present: convert it to safetensors (e.g. with "
                   "`model.save_pretrained(dir, safe_serialization=True)` in transformers).";
        throw InputError(dir.string() + ": no *.safetensors weights." + hint);
    }
    if (fs::is_regular_file(dir / "tokenizer.json")) m.tokenizer_json = dir / "tokenizer.json";
    return m;
}

ModelFiles resolve_model(const std::string& path_or_id) {
    if (path_or_id.empty()) throw InputError("empty model path or id");
    std::vector<std::string> looked;
    std::error_code ec;
    const fs::path local(path_or_id);
    if (fs::is_directory(local, ec)) return read_model_dir(fs::absolute(local), path_or_id);
    if (fs::exists(local, ec))
        throw InputError("model '" + path_or_id + "' is a file, not a folder: point at the folder holding "
                         "config.json and *.safetensors");
    looked.push_back("folder " + fs::absolute(local).string() + " (does not exist)");

    if (looks_like_hub_id(path_or_id)) {
        std::string id = path_or_id, rev;
        if (const auto at = id.find('@'); at != std::string::npos) {
            rev = id.substr(at + 1);
            id = id.substr(0, at);
        }
        std::string repo = "models--";
        for (char c : id) repo += (c == '/') ? std::string("--") : std::string(1, c);
        for (const auto& cache : hf_cache_dirs()) {
            const fs::path base = cache / repo;
            if (!fs::is_directory(base / "snapshots", ec)) {
                looked.push_back("HF cache " + base.string() + " (not found)");
                continue;
            }
            std::string snap = rev;
            if (snap.empty()) {
                std::ifstream ref(base / "refs" / "main");
                std::stringstream ss;
                ss << ref.rdbuf();
                snap = trim(ss.str());
            } else if (fs::is_regular_file(base / "refs" / rev)) {
                std::ifstream ref(base / "refs" / rev);
                std::stringstream ss;
                ss << ref.rdbuf();
                snap = trim(ss.str());
            }
            if (snap.empty()) {
                // No refs/main: use the single snapshot if there is exactly one.
                std::vector<fs::path> snaps;
                for (const auto& e : fs::directory_iterator(base / "snapshots"))
                    if (e.is_directory()) snaps.push_back(e.path());
                if (snaps.size() == 1) return read_model_dir(snaps[0], path_or_id);
                looked.push_back("HF cache " + base.string() + " (no refs/main and " + std::to_string(snaps.size()) +
                                 " snapshots; name one as " + id + "@<revision>)");
                continue;
            }
            const fs::path dir = base / "snapshots" / snap;
            if (fs::is_directory(dir, ec)) return read_model_dir(dir, path_or_id);
            looked.push_back("HF cache " + dir.string() + " (snapshot missing)");
        }
    }
    std::string msg = "model '" + path_or_id + "' not found. Looked in:";
    for (const auto& l : looked) msg += "\n  - " + l;
    msg += "\nnscope does not download models: pass a local folder with config.json + *.safetensors, or fetch the "
           "model into the HF cache first (e.g. `huggingface-cli download " + path_or_id + "`) and set HF_HOME.";
    throw InputError(msg);
}

}  // namespace nscope
