/*
 * softnic_peer: the helper process of the softnic test suite.
 *
 * Started by test_softnic with fork/exec (possibly inside a network
 * namespace), it owns one softnic device and executes commands read, one line
 * each, from the socket given as argv[1]; each command gets exactly one reply
 * line (see softnic_util.h). Between commands the process is blocked in
 * read() on that socket and never calls into the device layer, which is what
 * the one-sided tests rely on.
 *
 * Every wait is bounded (timeout= in milliseconds, default 10 s).
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "send_wr.h"
#include "softnic/softnic.h"
#include "softnic_util.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

using namespace softnic_test;

namespace
{

struct peer_mr {
    uint8_t *base; /* mapping: guard | region | guard */
    size_t map_len;
    size_t guard;
    uint8_t *buf; /* the registered region */
    size_t len;
    softnic_mr_t *mr; /* NULL after dereg (the memory stays mapped) */
};

struct peer {
    int fd;
    softnic_dev_t *dev;
    softnic_pd_t *pd;
    softnic_cq_t *scq;
    softnic_cq_t *rcq;
    softnic_comp_channel_t *chan; /* of scq and rcq, with open channel=1 */
    softnic_srq_t *srq;
    std::map<int, peer_mr> mrs;
    std::map<int, softnic_qp_t *> qps;
    std::map<std::string, softnic_ah_t *> ahs; /* UD: by packed address */
    std::string inbuf;
    int raw_fd = -1; /* rawopen's connection, until rawclose */
};

peer g_peer;

/* softnic's messages, kept when the device is opened with log=1; softnic's
 * threads append under g_log_lock */
pthread_mutex_t g_log_lock = PTHREAD_MUTEX_INITIALIZER;
std::vector<std::string> g_log;

const uint8_t GUARD_BYTE = 0xA5;

double now_ms()
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

uint64_t num(const kv_t &kv, const char *key, uint64_t def)
{
    kv_t::const_iterator it = kv.find(key);
    if (it == kv.end()) {
        return def;
    }
    return strtoull(it->second.c_str(), NULL, 0);
}

bool has(const kv_t &kv, const char *key)
{
    return kv.find(key) != kv.end();
}

std::string str(const kv_t &kv, const char *key, const char *def)
{
    kv_t::const_iterator it = kv.find(key);
    return (it == kv.end()) ? def : it->second;
}

std::string fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char *f, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, f);
    vsnprintf(buf, sizeof(buf), f, ap);
    va_end(ap);
    return buf;
}

std::string err(int e, const char *what)
{
    return fmt("ERR errno=%d what=%s", e, what);
}

/* pieces=L1,L2,... (post, recv with count=1): wr's scatter/gather list
 * becomes consecutive pieces of those lengths from buf (at most
 * SN_MAX_SGE, 8), each with lkey, kept in *sges */
template<typename WR> void apply_pieces(const kv_t &kv, WR *wr, uint8_t *buf,
                                        uint32_t lkey,
                                        std::vector<ibv_sge> *sges)
{
    std::string tok;
    std::istringstream in(str(kv, "pieces", ""));
    while (std::getline(in, tok, ',')) {
        ibv_sge sge;
        sge.addr   = (uintptr_t)buf;
        sge.length = (uint32_t)strtoul(tok.c_str(), NULL, 0);
        sge.lkey   = lkey;
        buf += sge.length;
        sges->push_back(sge);
    }
    wr->sg_list = sges->data();
    wr->num_sge = (int)sges->size();
}

int parse_access(const std::string &s)
{
    int access = 0;
    std::string tok;
    std::istringstream in(s);
    while (std::getline(in, tok, ',')) {
        if (tok == "LW")
            access |= IBV_ACCESS_LOCAL_WRITE;
        else if (tok == "RW")
            access |= IBV_ACCESS_REMOTE_WRITE;
        else if (tok == "RR")
            access |= IBV_ACCESS_REMOTE_READ;
        else if (tok == "RA")
            access |= IBV_ACCESS_REMOTE_ATOMIC;
        else if (!tok.empty())
            access |= (int)strtol(tok.c_str(), NULL, 0);
    }
    return access;
}

int parse_send_flags(const std::string &s)
{
    int flags = 0;
    for (char c : s) {
        if (c == 'S')
            flags |= IBV_SEND_SIGNALED;
        if (c == 'F')
            flags |= IBV_SEND_FENCE;
        if (c == 'I')
            flags |= IBV_SEND_INLINE;
        if (c == 'E')
            flags |= IBV_SEND_SOLICITED;
    }
    return flags;
}

bool parse_opcode(const std::string &s, ibv_wr_opcode *op)
{
    static const std::map<std::string, ibv_wr_opcode> ops = {
        {"WRITE", IBV_WR_RDMA_WRITE},
        {"WRITE_IMM", IBV_WR_RDMA_WRITE_WITH_IMM},
        {"READ", IBV_WR_RDMA_READ},
        {"SEND", IBV_WR_SEND},
        {"SEND_IMM", IBV_WR_SEND_WITH_IMM},
        {"FADD", IBV_WR_ATOMIC_FETCH_AND_ADD},
        {"CAS", IBV_WR_ATOMIC_CMP_AND_SWP},
    };
    auto it = ops.find(s);
    if (it == ops.end()) {
        return false;
    }
    *op = it->second;
    return true;
}

peer_mr *find_mr(const kv_t &kv, const char *key = "mr")
{
    auto it = g_peer.mrs.find((int)num(kv, key, 0));
    return (it == g_peer.mrs.end()) ? NULL : &it->second;
}

softnic_qp_t *find_qp(const kv_t &kv)
{
    auto it = g_peer.qps.find((int)num(kv, "qp", 0));
    return (it == g_peer.qps.end()) ? NULL : it->second;
}

std::string wc_str(const ibv_wc &wc)
{
    return fmt("wc=%" PRIu64 ":%d:%d:%u:%u:%u:%u", (uint64_t)wc.wr_id,
               (int)wc.status, (int)wc.opcode, wc.byte_len,
               (unsigned)wc.imm_data, (unsigned)wc.wc_flags, wc.src_qp);
}

/* Poll until n completions or timeout; completions appended to out. */
/* spin: no backoff (a poller that keeps stepping, so that its service
 * thread stands back from the sockets, sn_int.h "Polling") */
int poll_n(softnic_cq_t *cq, int n, double timeout_ms, std::vector<ibv_wc> *out,
           bool spin = false)
{
    double deadline = now_ms() + timeout_ms;
    ibv_wc wc[16];
    int got = 0, idle = 0;

    for (bool first = true; got < n; first = false) {
        /* no poll starts after the deadline (a process descheduled past
         * it would otherwise report what completed after it) */
        if (!first && (now_ms() > deadline)) {
            break;
        }
        int ret = softnic_cq_poll(cq, std::min(16, n - got), wc);
        if (ret < 0) {
            return ret;
        }
        for (int i = 0; i < ret; ++i) {
            out->push_back(wc[i]);
        }
        got += ret;
        if (ret > 0) {
            idle = 0;
            continue;
        }
        if ((++idle > 64) && !spin) {
            /* Backoff so that a few peers fit on two cores. */
            struct timespec ts = {0, 20000};
            nanosleep(&ts, NULL);
        } else {
            sched_yield();
        }
    }
    return got;
}

softnic_cq_t *cq_by_name(const kv_t &kv)
{
    return (str(kv, "cq", "send") == "recv") ? g_peer.rcq : g_peer.scq;
}

void keep_log(void *arg, softnic_log_level_t level, const char *dev,
              const char *message)
{
    (void)arg;
    (void)level;
    (void)dev;
    pthread_mutex_lock(&g_log_lock);
    g_log.push_back(message);
    pthread_mutex_unlock(&g_log_lock);
}

