// `activations` exporter: the raw captures of the run (docs/architecture.md run layout), streamed to disk batch by
// batch, never held in memory:
//   activations/<hook>.npy             float32 [n_prompts, max_positions, ...] (zero beyond the mask;
//                                      attention maps [n, h, max_positions, max_positions])
//   activations/attention_mask.npy     int64 [n_prompts, max_positions]
//   activations/input_ids.npy          int64 [n_prompts, max_positions] (0 beyond the mask)
//   activations/index.json             hook -> file, shape, dtype; prompt and position counts
// Each file grows as `<file>.partial.<pid>` with a reserved 256-byte .npy header that is patched at write()
// before an fsync and a rename. When the run's longest prompt is known in begin() (RunContext::prompts),
// rows are padded as they arrive; otherwise batches are kept at their own width and re-padded, streaming,
// at write().
#include <nscope/sdk.h>

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>

#include "nscope_common/hooks.h"
#include "nscope_common/params.h"

namespace {

namespace fs = std::filesystem;

constexpr size_t kHeaderBytes = 256;  // reserved .npy header (magic + length + dict, padded), a multiple of 64

std::string npy_header(bool is_int64, const std::vector<int64_t>& shape) {
    std::string dims;
    for (size_t i = 0; i < shape.size(); ++i) dims += std::to_string(shape[i]) + (shape.size() == 1 || i + 1 < shape.size() ? "," : "");
    std::string dict = std::string("{'descr': '") + (is_int64 ? "<i8" : "<f4") + "', 'fortran_order': False, 'shape': (" +
                       dims + "), }";
    if (dict.size() + 11 > kHeaderBytes) throw nscope::RuntimeError("activations: .npy header too long for shape " + dims);
    dict.append(kHeaderBytes - 10 - dict.size() - 1, ' ');
    dict.push_back('\n');
    std::string out("\x93NUMPY\x01\x00", 8);
    out.push_back(static_cast<char>(dict.size() & 0xff));
    out.push_back(static_cast<char>(dict.size() >> 8));
    return out + dict;
}

/// One output array growing on disk, row by row (row = one prompt).
class Stream {
public:
    Stream(fs::path tmp, bool is_int64, std::vector<bool> position_axes)
        : tmp_(std::move(tmp)), int64_(is_int64), pos_axes_(std::move(position_axes)) {
        f_ = std::fopen(tmp_.c_str(), "wb+");
        if (!f_) throw nscope::RuntimeError("activations: cannot create " + tmp_.string());
        const std::string zeros(kHeaderBytes, '\0');
        put(zeros.data(), zeros.size());
    }
    ~Stream() {
        if (f_) std::fclose(f_);
        std::error_code ec;
        if (!done_) fs::remove(tmp_, ec);
    }
    Stream(const Stream&) = delete;
    Stream& operator=(const Stream&) = delete;

    size_t elem() const { return int64_ ? 8 : 4; }
    const std::vector<bool>& position_axes() const { return pos_axes_; }
    uint64_t rows = 0;
    std::vector<int64_t> row_shape;  ///< per-row dims as first seen (position axes hold that batch's width)

    /// Append one row: `src` has per-row shape `sshape`; write it as `dshape` (position axes widened), zeroing
    /// entries at invalid positions (`valid` per source position) and padding.
    void append(const char* src, const std::vector<int64_t>& sshape, const std::vector<int64_t>& dshape,
                const std::vector<uint8_t>& valid) {
        int64_t total = 1;
        for (auto d : dshape) total *= d;
        buf_.assign(static_cast<size_t>(total) * elem(), '\0');
        fill(src, sshape, dshape, valid, 0, buf_.data());
        put(buf_.data(), buf_.size());
        ++rows;
    }

