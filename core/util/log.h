// Logging setup: human-readable on a terminal by default, one JSON object per line with --log-format json
// (for schedulers and log collectors). Everything logs to stderr; stdout carries command output only.
#pragma once

#include <string>

namespace nscope {

enum class LogFormat { Human, Json };

/// Parse "human" / "json"; throws InputError otherwise.
LogFormat parse_log_format(const std::string& s);

/// Install the default logger. `level`: trace, debug, info, warn, error, off.
void setup_logging(LogFormat format, const std::string& level = "info");

LogFormat log_format();

}  // namespace nscope
