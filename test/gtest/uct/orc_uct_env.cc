#include "orc_uct_env.h"

extern "C" {
#include <ucs/config/global_opts.h>
}

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <dirent.h>
#include <fstream>
#include <set>
#include <sstream>

extern char **environ;

namespace orc_test
{

std::string uct_env::m_url;
std::string uct_env::m_builddir;
pid_t uct_env::m_orcd_pid = -1;

/* Environment of the test binary (the two-namespace script sets them):
 *   ORC_UCT_TEST_IFACE       network interface of the soft device (lo)
 *   ORC_UCT_TEST_ORCD_HOST   address the child orcd listens on (127.0.0.1)
 *   ORC_UCT_CHILD_NETNS      run child processes in this network namespace
 *   ORC_UCT_CHILD_WRAPPER    ... under this command (contrib/softnic-run for
 *                            the verbs backend; it must exec the child)
 *   ORC_UCT_TEST_BACKEND     the device layer's backend: soft (default), or
 *                            verbs: the same devices through libibverbs and
 *                            the softnic provider (run under softnic-run) */
static std::string env_or(const char *name, const char *dflt)
{
    const char *v = getenv(name);
    return ((v != NULL) && (v[0] != '\0')) ? v : dflt;
}

static std::string orcd_host()
{
    return env_or("ORC_UCT_TEST_ORCD_HOST", "127.0.0.1");
}

std::string test_iface()
{
    return env_or("ORC_UCT_TEST_IFACE", "lo");
}

/* Files the child orcd needs only until it listens, removed on every path
 * out of start_orcd() */
struct orcd_start_files {
    std::string port, config;

    orcd_start_files() :
        port("/tmp/orc-uct-test-orcd." + std::to_string(getpid()) + ".port"),
        config(port + ".yaml")
    {
        unlink(port.c_str());
    }

    ~orcd_start_files()
    {
        unlink(port.c_str());
        unlink(config.c_str());
    }
};

/* Fork orcd with a config (or its command-line default when empty), its
 * stdout silenced, killed if the test binary dies; the child's pid, or -1 */
static pid_t spawn_orcd(const std::string &conf, const std::string &port_file)
{
    std::string orcd = uct_env::builddir() + "/src/coordinator/orcd/orcd";
    pid_t pid        = fork();
    if (pid == 0) {
        /* never outlive the test binary, whatever ends it */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0) {
            dup2(devnull, 1);
        }
        if (conf.empty()) {
            execl(orcd.c_str(), "orcd", "--listen", "127.0.0.1:0",
                  "--port-file", port_file.c_str(), "--log-level", "error",
                  (char *)NULL);
        } else {
            execl(orcd.c_str(), "orcd", "--config", conf.c_str(), "--port-file",
                  port_file.c_str(), "--log-level", "error", (char *)NULL);
        }
        _exit(127);
    }
    return pid;
}

/* The port orcd `pid` wrote to port_file (bounded wait), 0 if none: it did
 * not start, or exited */
static int wait_orcd_port(pid_t pid, const std::string &port_file)
{
    int port = 0;
    for (int i = 0; (i < 200) && (port == 0) && (pid > 0); ++i) {
        std::ifstream f(port_file);
        if (!(f >> port)) {
            port = 0;
            usleep(25000);
            if (waitpid(pid, NULL, WNOHANG) != 0) {
                break;
            }
        }
    }
    return port;
}

void uct_env::start_orcd()
{
    orcd_start_files files;
    std::string conf;

    if (orcd_host() != "127.0.0.1") {
        /* another namespace's peers reach us over a veth */
        conf = files.config;
        std::ofstream(conf) << "listen:\n  address: " << orcd_host()
                            << "\n  port: 0\n  allow_remote: true\n";
    }
    pid_t pid = spawn_orcd(conf, files.port);
    ASSERT_GT(pid, 0) << "fork: " << strerror(errno);
    m_orcd_pid = pid;

    int port = wait_orcd_port(pid, files.port);
    ASSERT_NE(0, port) << "orcd did not write " << files.port;
    m_url = "http://" + orcd_host() + ":" + std::to_string(port);
    setenv("UCX_ORC_COORDINATOR", m_url.c_str(), 1);
}