    /// Re-read the unpadded chunks written so far and re-write them padded into `out`.
    void repad_into(Stream& out, const std::vector<std::pair<uint64_t, int64_t>>& chunks, const std::vector<int64_t>& dshape) {
        std::fflush(f_);
        std::fseek(f_, static_cast<long>(kHeaderBytes), SEEK_SET);
        std::vector<char> row;
        for (const auto& [n, width] : chunks) {
            std::vector<int64_t> sshape = dshape;
            for (size_t i = 0; i < sshape.size(); ++i)
                if (pos_axes_[i]) sshape[i] = width;
            int64_t count = 1;
            for (auto d : sshape) count *= d;
            row.resize(static_cast<size_t>(count) * elem());
            const std::vector<uint8_t> all(static_cast<size_t>(std::max<int64_t>(width, 0)), 1);
            for (uint64_t r = 0; r < n; ++r) {
                if (!row.empty() && std::fread(row.data(), 1, row.size(), f_) != row.size())
                    throw nscope::RuntimeError("activations: cannot read back " + tmp_.string());
                out.append(row.data(), sshape, dshape, all);
            }
        }
    }

    /// Patch the header for `shape`, close, and let the host publish the file as `final_path` (fsync, rename).
    void commit(const std::vector<int64_t>& shape, const fs::path& final_path, const nscope::HostServices& host) {
        const std::string header = npy_header(int64_, shape);
        errno = 0;
        const bool ok = std::fflush(f_) == 0 && std::fseek(f_, 0, SEEK_SET) == 0 &&
                        std::fwrite(header.data(), 1, header.size(), f_) == header.size() && std::fflush(f_) == 0;
        const bool closed = std::fclose(f_) == 0;
        f_ = nullptr;
        if (!ok || !closed) throw nscope::RuntimeError("activations: cannot write " + tmp_.string() + ": " + reason());
        host.commit_file(tmp_, final_path);
        done_ = true;
    }

    /// Close and delete without committing (used for the unpadded staging file).
    void discard() {
        if (f_) std::fclose(f_);
        f_ = nullptr;
        std::error_code ec;
        fs::remove(tmp_, ec);
        done_ = true;
    }

private:
    void put(const char* p, size_t n) {
        errno = 0;
        if (n && std::fwrite(p, 1, n, f_) != n)
            throw nscope::RuntimeError("activations: cannot write " + tmp_.string() + ": " + reason());
    }
    /// The system's reason for the failed write (e.g. "No space left on device"), not a guess.
    static std::string reason() { return std::strerror(errno != 0 ? errno : EIO); }
    void fill(const char* src, const std::vector<int64_t>& s, const std::vector<int64_t>& d,
              const std::vector<uint8_t>& valid, size_t dim, char* dst) const {
        int64_t ss = 1, ds = 1;
        for (size_t i = dim + 1; i < s.size(); ++i) ss *= s[i], ds *= d[i];
        const int64_t n = std::min(s[dim], d[dim]);
        for (int64_t i = 0; i < n; ++i) {
            if (pos_axes_[dim] && (static_cast<size_t>(i) >= valid.size() || !valid[static_cast<size_t>(i)]))
                continue;  // left zero
            const char* from = src + static_cast<size_t>(i * ss) * elem();
            char* to = dst + static_cast<size_t>(i * ds) * elem();
            if (dim + 1 == s.size())
                std::memcpy(to, from, elem());
            else
                fill(from, s, d, valid, dim + 1, to);
        }
    }

    fs::path tmp_;
    bool int64_;
    std::vector<bool> pos_axes_;
    FILE* f_ = nullptr;
    bool done_ = false;
    std::vector<char> buf_;
};

std::string safe_file_name(const std::string& hook) {
    std::string s = hook;
    for (char& ch : s)
        if (ch == '/' || ch == '\\') ch = '_';
    return s + ".npy";
}

class ActivationsExporter : public nscope::Exporter {
public:
    void configure(const nscope::Params& params) override {
        nscope::common::ParamReader p("activations", params, {"hooks"});
        filter_ = nscope::common::HookFilter(p.strings("hooks"));
    }

    bool wants_activations() const override { return true; }

