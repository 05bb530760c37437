/*
 * Scale tests of the orc transport: many endpoints on one interface, many
 * processes on one host. Heavier than test_orc_uct; run by
 * test_orc_scale.sh (which gives the many-process test a second device).
 */
#include "orc_uct_env.h"

extern "C" {
#include "orc_client.h"
}

#include <algorithm>
#include <fstream>
#include <functional>
#include <iostream>
#include <set>
#include <memory>
#include <sstream>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

using namespace orc_test;

namespace
{

class scale_environment : public ::testing::Environment
{
  public:
    void SetUp() override
    {
        /* every connected softnic QP holds sockets: room for thousands */
        struct rlimit rl;
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
            rl.rlim_cur = rl.rlim_max;
            setrlimit(RLIMIT_NOFILE, &rl);
        }
        if (getenv("ORC_UCT_CHILD_ROLE") == NULL) {
            uct_env::setup();
        }
    }
    void TearDown() override
    {
        uct_env::teardown();
    }
};

::testing::Environment *const g_env =
    ::testing::AddGlobalTestEnvironment(new scale_environment);

struct am_count {
    std::vector<unsigned> per_sender; /* by the 64-bit header */
    size_t total = 0;
};

ucs_status_t am_count_cb(void *arg, void *data, size_t length, unsigned)
{
    am_count *c = (am_count *)arg;
    uint64_t hdr;
    EXPECT_GE(length, sizeof(hdr));
    memcpy(&hdr, data, sizeof(hdr));
    if (hdr < c->per_sender.size()) {
        ++c->per_sender[hdr];
    }
    ++c->total;
    return UCS_OK;
}

/* open files needed: the test skips rather than fail on a small limit */
bool have_fds(rlim_t need)
{
    struct rlimit rl;
    return (getrlimit(RLIMIT_NOFILE, &rl) == 0) && (rl.rlim_cur >= need);
}

} // namespace

/*
 * One interface serves 1,024 endpoints of a peer with 256 receive buffers:
 * every pairing succeeds (receive buffers are shared out, never refused),
 * each peer still gets the floor of credits (2: a share of 256 / 1,024
 * would be 0), and active messages flow on all of them, eight times more
 * of them at once than there are receive buffers (the receiver-not-ready
 * retry covers the bursts).
 */
TEST(OrcScale, ThousandEndpointsOneIface)
{
    const unsigned neps = 1024, rounds = 8;
    if (!have_fds(4 * neps + 512)) {
        GTEST_SKIP() << "needs " << 4 * neps + 512 << " open files";
    }

    scoped_setenv rxq("UCX_ORC_RX_QUEUE_LEN", "256");
    entity s, r;
    ASSERT_EQ(UCS_OK, s.open());
    ASSERT_EQ(UCS_OK, r.open());
    am_count rx;
    rx.per_sender.resize(neps);
    ASSERT_EQ(UCS_OK,
              uct_iface_set_am_handler(r.iface(), 1, am_count_cb, &rx, 0));

    double start = entity::now();
    std::vector<uct_ep_h> eps(neps);
    for (unsigned i = 0; i < neps; ++i) {
        ASSERT_EQ(UCS_OK, s.connect_to(r, &eps[i])) << "ep " << i;
    }

    /* each ep sends `rounds` messages as soon as it can; the receiver keeps
     * up only by progressing */
    std::vector<unsigned> sent(neps, 0);
    size_t total_sent = 0;
    double paired_at  = 0;
    unsigned npaired  = 0;
    std::vector<bool> paired(neps, false);
    ASSERT_TRUE(s.progress_until(
        [&]() {
        for (unsigned i = 0; i < neps; ++i) {
            while (sent[i] < rounds) {
                ucs_status_t st = uct_ep_am_short(eps[i], 1, i, NULL, 0);
                if (st == UCS_ERR_NO_RESOURCE) {
                    break;
                }
                EXPECT_EQ(UCS_OK, st) << "ep " << i;
                if (st != UCS_OK) {
                    return true;
                }
                if (!paired[i]) {
                    paired[i] = true;
                    if (++npaired == neps) {
                        paired_at = entity::now();
                    }
                }
                ++sent[i];
                ++total_sent;
            }
        }
        r.progress();
        return rx.total == (size_t)neps * rounds;
        },
        120))
        << "sent " << total_sent << " received " << rx.total;

    EXPECT_TRUE(s.errors.empty());
    for (unsigned i = 0; i < neps; ++i) {
        ASSERT_EQ(rounds, rx.per_sender[i]) << "ep " << i;
    }
    printf("ORC-FIGURE 1024 eps: all paired after %.2f s, %u messages each "
           "delivered after %.2f s\n",
           paired_at - start, rounds, entity::now() - start);
}