/* open [dev= ifaces= cqe= log=1 channel=1 no_cma=1 no_ring=1]: log=1 keeps
 * softnic's messages (connpath); channel=1 puts both CQs on one completion
 * channel */
std::string cmd_open(const kv_t &kv)
{
    softnic_config_t cfg = {};
    std::string ifaces   = str(kv, "ifaces", "lo");
    std::string name     = str(kv, "dev", "soft_lo");
    int cqe              = (int)num(kv, "cqe", 8192);
    char why[256];

    /* SOFTNIC_NO_CMA, SOFTNIC_LOG, ... for whoever debugs a test */
    if (softnic_config_from_env(&cfg, "SOFTNIC_", why, sizeof(why)) != 0) {
        fprintf(stderr, "softnic_peer: %s\n", why);
        return err(EINVAL, "config");
    }
    cfg.ifaces = ifaces.c_str();
    if (num(kv, "no_cma", 0)) {
        cfg.no_cma = 1;
    }
    if (num(kv, "no_ring", 0)) {
        cfg.no_ring = 1;
    }
    if (num(kv, "log", 0)) {
        cfg.log_level = SOFTNIC_LOG_DEBUG;
        cfg.log_fn    = keep_log;
    }
    g_peer.dev = softnic_dev_open(name.c_str(), &cfg);
    if (g_peer.dev == NULL) {
        return err(errno, "dev_open");
    }
    g_peer.pd = softnic_pd_alloc(g_peer.dev);
    if (g_peer.pd == NULL) {
        return err(errno, "pd_alloc");
    }
    if (num(kv, "channel", 0)) {
        g_peer.chan = softnic_comp_channel_create(g_peer.dev);
        if (g_peer.chan == NULL) {
            return err(errno, "comp_channel_create");
        }
    }
    g_peer.scq = softnic_cq_create(g_peer.dev, cqe, &g_peer.scq, g_peer.chan);
    g_peer.rcq = softnic_cq_create(g_peer.dev, cqe, &g_peer.rcq, g_peer.chan);
    if ((g_peer.scq == NULL) || (g_peer.rcq == NULL)) {
        return err(errno, "cq_create");
    }
    return "OK";
}

std::string cmd_mr(const kv_t &kv)
{
    int id        = (int)num(kv, "id", 0);
    size_t len    = num(kv, "len", 4096);
    size_t guard  = num(kv, "guard", 0);
    size_t offset = num(kv, "regoff", 0); /* register at buf+regoff */
    int access    = parse_access(str(kv, "access", "LW,RW,RR,RA"));
    peer_mr m;

    if (g_peer.mrs.count(id)) {
        return err(EEXIST, "mr_id");
    }
    m.guard   = guard;
    m.map_len = len + 2 * guard + offset;
    m.base    = (uint8_t *)mmap(NULL, m.map_len, PROT_READ | PROT_WRITE,
                                MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m.base == MAP_FAILED) {
        return err(errno, "mmap");
    }
    memset(m.base, GUARD_BYTE, m.map_len);
    m.buf = m.base + guard + offset;
    m.len = len;
    memset(m.buf, 0, len);
    m.mr = softnic_mr_reg(g_peer.pd, m.buf, len, access);
    if (m.mr == NULL) {
        int e = errno;
        munmap(m.base, m.map_len);
        return err(e, "mr_reg");
    }
    g_peer.mrs[id] = m;
    return fmt("OK addr=0x%" PRIxPTR " rkey=%u lkey=%u", (uintptr_t)m.buf,
               m.mr->rkey, m.mr->lkey);
}

/*
 * dereg id= [wait_nonzero=1 refill_seed=S]
 * wait_nonzero: first spin (bounded) until the region's first 8 bytes are
 * no longer zero, i.e. a peer's WRITEs are arriving; refill_seed: right
 * after softnic_mr_dereg() returns, fill the region with that pattern (the
 * test then checks that no later WRITE touched it).
 */
std::string cmd_dereg(const kv_t &kv)
{
    peer_mr *m = find_mr(kv, "id");
    if ((m == NULL) || (m->mr == NULL)) {
        return err(ENOENT, "mr");
    }
    if (num(kv, "wait_nonzero", 0)) {
        volatile uint64_t *p = (volatile uint64_t *)m->buf;
        double deadline      = now_ms() + 10000;
        while ((*p == 0) && (now_ms() < deadline)) {
        }
        if (*p == 0) {
            return err(ETIMEDOUT, "no_writes_arrived");
        }
    }
    int ret = softnic_mr_dereg(m->mr);
    if (ret) {
        return err(ret, "mr_dereg");
    }
    m->mr = NULL;
    if (has(kv, "refill_seed")) {
        uint32_t seed = (uint32_t)num(kv, "refill_seed", 0);
        for (size_t i = 0; i < m->len; ++i) {
            m->buf[i] = pattern_byte(seed, i);
        }
    }
    return "OK";
}

/* writeloop qp= mr= len= n= raddr= rkey=: signaled WRITEs one at a time
 * until one fails or n succeeded; replies ok=<successes> status=<last>. */
std::string cmd_writeloop(const kv_t &kv)
{
    softnic_qp_t *qp = find_qp(kv);
    peer_mr *m       = find_mr(kv);
    size_t n = num(kv, "n", 1000), len = num(kv, "len", 4096);
    size_t ok  = 0;
    int status = IBV_WC_SUCCESS;

    if ((qp == NULL) || (m == NULL) || (m->mr == NULL) || (len > m->len)) {
        return err(EINVAL, "writeloop_args");
    }
    while ((ok < n) && (status == IBV_WC_SUCCESS)) {
        ibv_sge sge = {(uintptr_t)m->buf, (uint32_t)len, m->mr->lkey};
        ibv_send_wr wr =
            rdma_wr(&sge, IBV_WR_RDMA_WRITE, ok, IBV_SEND_SIGNALED,
                    num(kv, "raddr", 0), (uint32_t)num(kv, "rkey", 0));
        ibv_send_wr *bad;
        int ret = softnic_post_send(qp, &wr, &bad);
        if (ret) {
            return err(ret, "post_send");
        }
        std::vector<ibv_wc> wcs;
        if (poll_n(g_peer.scq, 1, 10000, &wcs) != 1) {
            return fmt("ERR no_completion ok=%zu", ok);
        }
        status = wcs[0].status;
        ok += (status == IBV_WC_SUCCESS);
    }
    return fmt("OK ok=%zu status=%d", ok, status);
}

/* fill/check id= off= len= seed= [count= stride=]: region j gets seed+j. */
std::string cmd_fill_check(const kv_t &kv, bool check)
{
    peer_mr *m = find_mr(kv, "id");
    if (m == NULL) {
        return err(ENOENT, "mr");
    }
    size_t off = num(kv, "off", 0), len = num(kv, "len", m->len);
    uint32_t seed = (uint32_t)num(kv, "seed", 1);
    size_t count = num(kv, "count", 1), stride = num(kv, "stride", len);
    /* pattern position of the first byte: checks a sub-range of a fill */
    size_t pos = num(kv, "pos", 0);
    for (size_t j = 0; j < count; ++j) {
        size_t o = off + j * stride;
        if (o + len > m->len) {
            return err(ERANGE, "range");
        }
        for (size_t i = 0; i < len; ++i) {
            uint8_t want = pattern_byte(seed + (uint32_t)j, pos + i);
            if (!check) {
                m->buf[o + i] = want;
            } else if (m->buf[o + i] != want) {
                return fmt("ERR mismatch region=%zu off=%zu want=%u got=%u", j,
                           o + i, want, m->buf[o + i]);
            }
        }
    }
    return "OK";
}