void uct_env::stop_orcd()
{
    if (m_orcd_pid <= 0) {
        return;
    }
    kill(m_orcd_pid, SIGTERM);
    for (int i = 0; i < 500; ++i) {
        if (waitpid(m_orcd_pid, NULL, WNOHANG) == m_orcd_pid) {
            m_orcd_pid = -1;
            return;
        }
        usleep(10000);
    }
    kill(m_orcd_pid, SIGKILL);
    waitpid(m_orcd_pid, NULL, 0);
    m_orcd_pid = -1;
}

void uct_env::setup()
{
    static bool done = false;
    if (done) {
        return;
    }

    const char *b = getenv("ORC_TOP_BUILDDIR");
    m_builddir    = (b != NULL) ? b : ".";

    /* only soft_<test iface>, small and quick */
    setenv("UCX_ORC_BACKEND", env_or("ORC_UCT_TEST_BACKEND", "soft").c_str(),
           1);
    setenv("UCX_ORC_SOFT_IFACES", test_iface().c_str(), 1);
    setenv("UCX_ORC_JOB", "uct-test", 1);

    if (getenv("UCX_ORC_COORDINATOR") == NULL ||
        getenv("ORC_UCT_CHILD_ROLE") == NULL) {
        start_orcd();
    }

    /* A UCX that reads UCX_PLUGIN_PATH (1.22; the test harness sets it
     * there) loads orc itself, as any UCX program would: uct_entity::open()
     * fails if it did not. Older UCX (1.13) only knows the transport once
     * the library is loaded. */
    const char *plugin_path = getenv("UCX_PLUGIN_PATH");
    if ((plugin_path == NULL) || (plugin_path[0] == '\0')) {
        std::string lib = m_builddir + "/.libs/libuct_orc.so";
        void *handle    = dlopen(lib.c_str(), RTLD_NOW | RTLD_GLOBAL);
        ASSERT_TRUE(handle != NULL) << "dlopen " << lib << ": " << dlerror();
    }
    done = true;
}

void uct_env::teardown()
{
    stop_orcd();
}

const std::string &uct_env::url()
{
    return m_url;
}

pid_t uct_env::orcd_pid()
{
    return m_orcd_pid;
}

int uct_env::port()
{
    return atoi(m_url.substr(m_url.rfind(':') + 1).c_str());
}

const std::string &uct_env::builddir()
{
    return m_builddir;
}

orcd_process::orcd_process(const std::string &config_yaml) : m_pid(-1)
{
    char dir[] = "/tmp/orc-uct-orcd.XXXXXX";

    EXPECT_TRUE(mkdtemp(dir) != NULL) << strerror(errno);
    m_dir            = dir;
    std::string conf = m_dir + "/orcd.yaml", port_file = m_dir + "/port";
    std::ofstream(conf) << "listen:\n  address: 127.0.0.1\n  port: 0\n"
                        << config_yaml;

    pid_t pid = spawn_orcd(conf, port_file);
    EXPECT_GT(pid, 0) << "fork: " << strerror(errno);
    m_pid = pid;

    int port = wait_orcd_port(pid, port_file);
    EXPECT_NE(0, port) << "orcd did not start with " << conf;
    m_url = "http://127.0.0.1:" + std::to_string(port);
}

orcd_process::~orcd_process()
{
    if (m_pid > 0) {
        kill(m_pid, SIGKILL);
        waitpid(m_pid, NULL, 0);
    }
    unlink((m_dir + "/orcd.yaml").c_str());
    unlink((m_dir + "/port").c_str());
    rmdir(m_dir.c_str());
}

std::mutex log_capture::s_lock;
std::vector<std::pair<ucs_log_level_t, std::string>> log_capture::s_msgs;

