#include "core/util/files.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "nscope/error.h"

namespace nscope {
namespace fs = std::filesystem;

namespace {

std::string reason(int err) { return std::strerror(err); }

/// fsync a file or folder by path; returns errno or 0.
int fsync_path(const fs::path& p) {
    const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno;
    const int rc = ::fsync(fd) == 0 ? 0 : errno;
    ::close(fd);
    return rc == EINVAL ? 0 : rc;  // some file systems cannot fsync folders
}

}  // namespace

void write_file_atomic(const fs::path& path, std::string_view bytes) {
    const fs::path dir = path.parent_path().empty() ? fs::path(".") : path.parent_path();
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) throw RuntimeError("cannot create folder " + dir.string() + ": " + ec.message());
    const fs::path tmp = path.string() + ".tmp." + std::to_string(::getpid());
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) throw RuntimeError("cannot write " + path.string() + ": " + reason(errno));
    int err = 0;
    for (size_t done = 0; done < bytes.size() && err == 0;) {
        const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) err = n < 0 ? errno : EIO;
        else done += static_cast<size_t>(n);
    }
    if (err == 0 && ::fsync(fd) != 0) err = errno;
    if (::close(fd) != 0 && err == 0) err = errno;
    if (err == 0 && ::rename(tmp.c_str(), path.c_str()) != 0) err = errno;
    if (err != 0) {
        ::unlink(tmp.c_str());
        throw RuntimeError("cannot write " + path.string() + ": " + reason(err) +
                           (err == ENOSPC ? " (the disk is full; free space or choose another --out)" : ""));
    }
    fsync_path(dir);
}

void commit_file(const fs::path& staged, const fs::path& path) {
    if (const int err = fsync_path(staged))
        throw RuntimeError("cannot write " + staged.string() + ": " + reason(err));
    std::error_code ec;
    fs::create_directories(path.parent_path(), ec);
    if (::rename(staged.c_str(), path.c_str()) != 0) {
        if (errno != EXDEV) throw RuntimeError("cannot rename " + staged.string() + " to " + path.string() + ": " + reason(errno));
        // Another file system: copy next to the target, then rename there.
        const fs::path near = path.string() + ".tmp." + std::to_string(::getpid());
        fs::copy_file(staged, near, fs::copy_options::overwrite_existing, ec);
        if (!ec && fsync_path(near) == 0 && ::rename(near.c_str(), path.c_str()) == 0) {
            fs::remove(staged, ec);
        } else {
            fs::remove(near, ec);
            throw RuntimeError("cannot copy " + staged.string() + " to " + path.string() + ": " +
                               (ec ? ec.message() : reason(errno)));
        }
    }
    fsync_path(path.parent_path());
}

const HostServices& host_services() {
    static const HostServices table = [] {
        HostServices h;
        h.write_file_atomic = &write_file_atomic;
        h.commit_file = &commit_file;
        return h;
    }();
    return table;
}

}  // namespace nscope
