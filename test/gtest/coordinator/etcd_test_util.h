/*
 * Real etcd (Debian's etcd-server) for the tests: one member or a cluster,
 * on loopback ports chosen free at run time, each member in its own data
 * directory under one temporary directory (on /dev/shm when there is one)
 * removed at the end. Members are
 * children that die with the test process (PR_SET_PDEATHSIG), also when it
 * crashes; the destructor kills and reaps them.
 *
 * shared_etcd(n) is one cluster per test binary, started on first use and
 * stopped at exit: tests that share it use their own key prefix
 * (unique_prefix()). Elections are fast (heartbeat 50 ms, election timeout
 * 500 ms), which also lets leases of 1 s be granted.
 */
#ifndef ETCD_TEST_UTIL_H_
#define ETCD_TEST_UTIL_H_

#include <arpa/inet.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace etcd_test
{

static const char *const k_etcd_binary = "/usr/bin/etcd";

inline bool etcd_available()
{
    return access(k_etcd_binary, X_OK) == 0;
}

inline double now_s()
{
    return std::chrono::duration<double>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

/* Can a socket bind 127.0.0.1:port now (no SO_REUSEADDR: a socket of the
 * port in TIME_WAIT counts as taken)? */
inline bool port_bindable(unsigned port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sin;
    bool ok;

    memset(&sin, 0, sizeof(sin));
    sin.sin_family      = AF_INET;
    sin.sin_port        = htons(port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ok = (fd >= 0) && (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0);
    if (fd >= 0) {
        close(fd);
    }
    return ok;
}

/* A loopback port free right now, or 0. From below the kernel's ephemeral
 * range, as contrib/port-lib.sh takes the scripts' ports: no connection of
 * the tests (libcurl's to orcd and etcd, orcd's own) can hold it, so a
 * member restarted on its ports finds them free, and a connection to a
 * port nobody listens on cannot meet itself (a loopback connect whose
 * source port equals its destination port connects to itself). From a
 * per-process start, so that test programs running at once differ. */
inline unsigned free_port()
{
    static std::atomic<unsigned> next(0);
    unsigned low = 32768, i, port;
    std::ifstream range("/proc/sys/net/ipv4/ip_local_port_range");

    if (!(range >> low) || (low <= 12000)) {
        low = 32768;
    }
    for (i = 0; i < 200; ++i) {
        port = 10000 + ((unsigned)getpid() + next++) % (low - 11000);
        if (port_bindable(port)) {
            return port;
        }
    }
    return 0;
}

/* One request to etcd's own endpoints on loopback (libcurl): the body of a
 * 200 answer, or "" */
inline size_t http_append(char *ptr, size_t size, size_t nmemb, void *arg)
{
    static_cast<std::string *>(arg)->append(ptr, size * nmemb);
    return size * nmemb;
}

inline std::string http_exchange(unsigned port, const std::string &method,
                                 const std::string &path,
                                 const std::string &body, double timeout)
{
    std::string url = "http://127.0.0.1:" + std::to_string(port) + path, out;
    CURL *curl      = curl_easy_init();
    long status     = 0;

    if (curl == NULL) {
        return "";
    }
    curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, (long)(timeout * 1000));
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, http_append);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &out);
    if (method == "POST") {
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.c_str());
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long)body.size());
    }
    CURLcode rc = curl_easy_perform(curl);
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(curl);
    return ((rc == CURLE_OK) && (status == 200)) ? out : "";
}

/* A field of a JSON object text (jansson), as text ("" if absent): strings
 * as they are, anything else as compact JSON */
inline std::string json_field(const std::string &text, const std::string &path)
{
    json_t *doc = json_loadb(text.data(), text.size(), 0, NULL), *v = doc;
    std::string out;
    size_t at = 0, dot;

    do {
        dot = path.find('.', at);
        v   = json_object_get(v, path.substr(at, dot - at).c_str());
        at  = dot + 1;
    } while ((v != NULL) && (dot != std::string::npos));
    if (json_is_string(v)) {
        out = json_string_value(v);
    } else if (v != NULL) {
        char *dump = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        out        = (dump != NULL) ? dump : "";
        free(dump);
    }
    json_decref(doc);
    return out;
}

