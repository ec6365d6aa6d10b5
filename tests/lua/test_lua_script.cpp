// `nscope script`: sandbox, error reporting and run directories, through the CLI as a user runs it.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <string>

#include "tests/support/cli.h"

namespace fs = std::filesystem;
using nscope::test::run_nscope;

namespace {

const std::string kBad = std::string(NSCOPE_SOURCE_DIR) + "/tests/fixtures/scripts/bad/";

/// Write `code` to a fresh script file and return its path.
std::string script_file(const std::string& name, const std::string& code) {
    const std::string dir = nscope::test::temp_dir("lua");
    const std::string path = dir + "/" + name;
    std::ofstream(path) << code;
    return path;
}

nscope::test::CliResult run_script(const std::string& path, std::vector<std::string> extra = {}) {
    const std::string out = nscope::test::temp_dir("lua-runs");
    std::vector<std::string> args{"script", path, "--out", out};
    args.insert(args.end(), extra.begin(), extra.end());
    return run_nscope(args);
}

}  // namespace

TEST_CASE("script: each sandbox escape is refused with exit 2 and a clear message", "[lua][sandbox]") {
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"escape_os_execute.lua", "os.execute is disabled in the nscope sandbox"},
        {"escape_io_popen.lua", "io.popen is disabled in the nscope sandbox"},
        {"escape_loadfile.lua", "loadfile is disabled in the nscope sandbox"},
        {"escape_dofile.lua", "dofile is disabled in the nscope sandbox"},
        {"escape_debug.lua", "the debug library is disabled in the nscope sandbox"},
        {"escape_binary_chunk.lua", "binary chunks are disabled in the nscope sandbox"},
        {"escape_binary_chunk_default_mode.lua", "binary chunks are disabled in the nscope sandbox"},
        {"escape_loadlib.lua", "package.loadlib is disabled in the nscope sandbox"},
        {"escape_write_outside.lua", "writing '/tmp/nscope-escaped.txt' is not allowed"},
        {"escape_save_outside.lua", "writing '../../escaped.npy' is not allowed"},
        {"escape_rename.lua", "writing '/etc/hostname' is not allowed"},
    };
    for (const auto& [file, message] : cases) {
        INFO(file);
        const auto r = run_script(kBad + file);
        CHECK(r.exit_code == 2);
        CHECK_THAT(r.err, Catch::Contains("script error: "));
        CHECK_THAT(r.err, Catch::Contains(file + ":"));  // Lua shortens long paths from the left
        CHECK_THAT(r.err, Catch::Contains(message));
        CHECK_THAT(r.err, Catch::Contains("--unsafe"));
        CHECK_THAT(r.out, !Catch::Contains("escaped"));
    }
    CHECK_FALSE(fs::exists("/tmp/nscope-escaped.txt"));
}

TEST_CASE("script: reading outside the current and script folders is refused", "[lua][sandbox]") {
    const auto r = run_script(script_file("read.lua", "local f = io.open('/etc/passwd')\n"));
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.err, Catch::Contains("read.lua:1: io.open: reading '/etc/passwd' is not allowed"));
}

TEST_CASE("script: a syntax error is reported as such with file:line", "[lua][errors]") {
    const auto r = run_script(kBad + "syntax_error.lua");
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.err, Catch::Contains("syntax error in "));
    CHECK_THAT(r.err, Catch::Contains("syntax_error.lua:3: unexpected symbol near '='"));
    CHECK_THAT(r.err, !Catch::Contains("stack traceback"));
}

TEST_CASE("script: a runtime error names file:line and carries a traceback", "[lua][errors]") {
    const auto r = run_script(kBad + "runtime_error.lua");
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.err, Catch::Contains("script error: "));
    CHECK_THAT(r.err, Catch::Contains("runtime_error.lua:3: attempt to index a nil value (field 'missing')"));
    CHECK_THAT(r.err, Catch::Contains("stack traceback:"));
    CHECK_THAT(r.err, Catch::Contains("runtime_error.lua:6: in local 'outer'"));
    CHECK_THAT(r.err, Catch::Contains("runtime_error.lua:9: in main chunk"));
}

