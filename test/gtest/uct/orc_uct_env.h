/*
 * Test harness for the orc UCT transport: a child orcd on a free loopback
 * port, the module loaded with dlopen, and UCT entities (md + worker + iface
 * + eps) over softnic's soft_lo.
 */
#ifndef ORC_UCT_ENV_H_
#define ORC_UCT_ENV_H_

#include <gtest/gtest.h>

extern "C" {
#include <uct/api/uct.h>
#include <ucs/async/async_fwd.h>
#include <ucs/debug/log_def.h>
}

#include <functional>
#include <mutex>
#include <stdint.h>
#include <string>
#include <vector>

namespace orc_test
{

/* Environment: orcd + module; set up once per test binary */
class uct_env
{
  public:
    static void setup(); /* idempotent */
    static void teardown();
    static const std::string &url();
    static int port(); /* of url() */
    static const std::string &builddir();
    static pid_t orcd_pid();
    static void stop_orcd(); /* for "orcd unreachable" tests */
    static void start_orcd();

  private:
    static std::string m_url;
    static std::string m_builddir;
    static pid_t m_orcd_pid;
};

/* An orcd child process with a given YAML configuration (listen address
 * and port-file are added), on a free loopback port; killed at destruction */
class orcd_process
{
  public:
    explicit orcd_process(const std::string &config_yaml = "");
    ~orcd_process();
    const std::string &url() const
    {
        return m_url;
    }
    pid_t pid() const
    {
        return m_pid;
    }

  private:
    pid_t m_pid;
    std::string m_url;
    std::string m_dir;
};

/* UCX's log messages, captured while it lives (a pushed handler), with
 * UCX's log level set to `level` meanwhile (default: unchanged). Messages
 * arrive on any thread: s_lock protects s_msgs. Debug and trace messages
 * stop here, the others go on to UCX's own output. */
class log_capture
{
  public:
    log_capture();
    explicit log_capture(ucs_log_level_t level);
    ~log_capture();

    /* messages at level that contain every needle */
    size_t count(ucs_log_level_t level,
                 const std::vector<std::string> &needles) const;
    /* messages at any level that contain every needle */
    size_t count(const std::vector<std::string> &needles) const;
    /* warnings and errors that contain text */
    size_t warnings(const std::string &text = "") const;
    /* the first warning or error ("" if none) */
    std::string first_warning() const;

  private:
    template<typename F>
    size_t count_if(const std::vector<std::string> &needles, F level_ok) const;
    static ucs_log_func_rc_t handler(const char *file, unsigned line,
                                     const char *function,
                                     ucs_log_level_t level,
                                     const ucs_log_component_config_t *comp,
                                     const char *format, va_list ap);

    ucs_log_level_t m_old;
    static std::mutex s_lock;
    static std::vector<std::pair<ucs_log_level_t, std::string>> s_msgs;
};

/* Scoped environment variable */
class scoped_setenv
{
  public:
    scoped_setenv(const char *name, const std::string &value);
    ~scoped_setenv();

  private:
    std::string m_name;
    std::string m_old;
    bool m_had;
};

/* One UCT interface with its md and worker, on port 1 of the soft device
 * of network interface `netif` (default: test_iface()) */
class entity
{
  public:
    explicit entity(const std::string &netif = "");
    ~entity();

    /* open; returns the status of uct_iface_open (or of an earlier step);
     * rx_headroom: bytes the AM handler may use before a payload;
     * customize: changes to the iface parameters */
    ucs_status_t
    open(size_t rx_headroom                                         = 0,
         const std::function<void(uct_iface_params_t &)> &customize = nullptr);
    /* another iface on the same md and worker (closed with the entity) */
    ucs_status_t open_iface(uct_iface_h *iface_p);
    void progress(unsigned count = 1);
    /* progress until cond() or timeout; returns cond() */
    template<typename F> bool progress_until(F cond, double timeout_sec = 10)
    {
        double deadline = now() + timeout_sec;
        while (!cond()) {
            if (now() > deadline) {
                return false;
            }
            progress();
        }
        return true;
    }

