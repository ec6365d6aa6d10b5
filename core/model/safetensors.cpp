#include "core/model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>

#include "core/util/text.h"
#include "nscope/error.h"

namespace fs = std::filesystem;

namespace nscope {

class SafetensorsMapping {
public:
    SafetensorsMapping(const fs::path& path) {
        const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) throw InputError(path.string() + ": cannot open safetensors file: " + std::strerror(errno));
        struct stat st {};
        if (::fstat(fd, &st) != 0) {
            ::close(fd);
            throw InputError(path.string() + ": cannot stat: " + std::strerror(errno));
        }
        size_ = static_cast<size_t>(st.st_size);
        if (size_ > 0) {
            // MAP_PRIVATE: copy-on-write, so in-place edits of aliasing tensors stay in memory.
            void* p = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
            if (p == MAP_FAILED) {
                ::close(fd);
                throw RuntimeError(path.string() + ": mmap failed: " + std::strerror(errno));
            }
            data_ = static_cast<uint8_t*>(p);
        }
        ::close(fd);
    }
    ~SafetensorsMapping() {
        if (data_ != nullptr) ::munmap(data_, size_);
    }
    SafetensorsMapping(const SafetensorsMapping&) = delete;
    SafetensorsMapping& operator=(const SafetensorsMapping&) = delete;
    uint8_t* data() const { return data_; }
    size_t size() const { return size_; }
    /// Drop the resident pages that lie wholly inside [begin, end) (a later read faults them in again from the
    /// file; private pages written meanwhile would be lost, so only for data nobody edited).
    void drop_pages(const uint8_t* begin, const uint8_t* end) const {
        const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
        const uintptr_t a = (reinterpret_cast<uintptr_t>(begin) + page - 1) / page * page;
        const uintptr_t b = reinterpret_cast<uintptr_t>(end) / page * page;
        if (b > a) ::madvise(reinterpret_cast<void*>(a), b - a, MADV_DONTNEED);  // advice: failure is harmless
    }

private:
    uint8_t* data_ = nullptr;
    size_t size_ = 0;
};

namespace {

constexpr uint64_t kMaxHeader = 100ull << 20;  // the reference implementation's limit

size_t element_size(at::ScalarType t) { return c10::elementSize(t); }

std::string shape_str(const std::vector<int64_t>& s) {
    std::string r = "[";
    for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
    return r + "]";
}

const char* dtype_name(at::ScalarType t) {
    switch (t) {
        case at::kFloat: return "F32";
        case at::kHalf: return "F16";
        case at::kBFloat16: return "BF16";
        case at::kDouble: return "F64";
        case at::kLong: return "I64";
        case at::kInt: return "I32";
        case at::kShort: return "I16";
        case at::kChar: return "I8";
        case at::kByte: return "U8";
        case at::kBool: return "BOOL";
        default: throw InputError("write_safetensors: unsupported dtype " + std::string(c10::toString(t)));
    }
}

}  // namespace

at::ScalarType safetensors_scalar_type(const std::string& dtype, const std::string& where) {
    static const std::map<std::string, at::ScalarType> kTypes = {
        {"F32", at::kFloat}, {"F16", at::kHalf}, {"BF16", at::kBFloat16}, {"F64", at::kDouble},
        {"I64", at::kLong},  {"I32", at::kInt},  {"I16", at::kShort},     {"I8", at::kChar},
        {"U8", at::kByte},   {"BOOL", at::kBool}};
    const auto it = kTypes.find(dtype);
    if (it == kTypes.end())
        throw InputError(where + ": unsupported dtype '" + dtype +
                         "' (supported: F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL). Convert the checkpoint "
                         "to float32, float16 or bfloat16.");
    return it->second;
}

namespace {
bool starts_with(const std::string& s, const std::string& p) { return s.size() > p.size() && s.compare(0, p.size(), p) == 0; }
bool ends_with(const std::string& s, const std::string& x) {
    return s.size() >= x.size() && s.compare(s.size() - x.size(), x.size(), x) == 0;
}
}  // namespace

std::string normalize_weight_name(const WeightNaming& naming, const std::string& name) {
    for (const auto& prefix : naming.base_prefixes)
        if (starts_with(name, prefix)) return name.substr(prefix.size());
    return name;
}

bool is_ignored_buffer(const WeightNaming& naming, const std::string& name) {
    for (const auto& suffix : naming.ignored_buffers)
        if (ends_with(name, suffix)) return true;
    return false;
}

std::string checkpoint_weight_name(const WeightNaming& naming, const std::string& name) {
    if (naming.base_prefixes.empty()) return name;
    for (const auto& head : naming.head_prefixes)
        if (name.compare(0, head.size(), head) == 0) return name;
    return naming.base_prefixes.front() + name;
}