class etcd_cluster
{
  public:
    explicit etcd_cluster(size_t members) : m_members(members)
    {
        /* on tmpfs where there is one: etcd fsyncs every commit, and a disk
         * busy with a build stalled a commit for seconds (a request of the
         * tests timed out); the tests need no durability past a reboot */
        struct stat st;
        const char *base =
            ((stat("/dev/shm", &st) == 0) && S_ISDIR(st.st_mode) &&
             (access("/dev/shm", W_OK) == 0))
                ? "/dev/shm"
                : "/tmp";
        std::string tmpl = std::string(base) + "/orc-etcd-test.XXXXXX";
        const char *d    = mkdtemp(&tmpl[0]);
        m_dir            = (d != NULL) ? d : "";
    }
    ~etcd_cluster()
    {
        for (size_t i = 0; i < m_pids.size(); ++i) {
            kill_member(i, SIGKILL);
        }
        if (!m_dir.empty()) {
            std::string cmd = "rm -rf '" + m_dir + "'";
            if (system(cmd.c_str()) != 0) {
                fprintf(stderr, "cannot remove %s\n", m_dir.c_str());
            }
        }
    }
    etcd_cluster(const etcd_cluster &)            = delete;
    etcd_cluster &operator=(const etcd_cluster &) = delete;

    /* Start every member and wait (bounded) until all answer /health.
     * Ports are chosen free now; a member that could not bind is retried
     * with new ports (another program took one meanwhile). */
    bool start(std::string *why)
    {
        for (int attempt = 0; attempt < 3; ++attempt) {
            stop_all();
            m_client.clear();
            m_peer.clear();
            for (size_t i = 0; i < m_members; ++i) {
                m_client.push_back(free_port());
                m_peer.push_back(free_port());
            }
            m_pids.assign(m_members, -1);
            ++m_generation;
            bool spawned = true;
            for (size_t i = 0; i < m_members; ++i) {
                spawned &= spawn(i, true);
            }
            if (spawned && wait_healthy(60)) {
                return true;
            }
        }
        *why = "etcd did not come up; its log: " + log(0);
        return false;
    }

    std::vector<std::string> endpoints() const
    {
        std::vector<std::string> eps;
        for (unsigned port : m_client) {
            eps.push_back("http://127.0.0.1:" + std::to_string(port));
        }
        return eps;
    }
    /* "http://a,http://b" */
    std::string endpoint_list() const
    {
        std::string s;
        for (const auto &e : endpoints()) {
            s += (s.empty() ? "" : ",") + e;
        }
        return s;
    }
    /* YAML flow list: [http://a, http://b] */
    std::string endpoint_yaml() const
    {
        std::string s;
        for (const auto &e : endpoints()) {
            s += (s.empty() ? "" : ", ") + e;
        }
        return "[" + s + "]";
    }
    unsigned client_port(size_t i) const
    {
        return m_client[i];
    }
    size_t size() const
    {
        return m_members;
    }

    /* Send sig to member i; SIGKILL and SIGTERM also reap it */
    void kill_member(size_t i, int sig)
    {
        if ((i >= m_pids.size()) || (m_pids[i] <= 0)) {
            return;
        }
        kill(m_pids[i], sig);
        if ((sig == SIGKILL) || (sig == SIGTERM)) {
            waitpid(m_pids[i], NULL, 0);
            m_pids[i] = -1;
        }
    }
    bool running(size_t i) const
    {
        return m_pids[i] > 0;
    }

    /* Start member i again (same ports and data) */
    bool restart(size_t i)
    {
        return spawn(i, false) && wait_member(i, 60);
    }

