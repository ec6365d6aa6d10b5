#include <catch2/catch.hpp>

#include "core/util/npy.h"
#include "nscope/error.h"
#include "nscope/io.h"

using namespace nscope;

TEST_CASE("npy_encode output parses back with the same shape and values", "[npy]") {
    const auto a = NdArray::floats({2, 3}, {1, 2, 3, 4, 5, 6.5f});
    const std::string bytes = npy_encode(a);
    REQUIRE(bytes.size() % 64 == 24 % 64);  // header padded to 64 bytes, data 24 bytes
    const NpyArray back = parse_npy(bytes, "mem");
    CHECK(back.descr == "<f4");
    CHECK(back.shape == std::vector<int64_t>{2, 3});
    CHECK(back.to_f32() == a.f32);

    const auto ids = NdArray::ints({3}, {7, -1, 1LL << 40});
    const NpyArray ids_back = parse_npy(npy_encode(ids), "mem");
    CHECK(ids_back.shape == std::vector<int64_t>{3});
    CHECK(ids_back.to_i64() == ids.i64);
}

TEST_CASE("truncated or foreign npy data is an InputError naming the source", "[npy]") {
    const std::string bytes = npy_encode(NdArray::floats({4}, {1, 2, 3, 4}));
    CHECK_THROWS_WITH(parse_npy(bytes.substr(0, bytes.size() - 3), "x.npy"), Catch::Contains("x.npy: truncated"));
    CHECK_THROWS_AS(parse_npy("hello world, not numpy", "y.npy"), InputError);
}

TEST_CASE("hostile npy headers are InputErrors, never other exceptions or wrapped sizes", "[npy][fuzz]") {
    // A version 1.0 file with this header dict and `data` after it.
    auto npy = [](const std::string& dict, const std::string& data = "") {
        const std::string h = dict + "\n";
        return std::string("\x93NUMPY\x01\x00", 8) + static_cast<char>(h.size() & 0xff) +
               static_cast<char>(h.size() >> 8) + h + data;
    };
    CHECK(parse_npy(npy("{'descr': '<i2', 'fortran_order': False, 'shape': (2,), }", "abcd"), "ok").shape ==
          std::vector<int64_t>{2});
    // Each of these threw std::out_of_range / std::invalid_argument (exit 3, "internal error"), or wrapped a
    // negative or huge shape into a small byte count (found by tests/fuzz/fuzz_npy.cpp).
    const char* bad[] = {
        "{'descr': '<f4', 'fortran_order': False, 'shape':}",                      // empty shape
        "{'descr': '<f4', 'fortran_order': False, 'shape': 7, }",                  // not a tuple
        "{'descr': '<f4', 'fortran_order': False, 'shape': (x,), }",               // not a number
        "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }",              // negative
        "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }",  // > 64 bits
        "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }", // product wraps
        "{'descr': '<fz', 'fortran_order': False, 'shape': (1,), }",               // element size not a number
        "{'descr': '<f0', 'fortran_order': False, 'shape': (1000000000000,), }",   // 0-byte elements
    };
    for (const char* dict : bad) {
        INFO(dict);
        CHECK_THROWS_AS(parse_npy(npy(dict, "abcdefgh"), "bad.npy"), InputError);
    }
    // Values that have no int64 (a uint64 max, NaN) were cast anyway: undefined behaviour under UBSan.
    const auto u8max = parse_npy(npy("{'descr': '<u8', 'fortran_order': False, 'shape': (1,), }", std::string(8, '\xff')), "u");
    CHECK_THROWS_WITH(u8max.to_i64(), Catch::Contains("is not an int64"));
    CHECK(u8max.to_f32()[0] == Approx(1.8446744e19f));
    const auto nan = parse_npy(npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", std::string("\x00\x00\xc0\x7f", 4)), "f");
    CHECK_THROWS_AS(nan.to_i64(), InputError);
}

#include "core/util/sha256.h"

namespace {
std::string sha256_with(bool cpu_extensions, const std::string& data, size_t piece) {
    nscope::Sha256 h(cpu_extensions);
    for (size_t i = 0; i < data.size(); i += piece) h.update(data.data() + i, std::min(piece, data.size() - i));
    return h.hex();
}
}  // namespace

TEST_CASE("sha256 matches the FIPS 180-4 test vectors, whole and in pieces", "[sha256]") {
    CHECK(nscope::sha256_hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    CHECK(nscope::sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const std::string two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    CHECK(nscope::sha256_hex(two_blocks) == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    const std::string million(1000000, 'a');
    for (bool cpu : {true, false}) {
        INFO("SHA instructions " << (cpu && nscope::Sha256::cpu_has_sha() ? "used" : "not used"));
        CHECK(sha256_with(cpu, two_blocks, 64) == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
        // 7 bytes at a time exercises the partial-buffer path.
        CHECK(sha256_with(cpu, million, 7) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    }
}

TEST_CASE("sha256 gives the same digest with and without the CPU's SHA instructions", "[sha256]") {
    std::string data;
    uint32_t x = 12345;
    for (int i = 0; i < 5000; ++i) data.push_back(static_cast<char>((x = x * 1103515245u + 12345u) >> 24));
    for (size_t len : {0, 1, 55, 56, 63, 64, 65, 127, 128, 1000, 5000})
        for (size_t piece : {1, 64, 100, 4096}) {
            INFO("length " << len << " pieces of " << piece);
            CHECK(sha256_with(true, data.substr(0, len), piece) == sha256_with(false, data.substr(0, len), piece));
        }
}