std::string cmd_guardcheck(const kv_t &kv)
{
    peer_mr *m = find_mr(kv, "id");
    if (m == NULL) {
        return err(ENOENT, "mr");
    }
    for (uint8_t *p = m->base; p < m->base + m->map_len; ++p) {
        if ((p >= m->buf) && (p < m->buf + m->len)) {
            continue;
        }
        if (*p != GUARD_BYTE) {
            return fmt("ERR guard_modified off=%td", p - m->buf);
        }
    }
    return "OK";
}

std::string cmd_get_set64(const kv_t &kv, bool set)
{
    peer_mr *m = find_mr(kv, "id");
    size_t off = num(kv, "off", 0);
    if ((m == NULL) || (off + 8 > m->len)) {
        return err(ENOENT, "mr");
    }
    volatile uint64_t *p = (volatile uint64_t *)(m->buf + off);
    if (set) {
        *p = num(kv, "val", 0);
        return "OK";
    }
    return fmt("OK val=%" PRIu64, (uint64_t)*p);
}

std::string cmd_srq(const kv_t &kv)
{
    ibv_srq_init_attr attr = {};
    attr.attr.max_wr       = (uint32_t)num(kv, "max_wr", 1024);
    attr.attr.max_sge      = 1;
    g_peer.srq             = softnic_srq_create(g_peer.pd, &attr);
    return (g_peer.srq == NULL) ? err(errno, "srq_create") : "OK";
}

std::string cmd_qp(const kv_t &kv)
{
    int id                      = (int)num(kv, "id", 0);
    softnic_qp_init_attr_t attr = {};

    attr.send_cq             = g_peer.scq;
    attr.recv_cq             = g_peer.rcq;
    attr.srq                 = num(kv, "srq", 0) ? g_peer.srq : NULL;
    attr.cap.max_send_wr     = (uint32_t)num(kv, "sq", 512);
    attr.cap.max_recv_wr     = attr.srq ? 0 : (uint32_t)num(kv, "rq", 512);
    attr.cap.max_send_sge    = 8; /* SN_MAX_SGE: post's and recv's pieces= */
    attr.cap.max_recv_sge    = 8;
    attr.cap.max_inline_data = 64;
    attr.qp_type             = IBV_QPT_RC;
    attr.sq_sig_all          = (int)num(kv, "sig_all", 0);

    softnic_qp_t *qp = softnic_qp_create(g_peer.pd, &attr);
    if (qp == NULL) {
        return err(errno, "qp_create");
    }
    g_peer.qps[id] = qp;

    uint8_t addr[SOFTNIC_ADDR_LEN];
    int ret = softnic_dev_addr_pack(g_peer.dev, addr, sizeof(addr));
    if (ret) {
        return err(ret, "addr_pack");
    }
    return fmt("OK qpn=%u addr=", qp->qp_num) + to_hex(addr, sizeof(addr));
}

/* udqp id= qkey= [srq=1]: a UD QP brought to RTS */
std::string cmd_udqp(const kv_t &kv)
{
    softnic_qp_init_attr_t attr = {};
    ibv_qp_attr a;
    int ret;

    attr.send_cq             = g_peer.scq;
    attr.recv_cq             = g_peer.rcq;
    attr.srq                 = num(kv, "srq", 0) ? g_peer.srq : NULL;
    attr.cap.max_send_wr     = 512;
    attr.cap.max_recv_wr     = attr.srq ? 0 : 512;
    attr.cap.max_send_sge    = 2;
    attr.cap.max_recv_sge    = 2;
    attr.cap.max_inline_data = 64;
    attr.qp_type             = IBV_QPT_UD;
    softnic_qp_t *qp         = softnic_qp_create(g_peer.pd, &attr);
    if (qp == NULL) {
        return err(errno, "qp_create");
    }
    g_peer.qps[(int)num(kv, "id", 0)] = qp;
    memset(&a, 0, sizeof(a));
    a.qp_state = IBV_QPS_INIT;
    a.port_num = 1;
    a.qkey     = (uint32_t)num(kv, "qkey", 0x11111111);
    ret        = softnic_qp_modify(qp, &a,
                                   IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT |
                                       IBV_QP_QKEY);
    a.qp_state = IBV_QPS_RTR;
    ret        = ret ?: softnic_qp_modify(qp, &a, IBV_QP_STATE);
    a.qp_state = IBV_QPS_RTS;
    ret        = ret ?: softnic_qp_modify(qp, &a, IBV_QP_STATE | IBV_QP_SQ_PSN);
    if (ret) {
        return err(ret, "modify");
    }
    uint8_t addr[SOFTNIC_ADDR_LEN];
    ret = softnic_dev_addr_pack(g_peer.dev, addr, sizeof(addr));
    if (ret) {
        return err(ret, "addr_pack");
    }
    return fmt("OK qpn=%u addr=", qp->qp_num) + to_hex(addr, sizeof(addr));
}

/* udsend qp= addr= qpn= qkey= mr= off= len= wr= [imm=]: one signaled SEND
 * (SEND_WITH_IMM with imm=) to QP qpn of the device at addr */
std::string cmd_udsend(const kv_t &kv)
{
    softnic_qp_t *qp = find_qp(kv);
    peer_mr *m       = find_mr(kv);
    std::string key  = str(kv, "addr", "");
    std::vector<uint8_t> addr;
    ibv_ah_attr ah_attr;

    if ((qp == NULL) || (m == NULL) || !from_hex(key, &addr)) {
        return err(EINVAL, "udsend_args");
    }
    if (g_peer.ahs.count(key) == 0) {
        int ret = softnic_dev_addr_unpack(g_peer.dev, addr.data(), addr.size(),
                                          &ah_attr);
        if (ret) {
            return err(ret, "addr_unpack");
        }
        softnic_ah_t *ah = softnic_ah_create(g_peer.pd, &ah_attr);
        if (ah == NULL) {
            return err(errno, "ah_create");
        }
        g_peer.ahs[key] = ah;
    }
    ibv_sge sge = {(uintptr_t)(m->buf + num(kv, "off", 0)),
                   (uint32_t)num(kv, "len", 8), m->mr ? m->mr->lkey : 0};
    ibv_send_wr wr =
        ud_wr(&sge, has(kv, "imm") ? IBV_WR_SEND_WITH_IMM : IBV_WR_SEND,
              num(kv, "wr", 0), IBV_SEND_SIGNALED, (ibv_ah *)g_peer.ahs[key],
              (uint32_t)num(kv, "qpn", 0),
              (uint32_t)num(kv, "qkey", 0x11111111));
    ibv_send_wr *bad = NULL;
    wr.imm_data      = htonl((uint32_t)num(kv, "imm", 0));
    int ret          = softnic_post_send(qp, &wr, &bad);
    return ret ? err(ret, "post_send") : "OK";
}