    void begin(const nscope::RunContext& ctx) override {
        dir_ = ctx.run_dir.empty() ? fs::temp_directory_path() / ("nscope-activations-" + std::to_string(::getpid()))
                                   : fs::path(ctx.run_dir) / "activations";
        fs::create_directories(dir_);
        max_positions_ = 0;
        known_width_ = false;
        for (const auto* p : ctx.prompts)
            if (p && !p->tokens.empty()) max_positions_ = std::max<int64_t>(max_positions_, static_cast<int64_t>(p->tokens.size())), known_width_ = true;
        ids_ = open("input_ids.npy", true, {true});
        mask_ = open("attention_mask.npy", true, {true});
    }

    void consume(const nscope::Batch& batch) override {
        const auto P = static_cast<int64_t>(batch.positions);
        if (known_width_) {
            // A batch wider than the longest prompt is fine if the extra positions are all padding.
            for (size_t r = 0; r < batch.rows; ++r)
                for (int64_t p = max_positions_; p < P; ++p)
                    if (batch.valid(r, static_cast<size_t>(p)))
                        throw nscope::RuntimeError("activations: a batch has a real token at position " +
                                                   std::to_string(p) + " beyond the longest prompt (" +
                                                   std::to_string(max_positions_) + " tokens)");
        }
        for (size_t r = 0; r < batch.rows; ++r)  // the longest real prompt so far (trailing padding is dropped)
            for (int64_t p = P; p-- > seen_width_;)
                if (batch.valid(r, static_cast<size_t>(p))) {
                    seen_width_ = p + 1;
                    break;
                }
        const int64_t W = known_width_ ? max_positions_ : P;  // written width of this batch
        std::vector<uint8_t> valid(static_cast<size_t>(P));
        auto mask_of = [&](size_t r) {
            for (int64_t p = 0; p < P; ++p) valid[static_cast<size_t>(p)] = batch.valid(r, static_cast<size_t>(p));
        };
        for (size_t r = 0; r < batch.rows; ++r) {
            mask_of(r);
            ids_->append(reinterpret_cast<const char*>(batch.input_ids + r * batch.positions), {P}, {W}, valid);
            mask_->append(reinterpret_cast<const char*>(batch.attention_mask + r * batch.positions), {P}, {W}, valid);
        }
        for (const auto& act : batch.activations) {
            if (!filter_.selected(act.hook)) continue;
            const auto& v = act.view;
            const bool is_map = nscope::common::is_attention_map(act.hook);
            if (v.dtype != nscope::DType::Float32 || v.shape.size() < 2 || v.shape[0] != static_cast<int64_t>(batch.rows) ||
                (!is_map && v.shape[1] != P) || (is_map && (v.shape.size() != 4 || v.shape[2] != P || v.shape[3] != P))) {
                filter_.note_skip(act.hook, "shape is not [batch, pos, ...] / [batch, heads, pos, pos], skipped");
                continue;
            }
            std::vector<int64_t> sshape(v.shape.begin() + 1, v.shape.end());
            std::vector<bool> axes(sshape.size(), false);
            if (is_map) axes[1] = axes[2] = true; else axes[0] = true;
            auto& s = hooks_[act.hook];
            if (!s) {
                s = open(safe_file_name(act.hook), false, axes);
                s->row_shape = sshape;
                catch_up(*s);  // rows of earlier batches that did not carry this hook
            }
            for (size_t i = 0; i < sshape.size(); ++i)
                if (!axes[i] && sshape[i] != s->row_shape[i])
                    throw nscope::RuntimeError("activations: hook '" + act.hook + "' changed shape between batches");
            std::vector<int64_t> dshape = sshape;
            for (size_t i = 0; i < dshape.size(); ++i)
                if (axes[i]) dshape[i] = W;
            int64_t row_elems = 1;
            for (auto d : sshape) row_elems *= d;
            for (size_t r = 0; r < batch.rows; ++r) {
                mask_of(r);
                s->append(reinterpret_cast<const char*>(v.f32() + static_cast<int64_t>(r) * row_elems), sshape, dshape, valid);
            }
        }
        chunks_.emplace_back(batch.rows, W);
        rows_ += batch.rows;
        for (auto& [hook, s] : hooks_) catch_up(*s);  // hooks missing from this batch: zero rows
    }

