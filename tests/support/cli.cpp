#include "tests/support/cli.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>

extern char** environ;

namespace nscope::test {
namespace {

std::string slurp_and_remove(const std::string& path) {
    std::string s = read_file(path);
    std::filesystem::remove(path);
    return s;
}

struct TempDirs {
    std::vector<std::string> dirs;
    ~TempDirs() {
        if (std::getenv("NSCOPE_KEEP_TEST_DIRS")) return;
        for (const auto& d : dirs) {
            std::error_code ec;
            std::filesystem::remove_all(d, ec);
        }
    }
};
TempDirs g_temp_dirs;

}  // namespace

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

std::string temp_dir(const std::string& tag) {
    std::random_device rd;
    const auto dir = std::filesystem::temp_directory_path() /
                     ("nscope-test-" + tag + "-" + std::to_string(::getpid()) + "-" + std::to_string(rd()));
    std::filesystem::create_directories(dir);
    g_temp_dirs.dirs.push_back(dir.string());
    return dir.string();
}

CliResult run_nscope(const std::vector<std::string>& args, const std::vector<std::string>& env) {
    return wait_nscope(start_nscope(args, env));
}

RunningCli start_nscope(const std::vector<std::string>& args, const std::vector<std::string>& env) {
    const std::string dir = temp_dir("cli");
    const std::string out_path = dir + "/stdout", err_path = dir + "/stderr";
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 1, out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&actions, 2, err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);

    std::vector<std::string> argv_s = {NSCOPE_BIN};
    argv_s.insert(argv_s.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : argv_s) argv.push_back(a.data());
    argv.push_back(nullptr);

    std::vector<std::string> env_s;
    for (char** e = environ; *e; ++e) env_s.emplace_back(*e);
    env_s.insert(env_s.end(), env.begin(), env.end());
    std::vector<char*> envp;
    for (auto& e : env_s) envp.push_back(e.data());
    envp.push_back(nullptr);

    pid_t pid;
    const int spawned = posix_spawn(&pid, NSCOPE_BIN, &actions, nullptr, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&actions);
    if (spawned != 0) throw std::runtime_error("cannot start " NSCOPE_BIN);
    return {static_cast<int>(pid), out_path, err_path};
}

CliResult wait_nscope(const RunningCli& running) {
    int status = 0;
    waitpid(running.pid, &status, 0);
    CliResult r;
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    r.out = slurp_and_remove(running.out_path);
    r.err = slurp_and_remove(running.err_path);
    // In a sanitizer build (-DNSCOPE_SANITIZE) the nscope child is instrumented too: its report fails the
    // test that started it, whatever exit code the test expected.
    for (const char* marker : {"ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "SUMMARY: UndefinedBehaviorSanitizer",
                               ": runtime error: "})
        if (r.err.find(marker) != std::string::npos)
            throw std::runtime_error("the nscope process reported a sanitizer finding (exit " +
                                     std::to_string(r.exit_code) + "):\n" + r.err);
    return r;
}

}  // namespace nscope::test
