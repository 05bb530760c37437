/*
 * Test helpers shared by the client suites that run the real orcd: start it
 * as a child on a free loopback port (readiness from its port file, then
 * /healthz, in bounded loops), and run other programs (orcctl, orc_hello)
 * with captured output and a deadline.
 */
#ifndef TEST_CLIENT_ORCD_H_
#define TEST_CLIENT_ORCD_H_

#include "etcd_test_util.h"
#include "orc_client.h"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

extern char **environ;

namespace orc_test
{

using steady = std::chrono::steady_clock;

inline std::string builddir()
{
    const char *dir = getenv("ORC_TOP_BUILDDIR");
    return (dir != NULL) ? dir : ".";
}

inline std::string srcdir()
{
    const char *dir = getenv("ORC_TOP_SRCDIR");
    return (dir != NULL) ? dir : "..";
}

inline std::string make_tmpdir()
{
    char tmpl[]     = "/tmp/orc-client-test-XXXXXX";
    const char *dir = mkdtemp(tmpl);
    return (dir != NULL) ? dir : "";
}

inline void write_file(const std::string &path, const std::string &text)
{
    std::ofstream out(path);
    out << text;
}

inline int64_t ms_since(steady::time_point t0)
{
    return std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() -
                                                                 t0)
        .count();
}

/* Environment for a child: ours plus `extra` ("K=V"), overriding */
inline std::vector<std::string> child_env(const std::vector<std::string> &extra)
{
    std::vector<std::string> env;
    for (char **e = environ; *e != NULL; ++e) {
        std::string kv  = *e;
        std::string key = kv.substr(0, kv.find('='));
        bool overridden = false;
        for (const auto &x : extra) {
            overridden |= (x.substr(0, x.find('=')) == key);
        }
        if (!overridden) {
            env.push_back(kv);
        }
    }
    env.insert(env.end(), extra.begin(), extra.end());
    return env;
}

/* A child process with its stdout (and optionally stderr) on a pipe */
class child
{
  public:
    child()                         = default;
    child(const child &)            = delete;
    child &operator=(const child &) = delete;

    ~child()
    {
        kill_wait();
        if (m_fd >= 0) {
            close(m_fd);
        }
    }

    bool start(const std::vector<std::string> &argv,
               const std::vector<std::string> &env_extra = {},
               bool merge_stderr                         = false)
    {
        int pipefd[2];
        if (pipe2(pipefd, O_CLOEXEC) != 0) {
            return false;
        }

        std::vector<char *> args, envp;
        for (const auto &a : argv) {
            args.push_back(const_cast<char *>(a.c_str()));
        }
        args.push_back(NULL);
        std::vector<std::string> env = child_env(env_extra);
        for (const auto &e : env) {
            envp.push_back(const_cast<char *>(e.c_str()));
        }
        envp.push_back(NULL);

        /* fork + exec rather than posix_spawn: the child must die with the
         * test (PR_SET_PDEATHSIG), even if the test crashes. Between fork
         * and exec only async-signal-safe calls. */
        pid_t parent = getpid();
        m_pid        = fork();
        if (m_pid < 0) {
            close(pipefd[0]);
            close(pipefd[1]);
            m_pid = -1;
            return false;
        }
        if (m_pid == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (getppid() != parent) {
                _exit(127);
            }
            dup2(pipefd[1], 1);
            if (merge_stderr) {
                dup2(pipefd[1], 2);
            }
            execve(args[0], args.data(), envp.data());
            _exit(127);
        }
        close(pipefd[1]);
        m_fd = pipefd[0];
        return true;
    }

    /* Read one line of output, waiting up to timeout_ms */
    bool read_line(std::string *line, int timeout_ms)
    {
        auto t0 = steady::now();
        for (;;) {
            size_t nl = m_out.find('\n', m_consumed);
            if (nl != std::string::npos) {
                *line      = m_out.substr(m_consumed, nl - m_consumed);
                m_consumed = nl + 1;
                return true;
            }
            int left = timeout_ms - (int)ms_since(t0);
            if ((left <= 0) || !fill(left)) {
                return false;
            }
        }
    }