SafetensorsFile::SafetensorsFile(const fs::path& path) : path_(path) {
    map_ = std::make_shared<SafetensorsMapping>(path);
    const std::string where = path.string();
    const size_t size = map_->size();
    if (size < 8)
        throw InputError(where + ": truncated safetensors file (" + std::to_string(size) +
                         " bytes, less than the 8-byte header length). Re-download or re-save the model.");
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | map_->data()[i];
    if (n < 2 || n > kMaxHeader || n > size - 8)
        throw InputError(where + ": corrupt safetensors header: header length " + std::to_string(n) +
                         " is outside the valid range [2, min(100 MiB, file size - 8 = " + std::to_string(size - 8) +
                         ")]. The file is not a safetensors file or is truncated; re-download or re-save it.");
    nlohmann::json header;
    try {
        header = nlohmann::json::parse(reinterpret_cast<const char*>(map_->data()) + 8,
                                       reinterpret_cast<const char*>(map_->data()) + 8 + n);
    } catch (const nlohmann::json::exception& e) {
        throw InputError(where + ": corrupt safetensors header: the " + std::to_string(n) +
                         "-byte JSON header does not parse (" + valid_utf8(e.what()) + "). Re-download or re-save the file.");
    }
    if (!header.is_object())
        throw InputError(where + ": corrupt safetensors header: expected a JSON object of tensors");
    const uint64_t data_size = size - 8 - n;
    for (auto it = header.begin(); it != header.end(); ++it) {
        if (it.key() == "__metadata__") {
            metadata_ = it.value();
            continue;
        }
        const std::string tw = where + ": tensor '" + valid_utf8(it.key()) + "'";
        const auto& v = it.value();
        if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets") ||
            !v["dtype"].is_string() || !v["shape"].is_array() || !v["data_offsets"].is_array() ||
            v["data_offsets"].size() != 2)
            throw InputError(tw + ": corrupt header entry " + v.dump() +
                             " (needs \"dtype\": string, \"shape\": [..], \"data_offsets\": [begin, end])");
        SafetensorsEntry e;
        e.name = it.key();
        e.dtype = v["dtype"].get<std::string>();
        const at::ScalarType st = safetensors_scalar_type(e.dtype, tw);
        // The byte length is computed without wrapping: a shape whose product overflows would otherwise match
        // a small (or empty) data span and reach at::empty / from_blob with absurd sizes.
        uint64_t numel = 1;
        bool overflow = false;
        for (const auto& d : v["shape"]) {
            if (!d.is_number_unsigned())
                throw InputError(tw + ": corrupt shape " + v["shape"].dump() + " (dimensions must be >= 0 integers)");
            const uint64_t dim = d.get<uint64_t>();
            overflow |= dim > static_cast<uint64_t>(INT64_MAX) || __builtin_mul_overflow(numel, dim, &numel);
            e.shape.push_back(static_cast<int64_t>(dim));
        }
        uint64_t want = 0;
        overflow |= __builtin_mul_overflow(numel, static_cast<uint64_t>(element_size(st)), &want) ||
                    want > static_cast<uint64_t>(INT64_MAX);
        if (overflow)
            throw InputError(tw + ": corrupt shape " + v["shape"].dump() + ": its size in bytes does not fit in 64 bits. "
                             "The header is corrupt; re-save the file.");
        for (const auto& o : v["data_offsets"])
            if (!o.is_number_unsigned())
                throw InputError(tw + ": corrupt data_offsets " + v["data_offsets"].dump());
        e.begin = v["data_offsets"][0].get<uint64_t>();
        e.end = v["data_offsets"][1].get<uint64_t>();
        if (e.end < e.begin)
            throw InputError(tw + ": corrupt data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) +
                             "] (end before begin)");
        if (e.end - e.begin != want)
            throw InputError(tw + ": shape " + shape_str(e.shape) + " x " + e.dtype + " needs " + std::to_string(want) +
                             " bytes but data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) +
                             "] span " + std::to_string(e.end - e.begin) + ". The header is corrupt; re-save the file.");
        if (e.end > data_size)
            throw InputError(where + ": truncated safetensors file: tensor '" + e.name + "' needs data bytes up to " +
                             std::to_string(e.end) + " but the file holds only " + std::to_string(data_size) +
                             " bytes of data (file size " + std::to_string(size) +
                             "). The download or copy was cut short; re-download the file.");
        entries_.push_back(std::move(e));
    }
    std::vector<const SafetensorsEntry*> sorted;
    for (const auto& e : entries_) sorted.push_back(&e);
    std::sort(sorted.begin(), sorted.end(), [](auto* a, auto* b) { return a->begin < b->begin; });
    for (size_t i = 1; i < sorted.size(); ++i)
        if (sorted[i]->begin < sorted[i - 1]->end)
            throw InputError(where + ": corrupt safetensors header: tensors '" + sorted[i - 1]->name + "' [" +
                             std::to_string(sorted[i - 1]->begin) + ", " + std::to_string(sorted[i - 1]->end) +
                             ") and '" + sorted[i]->name + "' [" + std::to_string(sorted[i]->begin) + ", " +
                             std::to_string(sorted[i]->end) + ") overlap. Re-save the file.");
}

