/*
 * softnic test harness: peer processes and network namespaces.
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "softnic_harness.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>

namespace softnic_test
{

static double now_ms()
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

std::string topology_name(const ::testing::TestParamInfo<topology_t> &info)
{
    return (info.param == TOPO_SAME_HOST) ? "same_host" : "two_hosts";
}

const char *wc_status_name(int status)
{
    return ibv_wc_status_str((enum ibv_wc_status)status);
}

uint64_t reply_t::u(const char *key) const
{
    kv_t::const_iterator it = kv.find(key);
    return (it == kv.end()) ? 0 : strtoull(it->second.c_str(), NULL, 0);
}

std::string reply_t::s(const char *key) const
{
    kv_t::const_iterator it = kv.find(key);
    return (it == kv.end()) ? "" : it->second;
}

int run_prog(const std::vector<std::string> &argv)
{
    std::vector<char *> args;
    for (const std::string &a : argv) {
        args.push_back(const_cast<char *>(a.c_str()));
    }
    args.push_back(NULL);

    pid_t pid = fork();
    if (pid < 0) {
        return -1;
    }
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0) {
            dup2(devnull, 1);
            dup2(devnull, 2);
        }
        execvp(args[0], args.data());
        _exit(127);
    }
    int status;
    if (waitpid(pid, &status, 0) < 0) {
        return -1;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static std::string self_dir()
{
    char path[PATH_MAX];
    ssize_t l = readlink("/proc/self/exe", path, sizeof(path) - 1);
    if (l <= 0) {
        return ".";
    }
    path[l] = 0;
    std::string s(path);
    return s.substr(0, s.rfind('/'));
}

/* In the child: enter a new mount namespace as mnt says (MNT_NEW: nothing
 * the child mounts propagates back; MNT_NEW_PRIVATE_SHM: a tmpfs on
 * /dev/shm, gone with the namespace) */
static void enter_mnt_ns(mnt_ns_t mnt)
{
    if (mnt == MNT_SAME) {
        return;
    }
    if ((unshare(CLONE_NEWNS) < 0) ||
        (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) ||
        ((mnt == MNT_NEW_PRIVATE_SHM) &&
         (mount("tmpfs", "/dev/shm", "tmpfs", 0, "size=64m") < 0))) {
        fprintf(stderr, "softnic_peer: mount namespace: %m\n");
        _exit(124);
    }
}

peer_proc::peer_proc(const std::string &name, const std::string &netns,
                     mnt_ns_t mnt) :
    m_name(name),
    m_pid(-1), m_fd(-1), m_status(0)
{
    int sv[2];
    std::string exe = self_dir() + "/softnic_peer";

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        ADD_FAILURE() << "socketpair: " << strerror(errno);
        return;
    }
    pid_t pid = fork();
    if (pid < 0) {
        ADD_FAILURE() << "fork: " << strerror(errno);
        close(sv[0]);
        close(sv[1]);
        return;
    }
    if (pid == 0) {
        if (!netns.empty()) {
            std::string path = "/run/netns/" + netns;
            int nfd          = open(path.c_str(), O_RDONLY);
            if ((nfd < 0) || (setns(nfd, CLONE_NEWNET) < 0)) {
                fprintf(stderr, "softnic_peer: setns %s: %m\n", path.c_str());
                _exit(126);
            }
            close(nfd);
        }
        enter_mnt_ns(mnt);
        /* fd 3 is the command socket */
        if (dup2(sv[1], 3) < 0) {
            _exit(125);
        }
        execl(exe.c_str(), exe.c_str(), "3", (char *)NULL);
        fprintf(stderr, "exec %s: %m\n", exe.c_str());
        _exit(127);
    }
    close(sv[1]);
    m_fd  = sv[0];
    m_pid = pid;
}