    /* Wait for exit (bounded), collecting all output; -1 on timeout */
    int wait_exit(int timeout_ms, std::string *out = NULL)
    {
        auto t0 = steady::now();
        while (m_fd >= 0) {
            int left = timeout_ms - (int)ms_since(t0);
            if ((left <= 0) || !fill(left)) {
                break;
            }
        }
        int status;
        for (;;) {
            pid_t r = waitpid(m_pid, &status, WNOHANG);
            if (r == m_pid) {
                m_pid = -1;
                break;
            }
            if (ms_since(t0) > timeout_ms) {
                return -1;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
        }
        if (out != NULL) {
            *out = m_out.substr(m_consumed);
        }
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }

    void signal(int sig)
    {
        if (m_pid > 0) {
            ::kill(m_pid, sig);
        }
    }

    void kill_wait()
    {
        if (m_pid > 0) {
            ::kill(m_pid, SIGKILL);
            waitpid(m_pid, NULL, 0);
            m_pid = -1;
        }
    }

    pid_t pid() const
    {
        return m_pid;
    }

  private:
    /* read what is available within timeout_ms; false at EOF/timeout */
    bool fill(int timeout_ms)
    {
        if (m_fd < 0) {
            return false;
        }
        struct pollfd pfd = {m_fd, POLLIN, 0};
        if (poll(&pfd, 1, timeout_ms) <= 0) {
            return false;
        }
        char buf[4096];
        ssize_t n = read(m_fd, buf, sizeof(buf));
        if (n <= 0) {
            close(m_fd);
            m_fd = -1;
            return false;
        }
        m_out.append(buf, n);
        return true;
    }

    pid_t m_pid = -1;
    int m_fd    = -1;
    std::string m_out;
    size_t m_consumed = 0;
};

/* Run a program to completion (bounded); returns its exit code */
inline int run(const std::vector<std::string> &argv,
               const std::vector<std::string> &env_extra, std::string *out,
               int timeout_ms = 20000, bool merge_stderr = false)
{
    child c;
    if (!c.start(argv, env_extra, merge_stderr)) {
        return -2;
    }
    return c.wait_exit(timeout_ms, out);
}

/*
 * The store the orcds of a test use: memory (the default), or the etcd of
 * etcd_test::shared_etcd(1) under a key prefix of the test's own. Set by a
 * parametrised fixture's SetUp (store_param_setup), cleared after it.
 */
inline std::string &orcd_store_yaml()
{
    static std::string yaml;
    return yaml;
}

/* "memory" or "etcd": what orcd_child::start puts into the config; false
 * (and why) if etcd cannot be had */
inline bool store_param_setup(const std::string &backend, std::string *why)
{
    orcd_store_yaml().clear();
    if (backend != "etcd") {
        return true;
    }
    etcd_test::etcd_cluster *c = etcd_test::shared_etcd(1, why);
    if (c == nullptr) {
        return false;
    }
    orcd_store_yaml() = "store:\n  backend: etcd\n  etcd:\n    endpoints: " +
                        c->endpoint_yaml() +
                        "\n    prefix: " + etcd_test::unique_prefix("client") +
                        "\n";
    return true;
}

/* The two stores, as test name suffixes */
#define ORC_TEST_STORES(fixture)                             \
    INSTANTIATE_TEST_SUITE_P(                                \
        store, fixture, ::testing::Values("memory", "etcd"), \
        [](const ::testing::TestParamInfo<std::string> &i) { \
        return i.param;                                      \
        })

/*
 * orcd as a child process on 127.0.0.1 with a kernel-chosen port. The
 * configuration (YAML text, after the store section of orcd_store_yaml())
 * is written to a temporary file.
 */
class orcd_child
{
  public:
    ~orcd_child()
    {
        stop();
    }