/* ------------------------------------------------ many processes */

namespace
{

std::string addr_of(entity &e)
{
    return hex(e.dev_addr().data(), e.dev_addr().size()) + ":" +
           hex(e.iface_addr().data(), e.iface_addr().size());
}

void parse_addr(const std::string &s, std::vector<uint8_t> *dev,
                std::vector<uint8_t> *iface)
{
    size_t colon = s.find(':');
    *dev         = unhex(s.substr(0, colon));
    *iface       = unhex(s.substr(colon + 1));
}

/* the words of a line after its first (the line's tag) */
std::vector<std::string> words_after_tag(const std::string &line,
                                         const std::string &tag)
{
    std::istringstream in(line);
    std::vector<std::string> words;
    std::string w;
    in >> w;
    EXPECT_EQ(tag, w) << line;
    while (in >> w) {
        words.push_back(w);
    }
    return words;
}

std::string read_stdin_line()
{
    std::string line;
    std::getline(std::cin, line);
    return line;
}

unsigned env_unsigned(const char *name, unsigned dflt)
{
    const char *v = getenv(name);
    return ((v != NULL) && (v[0] != '\0')) ? strtoul(v, NULL, 0) : dflt;
}

std::vector<std::string> split(const std::string &s, char sep)
{
    std::vector<std::string> parts;
    std::istringstream in(s);
    std::string p;
    while (std::getline(in, p, sep)) {
        parts.push_back(p);
    }
    return parts;
}

/* Zero-length put (no remote buffer needed, but a connected peer QP) and a
 * flush: the ep is paired and its peer answers */
ucs_status_t touch_ep(entity &e, uct_ep_h ep, double timeout)
{
    ucs_status_t st = UCS_ERR_NO_RESOURCE;
    bool ok         = e.wait_until(
        [&]() {
        st = uct_ep_put_short(ep, NULL, 0, 0, 0);
        return (st != UCS_ERR_NO_RESOURCE) || !e.errors.empty();
        },
        timeout);
    if (!ok || (st != UCS_OK)) {
        return ok ? st : UCS_ERR_TIMED_OUT;
    }
    ok = e.wait_until(
        [&]() {
        st = uct_ep_flush(ep, 0, NULL);
        return (st != UCS_INPROGRESS) && (st != UCS_ERR_NO_RESOURCE);
        },
        timeout);
    return ok ? st : UCS_ERR_TIMED_OUT;
}

/* Child of AllToAll: one iface, an ep to every other child, one AM on
 * each; done when it received one from every other child */
void child_alltoall()
{
    const unsigned n    = env_unsigned("ORC_SCALE_NPROC", 0);
    const unsigned rank = env_unsigned("ORC_UCT_CHILD_ID", 0);
    entity e;
    ASSERT_EQ(UCS_OK, e.open());
    am_count rx;
    rx.per_sender.resize(n);
    ASSERT_EQ(UCS_OK,
              uct_iface_set_am_handler(e.iface(), 1, am_count_cb, &rx, 0));
    printf("ORC addr %s\n", addr_of(e).c_str());
    fflush(stdout);

    std::vector<std::string> peers =
        words_after_tag(read_stdin_line(), "peers");
    ASSERT_EQ(n, peers.size());
    double start = entity::now();
    std::vector<uct_ep_h> eps(n, NULL);
    for (unsigned j = 0; j < n; ++j) {
        std::vector<uint8_t> dev, iface;
        if (j != rank) {
            parse_addr(peers[j], &dev, &iface);
            ASSERT_EQ(UCS_OK, e.create_ep(dev, iface, &eps[j])) << j;
        }
    }

    std::vector<bool> sent(n, false);
    sent[rank]      = true;
    unsigned nsent  = 1;
    double all_sent = 0;
    ASSERT_TRUE(e.wait_until(
        [&]() {
        for (unsigned j = 0; j < n; ++j) {
            if (!sent[j] &&
                (uct_ep_am_short(eps[j], 1, rank, NULL, 0) == UCS_OK)) {
                sent[j] = true;
                if (++nsent == n) {
                    all_sent = entity::now();
                }
            }
        }
        return ((nsent == n) && (rx.total == n - 1)) || !e.errors.empty();
        },
        600))
        << "sent " << nsent << " received " << rx.total;
    ASSERT_TRUE(e.errors.empty()) << ucs_status_string(e.errors[0].status);
    /* accepted is not sent: until the flush, the ops may wait for our
     * progress */
    ASSERT_TRUE(e.wait_until(
        [&]() { return uct_iface_flush(e.iface(), 0, NULL) == UCS_OK; }, 600));
    EXPECT_TRUE(e.errors.empty());
    printf("ORC done %.3f %.3f\n", all_sent - start, entity::now() - start);
    fflush(stdout);
    EXPECT_EQ("quit", read_stdin_line());
}

/* eps from each of `ifaces` to the peer addresses, touched: the time it
 * took, or -1 on a failure */
struct iface_ref {
    entity *e;
    uct_iface_h iface;
};

double pair_all(std::vector<iface_ref> &ifaces,
                const std::vector<std::string> &peer,
                std::vector<uct_ep_h> &eps, double timeout)
{
    double start = entity::now();
    eps.assign(ifaces.size(), NULL);
    for (size_t k = 0; k < ifaces.size(); ++k) {
        std::vector<uint8_t> dev, iface;
        parse_addr(peer[k], &dev, &iface);
        EXPECT_EQ(UCS_OK,
                  ifaces[k].e->create_ep(dev, iface, &eps[k], ifaces[k].iface));
        if (eps[k] == NULL) {
            return -1;
        }
    }
    for (size_t k = 0; k < ifaces.size(); ++k) {
        ucs_status_t st = touch_ep(*ifaces[k].e, eps[k], timeout);
        EXPECT_EQ(UCS_OK, st) << "iface " << k;
        if (st != UCS_OK) {
            return -1;
        }
    }
    return entity::now() - start;
}

/*
 * Child of ManyProcessesKeepLeases: IFACES_PER_DEVICE ifaces on each device
 * (one md and worker per device, as UCP opens them), each paired with the
 * same iface of the next child. Commands on stdin:
 *   peer <addr>...  the next child's ifaces
 *   pair            an ep from each iface to the peer's, touched, destroyed
 *   settle          progress once: close the QPs that served the eps of the
 *                   previous child, which destroyed them
 *   check           endpoint errors and lease warnings so far
 *   quit
 * The eps do not stay: softnic's service threads poll every millisecond
 * while a same-host connection exists, which for hundreds of processes on
 * two cores would be the load of the test, not of what it tests (the
 * coordinator session). Between the commands the child blocks on its
 * stdin: the session threads alone keep the lease.
 */
void child_lease()
{
    const std::string devices = getenv("ORC_SCALE_DEVICES");
    const unsigned per_device = env_unsigned("ORC_SCALE_IFACES_PER_DEVICE", 2);
    setenv("UCX_ORC_SOFT_IFACES", devices.c_str(), 1);
    log_capture log;

    std::vector<std::unique_ptr<entity>> ents;
    std::vector<iface_ref> ifaces;
    std::string addrs;
    for (const std::string &d : split(devices, ',')) {
        ents.emplace_back(new entity(d));
        ASSERT_EQ(UCS_OK, ents.back()->open()) << d;
        ifaces.push_back({ents.back().get(), ents.back()->iface()});
        for (unsigned k = 1; k < per_device; ++k) {
            uct_iface_h more;
            ASSERT_EQ(UCS_OK, ents.back()->open_iface(&more)) << d;
            ifaces.push_back({ents.back().get(), more});
        }
    }
    for (iface_ref &i : ifaces) {
        addrs +=
            " " +
            hex(i.e->dev_addr(i.iface).data(), i.e->dev_addr(i.iface).size()) +
            ":" +
            hex(i.e->iface_addr(i.iface).data(),
                i.e->iface_addr(i.iface).size());
    }
    printf("ORC addrs%s\n", addrs.c_str());
    fflush(stdout);

    std::vector<std::string> peer = words_after_tag(read_stdin_line(), "peer");
    ASSERT_EQ(ifaces.size(), peer.size());
    size_t failed = 0;
    for (std::string cmd = read_stdin_line(); cmd != "quit";
         cmd             = read_stdin_line()) {
        if (cmd == "pair") {
            std::vector<uct_ep_h> eps;
            double took = pair_all(ifaces, peer, eps, 300);
            failed += (took < 0);
            for (size_t k = 0; k < ifaces.size(); ++k) {
                if (eps[k] != NULL) {
                    ifaces[k].e->destroy_ep(eps[k]);
                }
            }
            printf("ORC paired %.3f\n", took);
        } else if (cmd == "settle") {
            for (auto &e : ents) {
                e->progress(10);
            }
            printf("ORC settled\n");
        } else if (cmd == "check") {
            size_t errors = failed;
            for (auto &e : ents) {
                errors += e->errors.size();
            }
            printf("ORC ok %zu %zu %zu\n", errors, log.warnings("lease lost"),
                   log.warnings());
        } else {
            ADD_FAILURE() << "unknown command '" << cmd << "'";
            break;
        }
        fflush(stdout);
    }
}

/* Lines "<tag> ..." from every child, in child order */
bool read_all(std::vector<std::unique_ptr<child>> &children,
              const std::string &tag, std::vector<std::string> &lines,
              double timeout)
{
    lines.resize(children.size());
    double deadline = entity::now() + timeout;
    for (size_t i = 0; i < children.size(); ++i) {
        if (!children[i]->read_line(lines[i],
                                    std::max(1.0, deadline - entity::now())) ||
            (lines[i].compare(0, tag.size(), tag) != 0)) {
            ADD_FAILURE() << "child " << i << ": no '" << tag << "' line";
            return false;
        }
    }
    return true;
}

/*
 * Start n children of a role, at most ORC_SCALE_BATCH (16) opening at a
 * time: each batch's first line ("<tag> ...") is read before the next batch
 * starts. Dozens of processes opening at once on a few cores (their UCX and
 * hwloc start-up) would starve orcd for seconds; opened processes wait
 * blocked, so the ones that hold do not load the machine.
 */
bool start_children(
    std::vector<std::unique_ptr<child>> &children, unsigned n,
    const std::string &role,
    const std::function<std::vector<std::string>(unsigned)> &env,
    const std::string &tag, std::vector<std::string> &lines, double timeout)
{
    const unsigned batch = std::max(1u, env_unsigned("ORC_SCALE_BATCH", 16));
    double deadline      = entity::now() + timeout;

    lines.resize(n);
    for (unsigned first = 0; first < n; first += batch) {
        unsigned last = std::min(n, first + batch);
        for (unsigned i = first; i < last; ++i) {
            children.emplace_back(new child(role, env(i)));
        }
        for (unsigned i = first; i < last; ++i) {
            if (!children[i]->read_line(lines[i],
                                        std::max(1.0,
                                                 deadline - entity::now())) ||
                (lines[i].compare(0, tag.size(), tag) != 0)) {
                ADD_FAILURE() << "child " << i << ": no '" << tag << "' line";
                return false;
            }
        }
    }
    return true;
}

/* Lease children pair (and drop their eps), ORC_SCALE_BATCH at a time,
 * then settle; *slowest: the longest pairing of a child */
bool pair_in_batches(std::vector<std::unique_ptr<child>> &children,
                     double *slowest)
{
    const size_t batch = std::max(1u, env_unsigned("ORC_SCALE_BATCH", 16));
    std::string line;

    *slowest = 0;
    for (size_t first = 0; first < children.size(); first += batch) {
        size_t last = std::min(children.size(), first + batch);
        for (const char *step : {"pair", "settle"}) {
            for (size_t i = first; i < last; ++i) {
                children[i]->write_line(step);
            }
            for (size_t i = first; i < last; ++i) {
                if (!children[i]->read_line(line, 600)) {
                    ADD_FAILURE() << "child " << i << ": no answer to " << step;
                    return false;
                }
                if (!strcmp(step, "pair")) {
                    double took =
                        strtod(words_after_tag(line, "paired").at(0).c_str(),
                               NULL);
                    EXPECT_GE(took, 0) << "child " << i << " did not pair";
                    *slowest = std::max(*slowest, took);
                }
            }
        }
    }
    return true;
}

/* orcd's resident memory now and at its peak, in KiB */
void orcd_memory(long *rss_kb, long *hwm_kb)
{
    std::ifstream status("/proc/" + std::to_string(uct_env::orcd_pid()) +
                         "/status");
    std::string key;
    long value;
    *rss_kb = *hwm_kb = -1;
    while (status >> key) {
        if ((key == "VmRSS:") && (status >> value)) {
            *rss_kb = value;
        } else if ((key == "VmHWM:") && (status >> value)) {
            *hwm_kb = value;
        }
    }
}

/* The distinct pids of the job's live nodes */
std::set<int64_t> live_pids()
{
    orc_client_params_t params = {};
    orc_node_info_t *nodes;
    std::set<int64_t> pids;
    orc_client_t *client;
    uint64_t index;
    size_t count;

    params.field_mask = ORC_CLIENT_PARAM_FIELD_URL | ORC_CLIENT_PARAM_FIELD_JOB;
    params.url        = uct_env::url().c_str();
    params.job        = getenv("UCX_ORC_JOB");
    EXPECT_EQ(ORC_CL_OK, orc_client_create(&params, &client));
    if (orc_client_nodes_list(client, 0, 0, &nodes, &count, &index) ==
        ORC_CL_OK) {
        for (size_t i = 0; i < count; ++i) {
            pids.insert(nodes[i].pid);
        }
        orc_client_nodes_free(nodes, count);
    }
    orc_client_destroy(client);
    return pids;
}

bool skip_many(std::string *why)
{
    const char *v = getenv("ORC_SCALE_SKIP_MANY");
    if ((v != NULL) && (v[0] != '\0')) {
        *why = v;
        return true;
    }
    return false;
}

} // namespace