peer_proc::~peer_proc()
{
    if (m_pid > 0) {
        if (send("exit")) {
            recv(10000);
        }
        if (!wait_exit(10000)) {
            ADD_FAILURE() << m_name << ": did not exit, killing it";
            kill9();
        } else if (m_status != 0) {
            /* a crash, or a sanitizer report (ASan/LSan exit non-zero) */
            ADD_FAILURE() << m_name << ": exited with "
                          << (WIFSIGNALED(m_status) ? "signal " : "status ")
                          << (WIFSIGNALED(m_status) ? WTERMSIG(m_status)
                                                    : WEXITSTATUS(m_status))
                          << " (see its stderr above)";
        }
    }
    if (m_fd >= 0) {
        close(m_fd);
    }
}

bool peer_proc::send(const std::string &line)
{
    std::string l = line + "\n";
    size_t off    = 0;

    m_last = line;
    if (m_fd < 0) {
        return false;
    }
    while (off < l.size()) {
        ssize_t r = ::send(m_fd, l.data() + off, l.size() - off, MSG_NOSIGNAL);
        if (r <= 0) {
            return false;
        }
        off += (size_t)r;
    }
    return true;
}

reply_t peer_proc::recv(int timeout_ms)
{
    reply_t r;
    double deadline = now_ms() + timeout_ms;
    std::string head;

    r.ok = false;
    for (;;) {
        size_t nl = m_inbuf.find('\n');
        if (nl != std::string::npos) {
            r.line = m_inbuf.substr(0, nl);
            m_inbuf.erase(0, nl + 1);
            break;
        }
        int left          = (int)(deadline - now_ms());
        struct pollfd pfd = {m_fd, POLLIN, 0};
        int ret           = (left > 0) ? ::poll(&pfd, 1, left) : 0;
        if (ret < 0 && errno == EINTR) {
            continue;
        }
        if (ret <= 0) {
            ADD_FAILURE() << m_name << ": no reply to '" << m_last
                          << "' within " << timeout_ms << " ms; killing it";
            kill9();
            r.line = "ERR timeout";
            return r;
        }
        char buf[65536];
        ssize_t n = read(m_fd, buf, sizeof(buf));
        if (n <= 0) {
            r.line = "ERR peer_gone";
            return r;
        }
        m_inbuf.append(buf, (size_t)n);
    }

    std::vector<std::string> wcs;
    parse_line(r.line, &head, &r.kv, &wcs);
    r.ok = (head == "OK");
    for (const std::string &w : wcs) {
        wc_t wc;
        unsigned long long id;
        wc.src_qp = 0;
        if (sscanf(w.c_str(), "%llu:%d:%d:%u:%u:%u:%u", &id, &wc.status,
                   &wc.opcode, &wc.byte_len, &wc.imm, &wc.flags,
                   &wc.src_qp) >= 6) {
            wc.wr_id = id;
            r.wcs.push_back(wc);
        }
    }
    return r;
}

reply_t peer_proc::cmd(const std::string &line, int timeout_ms)
{
    if (!send(line)) {
        reply_t r;
        r.ok   = false;
        r.line = "ERR send_failed (" + m_name + " gone) for '" + line + "'";
        return r;
    }
    return recv(timeout_ms);
}

void peer_proc::kill9()
{
    if (m_pid > 0) {
        ::kill(m_pid, SIGKILL);
        wait_exit(10000);
        m_status = 0; /* killed on purpose */
    }
}

void peer_proc::freeze()
{
    if (m_pid > 0) {
        ::kill(m_pid, SIGSTOP);
    }
}

void peer_proc::thaw()
{
    if (m_pid > 0) {
        ::kill(m_pid, SIGCONT);
    }
}