    void write(const nscope::ExportContext& ctx) override {
        if (!ids_) return;  // begin() was never called
        if (ctx.host == nullptr || ctx.host->commit_file == nullptr)
            throw nscope::RuntimeError("activations: the host gave no file services (ExportContext::host)");
        const int64_t width = known_width_ ? max_positions_ : seen_width_;
        const fs::path out = ctx.run_dir / "activations";
        nlohmann::json index = {{"prompts", rows_}, {"positions", width},
                                {"layout", "rows in prompt order; values beyond the attention mask are zero"},
                                {"hooks", nlohmann::json::object()}};
        auto finish = [&](Stream& s, const std::string& file, bool is_int64, std::vector<int64_t> per_row,
                          const std::vector<bool>& axes) -> nlohmann::json {
            for (size_t i = 0; i < per_row.size(); ++i)
                if (axes[i]) per_row[i] = width;
            std::vector<int64_t> shape{static_cast<int64_t>(rows_)};
            shape.insert(shape.end(), per_row.begin(), per_row.end());
            if (known_width_) {
                s.commit(shape, out / file, *ctx.host);
            } else {
                auto padded = open(file + ".padded", is_int64, axes);
                s.repad_into(*padded, chunks_, per_row);
                s.discard();
                padded->commit(shape, out / file, *ctx.host);
            }
            return {{"file", file}, {"shape", shape}, {"dtype", is_int64 ? "int64" : "float32"}};
        };
        for (auto& [hook, s] : hooks_)
            index["hooks"][hook] = finish(*s, safe_file_name(hook), false, s->row_shape, s->position_axes());
        index["input_ids"] = finish(*ids_, "input_ids.npy", true, {0}, {true});
        index["attention_mask"] = finish(*mask_, "attention_mask.npy", true, {0}, {true});
        index["skipped"] = filter_.skipped_json();
        ctx.write_file("activations/index.json", index.dump(2) + "\n");
        hooks_.clear();
        ids_.reset();
        mask_.reset();
    }

private:
    std::unique_ptr<Stream> open(const std::string& file, bool is_int64, std::vector<bool> axes) {
        return std::make_unique<Stream>(dir_ / ("." + file + ".partial." + std::to_string(::getpid())), is_int64,
                                        std::move(axes));
    }

    /// Zero rows for prompts this stream has not seen (its hook was missing from their batches).
    void catch_up(Stream& s) {
        uint64_t row = 0;
        for (const auto& [n, W] : chunks_) {
            for (uint64_t i = 0; i < n; ++i, ++row) {
                if (row < s.rows) continue;
                std::vector<int64_t> sshape = s.row_shape, dshape = s.row_shape;
                for (size_t a = 0; a < dshape.size(); ++a)
                    if (s.position_axes()[a]) sshape[a] = 0, dshape[a] = W;
                s.append(nullptr, sshape, dshape, {});
            }
        }
    }

    nscope::common::HookFilter filter_;
    fs::path dir_;
    int64_t max_positions_ = 0, seen_width_ = 0;
    bool known_width_ = false;
    uint64_t rows_ = 0;
    std::vector<std::pair<uint64_t, int64_t>> chunks_;  ///< (rows, written width) per batch
    std::unique_ptr<Stream> ids_, mask_;
    std::map<std::string, std::unique_ptr<Stream>> hooks_;
};

}  // namespace

NSCOPE_EXPORTER_PLUGIN(ActivationsExporter, "activations", "1.0.0",
                       "raw captures: activations/<hook>.npy [prompts, positions, ...] + index.json, streamed")