at::Tensor SafetensorsFile::tensor(const SafetensorsEntry& e) const {
    const at::ScalarType st = safetensors_scalar_type(e.dtype, path_.string());
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | map_->data()[i];
    uint8_t* p = map_->data() + 8 + n + e.begin;
    const auto opts = at::TensorOptions().dtype(st).device(at::kCPU);
    if (e.end == e.begin) return at::empty(e.shape, opts);
    if (reinterpret_cast<uintptr_t>(p) % element_size(st) != 0) {
        // Misaligned element data: copy it into an aligned tensor.
        at::Tensor t = at::empty(e.shape, opts);
        std::memcpy(t.data_ptr(), p, e.end - e.begin);
        return t;
    }
    auto keep = map_;  // the deleter keeps the mapping alive as long as any tensor aliases it
    return at::from_blob(p, e.shape, [keep](void*) mutable { keep.reset(); }, opts);
}

void SafetensorsFile::release(const SafetensorsEntry& e) const {
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | map_->data()[i];
    const uint8_t* p = map_->data() + 8 + n;
    map_->drop_pages(p + e.begin, p + e.end);
}

SafetensorsWeights::SafetensorsWeights(const std::vector<fs::path>& files, const WeightNaming& naming) {
    if (files.empty()) throw InputError("no safetensors files given");
    for (const auto& f : files) {
        files_.push_back(std::make_unique<SafetensorsFile>(f));
        const SafetensorsFile* file = files_.back().get();
        for (const auto& e : file->entries()) {
            if (is_ignored_buffer(naming, e.name)) continue;
            const std::string key = normalize_weight_name(naming, e.name);
            const auto [it, inserted] = index_.emplace(key, Ref{file, &e});
            if (!inserted)
                throw InputError("weight '" + key + "' is stored twice: as '" + it->second.entry->name + "' in " +
                                 it->second.file->path().string() + " and as '" + e.name + "' in " + f.string() +
                                 ". Remove the duplicate shard or fix model.safetensors.index.json.");
            bytes_ += e.end - e.begin;
        }
    }
}

bool SafetensorsWeights::contains(const std::string& name) const { return index_.count(name) != 0; }

at::Tensor SafetensorsWeights::get(const std::string& name) const {
    const auto it = index_.find(name);
    if (it == index_.end()) {
        std::vector<std::string> paths;
        for (const auto& f : files_) paths.push_back(f->path().string());
        throw InputError("weight '" + name + "' is missing from " + join(paths, ", ") + did_you_mean(name, names()) +
                         ". The checkpoint does not match config.json (wrong architecture or an incomplete shard set).");
    }
    return it->second.file->tensor(*it->second.entry);
}

void SafetensorsWeights::release(const std::string& name) const {
    const auto it = index_.find(name);
    if (it != index_.end()) it->second.file->release(*it->second.entry);
}

std::vector<std::string> SafetensorsWeights::names() const {
    std::vector<std::string> r;
    r.reserve(index_.size());
    for (const auto& [k, v] : index_) r.push_back(k);
    return r;
}

void write_safetensors(const fs::path& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                       const nlohmann::json& metadata) {
    nlohmann::json header = nlohmann::json::object();
    if (!metadata.empty()) header["__metadata__"] = metadata;
    std::vector<at::Tensor> data;
    uint64_t offset = 0;
    for (const auto& [name, t0] : tensors) {
        at::Tensor t = t0.detach().to(at::kCPU).contiguous();
        const uint64_t bytes = static_cast<uint64_t>(t.numel()) * t.element_size();
        header[name] = {{"dtype", dtype_name(t.scalar_type())},
                        {"shape", t.sizes().vec()},
                        {"data_offsets", {offset, offset + bytes}}};
        offset += bytes;
        data.push_back(t);
    }
    std::string h = header.dump();
    while ((h.size() + 8) % 8 != 0) h.push_back(' ');
    const fs::path tmp = path.string() + ".tmp." + std::to_string(::getpid());
    {
        std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
        if (!out) throw RuntimeError("cannot write " + tmp.string());
        uint64_t n = h.size();
        char len[8];
        for (int i = 0; i < 8; ++i) len[i] = static_cast<char>((n >> (8 * i)) & 0xff);
        out.write(len, 8);
        out.write(h.data(), static_cast<std::streamsize>(h.size()));
        for (const auto& t : data)
            out.write(static_cast<const char*>(t.data_ptr()), static_cast<std::streamsize>(t.numel() * t.element_size()));
        if (!out) throw RuntimeError("write failed: " + tmp.string());
    }
    fs::rename(tmp, path);
}

}  // namespace nscope