log_capture::log_capture() :
    log_capture(ucs_global_opts.log_component.log_level)
{
}

log_capture::log_capture(ucs_log_level_t level) :
    m_old(ucs_global_opts.log_component.log_level)
{
    std::lock_guard<std::mutex> guard(s_lock);
    s_msgs.clear();
    ucs_global_opts.log_component.log_level = level;
    ucs_log_push_handler(handler);
}

log_capture::~log_capture()
{
    ucs_log_pop_handler();
    ucs_global_opts.log_component.log_level = m_old;
}

template<typename F> size_t
log_capture::count_if(const std::vector<std::string> &needles, F level_ok) const
{
    std::lock_guard<std::mutex> guard(s_lock);
    size_t n = 0;
    for (const auto &m : s_msgs) {
        bool all = level_ok(m.first);
        for (const std::string &needle : needles) {
            all = all && (m.second.find(needle) != std::string::npos);
        }
        n += all;
    }
    return n;
}

size_t log_capture::count(ucs_log_level_t level,
                          const std::vector<std::string> &needles) const
{
    return count_if(needles, [level](ucs_log_level_t l) { return l == level; });
}

size_t log_capture::count(const std::vector<std::string> &needles) const
{
    return count_if(needles, [](ucs_log_level_t) { return true; });
}

size_t log_capture::warnings(const std::string &text) const
{
    return count_if({text},
                    [](ucs_log_level_t l) { return l <= UCS_LOG_LEVEL_WARN; });
}

std::string log_capture::first_warning() const
{
    std::lock_guard<std::mutex> guard(s_lock);
    for (const auto &m : s_msgs) {
        if (m.first <= UCS_LOG_LEVEL_WARN) {
            return m.second;
        }
    }
    return "";
}

ucs_log_func_rc_t log_capture::handler(const char *, unsigned, const char *,
                                       ucs_log_level_t level,
                                       const ucs_log_component_config_t *,
                                       const char *format, va_list ap)
{
    char buf[2048];
    va_list aq;

    va_copy(aq, ap);
    vsnprintf(buf, sizeof(buf), format, aq);
    va_end(aq);
    {
        std::lock_guard<std::mutex> guard(s_lock);
        s_msgs.push_back({level, buf});
    }
    return (level >= UCS_LOG_LEVEL_DEBUG) ? UCS_LOG_FUNC_RC_STOP
                                          : UCS_LOG_FUNC_RC_CONTINUE;
}

scoped_setenv::scoped_setenv(const char *name, const std::string &value) :
    m_name(name)
{
    const char *old = getenv(name);
    m_had           = (old != NULL);
    if (m_had) {
        m_old = old;
    }
    setenv(name, value.c_str(), 1);
}

scoped_setenv::~scoped_setenv()
{
    if (m_had) {
        setenv(m_name.c_str(), m_old.c_str(), 1);
    } else {
        unsetenv(m_name.c_str());
    }
}

double entity::now()
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

entity::entity(const std::string &netif) :
    m_component(NULL), m_md(NULL), m_async(NULL), m_worker(NULL), m_iface(NULL),
    m_netif(netif.empty() ? test_iface() : netif)
{
    memset(&m_attr, 0, sizeof(m_attr));
}

entity::~entity()
{
    for (uct_ep_h ep : m_eps) {
        uct_ep_destroy(ep);
    }
    for (auto &rkey : m_rkeys) {
        uct_rkey_release(m_component, &rkey);
    }
    for (auto &m : m_mems) {
        uct_md_mem_dereg(m_md, m.memh);
        free(m.ptr);
    }
    for (uct_iface_h iface : m_ifaces) {
        uct_iface_close(iface);
    }
    if (m_iface != NULL) {
        uct_iface_close(m_iface);
    }
    if (m_worker != NULL) {
        uct_worker_destroy(m_worker);
    }
    if (m_async != NULL) {
        ucs_async_context_destroy(m_async);
    }
    if (m_md != NULL) {
        uct_md_close(m_md);
    }
}