/* Child roles, run as "test_orc_scale --gtest_filter=OrcChild.Main" */
TEST(OrcChild, Main)
{
    const char *role = getenv("ORC_UCT_CHILD_ROLE");
    if (role == NULL) {
        GTEST_SKIP() << "runs only as a child process of the other tests";
    }
    /* dozens of processes on a few cores: orcd must not be starved by
     * them (a node with one core per rank has no such contention) */
    if (getenv("ORC_SCALE_NO_NICE") == NULL)
        setpriority(PRIO_PROCESS, 0, 10);
    uct_env::setup();
    if (!strcmp(role, "alltoall")) {
        child_alltoall();
    } else if (!strcmp(role, "lease")) {
        child_lease();
    } else {
        FAIL() << "unknown role " << role;
    }
}

/* 64 processes on one host, each paired with every other one, an AM on
 * every pair */
TEST(OrcScale, AllToAll64Processes)
{
    const unsigned n = env_unsigned("ORC_SCALE_ALLTOALL_PROCS", 64);
    std::string why;
    if (skip_many(&why)) {
        GTEST_SKIP() << why;
    }

    double start = entity::now();
    std::vector<std::unique_ptr<child>> children;
    std::vector<std::string> lines;
    ASSERT_TRUE(start_children(
        children, n, "alltoall",
        [n](unsigned i) {
        return std::vector<std::string>{"ORC_SCALE_NPROC=" + std::to_string(n),
                                        "ORC_UCT_CHILD_ID=" +
                                            std::to_string(i)};
        },
        "addr", lines, 600));
    std::string peers = "peers";
    for (const std::string &l : lines) {
        peers += " " + words_after_tag(l, "addr").at(0);
    }
    double opened = entity::now();
    for (auto &c : children) {
        c->write_line(peers);
    }
    ASSERT_TRUE(read_all(children, "done", lines, 600));
    double done = entity::now(), slowest = 0;
    for (const std::string &l : lines) {
        slowest =
            std::max(slowest,
                     strtod(words_after_tag(l, "done").at(1).c_str(), NULL));
    }
    for (auto &c : children) {
        c->write_line("quit");
    }
    for (auto &c : children) {
        EXPECT_EQ(0, c->wait_exit(120));
    }
    printf("ORC-FIGURE %u processes all-to-all (%u eps): started and opened "
           "in %.1f s, all paired and an AM on every pair in %.1f s (slowest "
           "process %.1f s)\n",
           n, n * (n - 1), opened - start, done - opened, slowest);
}

