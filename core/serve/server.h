// The HTTP side of `nscope serve` (docs/serve.md): cpp-httplib's server and thread pool, the /api/ routes
// over an Engine (JSON in, JSON out), run files under --runs, the embedded UI, bearer-token checks and
// request limits. Every error is a JSON object {"error": "..."} with a 4xx / 5xx status.
//
//   Server server(engine, options);
//   int port = server.bind();     // options.port 0: a free port
//   server.listen();              // blocks until stop() (from another thread or a signal handler)
#pragma once

#include <memory>
#include <string>

namespace nscope::serve {

class Engine;

struct ServeOptions {
    std::string host = "127.0.0.1";
    int port = 8080;
    std::string token;              ///< bearer token; required for a non-loopback host
    std::string runs_dir;           ///< --runs (empty: none)
    size_t max_body = 1 << 20;      ///< request body limit (bytes): larger bodies get 413
};

/// True for 127.0.0.0/8, ::1 and "localhost".
bool is_loopback_host(const std::string& host);

/// Refuse options that would expose the server (InputError, exit 2): a non-loopback host without a token.
void check_serve_options(const ServeOptions& options);

class Server {
public:
    Server(Engine& engine, ServeOptions options);
    ~Server();
    Server(const Server&) = delete;
    Server& operator=(const Server&) = delete;

    /// Bind the socket (port 0: any free port); returns the port. RuntimeError when the bind fails.
    int bind();
    /// Serve until stop(). Call after bind().
    void listen();
    void stop();

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace nscope::serve