    /* The member that leads now (bounded wait for one), or -1 */
    int leader(double timeout = 30)
    {
        double deadline = now_s() + timeout;
        while (now_s() < deadline) {
            for (size_t i = 0; i < m_members; ++i) {
                if (!running(i)) {
                    continue;
                }
                std::string st =
                    http_exchange(m_client[i], "POST", "/v3/maintenance/status",
                                  "{}", 2);
                std::string self = json_field(st, "header.member_id");
                if (!self.empty() && (json_field(st, "leader") == self)) {
                    return (int)i;
                }
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        return -1;
    }

    bool healthy(size_t i)
    {
        return json_field(http_exchange(m_client[i], "GET", "/health", "", 2),
                          "health") == "true";
    }
    bool wait_healthy(double timeout)
    {
        for (size_t i = 0; i < m_members; ++i) {
            if (!wait_member(i, timeout)) {
                return false;
            }
        }
        return true;
    }

    std::string log(size_t i) const
    {
        std::ifstream f(m_dir + "/m" + std::to_string(i) + ".log");
        std::stringstream ss;
        ss << f.rdbuf();
        std::string s = ss.str();
        return (s.size() > 4000) ? s.substr(s.size() - 4000) : s;
    }
    const std::string &dir() const
    {
        return m_dir;
    }

  private:
    std::string url(unsigned port) const
    {
        return "http://127.0.0.1:" + std::to_string(port);
    }

    bool wait_member(size_t i, double timeout)
    {
        double deadline = now_s() + timeout;
        while (now_s() < deadline) {
            if ((m_pids[i] <= 0) || (waitpid(m_pids[i], NULL, WNOHANG) != 0)) {
                m_pids[i] = -1;
                return false; /* exited: a port was taken, or worse */
            }
            if (healthy(i)) {
                return true;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        return false;
    }

    bool spawn(size_t i, bool fresh)
    {
        std::string name = "m" + std::to_string(i), cluster;
        for (size_t j = 0; j < m_members; ++j) {
            cluster += (j ? "," : "") + std::string("m") + std::to_string(j) +
                       "=" + url(m_peer[j]);
        }
        std::string data = m_dir + "/" + name + ".data";
        if (fresh) {
            std::string cmd = "rm -rf '" + data + "'";
            if (system(cmd.c_str()) != 0) {
                return false;
            }
        }
        std::vector<std::string> argv = {k_etcd_binary,
                                         "--name",
                                         name,
                                         "--data-dir",
                                         data,
                                         "--listen-client-urls",
                                         url(m_client[i]),
                                         "--advertise-client-urls",
                                         url(m_client[i]),
                                         "--listen-peer-urls",
                                         url(m_peer[i]),
                                         "--initial-advertise-peer-urls",
                                         url(m_peer[i]),
                                         "--initial-cluster",
                                         cluster,
                                         "--initial-cluster-state",
                                         "new",
                                         "--initial-cluster-token",
                                         "orc-test-" +
                                             std::to_string(getpid()) + "-" +
                                             std::to_string(m_generation),
                                         "--heartbeat-interval",
                                         "50",
                                         "--election-timeout",
                                         "500"};
        std::string logf              = m_dir + "/" + name + ".log";
        pid_t parent                  = getpid();
        pid_t pid                     = fork();
        if (pid < 0) {
            return false;
        }
        if (pid == 0) {
            /* never outlive the test, even if it crashes */
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (getppid() != parent) {
                _exit(127);
            }
            int fd = open(logf.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
            if (fd >= 0) {
                dup2(fd, 1);
                dup2(fd, 2);
                close(fd);
            }
            std::vector<char *> a;
            for (auto &s : argv) {
                a.push_back(const_cast<char *>(s.c_str()));
            }
            a.push_back(nullptr);
            execv(a[0], a.data());
            _exit(127);
        }
        m_pids[i] = pid;
        return true;
    }

    void stop_all()
    {
        for (size_t i = 0; i < m_pids.size(); ++i) {
            kill_member(i, SIGKILL);
        }
    }

    size_t m_members;
    std::string m_dir;
    std::vector<unsigned> m_client, m_peer;
    std::vector<pid_t> m_pids;
    unsigned m_generation = 0;
};

/* One cluster of n members per test binary (n: 1 or 3), started on first
 * use; nullptr (and *why) if it cannot start */
inline etcd_cluster *shared_etcd(size_t n, std::string *why)
{
    static std::unique_ptr<etcd_cluster> clusters[4];
    if (n >= 4) {
        *why = "no shared cluster of that size";
        return nullptr;
    }
    if (!etcd_available()) {
        *why = std::string(k_etcd_binary) +
               " is not installed (contrib/install-deps.sh installs "
               "etcd-server)";
        return nullptr;
    }
    if (!clusters[n]) {
        clusters[n].reset(new etcd_cluster(n));
        if (!clusters[n]->start(why)) {
            clusters[n].reset();
            return nullptr;
        }
    }
    return clusters[n].get();
}

/* A key prefix no other test (or earlier run) of this binary uses */
inline std::string unique_prefix(const char *what)
{
    static unsigned n;
    return std::string("/test-") + what + "-" + std::to_string(getpid()) + "-" +
           std::to_string(++n);
}

} // namespace etcd_test

#endif