std::string cmd_connect(const kv_t &kv)
{
    softnic_qp_t *qp = find_qp(kv);
    std::vector<uint8_t> addr;
    ibv_qp_attr a;
    ibv_port_attr port;
    int ret;

    if ((qp == NULL) || !from_hex(str(kv, "addr", ""), &addr)) {
        return err(EINVAL, "connect_args");
    }

    memset(&a, 0, sizeof(a));
    a.qp_state        = IBV_QPS_INIT;
    a.pkey_index      = 0;
    a.port_num        = 1;
    a.qp_access_flags = parse_access(str(kv, "access", "LW,RW,RR,RA"));
    ret               = softnic_qp_modify(qp, &a,
                                          IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT |
                                              IBV_QP_ACCESS_FLAGS);
    if (ret) {
        return err(ret, "modify_init");
    }
    if (str(kv, "upto", "RTS") == "INIT") {
        return "OK"; /* the QP stays in INIT */
    }

    ret = softnic_dev_query_port(g_peer.dev, 1, &port);
    if (ret) {
        return err(ret, "query_port");
    }
    memset(&a, 0, sizeof(a));
    ret = softnic_dev_addr_unpack(g_peer.dev, addr.data(), addr.size(),
                                  &a.ah_attr);
    if (ret) {
        return err(ret, "addr_unpack");
    }
    a.qp_state           = IBV_QPS_RTR;
    a.path_mtu           = port.active_mtu;
    a.dest_qp_num        = (uint32_t)num(kv, "qpn", 0);
    a.rq_psn             = (uint32_t)num(kv, "rpsn", 0);
    a.max_dest_rd_atomic = (uint8_t)num(kv, "rd_atomic", 16);
    a.min_rnr_timer      = (uint8_t)num(kv, "min_rnr", 12);
    ret =
        softnic_qp_modify(qp, &a,
                          IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU |
                              IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
                              IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER);
    if (ret) {
        return err(ret, "modify_rtr");
    }

    memset(&a, 0, sizeof(a));
    a.qp_state      = IBV_QPS_RTS;
    a.sq_psn        = (uint32_t)num(kv, "spsn", 0);
    a.timeout       = (uint8_t)num(kv, "timeout", 14);
    a.retry_cnt     = (uint8_t)num(kv, "retry", 7);
    a.rnr_retry     = (uint8_t)num(kv, "rnr_retry", 7);
    a.max_rd_atomic = (uint8_t)num(kv, "rd_atomic", 16);
    ret             = softnic_qp_modify(qp, &a,
                                        IBV_QP_STATE | IBV_QP_SQ_PSN | IBV_QP_TIMEOUT |
                                            IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY |
                                            IBV_QP_MAX_QP_RD_ATOMIC);
    if (ret) {
        return err(ret, "modify_rts");
    }
    return "OK";
}

/*
 * post qp= op= mr= off= len= raddr= rkey= flags= wr= [imm= cmp= swap= add=
 *      lkey= laddr= nsge= count= stride= rstride= siglast=]
 * count>1 posts a chain of count WRs (wr, wr+1, ...), local offset advancing
 * by stride and remote address by rstride; siglast=1 signals only the last.
 * each=1 posts them one softnic_post_send() call each, back to back (a
 * stream, as opposed to one post list); sendafter=1 then posts, right
 * away, an 8-byte SEND from the start of mr (wr = wr + count) with the
 * flags sendflags= (default S: signaled).
 * badrkey=K: the K-th WR (from 1) carries rkey with its top bit flipped,
 * a key the target never issued.
 * lead=N: N empty post lists (no WR) first, back to back with the posts
 * that follow: they count for a stream (sn_int.h, "Request coalescing")
 * and put nothing on the wire.
 * pieces=L1,L2,...: (count=1) the gather list is consecutive pieces of
 * those lengths from mr + off (len= is ignored).
 */
std::string cmd_post(const kv_t &kv)
{
    softnic_qp_t *qp = find_qp(kv);
    peer_mr *m       = find_mr(kv);
    ibv_wr_opcode op;

    if ((qp == NULL) || !parse_opcode(str(kv, "op", ""), &op)) {
        return err(EINVAL, "post_args");
    }
    size_t count   = num(kv, "count", 1);
    size_t len     = num(kv, "len", 8);
    size_t off     = num(kv, "off", 0);
    size_t stride  = num(kv, "stride", 0);
    size_t rstride = num(kv, "rstride", 0);
    int nsge       = (int)num(kv, "nsge", 1);
    int flags      = parse_send_flags(str(kv, "flags", "S"));
    bool siglast   = num(kv, "siglast", 0);
    std::vector<ibv_send_wr> wrs(count);
    std::vector<ibv_sge> sges(count);

    for (size_t j = 0; j < count; ++j) {
        ibv_send_wr &wr = wrs[j];
        ibv_sge &sge    = sges[j];
        memset(&wr, 0, sizeof(wr));
        sge.addr      = has(kv, "laddr")
                            ? num(kv, "laddr", 0)
                            : (m ? (uintptr_t)(m->buf + off + j * stride) : 0);
        sge.length    = (uint32_t)len;
        sge.lkey      = has(kv, "lkey") ? (uint32_t)num(kv, "lkey", 0)
                                        : ((m && m->mr) ? m->mr->lkey : 0);
        wr.wr_id      = num(kv, "wr", 0) + j;
        wr.sg_list    = &sge;
        wr.num_sge    = nsge;
        wr.opcode     = op;
        wr.send_flags = flags;
        if (siglast && (j + 1 < count)) {
            wr.send_flags &= ~IBV_SEND_SIGNALED;
        }
        wr.imm_data = htonl((uint32_t)num(kv, "imm", 0));
        if ((op == IBV_WR_ATOMIC_FETCH_AND_ADD) ||
            (op == IBV_WR_ATOMIC_CMP_AND_SWP)) {
            wr.wr.atomic.remote_addr = num(kv, "raddr", 0) + j * rstride;
            wr.wr.atomic.rkey        = (uint32_t)num(kv, "rkey", 0);
            wr.wr.atomic.compare_add = (op == IBV_WR_ATOMIC_FETCH_AND_ADD)
                                           ? num(kv, "add", 1)
                                           : num(kv, "cmp", 0);
            wr.wr.atomic.swap        = num(kv, "swap", 0);
            if (j + 1 == num(kv, "badrkey", 0)) {
                wr.wr.atomic.rkey ^= 1u << 31;
            }
        } else {
            wr.wr.rdma.remote_addr = num(kv, "raddr", 0) + j * rstride;
            wr.wr.rdma.rkey        = (uint32_t)num(kv, "rkey", 0);
            if (j + 1 == num(kv, "badrkey", 0)) {
                wr.wr.rdma.rkey ^= 1u << 31;
            }
        }
        wr.next = (j + 1 < count) ? &wrs[j + 1] : NULL;
    }
    std::vector<ibv_sge> pieces;
    if (has(kv, "pieces") && (m != NULL) && (count == 1)) {
        apply_pieces(kv, &wrs[0], m->buf + off, m->mr ? m->mr->lkey : 0,
                     &pieces);
    }

    ibv_send_wr *bad = NULL;
    int ret          = 0;
    for (size_t j = num(kv, "lead", 0); j > 0; --j) {
        ret = softnic_post_send(qp, NULL, &bad);
        if (ret) {
            return err(ret, "post_send (empty list)");
        }
    }
    if (num(kv, "each", 0)) {
        for (size_t j = 0; (j < count) && (ret == 0); ++j) {
            wrs[j].next = NULL;
            ret         = softnic_post_send(qp, &wrs[j], &bad);
        }
    } else {
        ret = softnic_post_send(qp, wrs.data(), &bad);
    }
    if ((ret == 0) && num(kv, "sendafter", 0)) {
        ibv_sge sge = {m ? (uintptr_t)m->buf : 0, 8,
                       (m && m->mr) ? m->mr->lkey : 0};
        ibv_send_wr send =
            one_sge_wr(&sge, IBV_WR_SEND, num(kv, "wr", 0) + count,
                       parse_send_flags(str(kv, "sendflags", "S")));
        ret = softnic_post_send(qp, &send, &bad);
    }
    if (ret) {
        return err(ret, "post_send") +
               fmt(" bad=%td", bad ? (bad - wrs.data()) : (ptrdiff_t)-1);
    }
    return "OK";
}

/* The SEND of len bytes (signaled or not) or the receive of as many at the
 * start of m */
