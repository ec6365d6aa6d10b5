#include "core/serve/server.h"

#include <arpa/inet.h>

#include <fstream>
#include <sstream>

#include <httplib.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "core/serve/assets.h"
#include "core/serve/engine.h"
#include "core/serve/runs.h"
#include "core/util/text.h"
#include "nscope/error.h"

namespace nscope::serve {

using json = nlohmann::json;

bool is_loopback_host(const std::string& host) {
    if (host == "localhost" || host == "::1" || host == "[::1]") return true;
    in_addr a{};
    return inet_pton(AF_INET, host.c_str(), &a) == 1 && (ntohl(a.s_addr) >> 24) == 127;
}

void check_serve_options(const ServeOptions& o) {
    if (!is_loopback_host(o.host) && o.token.empty())
        throw InputError("refusing to serve on '" + o.host +
                         "' without a token: anyone who can reach it could run the models and read the runs. "
                         "Give --token T (clients then send 'Authorization: Bearer T'), or bind 127.0.0.1");
    if (o.port < 0 || o.port > 65535) throw InputError("--port must be in [0, 65535], got " + std::to_string(o.port));
}

namespace {

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

void send_json(httplib::Response& res, const json& j, int status = 200) {
    res.status = status;
    res.set_content(dump(j), "application/json");
}

void send_error(httplib::Response& res, int status, const std::string& message) {
    send_json(res, {{"error", valid_utf8(message)}}, status);
}

/// Compare without an early exit (the token must not leak through timing).
bool same_secret(const std::string& a, const std::string& b) {
    unsigned char diff = a.size() == b.size() ? 0 : 1;
    for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i % (b.empty() ? 1 : b.size())]);
    return diff == 0 && !b.empty();
}

const char* content_type(const std::string& path) {
    auto ends = [&](const char* e) { return path.ends_with(e); };
    if (ends(".html")) return "text/html; charset=utf-8";
    if (ends(".json") || ends(".jsonl")) return "application/json";
    if (ends(".js")) return "text/javascript";
    if (ends(".css")) return "text/css";
    if (ends(".png")) return "image/png";
    if (ends(".svg")) return "image/svg+xml";
    if (ends(".csv") || ends(".txt") || ends(".md") || ends(".yaml") || ends(".yml") || ends(".log"))
        return "text/plain; charset=utf-8";
    return "application/octet-stream";
}

}  // namespace

struct Server::Impl {
    Engine& engine;
    ServeOptions options;
    RunIndex runs;
    httplib::Server http;
    int port = -1;

    Impl(Engine& e, ServeOptions o) : engine(e), options(std::move(o)), runs(options.runs_dir) {}

    /// Run an API handler: the body parsed as JSON (POST), errors mapped to statuses.
    template <typename F>
    httplib::Server::Handler api(F f) {
        return [f](const httplib::Request& req, httplib::Response& res) {
            try {
                json body = json::object();
                if (req.method == "POST") {
                    body = json::parse(req.body, nullptr, false);
                    if (body.is_discarded()) return send_error(res, 400, "malformed JSON in the request body");
                    if (!body.is_object()) return send_error(res, 400, "the request body must be a JSON object");
                }
                send_json(res, f(req, body));
            } catch (const NotFound& e) {
                send_error(res, 404, e.what());
            } catch (const Unavailable& e) {
                send_error(res, 503, e.what());
            } catch (const InputError& e) {
                send_error(res, 400, e.what());
            } catch (const std::invalid_argument& e) {
                send_error(res, 400, e.what());
            } catch (const json::exception& e) {
                send_error(res, 400, std::string("bad request: ") + e.what());
            } catch (const std::exception& e) {
                spdlog::error("serve: {} {}: {}", req.method, req.path, valid_utf8(e.what()));
                send_error(res, 500, std::string("internal error: ") + e.what());
            }
        };
    }

    bool authorized(const httplib::Request& req) const {
        if (options.token.empty()) return true;
        const std::string header = req.get_header_value("Authorization");
        if (header.rfind("Bearer ", 0) == 0 && same_secret(header.substr(7), options.token)) return true;
        // Links a browser follows (a run's report.html) cannot carry a header: ?token= works too.
        return req.has_param("token") && same_secret(req.get_param_value("token"), options.token);
    }

