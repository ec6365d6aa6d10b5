// safetensors files: a copy-on-write mmap, a strictly validated header, zero-copy tensors.
//
// Format: 8-byte little-endian header length N, N bytes of JSON
// {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {...}},
// then the data section (offsets are relative to its start). Every defect (header length out of bounds,
// bad JSON, offsets outside the file or overlapping, shape x dtype != byte length, truncated file) is an
// InputError naming the file, the tensor and how to fix it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "nscope/model_adapter.h"

namespace nscope {

/// One tensor entry of a safetensors header.
struct SafetensorsEntry {
    std::string name;            ///< as stored (e.g. "transformer.h.0.attn.c_attn.weight")
    std::string dtype;           ///< "F32", "F16", "BF16", ...
    std::vector<int64_t> shape;
    uint64_t begin = 0, end = 0; ///< byte offsets in the data section
};

class SafetensorsMapping;  // the mmap, shared by every tensor that aliases it

/// One opened and validated safetensors file.
class SafetensorsFile {
public:
    /// Map and validate `path`; throws InputError on any defect.
    explicit SafetensorsFile(const std::filesystem::path& path);
    const std::filesystem::path& path() const { return path_; }
    const std::vector<SafetensorsEntry>& entries() const { return entries_; }
    const nlohmann::json& metadata() const { return metadata_; }
    /// The tensor in its stored dtype, aliasing the private (copy-on-write) mapping: in-place edits
    /// never reach the file and never fault. Misaligned data is copied.
    at::Tensor tensor(const SafetensorsEntry& e) const;
    /// Drop the resident pages of the tensor's data (WeightSource::release).
    void release(const SafetensorsEntry& e) const;

private:
    std::filesystem::path path_;
    std::shared_ptr<SafetensorsMapping> map_;
    std::vector<SafetensorsEntry> entries_;
    nlohmann::json metadata_;
};

/// Element type of a safetensors dtype string; throws InputError for an unsupported one.
at::ScalarType safetensors_scalar_type(const std::string& dtype, const std::string& where);

/// Canonical weight name: without the architecture's leading base prefix (`transformer.`, `model.`...).
std::string normalize_weight_name(const WeightNaming& naming, const std::string& name);

/// True for stored buffers that are not parameters (the architecture's `ignored_buffers`, e.g. GPT-2
/// `attn.masked_bias`, rotary `inv_freq`).
bool is_ignored_buffer(const WeightNaming& naming, const std::string& name);

/// The HF checkpoint name of an adapter parameter name: the first base prefix in front, heads as they are.
std::string checkpoint_weight_name(const WeightNaming& naming, const std::string& name);

/// A WeightSource over one or more (sharded) safetensors files, names normalised without the base prefix.
class SafetensorsWeights : public WeightSource {
public:
    /// `naming`: the architecture's prefixes and buffers (ModelFactory::weight_naming); names as stored without.
    explicit SafetensorsWeights(const std::vector<std::filesystem::path>& files, const WeightNaming& naming = {});
    bool contains(const std::string& name) const override;
    at::Tensor get(const std::string& name) const override;
    std::vector<std::string> names() const override;
    /// madvise(MADV_DONTNEED) on the pages wholly inside the tensor's bytes: the adapter keeps its own copy.
    void release(const std::string& name) const override;
    /// Total bytes of tensor data.
    uint64_t data_bytes() const { return bytes_; }

private:
    struct Ref { const SafetensorsFile* file; const SafetensorsEntry* entry; };
    std::vector<std::unique_ptr<SafetensorsFile>> files_;
    std::map<std::string, Ref> index_;
    uint64_t bytes_ = 0;
};

/// Write tensors to a safetensors file (F32 / F16 / BF16 / I64), names as given. Used by tests and by
/// training code that saves a model; atomic (temp file + rename).
void write_safetensors(const std::filesystem::path& path,
                       const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                       const nlohmann::json& metadata = nlohmann::json::object());

}  // namespace nscope
