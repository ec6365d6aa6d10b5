// Test support: run the nscope binary as a user would, capturing exit code, stdout and stderr.
#pragma once

#include <string>
#include <vector>

namespace nscope::test {

struct CliResult {
    int exit_code = -1;
    std::string out;
    std::string err;
};

/// Run `nscope` with these arguments (no shell involved). `env` entries are "KEY=VALUE" added to the environment.
CliResult run_nscope(const std::vector<std::string>& args, const std::vector<std::string>& env = {});

/// A started nscope process (for tests that signal it).
struct RunningCli {
    int pid = -1;
    std::string out_path, err_path;
};
RunningCli start_nscope(const std::vector<std::string>& args, const std::vector<std::string>& env = {});
/// Wait for the process to end and collect its output.
CliResult wait_nscope(const RunningCli& running);

/// A fresh empty directory under the system temp dir, removed at process exit.
std::string temp_dir(const std::string& tag);

std::string read_file(const std::string& path);

}  // namespace nscope::test