int post_one(softnic_qp_t *qp, peer_mr *m, bool send, bool signaled,
             uint32_t len)
{
    ibv_sge sge = {(uintptr_t)m->buf, len, m->mr->lkey};
    ibv_send_wr *sbad;
    ibv_recv_wr rwr, *rbad;

    if (!send) {
        memset(&rwr, 0, sizeof(rwr));
        rwr.sg_list = &sge;
        rwr.num_sge = 1;
        return softnic_post_recv(qp, &rwr, &rbad);
    }
    ibv_send_wr swr =
        one_sge_wr(&sge, IBV_WR_SEND, 0, signaled ? IBV_SEND_SIGNALED : 0);
    return softnic_post_send(qp, &swr, &sbad);
}

/* The next completion event on the channel (bounded): the CQ it names */
softnic_cq_t *next_event(double timeout_ms)
{
    struct pollfd pfd = {g_peer.chan->fd, POLLIN, 0};
    void *ctx         = NULL;

    if ((poll(&pfd, 1, (int)timeout_ms) != 1) ||
        (softnic_cq_get_event(g_peer.chan, &ctx) != 0)) {
        return NULL;
    }
    softnic_cq_ack_events(*(softnic_cq_t **)ctx, 1);
    return *(softnic_cq_t **)ctx;
}

/* One round of ask: a signaled SEND, then the two events it brings (its
 * own completion, the answer's receive); 1 when the answer's came first,
 * 0 when the SEND's, -1 on an error */
int ask_once(softnic_qp_t *qp, peer_mr *m, uint32_t len, uint32_t recv_len)
{
    softnic_cq_t *first, *second;
    std::vector<ibv_wc> wcs;

    if ((softnic_cq_req_notify(g_peer.scq, 0) != 0) ||
        (softnic_cq_req_notify(g_peer.rcq, 0) != 0) ||
        (post_one(qp, m, true, true, len) != 0)) {
        return -1;
    }
    first  = next_event(10000);
    second = next_event(10000);
    if ((first == NULL) || (second == NULL) || (first == second) ||
        (poll_n(g_peer.scq, 1, 10000, &wcs) != 1) ||
        (poll_n(g_peer.rcq, 1, 10000, &wcs) != 1) ||
        (wcs[0].status != IBV_WC_SUCCESS) ||
        (wcs[1].status != IBV_WC_SUCCESS) ||
        (post_one(qp, m, false, false, recv_len) != 0)) {
        return -1;
    }
    return first == g_peer.rcq;
}

/* The last completion in error that poll_ok() saw (for pingpong's error) */
static ibv_wc g_bad_wc;

/* One completion of cq, if there is one: 1 (SUCCESS), 0 (none), -1 */
int poll_ok(softnic_cq_t *cq)
{
    ibv_wc wc;
    int ret = softnic_cq_poll(cq, 1, &wc);

    if ((ret == 1) && (wc.status != IBV_WC_SUCCESS)) {
        g_bad_wc = wc;
        return -1;
    }
    return (ret < 0) ? -1 : ret;
}

/* ask_once, spinning on both CQs instead of sleeping: 1 only when the
 * answer's receive was seen while the SEND's completion was not there
 * after it (no false alarm from the order of the two polls) */
int ask_spin_once(softnic_qp_t *qp, peer_mr *m, uint32_t len, uint32_t recv_len)
{
    double deadline = now_ms() + 10000;
    int sent = 0, got = 0, first = 0;

    if (post_one(qp, m, true, true, len) != 0) {
        return -1;
    }
    while (!(sent && got)) {
        if (!got && ((got = poll_ok(g_peer.rcq)) != 0)) {
            if ((got < 0) || (!sent && ((sent = poll_ok(g_peer.scq)) < 0))) {
                return -1;
            }
            first = !sent;
        }
        if (!sent && ((sent = poll_ok(g_peer.scq)) < 0)) {
            return -1;
        }
        if (now_ms() > deadline) {
            return -1;
        }
    }
    return (post_one(qp, m, false, false, recv_len) != 0) ? -1 : first;
}

/*
 * pingpong qp= mr= n= role=ask|answer [ask_len= answer_len= spin=1]: n SENDs
 * each way, of ask_len and answer_len bytes (8 each by default; the
 * receives reposted here take the larger), with
 * n receives posted by the test beforehand (reposted here as consumed).
 * answer: each receive is answered at once with an unsignaled SEND. ask
 * (needs open channel=1): sleeps on the channel of both CQs, as perftest's
 * latency tests with -e do: after each SEND, the first event must be the
 * send CQ's; answer_first= counts the rounds where the answer's receive
 * completed first. spin=1: ask spins on both CQs instead (no channel
 * needed).
 */
std::string cmd_pingpong(const kv_t &kv)
{
    softnic_qp_t *qp = find_qp(kv);
    peer_mr *m       = find_mr(kv);
    int n = (int)num(kv, "n", 1), answer_first = 0, i, ret;
    bool ask         = str(kv, "role", "") == "ask";
    uint32_t ask_len = (uint32_t)num(kv, "ask_len", 8);
    uint32_t ans_len = (uint32_t)num(kv, "answer_len", 8);
    uint32_t rlen    = std::max(ask_len, ans_len);
    std::vector<ibv_wc> wcs;

    bool spin = num(kv, "spin", 0) != 0;
    g_bad_wc  = ibv_wc{}; /* SUCCESS: none of this command's yet */

    if ((qp == NULL) || (m == NULL) || (m->mr == NULL) || (rlen > m->len) ||
        (ask && !spin && (g_peer.chan == NULL))) {
        return err(EINVAL, "pingpong_args");
    }
    for (i = 0; i < n; ++i) {
        if (ask) {
            ret = spin ? ask_spin_once(qp, m, ask_len, rlen)
                       : ask_once(qp, m, ask_len, rlen);
            if (ret < 0) {
                break;
            }
            answer_first += ret;
            continue;
        }
        wcs.clear();
        if ((poll_n(g_peer.rcq, 1, 10000, &wcs) != 1) ||
            (wcs[0].status != IBV_WC_SUCCESS) ||
            (post_one(qp, m, false, false, rlen) != 0) ||
            (post_one(qp, m, true, false, ans_len) != 0)) {
            break;
        }
    }
    if (i < n) {
        return err(EIO, "pingpong") + fmt(" round=%d", i) +
               ((g_bad_wc.status != IBV_WC_SUCCESS) ? " " + wc_str(g_bad_wc)
                                                    : "");
    }
    return fmt("OK n=%d answer_first=%d", n, answer_first);
}

/* recv qp= mr= off= len= wr= [count= stride= srq=1 pieces=: as post's] */
std::string cmd_recv(const kv_t &kv)
{
    peer_mr *m       = find_mr(kv);
    bool to_srq      = num(kv, "srq", 0);
    softnic_qp_t *qp = find_qp(kv);
    size_t count = num(kv, "count", 1), len = num(kv, "len", 64);
    size_t off = num(kv, "off", 0), stride = num(kv, "stride", len);
    std::vector<ibv_recv_wr> wrs(count);
    std::vector<ibv_sge> sges(count);

    if ((m == NULL) || (to_srq ? (g_peer.srq == NULL) : (qp == NULL))) {
        return err(EINVAL, "recv_args");
    }
    for (size_t j = 0; j < count; ++j) {
        memset(&wrs[j], 0, sizeof(wrs[j]));
        sges[j].addr   = (uintptr_t)(m->buf + off + j * stride);
        sges[j].length = (uint32_t)len;
        sges[j].lkey   = m->mr ? m->mr->lkey : 0;
        wrs[j].wr_id   = num(kv, "wr", 0) + j;
        wrs[j].sg_list = &sges[j];
        wrs[j].num_sge = 1;
        wrs[j].next    = (j + 1 < count) ? &wrs[j + 1] : NULL;
    }
    std::vector<ibv_sge> pieces;
    if (has(kv, "pieces") && (count == 1)) {
        apply_pieces(kv, &wrs[0], m->buf + off, m->mr ? m->mr->lkey : 0,
                     &pieces);
    }
    ibv_recv_wr *bad = NULL;
    int ret = to_srq ? softnic_post_srq_recv(g_peer.srq, wrs.data(), &bad)
                     : softnic_post_recv(qp, wrs.data(), &bad);
    return ret ? err(ret, "post_recv") : "OK";
}

