/*
 * Helpers for the orcd black-box tests: run orcd as a child process on a free
 * loopback port (learned from --port-file, waited for with inotify, never by
 * sleeping), talk to it with libcurl or raw sockets.
 */
#ifndef ORCD_TEST_UTIL_H_
#define ORCD_TEST_UTIL_H_

#include <arpa/inet.h>
#include <curl/curl.h>
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace orcd_test
{

static inline std::string env_or(const char *name, const char *def)
{
    const char *v = getenv(name);
    return (v != NULL) ? v : def;
}

static inline std::string builddir()
{
    return env_or("ORC_TOP_BUILDDIR", ".");
}

static inline std::string srcdir()
{
    return env_or("ORC_TOP_SRCDIR", ".");
}

static inline std::string orcd_binary()
{
    return builddir() + "/src/coordinator/orcd/orcd";
}

static inline std::string read_file(const std::string &path)
{
    std::ifstream f(path);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

static inline void write_file(const std::string &path, const std::string &s)
{
    std::ofstream f(path);
    f << s;
}

static inline double now_s()
{
    return std::chrono::duration<double>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

/* A temporary directory removed (non-recursively, one level) at the end. */
class tmpdir
{
  public:
    tmpdir()
    {
        char tmpl[] = "/tmp/orcd-test.XXXXXX";
        char *d     = mkdtemp(tmpl);
        EXPECT_NE(d, nullptr);
        m_path = (d != NULL) ? d : "/tmp";
    }
    ~tmpdir()
    {
        DIR *dir = opendir(m_path.c_str());
        struct dirent *de;
        if (dir == NULL) {
            return;
        }
        while ((de = readdir(dir)) != NULL) {
            if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
                unlink((m_path + "/" + de->d_name).c_str());
            }
        }
        closedir(dir);
        rmdir(m_path.c_str());
    }
    const std::string &path() const
    {
        return m_path;
    }
    std::string file(const std::string &name) const
    {
        return m_path + "/" + name;
    }

  private:
    std::string m_path;
};

/* Wait (bounded) until the file at path contains needle; woken by inotify
 * on its directory (files are replaced by rename). */
static inline bool wait_file_contains(const std::string &path,
                                      const std::string &needle, double timeout)
{
    std::string dir = path.substr(0, path.rfind('/'));
    int ino         = inotify_init1(IN_CLOEXEC);
    bool found      = false;
    double deadline = now_s() + timeout;

    if (ino >= 0) {
        inotify_add_watch(ino, dir.c_str(),
                          IN_MOVED_TO | IN_CLOSE_WRITE | IN_CREATE);
    }
    while (!(found = read_file(path).find(needle) != std::string::npos) &&
           now_s() < deadline) {
        struct pollfd pfd = {ino, POLLIN, 0};
        if (poll(&pfd, 1, 200) > 0) {
            char buf[4096];
            (void)!read(ino, buf, sizeof(buf));
        }
    }
    if (ino >= 0) {
        close(ino);
    }
    return found;
}

/* Run a command to completion; returns its exit status (or -1), output in
 * *out (stdout and stderr). */
static inline int run_capture(const std::vector<std::string> &argv,
                              std::string *out)
{
    int fds[2];
    if (pipe(fds) != 0) {
        return -1;
    }
    pid_t pid = fork();
    if (pid == 0) {
        std::vector<char *> a;
        for (auto &s : argv) {
            a.push_back(const_cast<char *>(s.c_str()));
        }
        a.push_back(nullptr);
        dup2(fds[1], 1);
        dup2(fds[1], 2);
        close(fds[0]);
        close(fds[1]);
        execv(a[0], a.data());
        _exit(127);
    }
    close(fds[1]);
    char buf[4096];
    ssize_t n;
    out->clear();
    while ((n = read(fds[0], buf, sizeof(buf))) > 0) {
        out->append(buf, (size_t)n);
    }
    close(fds[0]);
    int status;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) {
        return -1;
    }
    return WEXITSTATUS(status);
}

/* orcd as a child process. */
class orcd_process
{
  public:
    explicit orcd_process(const tmpdir &dir) : m_dir(dir) {}
    ~orcd_process()
    {
        if (m_pid > 0) {
            kill(m_pid, SIGKILL);
            waitpid(m_pid, NULL, 0);
        }
    }

    /* Start with --listen 127.0.0.1:0 (unless listen is given) and wait for
     * the port file. Returns false if orcd exited or did not come up. */
    bool start(std::vector<std::string> args, bool add_listen = true)
    {
        std::string port_file = m_dir.file("port");
        unlink(port_file.c_str());
        int ino = inotify_init1(IN_CLOEXEC);
        if (ino < 0) {
            return false;
        }
        inotify_add_watch(ino, m_dir.path().c_str(),
                          IN_MOVED_TO | IN_CLOSE_WRITE | IN_CREATE);
        std::vector<std::string> argv = {orcd_binary()};
        if (add_listen) {
            argv.push_back("--listen");
            argv.push_back("127.0.0.1:0");
        }
        argv.push_back("--port-file");
        argv.push_back(port_file);
        for (auto &a : args) {
            argv.push_back(a);
        }
        m_log = m_dir.file("orcd.log." + std::to_string(++m_starts));
        m_pid = fork();
        if (m_pid == 0) {
            std::vector<char *> a;
            for (auto &s : argv) {
                a.push_back(const_cast<char *>(s.c_str()));
            }
            a.push_back(nullptr);
            /* never outlive the test */
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            int fd = open(m_log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
            if (fd >= 0) {
                dup2(fd, 2);
                close(fd);
            }
            execv(a[0], a.data());
            _exit(127);
        }
        bool ok         = false;
        double deadline = now_s() + 60;
        while (now_s() < deadline) {
            std::string s = read_file(port_file);
            if (!s.empty() && s.back() == '\n') {
                m_port = (unsigned)std::stoul(s);
                ok     = true;
                break;
            }
            int status;
            if (waitpid(m_pid, &status, WNOHANG) == m_pid) {
                m_pid = -1;
                break;
            }
            struct pollfd pfd = {ino, POLLIN, 0};
            if (poll(&pfd, 1, 200) > 0) {
                char buf[4096];
                (void)!read(ino, buf, sizeof(buf));
            }
        }
        close(ino);
        return ok;
    }

    /* Send sig and wait (bounded) for the exit; returns the exit code, or
     * -1 if it did not exit normally in time. */
    int stop(int sig = SIGTERM, double timeout = 20)
    {
        if (m_pid <= 0) {
            return -1;
        }
        kill(m_pid, sig);
        return wait_exit(timeout);
    }

    int wait_exit(double timeout)
    {
        int pidfd = (int)syscall(SYS_pidfd_open, m_pid, 0);
        int status;
        if (pidfd >= 0) {
            struct pollfd pfd = {pidfd, POLLIN, 0};
            poll(&pfd, 1, (int)(timeout * 1000));
            close(pidfd);
        }
        if (waitpid(m_pid, &status, WNOHANG) != m_pid) {
            kill(m_pid, SIGKILL);
            waitpid(m_pid, NULL, 0);
            m_pid = -1;
            return -1;
        }
        m_pid = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }

    void signal(int sig)
    {
        kill(m_pid, sig);
    }
    pid_t pid() const
    {
        return m_pid;
    }
    unsigned port() const
    {
        return m_port;
    }
    std::string url(const std::string &path) const
    {
        return "http://127.0.0.1:" + std::to_string(m_port) + path;
    }
    std::string log() const
    {
        return read_file(m_log);
    }

  private:
    const tmpdir &m_dir;
    pid_t m_pid     = -1;
    unsigned m_port = 0;
    int m_starts    = 0;
    std::string m_log;
};

struct http_result {
    long status = 0;
    std::string body;
    std::map<std::string, std::string> headers; /* lower-case names */
    CURLcode code = CURLE_OK;

    json_t *json() const
    {
        return json_loadb(body.data(), body.size(), 0, NULL);
    }
    /* integer member of the JSON body, or -1 */
    long long jint(const char *key) const
    {
        json_t *o   = json();
        long long v = -1;
        if (o != NULL && json_is_integer(json_object_get(o, key))) {
            v = json_integer_value(json_object_get(o, key));
        }
        json_decref(o);
        return v;
    }
    std::string jstr(const char *key) const
    {
        json_t *o = json();
        std::string v;
        if (o != NULL && json_is_string(json_object_get(o, key))) {
            v = json_string_value(json_object_get(o, key));
        }
        json_decref(o);
        return v;
    }
};

static size_t http_write_cb(char *p, size_t size, size_t n, void *arg)
{
    static_cast<std::string *>(arg)->append(p, size * n);
    return size * n;
}

static size_t http_header_cb(char *p, size_t size, size_t n, void *arg)
{
    auto *h = static_cast<std::map<std::string, std::string> *>(arg);
    std::string line(p, size * n);
    size_t colon = line.find(':');
    if (colon != std::string::npos) {
        std::string name = line.substr(0, colon);
        for (auto &c : name) {
            c = (char)tolower((unsigned char)c);
        }
        std::string value = line.substr(colon + 1);
        while (!value.empty() && (value[0] == ' ')) {
            value.erase(0, 1);
        }
        while (!value.empty() &&
               (value.back() == '\r' || value.back() == '\n')) {
            value.pop_back();
        }
        (*h)[name] = value;
    }
    return size * n;
}

/* One HTTP client (one curl handle: keeps its connection alive). */
class http_client
{
  public:
    http_client()
    {
        m_curl = curl_easy_init();
    }
    ~http_client()
    {
        curl_easy_cleanup(m_curl);
    }
    http_client(const http_client &)            = delete;
    http_client &operator=(const http_client &) = delete;

    void set_token(const std::string &t)
    {
        m_token = t;
    }
    /* connect from this local address (e.g. another 127.x.y.z) */
    void set_source(const std::string &addr)
    {
        m_source = addr;
    }
    /* trust exactly this PEM certificate (self-signed test server) */
    void set_ca(const std::string &pem)
    {
        m_ca = pem;
    }
    /* send these header lines ("Name: value", several separated by '\n')
     * with every request */
    void set_header(const std::string &lines)
    {
        m_header = lines;
    }

    http_result request(const std::string &method, const std::string &url,
                        const std::string *body = nullptr, double timeout = 30)
    {
        http_result r;
        struct curl_slist *hdrs = NULL;
        std::string auth;

        curl_easy_reset(m_curl);
        curl_easy_setopt(m_curl, CURLOPT_URL, url.c_str());
        curl_easy_setopt(m_curl, CURLOPT_CUSTOMREQUEST, method.c_str());
        curl_easy_setopt(m_curl, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(m_curl, CURLOPT_TIMEOUT_MS, (long)(timeout * 1000));
        curl_easy_setopt(m_curl, CURLOPT_WRITEFUNCTION, http_write_cb);
        curl_easy_setopt(m_curl, CURLOPT_WRITEDATA, &r.body);
        curl_easy_setopt(m_curl, CURLOPT_HEADERFUNCTION, http_header_cb);
        curl_easy_setopt(m_curl, CURLOPT_HEADERDATA, &r.headers);
        if (!m_ca.empty()) {
            curl_easy_setopt(m_curl, CURLOPT_CAINFO, m_ca.c_str());
        }
        if (!m_source.empty()) {
            curl_easy_setopt(m_curl, CURLOPT_INTERFACE, m_source.c_str());
        }
        if (method == "HEAD") {
            curl_easy_setopt(m_curl, CURLOPT_NOBODY, 1L);
        }
        if (body != nullptr) {
            curl_easy_setopt(m_curl, CURLOPT_POSTFIELDS, body->data());
            curl_easy_setopt(m_curl, CURLOPT_POSTFIELDSIZE_LARGE,
                             (curl_off_t)body->size());
            hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
        }
        hdrs = curl_slist_append(hdrs, "Expect:");
        if (!m_token.empty()) {
            auth = "Authorization: Bearer " + m_token;
            hdrs = curl_slist_append(hdrs, auth.c_str());
        }
        for (size_t at = 0; at < m_header.size();) {
            size_t nl = m_header.find('\n', at);
            nl        = (nl == std::string::npos) ? m_header.size() : nl;
            hdrs =
                curl_slist_append(hdrs, m_header.substr(at, nl - at).c_str());
            at = nl + 1;
        }
        curl_easy_setopt(m_curl, CURLOPT_HTTPHEADER, hdrs);
        r.code = curl_easy_perform(m_curl);
        if (r.code == CURLE_OK) {
            curl_easy_getinfo(m_curl, CURLINFO_RESPONSE_CODE, &r.status);
        }
        curl_slist_free_all(hdrs);
        return r;
    }

    /* The request as a client that follows orcd's Retry-After: a 503 (a
     * store call that did not fit its time on a loaded machine) is sent
     * again a second later (the Retry-After orcd sends), `tries` times in
     * all at most (few: an orcd that keeps answering 503 must fail the test
     * soon). With a rid, every attempt carries it as Idempotency-Key (and
     * X-Orc-Attempt), so that orcd makes a POST once however often it is
     * sent. */
    http_result request_retried(const std::string &method,
                                const std::string &url, const std::string *body,
                                const std::string &rid = "", int tries = 3)
    {
        std::string saved = m_header;
        http_result r;
        for (int attempt = 1; attempt <= tries; ++attempt) {
            m_header = saved;
            if (!rid.empty()) {
                m_header += (m_header.empty() ? "" : "\n") +
                            ("Idempotency-Key: " + rid) +
                            "\nX-Orc-Attempt: " + std::to_string(attempt);
            }
            r = request(method, url, body);
            if ((r.status != 503) || (attempt == tries)) {
                break;
            }
            struct pollfd none;
            poll(&none, 0, 1000);
        }
        m_header = saved;
        return r;
    }

    http_result get(const std::string &url, double timeout = 30)
    {
        return request("GET", url, nullptr, timeout);
    }
    http_result post(const std::string &url, const std::string &body)
    {
        return request("POST", url, &body);
    }
    http_result put(const std::string &url, const std::string &body)
    {
        return request("PUT", url, &body);
    }
    http_result put_empty(const std::string &url)
    {
        return request("PUT", url, nullptr);
    }
    http_result del(const std::string &url)
    {
        return request("DELETE", url, nullptr);
    }

  private:
    CURL *m_curl;
    std::string m_token;
    std::string m_header;
    std::string m_ca;
    std::string m_source;
};

/* Raw TCP connection to 127.0.0.1:port (-1 on failure). */
static inline int tcp_connect(unsigned port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family      = AF_INET;
    sin.sin_port        = htons((uint16_t)port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static inline bool send_all(int fd, const std::string &s)
{
    size_t off = 0;
    while (off < s.size()) {
        ssize_t n = send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
        if (n <= 0) {
            return false;
        }
        off += (size_t)n;
    }
    return true;
}

/* Read until the peer closes, the text contains until (if given), or the
 * timeout passes. */
static inline std::string recv_until(int fd, double timeout,
                                     const char *until = nullptr,
                                     bool *closed      = nullptr)
{
    std::string out;
    double deadline = now_s() + timeout;
    if (closed != nullptr) {
        *closed = false;
    }
    while (now_s() < deadline) {
        struct pollfd pfd = {fd, POLLIN, 0};
        int ms            = (int)((deadline - now_s()) * 1000) + 1;
        if (poll(&pfd, 1, ms) <= 0) {
            continue;
        }
        char buf[4096];
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n <= 0) {
            if (closed != nullptr) {
                *closed = true;
            }
            break;
        }
        out.append(buf, (size_t)n);
        if (until != nullptr && out.find(until) != std::string::npos) {
            break;
        }
    }
    return out;
}

} // namespace orcd_test

#endif
