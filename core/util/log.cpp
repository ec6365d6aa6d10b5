#include "core/util/log.h"

#include <chrono>
#include <cstdio>
#include <mutex>

#include <nlohmann/json.hpp>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "nscope/error.h"

namespace nscope {
namespace {

LogFormat g_format = LogFormat::Human;

// One JSON object per line: {"ts": ..., "level": ..., "msg": ...}.
class JsonStderrSink : public spdlog::sinks::base_sink<std::mutex> {
protected:
    void sink_it_(const spdlog::details::log_msg& msg) override {
        const double ts = std::chrono::duration<double>(msg.time.time_since_epoch()).count();
        nlohmann::json j = {{"ts", ts},
                            {"level", std::string(spdlog::level::to_string_view(msg.level).data(),
                                                  spdlog::level::to_string_view(msg.level).size())},
                            {"msg", std::string(msg.payload.data(), msg.payload.size())}};
        const std::string line = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
        std::fwrite(line.data(), 1, line.size(), stderr);
    }
    void flush_() override { std::fflush(stderr); }
};

}  // namespace

LogFormat parse_log_format(const std::string& s) {
    if (s == "human") return LogFormat::Human;
    if (s == "json") return LogFormat::Json;
    throw InputError("--log-format must be 'human' or 'json', not '" + s + "'");
}

void setup_logging(LogFormat format, const std::string& level) {
    g_format = format;
    std::shared_ptr<spdlog::logger> logger;
    if (format == LogFormat::Json) {
        logger = std::make_shared<spdlog::logger>("nscope", std::make_shared<JsonStderrSink>());
    } else {
        auto sink = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
        logger = std::make_shared<spdlog::logger>("nscope", sink);
        logger->set_pattern("%^[%l]%$ %v");
    }
    logger->set_level(spdlog::level::from_str(level));
    spdlog::set_default_logger(logger);
}

LogFormat log_format() { return g_format; }

}  // namespace nscope