ucs_status_t entity::err_cb(void *arg, uct_ep_h ep, ucs_status_t status)
{
    entity *self = (entity *)arg;
    self->errors.push_back({ep, status});
    return UCS_OK;
}

uct_component_h orc_component()
{
    uct_component_h *components, found = NULL;
    unsigned num_components;

    if (uct_query_components(&components, &num_components) != UCS_OK) {
        return NULL;
    }
    for (unsigned i = 0; i < num_components; ++i) {
        uct_component_attr_t attr;
        attr.field_mask = UCT_COMPONENT_ATTR_FIELD_NAME;
        if ((uct_component_query(components[i], &attr) == UCS_OK) &&
            !strcmp(attr.name, "orc")) {
            found = components[i];
        }
    }
    uct_release_component_list(components);
    return found;
}

void *orc_module_symbol(const char *name)
{
    uct_component_h component = orc_component();
    Dl_info info;
    void *handle, *symbol;

    if ((component == NULL) || !dladdr(component, &info)) {
        return NULL;
    }
    /* the module already loaded (a reference, dropped again below) */
    handle = dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD);
    if (handle == NULL) {
        return NULL;
    }
    symbol = dlsym(handle, name);
    dlclose(handle);
    return symbol;
}

ucs_status_t
entity::open(size_t rx_headroom,
             const std::function<void(uct_iface_params_t &)> &customize)
{
    ucs_status_t status;

    m_component = orc_component();
    if (m_component == NULL) {
        return UCS_ERR_NO_DEVICE;
    }

    uct_md_config_t *md_config;
    status = uct_md_config_read(m_component, NULL, NULL, &md_config);
    if (status != UCS_OK) {
        return status;
    }
    std::string dev = "soft_" + m_netif;
    status          = uct_md_open(m_component, dev.c_str(), md_config, &m_md);
    uct_config_release(md_config);
    if (status != UCS_OK) {
        return status;
    }

    status = ucs_async_context_create(UCS_ASYNC_MODE_THREAD_SPINLOCK, &m_async);
    if (status != UCS_OK) {
        return status;
    }
    status = uct_worker_create(m_async, UCS_THREAD_MODE_SINGLE, &m_worker);
    if (status != UCS_OK) {
        return status;
    }

    memset(&m_params, 0, sizeof(m_params));
    m_params.field_mask = UCT_IFACE_PARAM_FIELD_OPEN_MODE |
                          UCT_IFACE_PARAM_FIELD_DEVICE |
                          UCT_IFACE_PARAM_FIELD_ERR_HANDLER |
                          UCT_IFACE_PARAM_FIELD_ERR_HANDLER_ARG |
                          UCT_IFACE_PARAM_FIELD_ERR_HANDLER_FLAGS;
    m_params.open_mode            = UCT_IFACE_OPEN_MODE_DEVICE;
    m_params.mode.device.tl_name  = "orc";
    m_port_name                   = dev + ":1";
    m_params.mode.device.dev_name = m_port_name.c_str();
    m_params.err_handler          = err_cb;
    m_params.err_handler_arg      = this;
    m_params.err_handler_flags    = 0;
    if (rx_headroom > 0) {
        m_params.field_mask |= UCT_IFACE_PARAM_FIELD_RX_HEADROOM;
        m_params.rx_headroom = rx_headroom;
    }
    if (customize) {
        customize(m_params);
    }

    status = open_iface(&m_iface);
    if (status != UCS_OK) {
        m_iface = NULL;
        return status;
    }
    m_ifaces.pop_back(); /* the main iface is closed on its own */
    return uct_iface_query(m_iface, &m_attr);
}