    /* like progress_until(), but sleeps in the iface's event fd while
     * there is nothing to progress (many processes on few cores) */
    template<typename F> bool wait_until(F cond, double timeout_sec = 10)
    {
        double deadline = now() + timeout_sec;
        while (!cond()) {
            if (now() > deadline) {
                return false;
            }
            if (uct_worker_progress(m_worker) == 0) {
                wait_for_event(0.1);
            }
        }
        return true;
    }
    /* arm the iface's events and wait up to timeout_sec for one */
    void wait_for_event(double timeout_sec);

    /* packed addresses of this iface (or of another one of open_iface) */
    std::vector<uint8_t> dev_addr(uct_iface_h iface = NULL) const;
    std::vector<uint8_t> iface_addr(uct_iface_h iface = NULL) const;

    /* an ep on this iface (or on another one of open_iface) */
    ucs_status_t create_ep(const std::vector<uint8_t> &dev_addr,
                           const std::vector<uint8_t> &iface_addr,
                           uct_ep_h *ep_p, uct_iface_h iface = NULL);
    ucs_status_t connect_to(entity &peer, uct_ep_h *ep_p);
    void destroy_ep(uct_ep_h ep);
    /* create the ep and progress until an op can be posted */
    uct_ep_h connect_and_wait(entity &peer);

    /* registered buffer */
    struct mem {
        void *ptr;
        size_t length;
        uct_mem_h memh;
        std::vector<uint8_t> rkey_buf;
    };
    mem alloc_mem(size_t length);
    void free_mem(mem &m);
    uct_rkey_t unpack_rkey(const std::vector<uint8_t> &rkey_buf);

    uct_iface_h iface() const
    {
        return m_iface;
    }
    uct_md_h md() const
    {
        return m_md;
    }
    const uct_iface_attr_t &attr() const
    {
        return m_attr;
    }
    uct_component_h component() const
    {
        return m_component;
    }

    /* error callbacks seen */
    struct err_event {
        uct_ep_h ep;
        ucs_status_t status;
    };
    std::vector<err_event> errors;

    static double now();

  private:
    static ucs_status_t err_cb(void *arg, uct_ep_h ep, ucs_status_t status);

    uct_component_h m_component;
    uct_md_h m_md;
    ucs_async_context_t *m_async;
    uct_worker_h m_worker;
    uct_iface_h m_iface;
    uct_iface_attr_t m_attr;
    std::vector<uct_rkey_bundle_t> m_rkeys;
    std::vector<mem> m_mems; /* still registered (failed tests) */
    std::vector<uct_ep_h> m_eps;
    std::string m_netif;
    std::string m_port_name; /* m_params' device name */
    uct_iface_params_t m_params;
    std::vector<uct_iface_h> m_ifaces; /* of open_iface() */
};

/* A child process running this test binary in a "role" (see
 * test_orc_uct.cc, OrcChild.Main); talks over its stdin/stdout lines. */
class child
{
  public:
    child(const std::string &role, const std::vector<std::string> &env = {});
    ~child();
    bool read_line(std::string &line, double timeout_sec = 20);
    void write_line(const std::string &line);
    void kill_now();
    int wait_exit(double timeout_sec = 30); /* exit status or -1 */
    pid_t pid() const
    {
        return m_pid;
    }

  private:
    pid_t m_pid;
    int m_in;  /* write end of the child's stdin */
    int m_out; /* read end of the child's stdout */
    std::string m_buf;
};

/* the network interface the tests' soft device sits on */
std::string test_iface();

/* the orc UCT component (NULL if the module is not loaded) */
uct_component_h orc_component();

/* ESTABLISHED TCP connections (of this network namespace, /proc/net/tcp)
 * to port `port` of this process (own), or at local port `port` of any
 * process (!own: a server's accepted connections) */
int tcp_connections(int port, bool own);

/* a symbol of the orc module UCX loaded, or NULL: looked up in that module
 * (UCX 1.22's loader opens it RTLD_LOCAL, out of RTLD_DEFAULT's reach) */
void *orc_module_symbol(const char *name);

std::string hex(const void *buf, size_t len);
std::vector<uint8_t> unhex(const std::string &s);

} // namespace orc_test

#endif