/*
 * 150 processes with two devices and two ifaces on each (600 ifaces) on one
 * host, against one orcd with its default limits: all open, each pairs with
 * the next process, and all keep their leases for a minute. Needs a second
 * network interface (ORC_SCALE_DEVICES, from test_orc_scale.sh).
 */
TEST(OrcScale, ManyProcessesKeepLeases)
{
    const unsigned n    = env_unsigned("ORC_SCALE_PROCS", 150);
    const unsigned hold = env_unsigned("ORC_SCALE_HOLD", 60);
    const char *devices = getenv("ORC_SCALE_DEVICES");
    std::string why;
    if (skip_many(&why)) {
        GTEST_SKIP() << why;
    }
    if ((devices == NULL) || (split(devices, ',').size() < 2)) {
        GTEST_SKIP() << "needs two devices in ORC_SCALE_DEVICES (run by "
                        "test_orc_scale.sh in a network namespace)";
    }

    double start = entity::now();
    std::vector<std::unique_ptr<child>> children;
    std::vector<std::string> addrs;
    ASSERT_TRUE(start_children(
        children, n, "lease",
        [devices](unsigned) {
        /* small receive queues: the test is about the coordinator */
        return std::vector<std::string>{std::string("ORC_SCALE_DEVICES=") +
                                            devices,
                                        "UCX_ORC_RX_QUEUE_LEN=64",
                                        "UCX_ORC_AM_CREDITS=16"};
        },
        "addrs", addrs, 900));
    std::set<int64_t> pids;
    for (auto &c : children) {
        pids.insert(c->pid());
    }
    double opened = entity::now();
    for (unsigned i = 0; i < n; ++i) {
        std::vector<std::string> next =
            words_after_tag(addrs[(i + 1) % n], "addrs");
        std::string line = "peer";
        for (const std::string &a : next) {
            line += " " + a;
        }
        children[i]->write_line(line);
    }
    double slowest;
    ASSERT_TRUE(pair_in_batches(children, &slowest));
    double paired = entity::now();

    /* the leases hold: every child's node stays listed */
    int max_conns = 0;
    double until  = entity::now() + hold;
    do {
        std::set<int64_t> live = live_pids();
        size_t missing         = 0;
        for (int64_t pid : pids) {
            missing += !live.count(pid);
        }
        ASSERT_EQ(0u, missing) << "nodes whose lease lapsed, after "
                               << entity::now() - paired << " s";
        max_conns =
            std::max(max_conns, tcp_connections(uct_env::port(), false));
        sleep(5); /* the duration under test, not a synchronisation */
    } while (entity::now() < until);

    /* the sessions still pair after the hold */
    double repaired;
    ASSERT_TRUE(pair_in_batches(children, &repaired));
    for (auto &c : children) {
        c->write_line("check");
    }
    std::vector<std::string> lines;
    ASSERT_TRUE(read_all(children, "ok", lines, 600));
    for (size_t i = 0; i < n; ++i) {
        std::vector<std::string> w = words_after_tag(lines[i], "ok");
        EXPECT_EQ("0", w.at(0)) << "child " << i << ": endpoint errors";
        EXPECT_EQ("0", w.at(1)) << "child " << i << ": leases lost";
    }
    long rss_kb, hwm_kb;
    orcd_memory(&rss_kb, &hwm_kb);
    for (auto &c : children) {
        c->write_line("quit");
    }
    for (auto &c : children) {
        EXPECT_EQ(0, c->wait_exit(120));
    }
    printf("ORC-FIGURE %u processes x %zu ifaces: opened in %.1f s, paired "
           "in %.1f s (slowest process %.1f s), leases held %u s, paired "
           "again in at most %.1f s; orcd: at most %d connections, RSS %ld "
           "KiB (peak %ld KiB)\n",
           n, words_after_tag(addrs[0], "addrs").size(), opened - start,
           paired - opened, slowest, hold, repaired, max_conns, rss_kb, hwm_kb);
}