bool peer_proc::wait_exit(int timeout_ms)
{
    double deadline = now_ms() + timeout_ms;
    while (m_pid > 0) {
        int status;
        pid_t r = waitpid(m_pid, &status, WNOHANG);
        if ((r == m_pid) || ((r < 0) && (errno == ECHILD))) {
            m_status = (r == m_pid) ? status : 0;
            m_pid    = -1;
            return true;
        }
        if (now_ms() > deadline) {
            return false;
        }
        /* reaping a child has no event we can wait on portably here */
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
    return true;
}

/* ------------------------------------------------------------------ */

netns_pair::netns_pair() : m_created(false)
{
    m_prefix = "orc-t-" + std::to_string(getpid()) + "-";
}

netns_pair::~netns_pair()
{
    destroy();
}

std::string netns_pair::ns(char side) const
{
    return m_prefix + side;
}

/* Remove namespaces and root-namespace veth ends left by crashed runs of
 * this suite: only names with our prefix whose creator pid is gone. */
void netns_pair::cleanup_stale()
{
    FILE *f =
        popen("ip netns list 2>/dev/null; ip -o link show 2>/dev/null", "r");
    char line[512];
    std::vector<std::string> ns_del, link_del;

    if (f == NULL) {
        return;
    }
    while (fgets(line, sizeof(line), f)) {
        int pid;
        char side;
        char name[64];
        if (sscanf(line, "orc-t-%d-%c", &pid, &side) == 2) {
            if ((kill(pid, 0) < 0) && (errno == ESRCH)) {
                snprintf(name, sizeof(name), "orc-t-%d-%c", pid, side);
                ns_del.push_back(name);
            }
        } else if (sscanf(line, "%*d: ot%d%c", &pid, &side) == 2) {
            if ((kill(pid, 0) < 0) && (errno == ESRCH)) {
                snprintf(name, sizeof(name), "ot%d%c", pid, side);
                link_del.push_back(name);
            }
        }
    }
    pclose(f);
    for (const std::string &n : ns_del) {
        run_prog({"ip", "netns", "del", n});
    }
    for (const std::string &n : link_del) {
        run_prog({"ip", "link", "del", n});
    }
}

/* How long a namespace link may take to come up: usually well under a
 * second, several at a load of 20 */
static const int NETNS_LINK_UP_SEC = 30;

/* One look at orc0 in namespace n: whether it is up (carrier and
 * operational state UP); *state is every line `ip` printed. An error line
 * can come before the link's own: `ip` names the veth's peer namespace by
 * asking the kernel about each entry of /run/netns, and an entry that
 * another process is adding or deleting at that moment is no namespace
 * ("Peer netns reference is invalid"). */
static bool link_up_now(const std::string &n, std::string *state)
{
    std::string cmd = "ip -n " + n + " -o link show orc0 2>&1";
    FILE *f         = popen(cmd.c_str(), "r");
    char line[1024];
    bool up = false;

    state->clear();
    if (f == NULL) {
        return false;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        line[strcspn(line, "\n")] = 0;
        *state += (state->empty() ? "" : " | ") + std::string(line);
        if ((strstr(line, "LOWER_UP") != NULL) &&
            (strstr(line, "state UP") != NULL)) {
            up = true;
        }
    }
    pclose(f);
    return up;
}

/* Whether orc0 in namespace n is up within sec seconds; *state is what the
 * last look saw */
static bool link_up_wait(const std::string &n, int sec, std::string *state)
{
    double deadline = now_ms() + sec * 1e3;

    do {
        if (link_up_now(n, state)) {
            return true;
        }
        struct timespec ts = {0, 10000000};
        nanosleep(&ts, NULL);
    } while (now_ms() < deadline);
    return false;
}

bool netns_pair::create(std::string *why)
{
    std::string pid = std::to_string(getpid());
    std::string va = "ot" + pid + "a", vb = "ot" + pid + "b";

    destroy();
    if (geteuid() != 0) {
        *why = "not root: cannot create network namespaces";
        return false;
    }
    if (run_prog({"ip", "netns", "add", ns('a')}) != 0) {
        *why = "'ip netns add' failed (no CAP_NET_ADMIN or no ip tool)";
        return false;
    }
    m_created = true;
    if (run_prog({"ip", "netns", "add", ns('b')}) ||
        run_prog(
            {"ip", "link", "add", va, "type", "veth", "peer", "name", vb}) ||
        run_prog({"ip", "link", "set", va, "netns", ns('a')}) ||
        run_prog({"ip", "link", "set", vb, "netns", ns('b')})) {
        *why = "cannot create the veth pair between the namespaces";
        destroy();
        return false;
    }
    const char *ips[2] = {"198.18.0.1/24", "198.18.0.2/24"};
    for (int i = 0; i < 2; ++i) {
        std::string n = ns(i ? 'b' : 'a'), v = i ? vb : va;
        if (run_prog({"ip", "-n", n, "link", "set", v, "name", "orc0"}) ||
            run_prog({"ip", "-n", n, "addr", "add", ips[i], "dev", "orc0"}) ||
            run_prog({"ip", "-n", n, "link", "set", "orc0", "up"}) ||
            run_prog({"ip", "-n", n, "link", "set", "lo", "up"})) {
            *why = "cannot configure orc0 in " + n;
            destroy();
            return false;
        }
    }
    /* Wait until the kernel reports both ends operational, so a test never
     * starts on a link that is still coming up. Bounded by time, not by a
     * number of looks: on a loaded host one look (an `ip` process) takes
     * long, and the kernel's link watch that sets the state runs late. */
    for (char side : {'a', 'b'}) {
        std::string state;
        if (!link_up_wait(ns(side), NETNS_LINK_UP_SEC, &state)) {
            *why = "orc0 in " + ns(side) + " did not come up within " +
                   std::to_string(NETNS_LINK_UP_SEC) + " s (last seen: " +
                   (state.empty() ? std::string("nothing") : state) + ")";
            destroy();
            return false;
        }
    }
    return true;
}

bool netns_pair::cut_link(bool del)
{
    if (del) {
        return run_prog({"ip", "-n", ns('b'), "link", "del", "orc0"}) == 0;
    }
    return (run_prog({"ip", "-n", ns('a'), "link", "set", "orc0", "down"}) ==
            0) &&
           (run_prog({"ip", "-n", ns('b'), "link", "set", "orc0", "down"}) ==
            0);
}

void netns_pair::destroy()
{
    if (!m_created) {
        return;
    }
    run_prog({"ip", "netns", "del", ns('a')});
    run_prog({"ip", "netns", "del", ns('b')});
    m_created = false;
}

/* ------------------------------------------------------------------ */

std::string conn_opts::str() const
{
    std::ostringstream o;
    o << " timeout=" << timeout << " retry=" << retry
      << " rnr_retry=" << rnr_retry << " min_rnr=" << min_rnr
      << " access=" << access;
    return o.str();
}

void softnic_topo::SetUp()
{
    if (!two_hosts()) {
        return;
    }
    static bool stale_done = false;
    if (!stale_done) {
        netns_pair::cleanup_stale();
        stale_done = true;
    }
    std::string why;
    m_ns.reset(new netns_pair());
    if (!m_ns->create(&why)) {
        m_ns.reset();
        GTEST_SKIP() << "two_hosts topology unavailable: " << why;
    }
}

void softnic_topo::TearDown()
{
    m_peers.clear(); /* exits (or kills) every peer first */
    m_ns.reset();
}

std::string softnic_topo::dev_name() const
{
    return two_hosts() ? "soft_orc0" : "soft_lo";
}

std::string softnic_topo::ifaces() const
{
    return two_hosts() ? "orc0" : "lo";
}

std::string softnic_topo::ip_of(char side) const
{
    if (!two_hosts()) {
        return "127.0.0.1";
    }
    return (side == 'a') ? "198.18.0.1" : "198.18.0.2";
}

peer_proc &softnic_topo::spawn(char side, mnt_ns_t mnt,
                               const std::string &open_args)
{
    std::string name =
        std::string("peer") + std::to_string(m_peers.size()) + "@" + side;
    m_peers.emplace_back(
        new peer_proc(name, two_hosts() ? m_ns->ns(side) : "", mnt));
    peer_proc &p = *m_peers.back();
    reply_t r    = p.cmd("open dev=" + dev_name() + " ifaces=" + ifaces() +
                         (open_args.empty() ? "" : " " + open_args));
    EXPECT_TRUE(r.ok) << name << ": " << r.line;
    return p;
}

mr_t softnic_topo::reg_mr(peer_proc &p, int id, size_t len,
                          const std::string &access, size_t guard)
{
    mr_t m = {0, 0, 0};
    reply_t r =
        p.cmd("mr id=" + std::to_string(id) + " len=" + std::to_string(len) +
              " access=" + access + " guard=" + std::to_string(guard));
    EXPECT_TRUE(r.ok) << p.name() << ": " << r.line;
    m.addr = r.u("addr");
    m.rkey = (uint32_t)r.u("rkey");
    m.lkey = (uint32_t)r.u("lkey");
    return m;
}

qp_ep_t softnic_topo::create_qp(peer_proc &p, int qp, bool srq)
{
    qp_ep_t ep;
    reply_t r =
        p.cmd("qp id=" + std::to_string(qp) + " srq=" + (srq ? "1" : "0"));
    EXPECT_TRUE(r.ok) << p.name() << ": " << r.line;
    ep.qpn  = (uint32_t)r.u("qpn");
    ep.addr = r.s("addr");
    return ep;
}

void softnic_topo::connect(peer_proc &a, int qa, peer_proc &b, int qb,
                           const conn_opts &oa, const conn_opts &ob, bool srq_b)
{
    qp_ep_t ea = create_qp(a, qa);
    qp_ep_t eb = create_qp(b, qb, srq_b);
    ASSERT_FALSE(ea.addr.empty() || eb.addr.empty()) << "QP creation failed";
    m_last_ea = ea;
    m_last_eb = eb;
    ASSERT_OK(a.cmd("connect qp=" + std::to_string(qa) + " addr=" + eb.addr +
                    " qpn=" + std::to_string(eb.qpn) + oa.str()));
    ASSERT_OK(b.cmd("connect qp=" + std::to_string(qb) + " addr=" + ea.addr +
                    " qpn=" + std::to_string(ea.qpn) + ob.str()));
}

std::vector<wc_t> softnic_topo::poll(peer_proc &p, const char *cq, int n,
                                     int timeout_ms)
{
    reply_t r = p.cmd(std::string("poll cq=") + cq + " n=" + std::to_string(n) +
                      " timeout=" + std::to_string(timeout_ms));
    EXPECT_TRUE(r.ok) << p.name() << ": " << r.line;
    return r.wcs;
}

std::vector<wc_t> softnic_topo::poll_until(peer_proc &p, const char *cq, int n,
                                           double until_ms)
{
    reply_t r = p.cmd(std::string("poll cq=") + cq + " n=" + std::to_string(n) +
                      " until=" + std::to_string((uint64_t)until_ms));
    EXPECT_TRUE(r.ok) << p.name() << ": " << r.line;
    return r.wcs;
}

wc_t softnic_topo::post_wait(peer_proc &p, const std::string &post_args,
                             int timeout_ms)
{
    wc_t none = {~0ull, -1, -1, 0, 0, 0, 0};
    reply_t r = p.cmd("post " + post_args);
    EXPECT_TRUE(r.ok) << p.name() << ": post " << post_args << ": " << r.line;
    if (!r.ok) {
        return none;
    }
    std::vector<wc_t> wcs = poll(p, "send", 1, timeout_ms);
    EXPECT_EQ(1u, wcs.size())
        << p.name() << ": no completion for post " << post_args;
    return wcs.empty() ? none : wcs[0];
}

} /* namespace softnic_test */