TEST_CASE("script: errors raised by nscope functions point at the calling line", "[lua][errors]") {
    const auto r = run_script(script_file("bad_index.lua", "local t = nscope.zeros{2, 2}\n\nprint(t[{3, 1}])\n"));
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.err, Catch::Contains("bad_index.lua:3: index 3 is out of range for dimension 1 of size 2"));
}

TEST_CASE("script: --unsafe lifts the sandbox", "[lua][sandbox]") {
    const std::string dir = nscope::test::temp_dir("lua-unsafe");
    const std::string target = dir + "/written.txt";
    const auto r = run_script(script_file("unsafe.lua", "print(io.popen('echo from-popen'):read('l'))\n"
                                                        "local f = assert(io.open('" + target + "', 'w'))\n"
                                                        "f:write('ok') f:close()\n"
                                                        "print(type(debug.getinfo), nscope.unsafe)\n"),
                              {"--unsafe"});
    CHECK(r.exit_code == 0);
    CHECK_THAT(r.out, Catch::Contains("from-popen"));
    CHECK_THAT(r.out, Catch::Contains("function\ttrue"));
    CHECK(nscope::test::read_file(target) == "ok");
}

TEST_CASE("script: arguments after -- are the arg table and the chunk's varargs", "[lua]") {
    const auto path = script_file("args.lua", "print(arg[0] ~= nil, #arg, arg[1], arg[2], select('#', ...))\n");
    const auto r = run_script(path, {"--", "first", "--second"});
    CHECK(r.exit_code == 0);
    CHECK(r.out == "true\t2\tfirst\t--second\t2\n");
}

TEST_CASE("script: writes land in runs/<script>/<run-id>/ with a manifest", "[lua]") {
    const std::string out = nscope::test::temp_dir("lua-rundir");
    const auto path = script_file("writer.lua",
                                  "local t = nscope.tensor({{1, 2}, {3, 4}})\n"
                                  "local saved = t:save('acts/t.npy')\n"
                                  "local f = assert(io.open('notes.txt', 'w')) f:write('hello') f:close()\n"
                                  "local g = assert(io.open(nscope.run_dir .. '/notes.txt')) print(g:read('a')) g:close()\n"
                                  "print(saved == nscope.run_dir .. '/acts/t.npy')\n");
    const auto r = run_nscope({"script", path, "--out", out});
    REQUIRE(r.exit_code == 0);
    CHECK(r.out == "hello\ntrue\n");
    REQUIRE(fs::is_directory(fs::path(out) / "writer"));
    const fs::path run = fs::directory_iterator(fs::path(out) / "writer")->path();
    CHECK(fs::file_size(run / "acts" / "t.npy") == 128 + 16);  // 128-byte header + 4 float32
    const std::string manifest = nscope::test::read_file((run / "manifest.json").string());
    CHECK_THAT(manifest, Catch::Contains("\"status\": \"complete\""));
    CHECK_THAT(manifest, Catch::Contains("\"kind\": \"script\""));
}

TEST_CASE("script: a script that writes nothing creates no run directory", "[lua]") {
    const std::string out = nscope::test::temp_dir("lua-norun");
    const auto r = run_nscope({"script", script_file("quiet.lua", "print(1 + 1)\n"), "--out", out});
    CHECK(r.exit_code == 0);
    CHECK(r.out == "2\n");
    CHECK(fs::is_empty(out));
}

TEST_CASE("script: require loads Lua modules next to the script, not C modules", "[lua][sandbox]") {
    const std::string dir = nscope::test::temp_dir("lua-require");
    std::ofstream(dir + "/helper.lua") << "return { answer = 42 }\n";
    std::ofstream(dir + "/main.lua") << "local h = require 'helper'\nlocal ns = require 'nscope'\n"
                                        "print(h.answer, ns == nscope, package.cpath)\n";
    const auto r = run_script(dir + "/main.lua");
    CHECK(r.exit_code == 0);
    CHECK(r.out == "42\ttrue\t\n");
}

TEST_CASE("script: a missing script file is bad input", "[lua][errors]") {
    const auto r = run_nscope({"script", "/nonexistent/x.lua"});
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.err, Catch::Contains("script '/nonexistent/x.lua' does not exist"));
}