ucs_status_t entity::open_iface(uct_iface_h *iface_p)
{
    uct_iface_config_t *iface_config;
    ucs_status_t status;

    status = uct_md_iface_config_read(m_md, "orc", NULL, NULL, &iface_config);
    if (status != UCS_OK) {
        return status;
    }

    status = uct_iface_open(m_md, m_worker, &m_params, iface_config, iface_p);
    uct_config_release(iface_config);
    if (status != UCS_OK) {
        return status;
    }

    uct_iface_progress_enable(*iface_p, UCT_PROGRESS_SEND | UCT_PROGRESS_RECV);
    m_ifaces.push_back(*iface_p);
    return UCS_OK;
}

void entity::progress(unsigned count)
{
    for (unsigned i = 0; i < count; ++i) {
        uct_worker_progress(m_worker);
    }
}

void entity::wait_for_event(double timeout_sec)
{
    struct pollfd pfd = {-1, POLLIN, 0};

    if ((uct_iface_event_fd_get(m_iface, &pfd.fd) != UCS_OK) ||
        (uct_iface_event_arm(m_iface, UCT_EVENT_RECV | UCT_EVENT_SEND_COMP) !=
         UCS_OK)) {
        return; /* busy: progress again */
    }
    poll(&pfd, 1, (int)(timeout_sec * 1000));
}

std::vector<uint8_t> entity::dev_addr(uct_iface_h iface) const
{
    std::vector<uint8_t> addr(m_attr.device_addr_len);
    EXPECT_EQ(UCS_OK,
              uct_iface_get_device_address((iface != NULL) ? iface : m_iface,
                                           (uct_device_addr_t *)addr.data()));
    return addr;
}

std::vector<uint8_t> entity::iface_addr(uct_iface_h iface) const
{
    std::vector<uint8_t> addr(m_attr.iface_addr_len);
    EXPECT_EQ(UCS_OK, uct_iface_get_address((iface != NULL) ? iface : m_iface,
                                            (uct_iface_addr_t *)addr.data()));
    return addr;
}

ucs_status_t entity::create_ep(const std::vector<uint8_t> &dev_addr,
                               const std::vector<uint8_t> &iface_addr,
                               uct_ep_h *ep_p, uct_iface_h iface)
{
    uct_ep_params_t params;
    ucs_status_t status;

    memset(&params, 0, sizeof(params));
    params.field_mask = UCT_EP_PARAM_FIELD_IFACE | UCT_EP_PARAM_FIELD_DEV_ADDR |
                        UCT_EP_PARAM_FIELD_IFACE_ADDR;
    params.iface      = (iface != NULL) ? iface : m_iface;
    params.dev_addr   = (const uct_device_addr_t *)dev_addr.data();
    params.iface_addr = (const uct_iface_addr_t *)iface_addr.data();
    status            = uct_ep_create(&params, ep_p);
    if (status == UCS_OK) {
        m_eps.push_back(*ep_p);
    }
    return status;
}

void entity::destroy_ep(uct_ep_h ep)
{
    auto it = std::find(m_eps.begin(), m_eps.end(), ep);
    ASSERT_TRUE(it != m_eps.end());
    m_eps.erase(it);
    uct_ep_destroy(ep);
}

ucs_status_t entity::connect_to(entity &peer, uct_ep_h *ep_p)
{
    return create_ep(peer.dev_addr(), peer.iface_addr(), ep_p);
}

/* A flush of an idle ep cannot tell; a zero-length put can. */
uct_ep_h entity::connect_and_wait(entity &peer)
{
    uct_ep_h ep = NULL;
    EXPECT_EQ(UCS_OK, connect_to(peer, &ep));
    if (ep == NULL) {
        return NULL;
    }

    uint64_t scratch    = 0;
    mem m               = peer.alloc_mem(64);
    uct_rkey_t rkey     = unpack_rkey(m.rkey_buf);
    ucs_status_t status = UCS_ERR_NO_RESOURCE;
    bool ok             = progress_until([&]() {
        peer.progress();
        status = uct_ep_put_short(ep, &scratch, sizeof(scratch),
                                              (uintptr_t)m.ptr, rkey);
        return status != UCS_ERR_NO_RESOURCE;
    });
    EXPECT_TRUE(ok) << "pairing did not complete";
    EXPECT_EQ(UCS_OK, status);
    progress_until([&]() { return uct_ep_flush(ep, 0, NULL) == UCS_OK; });
    peer.free_mem(m);
    return ep;
}