/* poll cq=send|recv n= timeout= [until=: instead of timeout, the
 * CLOCK_MONOTONIC ms after which no poll starts] [spin=1: no backoff]
 * [then a "check" of id= off= len= seed= count= stride= if check=1] */
std::string cmd_poll(const kv_t &kv)
{
    std::vector<ibv_wc> wcs;
    double t0      = now_ms();
    double timeout = (double)num(kv, "timeout", 10000);
    if (has(kv, "until")) {
        timeout = std::max(0.0, (double)num(kv, "until", 0) - t0);
    }
    int ret        = poll_n(cq_by_name(kv), (int)num(kv, "n", 1), timeout, &wcs,
                            num(kv, "spin", 0) != 0);
    double elapsed = now_ms() - t0;
    if (num(kv, "exit", 0)) {
        /* end the process the moment the completions are in: exit status
         * 0 if all n arrived and succeeded */
        bool ok = (ret == (int)num(kv, "n", 1));
        for (const ibv_wc &wc : wcs) {
            ok = ok && (wc.status == IBV_WC_SUCCESS);
        }
        _exit(ok ? 0 : 1);
    }
    if (ret < 0) {
        return err(-ret, "cq_poll");
    }
    std::string check_res = "";
    if (num(kv, "check", 0)) {
        /* Right after the completion, before anything else. */
        check_res = cmd_fill_check(kv, true);
    }
    std::string out = fmt("OK n=%d ms=%.3f", ret, elapsed);
    if (!check_res.empty()) {
        out += (check_res == "OK") ? " check=ok" : " check=bad";
    }
    for (const ibv_wc &wc : wcs) {
        out += " " + wc_str(wc);
    }
    return out;
}

std::string cmd_query(const kv_t &kv)
{
    softnic_qp_t *qp = find_qp(kv);
    ibv_qp_attr a;
    softnic_qp_init_attr_t init;
    if (qp == NULL) {
        return err(EINVAL, "qp");
    }
    memset(&a, 0, sizeof(a));
    int ret = softnic_qp_query(qp, &a, IBV_QP_STATE, &init);
    return ret ? err(ret, "qp_query") : fmt("OK state=%d", (int)a.qp_state);
}

std::string cmd_modify(const kv_t &kv)
{
    softnic_qp_t *qp = find_qp(kv);
    ibv_qp_attr a;
    if (qp == NULL) {
        return err(EINVAL, "qp");
    }
    memset(&a, 0, sizeof(a));
    std::string s = str(kv, "state", "ERR");
    a.qp_state    = (s == "RESET") ? IBV_QPS_RESET : IBV_QPS_ERR;
    int ret       = softnic_qp_modify(qp, &a, IBV_QP_STATE);
    return ret ? err(ret, "qp_modify") : "OK";
}

std::string cmd_destroyqp(const kv_t &kv)
{
    softnic_qp_t *qp = find_qp(kv);
    if (qp == NULL) {
        return err(EINVAL, "qp");
    }
    int ret = softnic_qp_destroy(qp);
    if (ret) {
        return err(ret, "qp_destroy");
    }
    g_peer.qps.erase((int)num(kv, "qp", 0));
    return "OK";
}

/*
 * atomics qp= op=FADD|CAS mr= off= raddr= rkey= n= [inflight=]
 * FADD: n fetch-adds of 1, replies with every fetched value.
 * CAS:  n successful increments by compare-and-swap, replies with the
 *       number of attempts.
 */
std::string cmd_atomics(const kv_t &kv)
{
    softnic_qp_t *qp = find_qp(kv);
    peer_mr *m       = find_mr(kv);
    size_t n         = num(kv, "n", 100);
    bool cas         = str(kv, "op", "FADD") == "CAS";
    size_t off       = num(kv, "off", 0);
    std::string vals;
    uint64_t guess = 0, tries = 0, done = 0;

    if ((qp == NULL) || (m == NULL) || (off + 8 > m->len)) {
        return err(EINVAL, "atomics_args");
    }
    double deadline        = now_ms() + (double)num(kv, "timeout", 60000);
    volatile uint64_t *res = (volatile uint64_t *)(m->buf + off);
    while (done < n) {
        if ((now_ms() > deadline) || (tries > n * 1000)) {
            return fmt("ERR timeout done=%" PRIu64, done);
        }
        ibv_sge sge    = {(uintptr_t)res, 8, m->mr->lkey};
        ibv_send_wr wr = one_sge_wr(&sge,
                                    cas ? IBV_WR_ATOMIC_CMP_AND_SWP
                                        : IBV_WR_ATOMIC_FETCH_AND_ADD,
                                    tries, IBV_SEND_SIGNALED);
        ibv_send_wr *bad;
        wr.wr.atomic.remote_addr = num(kv, "raddr", 0);
        wr.wr.atomic.rkey        = (uint32_t)num(kv, "rkey", 0);
        wr.wr.atomic.compare_add = cas ? guess : 1;
        wr.wr.atomic.swap        = guess + 1;
        *res                     = 0xdeadbeefdeadbeefull;
        int ret                  = softnic_post_send(qp, &wr, &bad);
        if (ret) {
            return err(ret, "post_send");
        }
        ++tries;
        std::vector<ibv_wc> wcs;
        ret = poll_n(g_peer.scq, 1, 10000, &wcs);
        if (ret != 1) {
            return fmt("ERR no_completion done=%" PRIu64, done);
        }
        if (wcs[0].status != IBV_WC_SUCCESS) {
            return fmt("ERR status=%d done=%" PRIu64, wcs[0].status, done);
        }
        uint64_t v = *res;
        if (!cas) {
            vals += fmt("%" PRIu64 ",", v);
            ++done;
        } else if (v == guess) {
            ++done;
            guess = guess + 1;
        } else {
            guess = v;
        }
    }
    return cas ? fmt("OK tries=%" PRIu64, tries) : "OK vals=" + vals;
}

/*
 * connpath qpn=N (a QPN of this peer; the device opened with log=1): the
 * path its connection took, from softnic's message "qp 0x..: connected to
 * qp 0x.. (<path>)": path=tcp, path=cma or path=cma_ring; ERR if none yet.
 */
std::string cmd_connpath(const kv_t &kv)
{
    std::string needle =
        fmt("qp 0x%" PRIx64 ": connected to qp ", num(kv, "qpn", 0));
    std::string path;

    if (g_peer.dev == NULL) {
        return err(ENODEV, "no_device");
    }
    pthread_mutex_lock(&g_log_lock);
    for (const std::string &m : g_log) {
        if (m.compare(0, needle.size(), needle) == 0) {
            path = m.substr(m.find('(') + 1);
        }
    }
    pthread_mutex_unlock(&g_log_lock);
    if (path == "TCP)") {
        return "OK path=tcp";
    } else if (path == "same host, CMA)") {
        return "OK path=cma";
    } else if (path == "same host, CMA and ring)") {
        return "OK path=cma_ring";
    }
    return err(ENOENT, path.empty() ? "not_connected" : "unknown_path");
}

/* The inodes of this process's sockets, from its fd links */
bool socket_inodes(std::set<unsigned long> *inodes)
{
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL) {
        return false;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char path[300], link[128];
        snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
        ssize_t l = readlink(path, link, sizeof(link) - 1);
        if (l <= 0) {
            continue;
        }
        link[l] = 0;
        unsigned long ino;
        if (sscanf(link, "socket:[%lu]", &ino) == 1) {
            inodes->insert(ino);
        }
    }
    closedir(d);
    return true;
}

