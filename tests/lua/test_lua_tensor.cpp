// nscope.Tensor bindings, in process: a bare Lua state with the tensor functions, checked against
// hand-computed values.
#include <catch2/catch.hpp>

#include <string>

#include "core/lua/lua_tensor.h"
#include "core/lua/lua_util.h"

namespace {

using namespace nscope::lua;

struct Lua {
    lua_State* L = luaL_newstate();
    Lua() {
        luaL_openlibs(L);
        lua_newtable(L);
        register_tensor(L, -1);
        lua_setglobal(L, "nscope");
    }
    ~Lua() { lua_close(L); }

    /// Run `code`; "" on success, else the error message.
    std::string run(const std::string& code) {
        if (luaL_loadbuffer(L, code.data(), code.size(), "=test") != LUA_OK) return lua_tostring(L, -1);
        if (protected_call(L, 0, 0) != LUA_OK) {
            std::string msg = lua_tostring(L, -1);
            lua_pop(L, 1);
            return msg;
        }
        return "";
    }
    double num(const char* global) {
        lua_getglobal(L, global);
        const double v = lua_tonumber(L, -1);
        lua_pop(L, 1);
        return v;
    }
    std::string str(const char* global) {
        lua_getglobal(L, global);
        std::string v = lua_tostring(L, -1) ? lua_tostring(L, -1) : "(nil)";
        lua_pop(L, 1);
        return v;
    }
};

}  // namespace