    /* Start and wait until /healthz answers; false (and a message) if not */
    bool start(const std::string &config_yaml             = "",
               const std::vector<std::string> &extra_args = {})
    {
        m_dir = make_tmpdir();
        if (m_dir.empty()) {
            m_error = "mkdtemp failed";
            return false;
        }

        std::string binary = builddir() + "/src/coordinator/orcd/orcd";
        if (access(binary.c_str(), X_OK) != 0) {
            m_error = "orcd binary not found at " + binary;
            return false;
        }

        std::string port_file         = m_dir + "/port";
        std::vector<std::string> argv = {binary, "--listen", "127.0.0.1:0",
                                         "--port-file", port_file};
        std::string yaml              = orcd_store_yaml() + config_yaml;
        if (!yaml.empty()) {
            write_file(m_dir + "/orcd.yaml", yaml);
            argv.push_back("--config");
            argv.push_back(m_dir + "/orcd.yaml");
        }
        argv.insert(argv.end(), extra_args.begin(), extra_args.end());

        if (!m_proc.start(argv, {}, false)) {
            m_error = "cannot spawn " + binary;
            return false;
        }

        /* the port file appears once orcd listens (bounded wait) */
        auto t0  = steady::now();
        int port = 0;
        while ((port <= 0) && (ms_since(t0) < 10000)) {
            std::ifstream in(port_file);
            if (!(in >> port)) {
                port = 0;
                std::this_thread::sleep_for(std::chrono::milliseconds(5));
            }
        }
        if (port <= 0) {
            m_error = "orcd did not write its port file within 10 s";
            return false;
        }
        m_url = "http://127.0.0.1:" + std::to_string(port);

        orc_client_t *probe = client("default", NULL, 1000);
        bool ok             = false;
        while (!ok && (ms_since(t0) < 10000)) {
            ok = (probe != NULL) && (orc_client_health(probe) == ORC_CL_OK);
            if (!ok) {
                std::this_thread::sleep_for(std::chrono::milliseconds(5));
            }
        }
        orc_client_destroy(probe);
        if (!ok) {
            m_error = "orcd at " + m_url + " did not answer /healthz";
        }
        return ok;
    }

    void stop()
    {
        if (m_proc.pid() > 0) {
            m_proc.signal(SIGCONT);
            m_proc.signal(SIGTERM);
            if (m_proc.wait_exit(10000) < 0) {
                m_proc.kill_wait();
            }
        }
        if (!m_dir.empty()) {
            std::string cmd = "rm -rf '" + m_dir + "'";
            if (system(cmd.c_str()) != 0) {
                /* leftovers in /tmp are harmless */
            }
            m_dir.clear();
        }
    }

    /* SIGKILL (a crash), reaped; its directory removed */
    void kill_now()
    {
        m_proc.kill_wait();
        stop();
    }

    /* SIGTERM and the exit code */
    int terminate()
    {
        m_proc.signal(SIGTERM);
        return m_proc.wait_exit(10000);
    }

    void pause()
    {
        m_proc.signal(SIGSTOP);
    }

    void resume()
    {
        m_proc.signal(SIGCONT);
    }

    /* A request's timeout covers orcd's worst case on etcd: a node's
     * deletion is three store calls of store.etcd.timeout (2 s) each */
    orc_client_t *client(const char *job, const char *token = NULL,
                         int timeout_ms = 8000)
    {
        orc_client_params_t params = {};
        params.field_mask          = ORC_CLIENT_PARAM_FIELD_URL |
                            ORC_CLIENT_PARAM_FIELD_JOB |
                            ORC_CLIENT_PARAM_FIELD_TIMEOUT;
        params.url        = m_url.c_str();
        params.job        = job;
        params.timeout_ms = timeout_ms;
        if (token != NULL) {
            params.field_mask |= ORC_CLIENT_PARAM_FIELD_TOKEN;
            params.token = token;
        }
        orc_client_t *c = NULL;
        if (orc_client_create(&params, &c) != ORC_CL_OK) {
            return NULL;
        }
        return c;
    }

    const std::string &url() const
    {
        return m_url;
    }

    const std::string &dir() const
    {
        return m_dir;
    }

    const std::string &error() const
    {
        return m_error;
    }

  private:
    child m_proc;
    std::string m_dir;
    std::string m_url;
    std::string m_error;
};

} // namespace orc_test

#endif