/* This process's TCP sockets in state st, from /proc/self/net/tcp (the
 * network namespace's sockets: ours are told by their inodes): "OK" and
 * " <key><i>=ip:port" (the local end) each, then " count=" */
std::string tcp_sockets(unsigned st, const char *key)
{
    std::set<unsigned long> inodes;
    if (!socket_inodes(&inodes)) {
        return err(errno, "opendir");
    }
    std::string out = "OK";
    FILE *f         = fopen("/proc/self/net/tcp", "r");
    if (f == NULL) {
        return err(errno, "fopen");
    }
    char line[512];
    int count = 0;
    while (fgets(line, sizeof(line), f)) {
        unsigned ip, port, state;
        unsigned long ino;
        if (sscanf(line,
                   " %*d: %x:%x %*x:%*x %x %*x:%*x %*x:%*x %*x %*u %*u %lu",
                   &ip, &port, &state, &ino) != 4) {
            continue;
        }
        if ((state != st) || !inodes.count(ino)) {
            continue;
        }
        struct in_addr in;
        in.s_addr = ip;
        out += fmt(" %s%d=%s:%u", key, count++, inet_ntoa(in), port);
    }
    fclose(f);
    return out + fmt(" count=%d", count);
}

/* listeners: this process's TCP sockets in LISTEN state (l0=ip:port ...
 * count=) */
std::string cmd_listeners()
{
    return tcp_sockets(0x0A, "l");
}

/* tcpconns: this process's ESTABLISHED TCP connections (c0=ip:port, the
 * local end, ... count=): the connections softnic keeps, and rawopen's */
std::string cmd_tcpconns()
{
    return tcp_sockets(0x01, "c");
}

int raw_connect(const std::string &host, unsigned port)
{
    struct sockaddr_in sa = {};
    int fd                = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        return -1;
    }
    sa.sin_family = AF_INET;
    sa.sin_port   = htons((uint16_t)port);
    inet_pton(AF_INET, host.c_str(), &sa.sin_addr);
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

int g_raw_timeouts;

/* Send all of data (stops early when the other side closes on us) */
size_t raw_send(int fd, const std::vector<uint8_t> &data)
{
    size_t sent = 0;
    while (sent < data.size()) {
        ssize_t r =
            send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
        if (r <= 0) {
            break;
        }
        sent += (size_t)r;
    }
    return sent;
}

/* Read until `want` bytes came (SIZE_MAX: until EOF), keeping the first
 * `keep` of them in *got (if not NULL). Bounded by SO_RCVTIMEO and by
 * count. Returns 1 at EOF, 0 when `want` came, -1 on timeout or error. */
int raw_read(int fd, size_t want, size_t keep, std::vector<uint8_t> *got)
{
    char buf[4096];
    size_t total = 0;
    for (int i = 0; i < 4096; ++i) {
        size_t ask = std::min(sizeof(buf), want - total);
        ssize_t r  = recv(fd, buf, ask, 0);
        if (r == 0) {
            return 1;
        }
        if (r < 0) {
            return -1;
        }
        for (ssize_t k = 0; (got != NULL) && (k < r) && (got->size() < keep);
             ++k) {
            got->push_back((uint8_t)buf[k]);
        }
        total += (size_t)r;
        if (total == want) {
            return 0;
        }
    }
    errno = EMSGSIZE;
    return -1;
}

/* Send bytes (ignoring a peer that closes on us), then close. If
 * wait_close, wait (bounded) for the other side to react first. */
bool raw_session(const std::string &host, unsigned port,
                 const std::vector<uint8_t> &data, bool wait_close,
                 size_t *sent_total)
{
    int fd = raw_connect(host, port);
    if (fd < 0) {
        return false;
    }
    *sent_total += raw_send(fd, data);
    if (wait_close) {
        shutdown(fd, SHUT_WR);
        if ((raw_read(fd, SIZE_MAX, 0, NULL) < 0) &&
            ((errno == EAGAIN) || (errno == EWOULDBLOCK))) {
            ++g_raw_timeouts; /* the target kept the connection open */
        }
    }
    close(fd);
    return true;
}

/*
 * raw host= port= case=connect_close|short|garbage|oversized|lying|hex
 * A hostile TCP client: it knows nothing of the wire format except that
 * frames probably start with a header holding lengths and a QPN. "hex"
 * sends data= verbatim (frames crafted by the test).
 */
std::string cmd_raw(const kv_t &kv)
{
    std::string host = str(kv, "host", "127.0.0.1");
    unsigned port    = (unsigned)num(kv, "port", 0);
    std::string c    = str(kv, "case", "garbage");
    size_t sent      = 0;
    int sessions     = 0;
    unsigned rnd     = (unsigned)num(kv, "seed", 1);
    double t0        = now_ms();

    g_raw_timeouts = 0;

    if (c == "connect_close") {
        for (int i = 0; i < 16; ++i) {
            sessions += raw_session(host, port, {}, false, &sent);
        }
    } else if (c == "short") {
        for (size_t l = 1; l < 24; ++l) {
            std::vector<uint8_t> d(l, (uint8_t)l);
            sessions += raw_session(host, port, d, false, &sent);
        }
    } else if (c == "garbage") {
        for (int s = 0; s < 8; ++s) {
            std::vector<uint8_t> d(65536);
            for (auto &b : d) {
                b = (uint8_t)rand_r(&rnd);
            }
            sessions += raw_session(host, port, d, true, &sent);
        }
    } else if (c == "oversized") {
        std::vector<uint8_t> d(4 << 20, 0xff);
        sessions += raw_session(host, port, d, true, &sent);
        std::vector<uint8_t> d2(4 << 20, 0x7f);
        sessions += raw_session(host, port, d2, true, &sent);
    } else if (c == "lying") {
        static const uint32_t vals[] = {0xffffffffu, 0x7fffffffu, 0x10000000u,
                                        0x00100000u, 0x1000u,     64u,
                                        1u};
        for (size_t k = 0; k < 64; k += 4) {
            for (uint32_t v : vals) {
                std::vector<uint8_t> d(80, (k & 4) ? 0x01 : 0x00);
                memcpy(&d[k], &v, 4);
                sessions += raw_session(host, port, d, true, &sent);
            }
        }
    } else if (c == "hex") {
        std::vector<uint8_t> d;
        if (!from_hex(str(kv, "data", ""), &d)) {
            return err(EINVAL, "hex");
        }
        sessions += raw_session(host, port, d, true, &sent);
    } else {
        return err(EINVAL, "case");
    }
    return fmt("OK sessions=%d sent=%zu open_after_eof=%d ms=%.0f", sessions,
               sent, g_raw_timeouts, now_ms() - t0);
}

/*
 * rawopen host= port= [data=hex] [expect=N]: a raw TCP connection that
 * stays open (one at a time): send data, then read N bytes (bounded).
 * Replies got_len= got= (the bytes read, hex).
 * rawclose [data=hex]: send data on it, end our side, read (bounded) until
 * the other side closes too, close. Replies got_len= got= eof=1|0.
 * With them a test speaks the wire protocol step by step, and sees what the
 * target answers (or not) between its steps.
 */
std::string raw_reply(int ret_eof, const std::vector<uint8_t> &got)
{
    return fmt("OK got_len=%zu eof=%d got=", got.size(), ret_eof == 1) +
           to_hex(got.data(), got.size());
}