entity::mem entity::alloc_mem(size_t length)
{
    mem m;
    uct_md_attr_t md_attr;

    m.length = length;
    m.ptr    = NULL;
    EXPECT_EQ(0, posix_memalign(&m.ptr, 4096, std::max(length, (size_t)64)));
    memset(m.ptr, 0, std::max(length, (size_t)64));
    EXPECT_EQ(UCS_OK, uct_md_mem_reg(m_md, m.ptr, std::max(length, (size_t)64),
                                     UCT_MD_MEM_ACCESS_ALL, &m.memh));
    EXPECT_EQ(UCS_OK, uct_md_query(m_md, &md_attr));
    m.rkey_buf.resize(md_attr.rkey_packed_size);
    EXPECT_EQ(UCS_OK, uct_md_mkey_pack(m_md, m.memh, m.rkey_buf.data()));
    m_mems.push_back(m);
    return m;
}

void entity::free_mem(mem &m)
{
    for (auto it = m_mems.begin(); it != m_mems.end(); ++it) {
        if (it->ptr == m.ptr) {
            m_mems.erase(it);
            break;
        }
    }
    EXPECT_EQ(UCS_OK, uct_md_mem_dereg(m_md, m.memh));
    free(m.ptr);
    m.ptr = NULL;
}

uct_rkey_t entity::unpack_rkey(const std::vector<uint8_t> &rkey_buf)
{
    uct_rkey_bundle_t bundle;
    EXPECT_EQ(UCS_OK, uct_rkey_unpack(m_component, rkey_buf.data(), &bundle));
    m_rkeys.push_back(bundle);
    return bundle.rkey;
}

/* ---------------------------------------------------------------- child */

child::child(const std::string &role, const std::vector<std::string> &env) :
    m_pid(-1), m_in(-1), m_out(-1)
{
    int in[2], out[2];
    EXPECT_EQ(0, pipe2(in, O_CLOEXEC));
    EXPECT_EQ(0, pipe2(out, O_CLOEXEC));

    std::vector<std::string> envs;
    for (char **e = environ; *e != NULL; ++e) {
        if (strncmp(*e, "GTEST_OUTPUT=", 13)) {
            envs.push_back(*e);
        }
    }
    envs.push_back("ORC_UCT_CHILD_ROLE=" + role);
    for (auto &e : env) {
        envs.push_back(e);
    }
    std::vector<char *> envp;
    for (auto &e : envs) {
        envp.push_back((char *)e.c_str());
    }
    envp.push_back(NULL);

    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    EXPECT_GT(n, 0);
    self[n > 0 ? n : 0] = '\0';
    std::string netns   = env_or("ORC_UCT_CHILD_NETNS", "");
    std::string wrapper = env_or("ORC_UCT_CHILD_WRAPPER", "");
    std::vector<const char *> argv;
    if (!netns.empty()) {
        argv = {"ip", "netns", "exec", netns.c_str()};
    }
    if (!wrapper.empty()) {
        argv.push_back(wrapper.c_str());
    }
    argv.push_back(self);
    argv.push_back("--gtest_filter=OrcChild.Main");
    argv.push_back(NULL);

    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    int ret = posix_spawnp(&m_pid, argv[0], &fa, NULL, (char **)argv.data(),
                           envp.data());
    posix_spawn_file_actions_destroy(&fa);
    EXPECT_EQ(0, ret) << strerror(ret);
    close(in[0]);
    close(out[1]);
    m_in  = in[1];
    m_out = out[0];
}

child::~child()
{
    if (m_pid > 0) {
        kill(m_pid, SIGKILL);
        waitpid(m_pid, NULL, 0);
    }
    close(m_in);
    close(m_out);
}

