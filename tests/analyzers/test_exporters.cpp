// The csv, npy and npz exporters on hand-made results; the npz archive is checked with an independent
// ZIP reader and a bitwise CRC-32.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "core/util/files.h"
#include "core/util/npy.h"
#include "tests/analyzers/synthetic.h"
#include "tests/support/cli.h"

using namespace nscope;
using namespace nscope::test;

namespace {

Result sample_result() {
    Result r;
    Table t;
    t.columns = {"name", "value", "flag", "note"};
    t.add_row({"plain", 1.5, true, nullptr});
    t.add_row({"comma, quote \" and\nnewline", std::nan(""), false, nlohmann::json::array({1, 2})});
    t.add_row({"int", 42, nullptr, {{"a", 1}}});
    r.set_table("things", t);
    r.set_array("blocks.0.mlp.hook_post.mean", NdArray::floats({2, 3}, {1, 2, 3, 4, 5, 6.5f}));
    r.set_array("ids", NdArray::ints({4}, {7, -1, 0, 1LL << 40}));
    return r;
}

ExportContext context(const std::string& dir, const std::map<std::string, const Result*>& results) {
    ExportContext ctx;
    ctx.run_dir = dir;
    ctx.host = &host_services();
    for (const auto& [id, r] : results) ctx.analysis_order.push_back(id), ctx.results[id] = r;
    return ctx;
}

uint32_t crc_bitwise(const char* p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; ++i) {
        c ^= static_cast<unsigned char>(p[i]);
        for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return ~c;
}
uint32_t le(const std::string& s, size_t at, int bytes) {
    uint32_t v = 0;
    for (int i = 0; i < bytes; ++i) v |= static_cast<uint32_t>(static_cast<unsigned char>(s.at(at + i))) << (8 * i);
    return v;
}

}  // namespace

TEST_CASE("csv exporter: one RFC 4180 file per table with quoting", "[exporters][csv]") {
    const Result r = sample_result();
    const std::string dir = temp_dir("csv");
    auto e = registry().create_exporter("csv");
    e->configure(nlohmann::json::object());
    e->write(context(dir, {{"st", &r}}));
    const std::string csv = read_file(dir + "/results/st.things.csv");
    CHECK(csv == "name,value,flag,note\r\n"
                 "plain,1.5,true,\r\n"
                 "\"comma, quote \"\" and\nnewline\",,false,\"[1,2]\"\r\n"
                 "int,42,,\"{\"\"a\"\":1}\"\r\n");
    CHECK_THROWS_WITH(e->configure({{"sep", ";"}}), Catch::Contains("csv: unknown parameter 'sep'"));
}

TEST_CASE("npy exporter: every array as its own .npy, and nothing else", "[exporters][npy]") {
    const Result r = sample_result();
    const std::string dir = temp_dir("npy");
    auto e = registry().create_exporter("npy");
    e->write(context(dir, {{"st", &r}}));
    const auto a = read_npy(dir + "/results/st.blocks.0.mlp.hook_post.mean.npy");
    CHECK(a.shape == std::vector<int64_t>{2, 3});
    CHECK(a.to_f32() == std::vector<float>{1, 2, 3, 4, 5, 6.5f});
    CHECK(read_npy(dir + "/results/st.ids.npy").to_i64() == std::vector<int64_t>{7, -1, 0, 1LL << 40});
    size_t files = 0;
    for ([[maybe_unused]] const auto& f : std::filesystem::directory_iterator(dir + "/results")) ++files;
    CHECK(files == 2);
}

TEST_CASE("npz exporter: a valid zip of stored .npy members with correct CRC-32", "[exporters][npz]") {
    const Result r = sample_result();
    Result empty;
    const std::string dir = temp_dir("npz");
    auto e = registry().create_exporter("npz");
    e->write(context(dir, {{"st", &r}, {"noarrays", &empty}}));
    CHECK(!std::filesystem::exists(dir + "/results/noarrays.npz"));
    const std::string z = read_file(dir + "/results/st.npz");
    // End of central directory: the last 22 bytes (no comment).
    REQUIRE(z.size() > 22);
    const size_t eocd = z.size() - 22;
    REQUIRE(le(z, eocd, 4) == 0x06054b50u);
    const uint32_t entries = le(z, eocd + 10, 2), cd_size = le(z, eocd + 12, 4), cd_off = le(z, eocd + 16, 4);
    CHECK(entries == 2);
    CHECK(cd_off + cd_size == eocd);
    size_t at = cd_off;
    std::map<std::string, NpyArray> members;
    for (uint32_t i = 0; i < entries; ++i) {
        REQUIRE(le(z, at, 4) == 0x02014b50u);
        const uint32_t method = le(z, at + 10, 2), crc = le(z, at + 16, 4), csize = le(z, at + 20, 4),
                       usize = le(z, at + 24, 4), nlen = le(z, at + 28, 2), xlen = le(z, at + 30, 2),
                       clen = le(z, at + 32, 2), local = le(z, at + 42, 4);
        const std::string name = z.substr(at + 46, nlen);
        CHECK(method == 0);
        CHECK(csize == usize);
        // The local header repeats name, sizes and CRC; the data follows it.
        REQUIRE(le(z, local, 4) == 0x04034b50u);
        CHECK(le(z, local + 14, 4) == crc);
        CHECK(le(z, local + 18, 4) == csize);
        CHECK(z.substr(local + 30, le(z, local + 26, 2)) == name);
        const size_t data = local + 30 + le(z, local + 26, 2) + le(z, local + 28, 2);
        CHECK(crc_bitwise(z.data() + data, usize) == crc);
        members.emplace(name, parse_npy(z.substr(data, usize), name));
        at += 46 + nlen + xlen + clen;
    }
    REQUIRE(members.count("blocks.0.mlp.hook_post.mean.npy") == 1);
    CHECK(members.at("blocks.0.mlp.hook_post.mean.npy").to_f32() == std::vector<float>{1, 2, 3, 4, 5, 6.5f});
    CHECK(members.at("ids.npy").to_i64() == std::vector<int64_t>{7, -1, 0, 1LL << 40});
    // Known CRC-32 check value.
    CHECK(crc_bitwise("123456789", 9) == 0xCBF43926u);
}
