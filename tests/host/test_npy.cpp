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