    void routes() {
        http.set_payload_max_length(options.max_body);
        http.set_read_timeout(10, 0);
        http.set_write_timeout(30, 0);
        http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
            const bool guarded = req.path.rfind("/api/", 0) == 0 || req.path.rfind("/runs/", 0) == 0;
            if (guarded && !authorized(req)) {
                res.set_header("WWW-Authenticate", "Bearer");
                send_error(res, 401, "missing or wrong bearer token (send 'Authorization: Bearer <token>')");
                return httplib::Server::HandlerResponse::Handled;
            }
            return httplib::Server::HandlerResponse::Unhandled;
        });
        http.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
            if (!res.body.empty()) return;
            const std::string what = res.status == 404   ? "no such endpoint: " + req.method + " " + req.path
                                     : res.status == 413 ? "request body too large"
                                                         : "HTTP error " + std::to_string(res.status);
            send_error(res, res.status, what);
        });
        http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
            std::string what = "unknown";
            try {
                std::rethrow_exception(ep);
            } catch (const std::exception& e) {
                what = e.what();
            } catch (...) {
            }
            send_error(res, 500, "internal error: " + what);
        });

        // The UI (embedded, nothing fetched at run time).
        auto asset = [this](const char* path, std::string_view body, const char* type) {
            http.Get(path, [body, type](const httplib::Request&, httplib::Response& res) {
                res.set_header("Cache-Control", "no-cache");
                res.set_content(body.data(), body.size(), type);
            });
        };
        asset("/", ui_index_html(), "text/html; charset=utf-8");
        asset("/index.html", ui_index_html(), "text/html; charset=utf-8");
        asset("/app.js", ui_app_js(), "text/javascript");
        asset("/style.css", ui_style_css(), "text/css");
        asset("/figures.js", figures_js(), "text/javascript");
        asset("/plotly.min.js", plotly_js(), "text/javascript");

        http.Get("/api/health", api([](const httplib::Request&, const json&) { return json{{"ok", true}}; }));
        http.Get("/api/models", api([this](const httplib::Request&, const json&) {
                     return json{{"models", engine.models()}, {"runs", runs.enabled()},
                                 {"limits", {{"max_prompt_chars", engine.limits().max_prompt_chars},
                                             {"max_tokens", engine.limits().max_tokens},
                                             {"max_top", engine.limits().max_top},
                                             {"max_body", options.max_body}}}};
                 }));
        http.Post("/api/tokenize", api([this](const httplib::Request&, const json& b) { return engine.tokenize(b); }));
        http.Post("/api/activations",
                  api([this](const httplib::Request&, const json& b) { return engine.activations(b); }));
        http.Post("/api/neuron", api([this](const httplib::Request&, const json& b) {
                      json j = engine.neuron(b);
                      // From a run's neuron database when --runs has one for this model (no model lock needed).
                      const std::string run = b.contains("run") && b["run"].is_string() ? b["run"].get<std::string>() : "";
                      j["db"] = runs.neuron(engine.model_info(j["model"].get<std::string>()), j["model"].get<std::string>(),
                                            j["hook"].get<std::string>(), j["neuron"].get<int64_t>(), run, 20);
                      return j;
                  }));
        http.Post("/api/attention", api([this](const httplib::Request&, const json& b) { return engine.attention(b); }));
        http.Post("/api/logit_lens",
                  api([this](const httplib::Request&, const json& b) { return engine.logit_lens(b); }));
        http.Post("/api/edit", api([this](const httplib::Request&, const json& b) { return engine.edit(b); }));
        http.Get("/api/runs", api([this](const httplib::Request&, const json&) { return json{{"runs", runs.list()}}; }));

        // A run's files (report.html, results/*.json, ...): only regular files inside --runs.
        http.Get(R"(/runs/(.+))", [this](const httplib::Request& req, httplib::Response& res) {
            if (!runs.enabled()) return send_error(res, 404, "no --runs directory was given");
            const auto file = runs.resolve(req.matches[1].str());
            if (!file) return send_error(res, 404, "no such file under --runs: " + req.matches[1].str());
            std::ifstream in(*file, std::ios::binary);
            std::ostringstream ss;
            ss << in.rdbuf();
            res.set_content(ss.str(), content_type(file->string()));
        });
    }
};

Server::Server(Engine& engine, ServeOptions options) : impl_(std::make_unique<Impl>(engine, std::move(options))) {
    check_serve_options(impl_->options);
    impl_->routes();
}

Server::~Server() { stop(); }

int Server::bind() {
    auto& o = impl_->options;
    if (o.port == 0) {
        impl_->port = impl_->http.bind_to_any_port(o.host);
    } else {
        impl_->port = impl_->http.bind_to_port(o.host, o.port) ? o.port : -1;
    }
    if (impl_->port < 0)
        throw RuntimeError("cannot listen on " + o.host + ":" + std::to_string(o.port) +
                           " (address in use, or not an address of this machine)");
    return impl_->port;
}

void Server::listen() { impl_->http.listen_after_bind(); }

void Server::stop() {
    if (impl_ && impl_->http.is_running()) impl_->http.stop();
}

}  // namespace nscope::serve