std::string cmd_rawopen(const kv_t &kv)
{
    std::vector<uint8_t> d, got;
    size_t expect = (size_t)num(kv, "expect", 0);

    if ((g_peer.raw_fd >= 0) || !from_hex(str(kv, "data", ""), &d)) {
        return err(EINVAL, "rawopen_args");
    }
    g_peer.raw_fd =
        raw_connect(str(kv, "host", "127.0.0.1"), (unsigned)num(kv, "port", 0));
    if (g_peer.raw_fd < 0) {
        return err(errno, "connect");
    }
    if (raw_send(g_peer.raw_fd, d) != d.size()) {
        return err(EPIPE, "send");
    }
    int ret = (expect > 0) ? raw_read(g_peer.raw_fd, expect, expect, &got) : 0;
    return raw_reply(ret, got);
}

std::string cmd_rawclose(const kv_t &kv)
{
    std::vector<uint8_t> d, got;

    if ((g_peer.raw_fd < 0) || !from_hex(str(kv, "data", ""), &d)) {
        return err(EINVAL, "rawclose_args");
    }
    raw_send(g_peer.raw_fd, d);
    shutdown(g_peer.raw_fd, SHUT_WR);
    int ret = raw_read(g_peer.raw_fd, SIZE_MAX, 65536, &got);
    close(g_peer.raw_fd);
    g_peer.raw_fd = -1;
    return raw_reply(ret, got);
}

/*
 * scribble mode=rand|ff|zero [seed=]: play a broken or hostile same-host
 * initiator: overwrite every shared-memory SEND ring of softnic mapped into
 * this process (/dev/shm/orc_soft.*.r*, mapped read-write) with garbage.
 */
std::string cmd_scribble(const kv_t &kv)
{
    std::string mode = str(kv, "mode", "rand");
    unsigned rnd     = (unsigned)num(kv, "seed", 7);
    FILE *f          = fopen("/proc/self/maps", "r");
    char line[1024];
    int count    = 0;
    size_t bytes = 0;

    if (f == NULL) {
        return err(errno, "maps");
    }
    while (fgets(line, sizeof(line), f)) {
        unsigned long start, end;
        char perms[8];
        if ((sscanf(line, "%lx-%lx %7s", &start, &end, perms) != 3) ||
            (strstr(line, "/orc_soft.") == NULL) ||
            (strstr(line, ".r") == NULL) || (perms[0] != 'r') ||
            (perms[1] != 'w')) {
            continue;
        }
        uint8_t *p = (uint8_t *)start;
        for (size_t i = 0; i < end - start; ++i) {
            p[i] = (mode == "ff")     ? 0xff
                   : (mode == "zero") ? 0
                                      : (uint8_t)rand_r(&rnd);
        }
        bytes += end - start;
        ++count;
    }
    fclose(f);
    return fmt("OK rings=%d bytes=%zu", count, bytes);
}

/* Spin without calling the library until a byte arrives on the command
 * socket (checked with a zero-timeout poll every few million iterations). */
std::string cmd_spin_until_command()
{
    volatile uint64_t x = 1;
    double deadline     = now_ms() + 120000;
    struct pollfd pfd   = {g_peer.fd, POLLIN, 0};
    while (now_ms() < deadline) {
        for (int i = 0; i < (1 << 20); ++i) {
            x = x * 6364136223846793005ull + 1;
        }
        if ((poll(&pfd, 1, 0) > 0) || !g_peer.inbuf.empty()) {
            break;
        }
    }
    return "";
}

std::string dispatch(const std::string &line, bool *quit)
{
    std::string cmd;
    kv_t kv;
    parse_line(line, &cmd, &kv, NULL);

    if (cmd == "ping")
        return fmt("OK pong pid=%d", (int)getpid());
    if (cmd == "open")
        return cmd_open(kv);
    if (cmd == "mr")
        return cmd_mr(kv);
    if (cmd == "dereg")
        return cmd_dereg(kv);
    if (cmd == "fill")
        return cmd_fill_check(kv, false);
    if (cmd == "check")
        return cmd_fill_check(kv, true);
    if (cmd == "guardcheck")
        return cmd_guardcheck(kv);
    if (cmd == "get64")
        return cmd_get_set64(kv, false);
    if (cmd == "set64")
        return cmd_get_set64(kv, true);
    if (cmd == "srq")
        return cmd_srq(kv);
    if (cmd == "qp")
        return cmd_qp(kv);
    if (cmd == "connect")
        return cmd_connect(kv);
    if (cmd == "udqp")
        return cmd_udqp(kv);
    if (cmd == "udsend")
        return cmd_udsend(kv);
    if (cmd == "post")
        return cmd_post(kv);
    if (cmd == "pingpong")
        return cmd_pingpong(kv);
    if (cmd == "recv")
        return cmd_recv(kv);
    if (cmd == "poll")
        return cmd_poll(kv);
    if (cmd == "query")
        return cmd_query(kv);
    if (cmd == "modify")
        return cmd_modify(kv);
    if (cmd == "destroyqp")
        return cmd_destroyqp(kv);
    if (cmd == "scribble")
        return cmd_scribble(kv);
    if (cmd == "writeloop")
        return cmd_writeloop(kv);
    if (cmd == "atomics")
        return cmd_atomics(kv);
    if (cmd == "listeners")
        return cmd_listeners();
    if (cmd == "tcpconns")
        return cmd_tcpconns();
    if (cmd == "connpath")
        return cmd_connpath(kv);
    if (cmd == "raw")
        return cmd_raw(kv);
    if (cmd == "rawopen")
        return cmd_rawopen(kv);
    if (cmd == "rawclose")
        return cmd_rawclose(kv);
    if (cmd == "kill") {
        raise(SIGKILL);
    }
    if (cmd == "exit") {
        *quit = true;
        return "OK";
    }
    return err(EINVAL, "unknown_command");
}

bool reply(const std::string &s)
{
    std::string l = s + "\n";
    size_t off    = 0;
    while (off < l.size()) {
        ssize_t r = write(g_peer.fd, l.data() + off, l.size() - off);
        if (r <= 0) {
            return false;
        }
        off += (size_t)r;
    }
    return true;
}

void cleanup()
{
    for (auto &q : g_peer.qps) {
        softnic_qp_destroy(q.second);
    }
    for (auto &a : g_peer.ahs) {
        softnic_ah_destroy(a.second);
    }
    if (g_peer.raw_fd >= 0)
        close(g_peer.raw_fd);
    if (g_peer.srq)
        softnic_srq_destroy(g_peer.srq);
    for (auto &m : g_peer.mrs) {
        if (m.second.mr)
            softnic_mr_dereg(m.second.mr);
    }
    if (g_peer.scq)
        softnic_cq_destroy(g_peer.scq);
    if (g_peer.rcq)
        softnic_cq_destroy(g_peer.rcq);
    if (g_peer.chan)
        softnic_comp_channel_destroy(g_peer.chan);
    if (g_peer.pd)
        softnic_pd_dealloc(g_peer.pd);
    if (g_peer.dev)
        softnic_dev_close(g_peer.dev);
}

} /* namespace */

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s <command socket fd>\n", argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    g_peer.fd = atoi(argv[1]);

    bool quit = false;
    char buf[65536];
    while (!quit) {
        size_t nl = g_peer.inbuf.find('\n');
        if (nl == std::string::npos) {
            /* Idle: blocked in read(), never in the device layer. */
            ssize_t r = read(g_peer.fd, buf, sizeof(buf));
            if (r <= 0) {
                break; /* the test went away */
            }
            g_peer.inbuf.append(buf, (size_t)r);
            continue;
        }
        std::string line = g_peer.inbuf.substr(0, nl);
        g_peer.inbuf.erase(0, nl + 1);
        if (line == "spin") {
            /* reply first, then spin until the next command arrives */
            if (!reply("OK spinning"))
                break;
            cmd_spin_until_command();
            continue;
        }
        if (!reply(dispatch(line, &quit))) {
            break;
        }
    }
    cleanup();
    return 0;
}