TEST_CASE("tensor indexing is 1-based with negative indices from the end", "[lua]") {
    Lua lua;
    REQUIRE(lua.run(R"(
        t = nscope.tensor({{1, 2, 3}, {4, 5, 6}})
        a = t[1][2]            -- row 1, column 2
        b = t[{2, 3}]          -- element (2, 3)
        c = t[{-1, -1}]        -- last row, last column
        d = #t
        e = t[2]:numel()
        s = t:shape()
        rows, cols = s[1], s[2]
        size2 = t:size(2)
        sizem1 = t:size(-1)
    )") == "");
    CHECK(lua.num("a") == 2.0);
    CHECK(lua.num("b") == 6.0);
    CHECK(lua.num("c") == 6.0);
    CHECK(lua.num("d") == 2.0);
    CHECK(lua.num("e") == 3.0);
    CHECK(lua.num("rows") == 2.0);
    CHECK(lua.num("cols") == 3.0);
    CHECK(lua.num("size2") == 3.0);
    CHECK(lua.num("sizem1") == 3.0);
}

TEST_CASE("tensor ranges are inclusive and {} keeps a dimension", "[lua]") {
    Lua lua;
    REQUIRE(lua.run(R"(
        t = nscope.arange(12):reshape{3, 4}     -- {{1..4}, {5..8}, {9..12}}
        s = t[{{2, 3}, {}}]                      -- rows 2..3, all columns
        s_sum = s:sum()                          -- 5+..+12 = 68
        s_rows = s:size(1)
        c = t[{{}, {2, 3}}]                      -- columns 2..3
        c_sum = c:sum()                          -- 2+3+6+7+10+11 = 39
        open = t[{{2}, 4}]                       -- rows 2..end, column 4 -> {8, 12}
        open_sum = open:sum()
        step = t[{1, {1, 4, 2}}]                 -- columns 1 and 3 of row 1 -> {1, 3}
        step_sum = step:sum()
        trailing = t[{3}]:sum()                  -- row 3 = 9+10+11+12
    )") == "");
    CHECK(lua.num("s_sum") == 68.0);
    CHECK(lua.num("s_rows") == 2.0);
    CHECK(lua.num("c_sum") == 39.0);
    CHECK(lua.num("open_sum") == 20.0);
    CHECK(lua.num("step_sum") == 4.0);
    CHECK(lua.num("trailing") == 42.0);
}

TEST_CASE("tensor element and slice assignment write through views", "[lua]") {
    Lua lua;
    REQUIRE(lua.run(R"(
        t = nscope.zeros{2, 3}
        t[{1, 2}] = 5
        t[2][3] = 7                     -- t[2] is a view of row 2
        t[{{}, 1}] = -1                 -- whole first column
        total = t:sum()                 -- 5 + 7 - 2 = 10
        u = nscope.zeros{2, 2}
        u[{{}, {}}] = nscope.tensor({1, 2})   -- broadcast a row
        u_sum = u:sum()                  -- 6
        first = u[{2, 2}]
    )") == "");
    CHECK(lua.num("total") == 10.0);
    CHECK(lua.num("u_sum") == 6.0);
    CHECK(lua.num("first") == 2.0);
}

TEST_CASE("tensor arithmetic with tensors and numbers", "[lua]") {
    Lua lua;
    REQUIRE(lua.run(R"(
        a = nscope.tensor({1, 2, 3})
        b = nscope.tensor({4, 5, 6})
        r = (a + b) * 2 - b / 2        -- {10-2, 14-2.5, 18-3}
        r1, r2, r3 = r[1], r[2], r[3]
        n = (1 + a)[3]                 -- number on the left
        neg = (-a)[1]
        sq = (a ^ 2):sum()             -- 1 + 4 + 9
    )") == "");
    CHECK(lua.num("r1") == 8.0);
    CHECK(lua.num("r2") == 11.5);
    CHECK(lua.num("r3") == 15.0);
    CHECK(lua.num("n") == 4.0);
    CHECK(lua.num("neg") == -1.0);
    CHECK(lua.num("sq") == 14.0);
}

TEST_CASE("tensor reductions over all elements and over a 1-based dimension", "[lua]") {
    Lua lua;
    REQUIRE(lua.run(R"(
        t = nscope.tensor({{1, 2, 3}, {4, 5, 9}})
        mean = t:mean()                  -- 24 / 6 = 4
        sum2 = t:sum(2)                  -- {6, 18}
        s1, s2 = sum2[1], sum2[2]
        mean1 = t:mean(1)                -- {2.5, 3.5, 6}
        m3 = mean1[3]
        std = nscope.tensor({2, 4, 4, 4, 5, 5, 7, 9}):std()   -- sample std: sqrt(32/7)
        mx, arg = t:max(2)               -- values {3, 9}, 1-based indices {3, 3}
        mx2, arg2 = mx[2], arg[2]
        mn = t:min()
        am = t:argmax()                  -- flat 1-based index of 9 = 6
        ab = nscope.tensor({-1, 2, -3}):abs():sum()
        keep = t:sum(2, true):dim()
    )") == "");
    CHECK(lua.num("mean") == 4.0);
    CHECK(lua.num("s1") == 6.0);
    CHECK(lua.num("s2") == 18.0);
    CHECK(lua.num("m3") == 6.0);
    CHECK(lua.num("std") == Approx(std::sqrt(32.0 / 7.0)).epsilon(1e-6));
    CHECK(lua.num("mx2") == 9.0);
    CHECK(lua.num("arg2") == 3.0);
    CHECK(lua.num("mn") == 1.0);
    CHECK(lua.num("am") == 6.0);
    CHECK(lua.num("ab") == 6.0);
    CHECK(lua.num("keep") == 2.0);
}

TEST_CASE("topk returns values and 1-based indices, cosine and totable", "[lua]") {
    Lua lua;
    REQUIRE(lua.run(R"(
        t = nscope.tensor({0.5, 3, -1, 2})
        v, i = t:topk(2)
        v1, v2, i1, i2 = v[1], v[2], i[1], i[2]    -- 3 at 2, 2 at 4
        low_v, low_i = t:topk(1, 1, false)
        li = low_i[1]                               -- -1 at 3
        cos_same = t:cosine(t * 3)                  -- 1
        cos_orth = nscope.tensor({1, 0}):cosine(nscope.tensor({0, 2}))   -- 0
        rows = nscope.tensor({{1, 0}, {1, 1}}):cosine(nscope.tensor({{1, 0}, {-1, -1}}))  -- per row {1, -1}
        r2 = rows[2]
        tab = nscope.tensor({{1, 2}, {3, 4}}):totable()
        tab21 = tab[2][1]
        ints = i:totable()
        int_type = math.type(ints[1])
    )") == "");
    CHECK(lua.num("v1") == 3.0);
    CHECK(lua.num("v2") == 2.0);
    CHECK(lua.num("i1") == 2.0);
    CHECK(lua.num("i2") == 4.0);
    CHECK(lua.num("li") == 3.0);
    CHECK(lua.num("cos_same") == Approx(1.0));
    CHECK(lua.num("cos_orth") == Approx(0.0).margin(1e-7));
    CHECK(lua.num("r2") == Approx(-1.0));
    CHECK(lua.num("tab21") == 3.0);
    CHECK(lua.str("int_type") == "integer");
}

TEST_CASE("tensor errors name the 1-based convention and the shapes", "[lua]") {
    Lua lua;
    CHECK_THAT(lua.run("local t = nscope.zeros{2, 3}; return t[{3, 1}]"),
               Catch::Contains("index 3 is out of range for dimension 1 of size 2"));
    CHECK_THAT(lua.run("local t = nscope.zeros{2, 3}; return t[0]"), Catch::Contains("Lua indices start at 1"));
    CHECK_THAT(lua.run("local t = nscope.zeros{2, 3}; return t:mean(3)"), Catch::Contains("dimension 3 is out of range"));
    CHECK_THAT(lua.run("return nscope.zeros{2, 3} + nscope.zeros{4}"), Catch::Contains("do not broadcast"));
    CHECK_THAT(lua.run("return nscope.tensor({{1, 2}, {3}})"), Catch::Contains("not rectangular"));
    CHECK_THAT(lua.run("return nscope.zeros{2}:nosuch()"), Catch::Contains("no method or field 'nosuch'"));
    // The error is located at the calling Lua line.
    CHECK_THAT(lua.run("local t = nscope.zeros{2}\nlocal x = t[5]"), Catch::StartsWith("test:2:"));
}

TEST_CASE("tensors print their shape, dtype and values", "[lua]") {
    Lua lua;
    REQUIRE(lua.run("s = tostring(nscope.tensor({{1, 2}, {3, 4}}))") == "");
    CHECK(lua.str("s") == "Tensor[2, 2] float32\n{{1, 2},\n {3, 4}}");
}

TEST_CASE("tensor constructors refuse sizes past the script's memory limit or past any machine", "[lua][fuzz]") {
    // Found by tests/fuzz/fuzz_lua_script: nscope.zeros{1477790025575113937} reached the allocator (an
    // AddressSanitizer abort; elsewhere a machine-sized allocation attempt).
    Lua lua;
    CHECK_THAT(lua.run("t = nscope.zeros{10000000000, 10000000000, 10000000000}"),
               Catch::Contains("nscope.zeros: a tensor of shape") && Catch::Contains("is too large"));
    CHECK_THAT(lua.run("t = nscope.randn(3037000500, 3037000500, 4)"), Catch::Contains("nscope.randn") &&
                                                                         Catch::Contains("is too large"));
    CHECK_THAT(lua.run("t = nscope.arange(1, 1e30)"), Catch::Contains("nscope.arange") && Catch::Contains("is too large"));
    CHECK_THAT(lua.run("t = nscope.arange(1, math.huge)"), Catch::Contains("must be finite"));
    CHECK_THAT(lua.run("t = nscope.arange(0/0, 3)"), Catch::Contains("must be finite"));

    lua_pushinteger(lua.L, 1 << 20);  // what run_script records for ScriptOptions::max_memory = 1 MiB
    lua_setfield(lua.L, LUA_REGISTRYINDEX, kMaxMemoryKey);
    CHECK_THAT(lua.run("t = nscope.zeros{1477790025575113937}"),
               Catch::Contains("nscope.zeros: a tensor of shape [1477790025575113937] (5911160102300455748 bytes) exceeds the "
                               "script's memory limit of 1048576 bytes"));
    CHECK_THAT(lua.run("t = nscope.ones(1024, 1024, {dtype='int64'})"), Catch::Contains("8388608 bytes"));
    CHECK_THAT(lua.run("t = nscope.full({512, 1024}, 2)"), Catch::Contains("nscope.full"));
    CHECK_THAT(lua.run("t = nscope.arange(1, 1e6)"), Catch::Contains("nscope.arange"));
    // At the limit still fine: 1 MiB of float32.
    REQUIRE(lua.run("t = nscope.zeros(512, 512); n = t:numel(); a = nscope.arange(1, 262144):numel()") == "");
    CHECK(lua.num("n") == 262144);
    CHECK(lua.num("a") == 262144);
}