bool child::read_line(std::string &line, double timeout_sec)
{
    double deadline = entity::now() + timeout_sec;
    for (;;) {
        size_t pos = m_buf.find('\n');
        if (pos != std::string::npos) {
            line = m_buf.substr(0, pos);
            m_buf.erase(0, pos + 1);
            /* gtest's own output lines are not ours */
            if (line.compare(0, 4, "ORC ") == 0) {
                line.erase(0, 4);
                return true;
            }
            /* the child's own gtest output: keep failures visible */
            fprintf(stderr, "child %d: %s\n", (int)m_pid, line.c_str());
            continue;
        }
        double left = deadline - entity::now();
        if (left <= 0) {
            return false;
        }
        struct pollfd pfd = {m_out, POLLIN, 0};
        if (poll(&pfd, 1, (int)(left * 1000) + 1) <= 0) {
            continue;
        }
        char buf[4096];
        ssize_t n = read(m_out, buf, sizeof(buf));
        if (n <= 0) {
            return false;
        }
        m_buf.append(buf, n);
    }
}

void child::write_line(const std::string &line)
{
    std::string l = line + "\n";
    ssize_t n     = write(m_in, l.data(), l.size());
    EXPECT_EQ((ssize_t)l.size(), n);
}

void child::kill_now()
{
    kill(m_pid, SIGKILL);
}

int child::wait_exit(double timeout_sec)
{
    double deadline = entity::now() + timeout_sec;
    int st;
    while (entity::now() < deadline) {
        pid_t r = waitpid(m_pid, &st, WNOHANG);
        if (r == m_pid) {
            m_pid = -1;
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        usleep(10000);
    }
    return -1;
}

int tcp_connections(int port, bool own)
{
    std::set<unsigned long> inodes;
    char link[320], target[256];

    DIR *dir = opendir("/proc/self/fd");
    if (dir == NULL) {
        return -1;
    }
    for (struct dirent *d = readdir(dir); d != NULL; d = readdir(dir)) {
        snprintf(link, sizeof(link), "/proc/self/fd/%s", d->d_name);
        ssize_t n = readlink(link, target, sizeof(target) - 1);
        unsigned long inode;
        if (n > 0) {
            target[n] = '\0';
            if (sscanf(target, "socket:[%lu]", &inode) == 1) {
                inodes.insert(inode);
            }
        }
    }
    closedir(dir);

    /* sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout
     * inode */
    std::ifstream tcp("/proc/net/tcp");
    std::string line;
    int count = 0;
    std::getline(tcp, line);
    while (std::getline(tcp, line)) {
        unsigned rem_port, local_port, state;
        unsigned long inode;
        char local[64], remote[64];
        if ((sscanf(line.c_str(), "%*s %63s %63s %x %*s %*s %*s %*s %*s %lu",
                    local, remote, &state, &inode) != 4) ||
            (sscanf(strchr(remote, ':') + 1, "%x", &rem_port) != 1) ||
            (sscanf(strchr(local, ':') + 1, "%x", &local_port) != 1) ||
            (state != 1 /* ESTABLISHED */)) {
            continue;
        }
        if (own ? (((int)rem_port == port) && inodes.count(inode))
                : ((int)local_port == port)) {
            ++count;
        }
    }
    return count;
}

std::string hex(const void *buf, size_t len)
{
    std::string s;
    char b[3];
    for (size_t i = 0; i < len; ++i) {
        snprintf(b, sizeof(b), "%02x", ((const uint8_t *)buf)[i]);
        s += b;
    }
    return s;
}

std::vector<uint8_t> unhex(const std::string &s)
{
    std::vector<uint8_t> v;
    for (size_t i = 0; i + 1 < s.size(); i += 2) {
        v.push_back((uint8_t)strtoul(s.substr(i, 2).c_str(), NULL, 16));
    }
    return v;
}

} // namespace orc_test
