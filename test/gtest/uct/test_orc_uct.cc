/*
 * UCT-level tests of the orc transport over softnic (soft_lo), paired
 * through a child orcd on a free loopback port.
 */
#include "orc_uct_env.h"

extern "C" {
#include "orc_client.h"
#include "orc_dev.h"
#include <ucs/config/global_opts.h>
#include <ucs/debug/log_def.h>
}

#include <algorithm>
#include <dlfcn.h>
#include <functional>
#include <mutex>
#include <set>
#include <sstream>
#include <stdarg.h>
#include <string.h>
#include <poll.h>
#include <unistd.h>

using namespace orc_test;

namespace
{

class orc_environment : public ::testing::Environment
{
  public:
    void SetUp() override
    {
        uct_env::setup();
    }
    void TearDown() override
    {
        uct_env::teardown();
    }
};

::testing::Environment *const g_env =
    ::testing::AddGlobalTestEnvironment(new orc_environment);

void fill_pattern(void *buf, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; ++i) {
        ((uint8_t *)buf)[i] = (uint8_t)(seed + i * 7 + (i >> 8));
    }
}

struct pack_arg {
    const void *src;
    size_t len;
};

size_t pack_cb(void *dest, void *arg)
{
    pack_arg *a = (pack_arg *)arg;
    memcpy(dest, a->src, a->len);
    return a->len;
}

void unpack_cb(void *arg, const void *data, size_t length)
{
    memcpy(arg, data, length);
}

struct comp_t {
    uct_completion_t uct;
    int done;
    ucs_status_t status;
};

void comp_cb(uct_completion_t *self)
{
    comp_t *c = ucs_container_of(self, comp_t, uct);
    c->done++;
    c->status = self->status;
}

void comp_init(comp_t *c, int count = 1)
{
    c->uct.func   = comp_cb;
    c->uct.count  = count;
    c->uct.status = UCS_OK;
    c->done       = 0;
    c->status     = UCS_OK;
}

struct am_rx {
    std::vector<std::vector<uint8_t>> msgs;
};

ucs_status_t am_cb(void *arg, void *data, size_t length, unsigned)
{
    am_rx *rx = (am_rx *)arg;
    rx->msgs.emplace_back((uint8_t *)data, (uint8_t *)data + length);
    return UCS_OK;
}

/* A sender s with an ep e to a receiver r whose AM handler 1 collects into
 * rx; a peer gets at most n AM credits (UCX_ORC_AM_CREDITS) */
struct am_pair {
    scoped_setenv credits;
    entity s, r;
    am_rx rx;
    uct_ep_h e = NULL;

    explicit am_pair(const char *n) : credits("UCX_ORC_AM_CREDITS", n) {}

    /* open both ifaces and connect e; false on a failure */
    bool open()
    {
        return (s.open() == UCS_OK) && (r.open() == UCS_OK) &&
               (uct_iface_set_am_handler(r.iface(), 1, am_cb, &rx, 0) ==
                UCS_OK) &&
               ((e = s.connect_and_wait(r)) != NULL);
    }

    /* empty AMs on e until refused (r does not progress: its credits run
     * out); how many went */
    size_t exhaust_credits()
    {
        size_t n = 0;
        while ((uct_ep_am_short(e, 1, 0, NULL, 0) == UCS_OK) && (n < 1000)) {
            ++n;
        }
        EXPECT_LT(n, 1000u) << "no flow control";
        return n;
    }
};

} // namespace

class OrcUct : public ::testing::Test
{
  protected:
    void SetUp() override
    {
        ASSERT_EQ(UCS_OK, a.open());
        ASSERT_EQ(UCS_OK, b.open());
        ep = a.connect_and_wait(b);
        ASSERT_TRUE(ep != NULL);
    }

    void flush_ep(entity &e, uct_ep_h the_ep)
    {
        comp_t c;
        comp_init(&c);
        ucs_status_t status = uct_ep_flush(the_ep, 0, &c.uct);
        if (status == UCS_INPROGRESS) {
            ASSERT_TRUE(e.progress_until([&]() { return c.done > 0; }));
            status = c.status;
        }
        ASSERT_EQ(UCS_OK, status);
    }

    /* One 8-byte put through e, retried while e pairs, then flushed: e is
     * paired and its path to the target works */
    void put_paired(uct_ep_h e, uint64_t addr, uct_rkey_t rkey)
    {
        uint64_t v = 5;
        ASSERT_EQ(UCS_OK, retry([&]() {
                      return uct_ep_put_short(e, &v, 8, addr, rkey);
                  }));
        flush_ep(a, e);
    }

    /* A zero-copy operation with completion c returned status: UCS_OK
     * (finished at once: c is never called) or UCS_INPROGRESS (c is called
     * once, with UCS_OK) */
    void wait_zcopy(ucs_status_t status, comp_t &c)
    {
        ASSERT_TRUE((status == UCS_OK) || (status == UCS_INPROGRESS))
            << ucs_status_string(status);
        if (status == UCS_INPROGRESS) {
            ASSERT_TRUE(a.progress_until([&]() { return c.done > 0; }));
            ASSERT_EQ(UCS_OK, c.status);
        }
        a.progress(100);
        EXPECT_EQ((status == UCS_OK) ? 0 : 1, c.done)
            << "completion callbacks of an operation";
    }

    /* op(completion) must stay in flight (UCS_INPROGRESS; retried while
     * out of resources): waits for its completion, which must say UCS_OK */
    template<typename F> void wait_in_flight(F op)
    {
        comp_t c;
        comp_init(&c);
        ASSERT_EQ(UCS_INPROGRESS, retry([&]() { return op(&c.uct); }));
        ASSERT_TRUE(a.progress_until([&]() { return c.done > 0; }));
        ASSERT_EQ(UCS_OK, c.status);
    }

    template<typename F> ucs_status_t retry(F op)
    {
        ucs_status_t status;
        double deadline = entity::now() + 10;
        do {
            status = op();
            if (status != UCS_ERR_NO_RESOURCE) {
                break;
            }
            a.progress();
            b.progress();
        } while (entity::now() < deadline);
        return status;
    }

    entity a, b;
    uct_ep_h ep = NULL;
};

TEST_F(OrcUct, Query)
{
    const uct_iface_attr_t &attr = a.attr();
    uint64_t need = UCT_IFACE_FLAG_PUT_SHORT | UCT_IFACE_FLAG_PUT_BCOPY |
                    UCT_IFACE_FLAG_PUT_ZCOPY | UCT_IFACE_FLAG_GET_BCOPY |
                    UCT_IFACE_FLAG_GET_ZCOPY | UCT_IFACE_FLAG_AM_SHORT |
                    UCT_IFACE_FLAG_AM_BCOPY | UCT_IFACE_FLAG_AM_ZCOPY |
                    UCT_IFACE_FLAG_PENDING | UCT_IFACE_FLAG_CONNECT_TO_IFACE |
                    UCT_IFACE_FLAG_ERRHANDLE_PEER_FAILURE |
                    UCT_IFACE_FLAG_EP_CHECK;
    EXPECT_EQ(need, attr.cap.flags & need);
    EXPECT_FALSE(attr.cap.flags & UCT_IFACE_FLAG_CONNECT_TO_EP);
    EXPECT_EQ(12u, attr.iface_addr_len); /* node id, iface id */
    EXPECT_GT(attr.device_addr_len, 0u);
    EXPECT_GT(attr.bandwidth.shared + attr.bandwidth.dedicated, 0);
    EXPECT_GT(attr.latency.c, 0);
    /* only exact atomics: 64-bit, none of the bitwise ones, no 32-bit */
    EXPECT_EQ(0u, attr.cap.atomic32.op_flags | attr.cap.atomic32.fop_flags);
    EXPECT_FALSE(attr.cap.atomic64.fop_flags & UCS_BIT(UCT_ATOMIC_OP_AND));
    EXPECT_TRUE(
        uct_iface_is_reachable(a.iface(),
                               (uct_device_addr_t *)b.dev_addr().data(),
                               (uct_iface_addr_t *)b.iface_addr().data()));

    uct_md_attr_t md_attr;
    ASSERT_EQ(UCS_OK, uct_md_query(a.md(), &md_attr));
    EXPECT_TRUE(md_attr.cap.flags & UCT_MD_FLAG_REG);
    EXPECT_EQ(4u, md_attr.rkey_packed_size);
    EXPECT_STREQ("orc", md_attr.component_name);
}

TEST_F(OrcUct, RegisterInvalidMemoryFails)
{
    uct_mem_h memh;
    /* unmapped address range */
    void *bad = (void *)0x10000;
    EXPECT_NE(UCS_OK, uct_md_mem_reg(a.md(), bad, 4096,
                                     UCT_MD_MEM_ACCESS_ALL |
                                         UCT_MD_MEM_FLAG_HIDE_ERRORS,
                                     &memh));
    /* the registration cache hands out the same region again */
    entity::mem m = b.alloc_mem(1 << 16);
    uct_mem_h memh2;
    ASSERT_EQ(UCS_OK, uct_md_mem_reg(b.md(), m.ptr, 1 << 16,
                                     UCT_MD_MEM_ACCESS_ALL, &memh2));
    EXPECT_EQ(UCS_OK, uct_md_mem_dereg(b.md(), memh2));
    b.free_mem(m);
}

TEST_F(OrcUct, PutShortBcopyZcopy)
{
    const uct_iface_attr_t &attr = a.attr();
    size_t max                   = std::max(
                          {attr.cap.put.max_short, attr.cap.put.max_bcopy, (size_t)(1 << 20)});
    entity::mem dst = b.alloc_mem(max);
    entity::mem src = a.alloc_mem(max);
    uct_rkey_t rkey = a.unpack_rkey(dst.rkey_buf);

    std::vector<size_t> short_sizes = {0, 1, 8, attr.cap.put.max_short};
    std::vector<size_t> bcopy_sizes = {0, 1, 8, 4096, attr.cap.put.max_bcopy};
    std::vector<size_t> zcopy_sizes = {1, 8, 65536, 1 << 20};
    unsigned seed                   = 1;

    for (size_t len : short_sizes) {
        memset(dst.ptr, 0, max);
        fill_pattern(src.ptr, len, ++seed);
        ASSERT_EQ(UCS_OK, retry(
                              [&]() {
            return uct_ep_put_short(ep, src.ptr, len, (uintptr_t)dst.ptr, rkey);
        })) << len;
        flush_ep(a, ep);
        EXPECT_EQ(0, memcmp(src.ptr, dst.ptr, len)) << "put_short " << len;
        EXPECT_EQ(0, ((uint8_t *)dst.ptr)[len]) << "wrote past the end";
    }

    for (size_t len : bcopy_sizes) {
        memset(dst.ptr, 0, max);
        fill_pattern(src.ptr, len, ++seed);
        pack_arg arg = {src.ptr, len};
        ssize_t ret;
        double deadline = entity::now() + 10;
        do {
            ret = uct_ep_put_bcopy(ep, pack_cb, &arg, (uintptr_t)dst.ptr, rkey);
            a.progress();
        } while ((ret == UCS_ERR_NO_RESOURCE) && (entity::now() < deadline));
        ASSERT_EQ((ssize_t)len, ret);
        flush_ep(a, ep);
        EXPECT_EQ(0, memcmp(src.ptr, dst.ptr, len)) << "put_bcopy " << len;
    }

    for (size_t len : zcopy_sizes) {
        memset(dst.ptr, 0, max);
        fill_pattern(src.ptr, len, ++seed);
        uct_iov_t iov = {src.ptr, len, src.memh, 0, 1};
        comp_t c;
        comp_init(&c);
        ucs_status_t status = retry([&]() {
            return uct_ep_put_zcopy(ep, &iov, 1, (uintptr_t)dst.ptr, rkey,
                                    &c.uct);
        });
        ASSERT_TRUE((status == UCS_OK) || (status == UCS_INPROGRESS));
        if (status == UCS_INPROGRESS) {
            ASSERT_TRUE(a.progress_until([&]() { return c.done > 0; }));
            ASSERT_EQ(UCS_OK, c.status);
        }
        EXPECT_EQ(0, memcmp(src.ptr, dst.ptr, len)) << "put_zcopy " << len;
    }

    a.free_mem(src);
    b.free_mem(dst);
}

TEST_F(OrcUct, ZcopyIov)
{
    const size_t len = 3 * 1000 + 17;
    entity::mem dst  = b.alloc_mem(len);
    entity::mem src  = a.alloc_mem(len);
    uct_rkey_t rkey  = a.unpack_rkey(dst.rkey_buf);
    fill_pattern(src.ptr, len, 33);

    /* put with 3 iovs (one empty), then get back with 2 */
    uct_iov_t iov[4] = {
        {src.ptr, 1000, src.memh, 0, 1},
        {(char *)src.ptr + 1000, 0, src.memh, 0, 1},
        {(char *)src.ptr + 1000, 2000, src.memh, 0, 1},
        {(char *)src.ptr + 3000, 17, src.memh, 0, 1},
    };
    ASSERT_LE(4u, a.attr().cap.put.max_iov);
    /* done at once or in flight: on one host softnic runs a WRITE posted
     * after a wait (the polls that brought the connection up) in the post */
    comp_t c;
    comp_init(&c);
    ucs_status_t status = retry([&]() {
        return uct_ep_put_zcopy(ep, iov, 4, (uintptr_t)dst.ptr, rkey, &c.uct);
    });
    ASSERT_NO_FATAL_FAILURE(wait_zcopy(status, c));
    EXPECT_EQ(0, memcmp(src.ptr, dst.ptr, len));

    entity::mem back  = a.alloc_mem(len);
    uct_iov_t giov[2] = {
        {back.ptr, 1234, back.memh, 0, 1},
        {(char *)back.ptr + 1234, len - 1234, back.memh, 0, 1},
    };
    comp_t g;
    comp_init(&g);
    status = retry([&]() {
        return uct_ep_get_zcopy(ep, giov, 2, (uintptr_t)dst.ptr, rkey, &g.uct);
    });
    ASSERT_NO_FATAL_FAILURE(wait_zcopy(status, g));
    EXPECT_EQ(0, memcmp(src.ptr, back.ptr, len));

    /* more iovs than advertised is refused */
    std::vector<uct_iov_t> many(a.attr().cap.put.max_iov + 1,
                                uct_iov_t{src.ptr, 1, src.memh, 0, 1});
    EXPECT_EQ(UCS_ERR_INVALID_PARAM,
              uct_ep_put_zcopy(ep, many.data(), many.size(), (uintptr_t)dst.ptr,
                               rkey, NULL));
    a.free_mem(back);
    a.free_mem(src);
    b.free_mem(dst);
}

TEST_F(OrcUct, GetBcopyZcopy)
{
    const uct_iface_attr_t &attr = a.attr();
    size_t max                   = 1 << 20;
    entity::mem src              = b.alloc_mem(max);
    entity::mem dst              = a.alloc_mem(max);
    uct_rkey_t rkey              = a.unpack_rkey(src.rkey_buf);
    fill_pattern(src.ptr, max, 77);

    for (size_t len : {(size_t)0, (size_t)1, (size_t)8, (size_t)4096,
                       attr.cap.get.max_bcopy}) {
        std::vector<uint8_t> out(len + 1, 0xee);
        comp_t c;
        comp_init(&c);
        ucs_status_t status = retry([&]() {
            return uct_ep_get_bcopy(ep, unpack_cb, out.data(), len,
                                    (uintptr_t)src.ptr, rkey, &c.uct);
        });
        ASSERT_TRUE((status == UCS_OK) || (status == UCS_INPROGRESS)) << len;
        if (status == UCS_INPROGRESS) {
            ASSERT_TRUE(a.progress_until([&]() { return c.done > 0; }));
            ASSERT_EQ(UCS_OK, c.status);
        }
        EXPECT_EQ(0, memcmp(out.data(), src.ptr, len)) << "get_bcopy " << len;
        EXPECT_EQ(0xee, out[len]);
    }

    for (size_t len : {(size_t)1, (size_t)8, (size_t)65536, max}) {
        memset(dst.ptr, 0, max);
        uct_iov_t iov = {dst.ptr, len, dst.memh, 0, 1};
        comp_t c;
        comp_init(&c);
        ucs_status_t status = retry([&]() {
            return uct_ep_get_zcopy(ep, &iov, 1, (uintptr_t)src.ptr, rkey,
                                    &c.uct);
        });
        ASSERT_NO_FATAL_FAILURE(wait_zcopy(status, c)) << len;
        EXPECT_EQ(0, memcmp(dst.ptr, src.ptr, len)) << "get_zcopy " << len;
    }
    a.free_mem(dst);
    b.free_mem(src);
}

/* On one host softnic finishes a WRITE or READ larger than a batch in the
 * post (one CMA copy; a smaller WRITE too when it comes after a wait, as
 * here): a zero-copy put or get with a completion on an idle
 * ep returns UCS_OK with the data in place and its callback never called
 * (on a verbs device, softnic's provider included, it is UCS_INPROGRESS
 * and one callback); behind an op whose callback is still due it is an op
 * of the tx queue, and the callbacks come in issue order (orc.h,
 * uct_orc_op_t) */
TEST_F(OrcUct, ZcopyOnIdleEpFinishesAtOnce)
{
    const size_t len = 1 << 16;
    entity::mem dst  = b.alloc_mem(2 * len);
    entity::mem src  = a.alloc_mem(2 * len);
    uct_rkey_t rkey  = a.unpack_rkey(dst.rkey_buf);
    ASSERT_NO_FATAL_FAILURE(put_paired(ep, (uintptr_t)dst.ptr, rkey));

    fill_pattern(src.ptr, len, 91);
    uct_iov_t iov              = {src.ptr, len, src.memh, 0, 1};
    const char *backend        = getenv("UCX_ORC_BACKEND");
    const ucs_status_t at_once = ((backend == NULL) || !strcmp(backend, "soft"))
                                     ? UCS_OK
                                     : UCS_INPROGRESS;
    comp_t c, g;
    comp_init(&c);
    comp_init(&g);
    ucs_status_t status =
        uct_ep_put_zcopy(ep, &iov, 1, (uintptr_t)dst.ptr, rkey, &c.uct);
    EXPECT_EQ(at_once, status) << ucs_status_string(status);
    ASSERT_NO_FATAL_FAILURE(wait_zcopy(status, c));
    EXPECT_EQ(0, memcmp(src.ptr, dst.ptr, len)) << "put_zcopy placed";
    fill_pattern((char *)dst.ptr + len, len, 92);
    uct_iov_t giov = {(char *)src.ptr + len, len, src.memh, 0, 1};
    status =
        uct_ep_get_zcopy(ep, &giov, 1, (uintptr_t)dst.ptr + len, rkey, &g.uct);
    EXPECT_EQ(at_once, status) << ucs_status_string(status);
    ASSERT_NO_FATAL_FAILURE(wait_zcopy(status, g));
    EXPECT_EQ(0, memcmp((char *)src.ptr + len, (char *)dst.ptr + len, len))
        << "get_zcopy fetched";
    if (at_once == UCS_OK) {
        comp_t f;
        comp_init(&f);
        EXPECT_EQ(UCS_OK, uct_ep_flush(ep, 0, &f.uct)) << "nothing outstanding";
    }

    /* behind a get_bcopy (its data is unpacked in progress) */
    std::vector<int> order;
    struct ordered_comp {
        uct_completion_t uct;
        std::vector<int> *order;
        int id;
    };
    auto cb = [](uct_completion_t *self) {
        ordered_comp *o = ucs_container_of(self, ordered_comp, uct);
        o->order->push_back(o->id);
    };
    ordered_comp first = {{cb, 1, UCS_OK}, &order, 1};
    ordered_comp then  = {{cb, 1, UCS_OK}, &order, 2};
    std::vector<uint8_t> out(64);
    ASSERT_EQ(UCS_INPROGRESS,
              uct_ep_get_bcopy(ep, unpack_cb, out.data(), out.size(),
                               (uintptr_t)dst.ptr, rkey, &first.uct));
    EXPECT_EQ(UCS_INPROGRESS, uct_ep_put_zcopy(ep, &iov, 1, (uintptr_t)dst.ptr,
                                               rkey, &then.uct));
    ASSERT_TRUE(a.progress_until([&]() { return order.size() == 2; }));
    EXPECT_EQ(std::vector<int>({1, 2}), order) << "callbacks in issue order";
    flush_ep(a, ep);
    a.free_mem(src);
    b.free_mem(dst);
}

/* A loop that waits for each get's completion with one progress call does
 * not starve receives: the send CQ is polled first while a signaled WR is in
 * flight, and a call that found send completions may leave the receive CQ
 * to a later call, but to no more than UCT_ORC_IFACE_RX_SKIP_MAX (3) in a
 * row (rule). Here a get completes at every call, so an AM the peer sent
 * before the loop arrives by the 4th call. */
TEST_F(OrcUct, AmArrivesWhileGetsComplete)
{
    am_rx rx;
    ASSERT_EQ(UCS_OK, uct_iface_set_am_handler(a.iface(), 3, am_cb, &rx, 0));
    uct_ep_h back = b.connect_and_wait(a);
    ASSERT_TRUE(back != NULL);
    entity::mem src = b.alloc_mem(64);
    uct_rkey_t rkey = a.unpack_rkey(src.rkey_buf);
    ASSERT_EQ(UCS_OK, uct_ep_am_short(back, 3, 42, NULL, 0));

    uint64_t value;
    int calls = 0;
    for (; (calls < 100) && rx.msgs.empty(); ++calls) {
        comp_t c;
        comp_init(&c);
        ASSERT_EQ(UCS_INPROGRESS,
                  uct_ep_get_bcopy(ep, unpack_cb, &value, sizeof(value),
                                   (uintptr_t)src.ptr, rkey, &c.uct));
        a.progress();
        ASSERT_EQ(1, c.done) << "the get did not complete in its call";
    }
    EXPECT_EQ(1u, rx.msgs.size()) << "no receive in " << calls << " calls";
    EXPECT_LE(calls, 4) << "the receive CQ was skipped more than 3 times";
    a.progress_until([&]() { return rx.msgs.size() == 1; });
    b.free_mem(src);
}

TEST_F(OrcUct, ActiveMessages)
{
    const uct_iface_attr_t &attr = a.attr();
    am_rx rx;
    ASSERT_EQ(UCS_OK, uct_iface_set_am_handler(b.iface(), 5, am_cb, &rx, 0));

    std::vector<std::vector<uint8_t>> expect;
    std::vector<uint8_t> payload(attr.cap.am.max_bcopy);
    entity::mem zsrc = a.alloc_mem(attr.cap.am.max_zcopy);

    /* am_short: 64-bit header + payload, sizes 0, 1, 8, max */
    for (size_t len : {(size_t)0, (size_t)1, (size_t)8,
                       attr.cap.am.max_short - sizeof(uint64_t)}) {
        uint64_t hdr = 0x1122334455667788ull + len;
        fill_pattern(payload.data(), len, (unsigned)len);
        ASSERT_EQ(UCS_OK, retry([&]() {
                      return uct_ep_am_short(ep, 5, hdr, payload.data(), len);
                  }));
        std::vector<uint8_t> m((uint8_t *)&hdr, (uint8_t *)&hdr + 8);
        m.insert(m.end(), payload.begin(), payload.begin() + len);
        expect.push_back(m);
    }

    /* am_short_iov */
    {
        uint8_t p1[3] = {1, 2, 3}, p2[5] = {4, 5, 6, 7, 8};
        uct_iov_t iov[2] = {{p1, 3, NULL, 0, 1}, {p2, 5, NULL, 0, 1}};
        ASSERT_EQ(UCS_OK,
                  retry([&]() { return uct_ep_am_short_iov(ep, 5, iov, 2); }));
        expect.push_back({1, 2, 3, 4, 5, 6, 7, 8});
    }

    /* am_bcopy sizes 0, 1, 8, max */
    for (size_t len :
         {(size_t)0, (size_t)1, (size_t)8, attr.cap.am.max_bcopy}) {
        fill_pattern(payload.data(), len, (unsigned)len + 3);
        pack_arg arg = {payload.data(), len};
        ssize_t ret;
        double deadline = entity::now() + 10;
        do {
            ret = uct_ep_am_bcopy(ep, 5, pack_cb, &arg, 0);
            a.progress();
            b.progress();
        } while ((ret == UCS_ERR_NO_RESOURCE) && (entity::now() < deadline));
        ASSERT_EQ((ssize_t)len, ret);
        expect.emplace_back(payload.begin(), payload.begin() + len);
    }

    /* am_zcopy: header + 2 iovs, and the maximum */
    for (size_t len : {(size_t)16, attr.cap.am.max_zcopy - 8}) {
        uint64_t hdr = 0xabcdef;
        fill_pattern(zsrc.ptr, len, 99);
        uct_iov_t iov[2] = {{zsrc.ptr, len / 2, zsrc.memh, 0, 1},
                            {(char *)zsrc.ptr + len / 2, len - len / 2,
                             zsrc.memh, 0, 1}};
        comp_t c;
        comp_init(&c);
        ucs_status_t status = retry([&]() {
            return uct_ep_am_zcopy(ep, 5, &hdr, sizeof(hdr), iov, 2, 0, &c.uct);
        });
        ASSERT_TRUE((status == UCS_OK) || (status == UCS_INPROGRESS));
        if (status == UCS_INPROGRESS) {
            ASSERT_TRUE(a.progress_until([&]() { return c.done > 0; }));
        }
        std::vector<uint8_t> m((uint8_t *)&hdr, (uint8_t *)&hdr + 8);
        m.insert(m.end(), (uint8_t *)zsrc.ptr, (uint8_t *)zsrc.ptr + len);
        expect.push_back(m);
    }

    /* oversized messages are refused */
    std::vector<uint8_t> big(attr.cap.am.max_short + 1);
    EXPECT_EQ(UCS_ERR_INVALID_PARAM,
              uct_ep_am_short(ep, 5, 0, big.data(), big.size()));

    ASSERT_TRUE(b.progress_until([&]() {
        a.progress();
        return rx.msgs.size() >= expect.size();
    }));
    ASSERT_EQ(expect.size(), rx.msgs.size());
    for (size_t i = 0; i < expect.size(); ++i) {
        EXPECT_EQ(expect[i], rx.msgs[i]) << "message " << i;
    }
    a.free_mem(zsrc);
}

namespace
{
/* keeps every descriptor, scribbling over the whole headroom first */
struct am_keep {
    size_t headroom;
    std::vector<void *> descs;
    std::vector<std::vector<uint8_t>> msgs;
};

ucs_status_t am_keep_cb(void *arg, void *data, size_t length, unsigned flags)
{
    am_keep *k = (am_keep *)arg;
    EXPECT_TRUE(flags & UCT_CB_PARAM_FLAG_DESC);
    k->msgs.emplace_back((uint8_t *)data, (uint8_t *)data + length);
    memset((char *)data - k->headroom, 0xcd, k->headroom);
    k->descs.push_back((char *)data - k->headroom);
    return UCS_INPROGRESS;
}
} // namespace

TEST_F(OrcUct, AmDescriptorsKeptWithHeadroom)
{
    const size_t headroom = 48;
    entity r;
    ASSERT_EQ(UCS_OK, r.open(headroom));
    am_keep keep = {headroom, {}, {}};
    ASSERT_EQ(UCS_OK,
              uct_iface_set_am_handler(r.iface(), 6, am_keep_cb, &keep, 0));
    uct_ep_h e = a.connect_and_wait(r);
    ASSERT_TRUE(e != NULL);

    /* more messages than receive buffers would allow if kept buffers were
     * not replaced */
    const uint64_t total = 1500;
    std::vector<uint8_t> payload(300);
    uint64_t sent = 0;
    ASSERT_TRUE(a.progress_until(
        [&]() {
        r.progress();
        while (sent < total) {
            fill_pattern(payload.data(), payload.size(), (unsigned)sent);
            if (uct_ep_am_short(e, 6, sent, payload.data(), 100) != UCS_OK) {
                break;
            }
            ++sent;
        }
        return keep.msgs.size() == total;
        },
        30));
    for (uint64_t i = 0; i < total; ++i) {
        uint64_t hdr;
        ASSERT_EQ(108u, keep.msgs[i].size());
        memcpy(&hdr, keep.msgs[i].data(), 8);
        ASSERT_EQ(i, hdr);
        fill_pattern(payload.data(), 100, (unsigned)i);
        ASSERT_EQ(0, memcmp(payload.data(), keep.msgs[i].data() + 8, 100));
    }
    for (void *desc : keep.descs) {
        uct_iface_release_desc(desc);
    }
}

namespace
{
/* where AM payloads land, against the requested alignment */
struct am_align {
    size_t alignment, offset;
    std::vector<size_t> misaligned; /* payload sizes */
    size_t count;
    std::vector<uint8_t> last;
};

ucs_status_t am_align_cb(void *arg, void *data, size_t length, unsigned flags)
{
    am_align *a = (am_align *)arg;
    if (!(flags & UCT_CB_PARAM_FLAG_DESC) ||
        ((((uintptr_t)data + a->offset) % a->alignment) != 0)) {
        a->misaligned.push_back(length);
    }
    a->last.assign((uint8_t *)data, (uint8_t *)data + length);
    ++a->count;
    return UCS_OK;
}
} // namespace

/* The AM alignment parameters are honoured as UCX's transports do:
 * invalid ones fail the open, and received data sits at the alignment */
TEST_F(OrcUct, AmAlignmentHonoured)
{
    auto with = [](size_t alignment, bool set_alignment, size_t offset,
                   bool set_offset) {
        return [=](uct_iface_params_t &p) {
            if (set_alignment) {
                p.field_mask |= UCT_IFACE_PARAM_FIELD_AM_ALIGNMENT;
                p.am_alignment = alignment;
            }
            if (set_offset) {
                p.field_mask |= UCT_IFACE_PARAM_FIELD_AM_ALIGN_OFFSET;
                p.am_align_offset = offset;
            }
        };
    };
    {
        entity bad0, bad3, bad_offset;
        EXPECT_EQ(UCS_ERR_INVALID_PARAM, bad0.open(0, with(0, true, 0, false)));
        EXPECT_EQ(UCS_ERR_INVALID_PARAM, bad3.open(0, with(3, true, 0, false)));
        EXPECT_EQ(UCS_ERR_INVALID_PARAM,
                  bad_offset.open(0, with(0, false, 8, true)));
    }

    struct {
        size_t alignment, offset, headroom;
    } cases[] = {{64, 0, 0},
                 {256, 8, 0},
                 {128, 5, 24},
                 {4096, 16, 40},
                 {1, 0, 0}};
    std::vector<uint8_t> payload(1000);
    fill_pattern(payload.data(), payload.size(), 3);
    for (auto &c : cases) {
        SCOPED_TRACE("alignment " + std::to_string(c.alignment) + " offset " +
                     std::to_string(c.offset) + " headroom " +
                     std::to_string(c.headroom));
        entity r;
        ASSERT_EQ(UCS_OK,
                  r.open(c.headroom, with(c.alignment, true, c.offset, true)));
        am_align al = {c.alignment, c.offset, {}, 0, {}};
        ASSERT_EQ(UCS_OK,
                  uct_iface_set_am_handler(r.iface(), 7, am_align_cb, &al, 0));
        uct_ep_h e = a.connect_and_wait(r);
        ASSERT_TRUE(e != NULL);
        size_t sent = 0;
        for (size_t len : {0, 1, 7, 64, 100}) {
            ASSERT_EQ(UCS_OK, retry([&]() {
                          r.progress();
                          return uct_ep_am_short(e, 7, len, payload.data(),
                                                 len);
                      }));
            ++sent;
        }
        pack_arg pa = {payload.data(), payload.size()};
        ssize_t packed;
        ASSERT_TRUE(a.progress_until([&]() {
            r.progress();
            packed = uct_ep_am_bcopy(e, 7, pack_cb, &pa, 0);
            return packed != UCS_ERR_NO_RESOURCE;
        }));
        ASSERT_EQ((ssize_t)payload.size(), packed);
        ++sent;
        ASSERT_TRUE(r.progress_until([&]() { return al.count == sent; }));
        EXPECT_TRUE(al.misaligned.empty())
            << al.misaligned.size() << " of " << sent << " misaligned";
        EXPECT_EQ(payload, al.last);
        a.destroy_ep(e);
    }
}

namespace
{
struct destroy_comp {
    uct_completion_t uct;
    entity *owner;
    uct_ep_h ep;
    int done;
};

void destroy_comp_cb(uct_completion_t *self)
{
    destroy_comp *d = ucs_container_of(self, destroy_comp, uct);
    d->owner->destroy_ep(d->ep);
    ++d->done;
}
} // namespace

TEST_F(OrcUct, EpDestroyedFromCompletionCallbacks)
{
    entity::mem dst = b.alloc_mem(1 << 16);
    entity::mem src = a.alloc_mem(1 << 16);
    uct_rkey_t rkey = a.unpack_rkey(dst.rkey_buf);

    /* from an op's completion, with more ops and a flush behind it */
    uct_ep_h e1 = a.connect_and_wait(b);
    ASSERT_TRUE(e1 != NULL);
    destroy_comp d1 = {{destroy_comp_cb, 1, UCS_OK}, &a, e1, 0};
    uct_iov_t iov   = {src.ptr, 1 << 16, src.memh, 0, 1};
    /* a get_bcopy completes in progress (its data is unpacked there); a
     * zero-copy operation on an idle ep may finish at once */
    std::vector<uint8_t> out(64);
    ASSERT_EQ(UCS_INPROGRESS,
              uct_ep_get_bcopy(e1, unpack_cb, out.data(), out.size(),
                               (uintptr_t)dst.ptr, rkey, &d1.uct));
    comp_t later;
    comp_init(&later);
    ASSERT_EQ(UCS_INPROGRESS, uct_ep_put_zcopy(e1, &iov, 1, (uintptr_t)dst.ptr,
                                               rkey, &later.uct));
    comp_t fl;
    comp_init(&fl);
    ASSERT_EQ(UCS_INPROGRESS, uct_ep_flush(e1, 0, &fl.uct));
    ASSERT_TRUE(a.progress_until([&]() { return d1.done > 0; }));
    EXPECT_EQ(1, fl.done) << "the flush completes (canceled) at destroy";
    EXPECT_EQ(1, later.done);
    EXPECT_EQ(UCS_ERR_CANCELED, later.status);
    a.progress(1000);

    /* from a flush completion */
    uct_ep_h e2 = a.connect_and_wait(b);
    ASSERT_TRUE(e2 != NULL);
    ASSERT_EQ(UCS_INPROGRESS,
              uct_ep_put_zcopy(e2, &iov, 1, (uintptr_t)dst.ptr, rkey, NULL));
    destroy_comp d2 = {{destroy_comp_cb, 1, UCS_OK}, &a, e2, 0};
    ASSERT_EQ(UCS_INPROGRESS, uct_ep_flush(e2, 0, &d2.uct));
    ASSERT_TRUE(a.progress_until([&]() { return d2.done > 0; }));
    a.progress(1000);

    /* the long-lived ep is fine */
    flush_ep(a, ep);
    a.free_mem(src);
    b.free_mem(dst);
}

TEST_F(OrcUct, ConnectToSelf)
{
    uct_ep_h self_ep = a.connect_and_wait(a);
    ASSERT_TRUE(self_ep != NULL);
    entity::mem m   = a.alloc_mem(4096);
    uct_rkey_t rkey = a.unpack_rkey(m.rkey_buf);
    uint64_t v      = 0x5e1f;
    ASSERT_EQ(UCS_OK, retry([&]() {
                  return uct_ep_put_short(self_ep, &v, 8, (uintptr_t)m.ptr + 64,
                                          rkey);
              }));
    flush_ep(a, self_ep);
    EXPECT_EQ(v, *(uint64_t *)((char *)m.ptr + 64));
    am_rx rx;
    ASSERT_EQ(UCS_OK, uct_iface_set_am_handler(a.iface(), 7, am_cb, &rx, 0));
    ASSERT_EQ(UCS_OK,
              retry([&]() { return uct_ep_am_short(self_ep, 7, 1, NULL, 0); }));
    ASSERT_TRUE(a.progress_until([&]() { return rx.msgs.size() == 1; }));
    a.free_mem(m);
}

TEST_F(OrcUct, Atomics)
{
    entity::mem t   = b.alloc_mem(64);
    uct_rkey_t rkey = a.unpack_rkey(t.rkey_buf);
    uint64_t *val   = (uint64_t *)t.ptr;
    uint64_t result = 0;

    *val = 100;
    ASSERT_EQ(UCS_OK, retry([&]() {
                  return uct_ep_atomic64_post(ep, UCT_ATOMIC_OP_ADD, 5,
                                              (uintptr_t)val, rkey);
              }));
    flush_ep(a, ep);
    EXPECT_EQ(105u, *val);

    auto fetch = [&](uct_atomic_op_t op, uint64_t value) {
        return [&, op, value](uct_completion_t *c) {
            return uct_ep_atomic64_fetch(ep, op, value, &result, (uintptr_t)val,
                                         rkey, c);
        };
    };
    ASSERT_NO_FATAL_FAILURE(wait_in_flight(fetch(UCT_ATOMIC_OP_ADD, 10)));
    EXPECT_EQ(105u, result);
    EXPECT_EQ(115u, *val);
    ASSERT_NO_FATAL_FAILURE(wait_in_flight(fetch(UCT_ATOMIC_OP_SWAP, 7)));
    EXPECT_EQ(115u, result);
    EXPECT_EQ(7u, *val);

    /* failing and succeeding compare-swap */
    auto cswap = [&](uint64_t compare) {
        return [&, compare](uct_completion_t *c) {
            return uct_ep_atomic_cswap64(ep, compare, 9, (uintptr_t)val, rkey,
                                         &result, c);
        };
    };
    ASSERT_NO_FATAL_FAILURE(wait_in_flight(cswap(8)));
    EXPECT_EQ(7u, result);
    EXPECT_EQ(7u, *val);
    ASSERT_NO_FATAL_FAILURE(wait_in_flight(cswap(7)));
    EXPECT_EQ(7u, result);
    EXPECT_EQ(9u, *val);

    /* not advertised, so refused */
    EXPECT_EQ(UCS_ERR_UNSUPPORTED,
              uct_ep_atomic64_post(ep, UCT_ATOMIC_OP_AND, 1, (uintptr_t)val,
                                   rkey));
    b.free_mem(t);
}

TEST_F(OrcUct, AtomicsManyInFlight)
{
    const int n     = 300;
    entity::mem t   = b.alloc_mem(64);
    uct_rkey_t rkey = a.unpack_rkey(t.rkey_buf);
    std::vector<uint64_t> results(n, UINT64_MAX);
    std::vector<comp_t> comps(n);
    int posted = 0;

    *(uint64_t *)t.ptr = 0;
    ASSERT_TRUE(a.progress_until(
        [&]() {
        while (posted < n) {
            comp_init(&comps[posted]);
            ucs_status_t st =
                uct_ep_atomic64_fetch(ep, UCT_ATOMIC_OP_ADD, 1,
                                      &results[posted], (uintptr_t)t.ptr, rkey,
                                      &comps[posted].uct);
            if (st == UCS_ERR_NO_RESOURCE) {
                break;
            }
            EXPECT_EQ(UCS_INPROGRESS, st);
            ++posted;
        }
        int done = 0;
        for (int i = 0; i < posted; ++i) {
            done += comps[i].done;
        }
        return done == n;
        },
        30));
    for (int i = 0; i < n; ++i) {
        ASSERT_EQ(UCS_OK, comps[i].status) << "op " << i;
    }
    EXPECT_TRUE(a.errors.empty());
    EXPECT_EQ((uint64_t)n, *(uint64_t *)t.ptr);
    std::sort(results.begin(), results.end());
    for (int i = 0; i < n; ++i) {
        ASSERT_EQ((uint64_t)i, results[i]);
    }
    b.free_mem(t);
}

TEST_F(OrcUct, FlushCompletesAfterAllWrites)
{
    const size_t len = 256 * 1024;
    entity::mem dst  = b.alloc_mem(len * 8);
    entity::mem src  = a.alloc_mem(len * 8);
    uct_rkey_t rkey  = a.unpack_rkey(dst.rkey_buf);
    fill_pattern(src.ptr, len * 8, 5);

    for (int i = 0; i < 8; ++i) {
        uct_iov_t iov       = {(char *)src.ptr + i * len, len, src.memh, 0, 1};
        ucs_status_t status = retry([&]() {
            return uct_ep_put_zcopy(ep, &iov, 1, (uintptr_t)dst.ptr + i * len,
                                    rkey, NULL);
        });
        ASSERT_TRUE((status == UCS_OK) || (status == UCS_INPROGRESS));
    }
    comp_t c;
    comp_init(&c);
    ucs_status_t status = uct_ep_flush(ep, 0, &c.uct);
    if (status == UCS_INPROGRESS) {
        ASSERT_TRUE(a.progress_until([&]() { return c.done > 0; }));
        EXPECT_EQ(1, c.done);
        EXPECT_EQ(UCS_OK, c.status);
    } else {
        ASSERT_EQ(UCS_OK, status);
    }
    EXPECT_EQ(0, memcmp(src.ptr, dst.ptr, len * 8));
    /* idle ep and iface flush at once */
    EXPECT_EQ(UCS_OK, uct_ep_flush(ep, 0, NULL));
    EXPECT_EQ(UCS_OK, uct_iface_flush(a.iface(), 0, NULL));
    a.free_mem(src);
    b.free_mem(dst);
}

/* Short puts carry no completion of their own (UCX_ORC_TX_CQ_MODERATION,
 * default 64): an ep flush and an iface flush must still wait for every one
 * of them, and complete */
TEST_F(OrcUct, FlushWaitsForUnsignaledWrites)
{
    const int n     = 40; /* fewer than the moderation: none is signaled */
    entity::mem dst = b.alloc_mem(2 * n * sizeof(uint64_t));
    uct_rkey_t rkey = a.unpack_rkey(dst.rkey_buf);
    memset(dst.ptr, 0, 2 * n * sizeof(uint64_t));

    for (int round = 0; round < 2; ++round) {
        uint64_t *remote = (uint64_t *)dst.ptr + round * n;
        for (int i = 0; i < n; ++i) {
            uint64_t v = (round + 1) * 1000 + i;
            ASSERT_EQ(UCS_OK, retry([&]() {
                          return uct_ep_put_short(ep, &v, sizeof(v),
                                                  (uintptr_t)&remote[i], rkey);
                      }));
        }
        if (round == 0) {
            comp_t c;
            comp_init(&c);
            ucs_status_t st = uct_ep_flush(ep, 0, &c.uct);
            ASSERT_TRUE((st == UCS_OK) || (st == UCS_INPROGRESS))
                << ucs_status_string(st);
            if (st == UCS_INPROGRESS) {
                ASSERT_TRUE(a.progress_until([&]() { return c.done > 0; }))
                    << "the ep flush never completed";
                EXPECT_EQ(1, c.done);
                EXPECT_EQ(UCS_OK, c.status);
            }
        } else {
            ASSERT_TRUE(a.progress_until([&]() {
                return uct_iface_flush(a.iface(), 0, NULL) == UCS_OK;
            })) << "the iface flush never completed";
        }
        for (int i = 0; i < n; ++i) {
            EXPECT_EQ((uint64_t)(round + 1) * 1000 + i, remote[i])
                << "round " << round << " put " << i;
        }
    }
    EXPECT_EQ(UCS_OK, uct_ep_flush(ep, 0, NULL));
    b.free_mem(dst);
}

/* An ep destroyed with unsignaled WRs in flight: their send CQ entries come
 * back (once the CQ was found empty), or the iface would run out of them
 * (here 128 entries: TX_QUEUE_LEN 16, moderation 4) */
TEST_F(OrcUct, EpsDestroyedWithWritesInFlightGiveBackCqEntries)
{
    scoped_setenv txq("UCX_ORC_TX_QUEUE_LEN", "16");
    entity s;
    ASSERT_EQ(UCS_OK, s.open());
    entity::mem dst = b.alloc_mem(64);
    uct_rkey_t rkey = s.unpack_rkey(dst.rkey_buf);

    for (uint64_t i = 0; i < 50; ++i) {
        uct_ep_h e = s.connect_and_wait(b);
        ASSERT_TRUE(e != NULL) << "ep " << i;
        for (uint64_t j = 0; j < 3; ++j) { /* 3 of 4: none signaled */
            uint64_t v = i * 10 + j;
            ASSERT_EQ(UCS_OK, retry([&]() {
                          s.progress();
                          return uct_ep_put_short(e, &v, sizeof(v),
                                                  (uintptr_t)dst.ptr, rkey);
                      }))
                << "ep " << i << " put " << j;
        }
        s.destroy_ep(e);
        s.progress(10);
    }

    /* a full send queue of WRs in flight at once: 16 CQ entries free */
    uct_ep_h e = s.connect_and_wait(b);
    ASSERT_TRUE(e != NULL);
    ASSERT_TRUE(s.progress_until(
        [&]() { return uct_iface_flush(s.iface(), 0, NULL) == UCS_OK; }));
    for (uint64_t j = 0; j < 16; ++j) {
        EXPECT_EQ(UCS_OK,
                  uct_ep_put_short(e, &j, sizeof(j), (uintptr_t)dst.ptr, rkey))
            << "put " << j << " of a full send queue";
    }
    flush_ep(s, e);
    EXPECT_TRUE(s.errors.empty());
    b.free_mem(dst);
}

/* uct_ep_fence between a get and a put whose source is the get's
 * destination: the put carries what the get fetched (softnic holds the
 * fenced WR until the READ completed; without that, on TCP the WRITE would
 * gather its source while the READ is in flight), and the get does not see
 * a put posted after the fence. Over each path softnic takes on one host:
 * CMA (the READ completes before the post returns) and TCP. */
class OrcUctFence :
    public OrcUct,
    public ::testing::WithParamInterface<const char *>
{
  protected:
    void SetUp() override
    {
        m_cma.reset(new scoped_setenv("UCX_ORC_SOFT_NO_CMA", GetParam()));
        OrcUct::SetUp();
    }

    void TearDown() override
    {
        m_cma.reset();
    }

    std::unique_ptr<scoped_setenv> m_cma;
};

TEST_P(OrcUctFence, WriteAfterReadCarriesWhatItRead)
{
    const size_t len    = 4096;
    entity::mem src     = b.alloc_mem(len);
    entity::mem dst     = b.alloc_mem(len);
    entity::mem local   = a.alloc_mem(len);
    uct_rkey_t src_rkey = a.unpack_rkey(src.rkey_buf);
    uct_rkey_t dst_rkey = a.unpack_rkey(dst.rkey_buf);

    for (uint64_t round = 1; round <= 50; ++round) {
        uint64_t newval = round * 1000;
        memset(src.ptr, (int)round, len);
        memset(dst.ptr, 0, len);
        memset(local.ptr, 0, len);
        uct_iov_t iov = {local.ptr, len, local.memh, 0, 1};
        comp_t c, w;
        comp_init(&c);
        comp_init(&w);
        /* on one host the get may finish at once (UCS_OK, no callback) */
        ucs_status_t get_status = retry([&]() {
            return uct_ep_get_zcopy(ep, &iov, 1, (uintptr_t)src.ptr, src_rkey,
                                    &c.uct);
        });
        ASSERT_TRUE((get_status == UCS_OK) || (get_status == UCS_INPROGRESS))
            << ucs_status_string(get_status);
        ASSERT_EQ(UCS_OK, uct_ep_fence(ep, 0));
        ucs_status_t status = retry([&]() {
            return uct_ep_put_zcopy(ep, &iov, 1, (uintptr_t)dst.ptr, dst_rkey,
                                    &w.uct);
        });
        ASSERT_TRUE((status == UCS_OK) || (status == UCS_INPROGRESS))
            << ucs_status_string(status);
        ASSERT_EQ(UCS_OK, retry([&]() {
                      return uct_ep_put_short(ep, &newval, 8,
                                              (uintptr_t)src.ptr, src_rkey);
                  }));
        flush_ep(a, ep);
        ASSERT_EQ((get_status == UCS_INPROGRESS) ? 1 : 0, c.done);
        std::vector<uint8_t> before(len, (uint8_t)round);
        EXPECT_EQ(0, memcmp(local.ptr, before.data(), len))
            << "the get did not return the source as it was before the fence";
        EXPECT_EQ(0, memcmp(local.ptr, dst.ptr, len))
            << "round " << round << ": the put did not carry what the get "
            << "before the fence fetched";
        EXPECT_EQ(newval, *(uint64_t *)src.ptr);
    }
    a.free_mem(local);
    b.free_mem(dst);
    b.free_mem(src);
}

INSTANTIATE_TEST_SUITE_P(
    paths, OrcUctFence, ::testing::Values("n", "y"),
    [](const ::testing::TestParamInfo<const char *> &info) {
    return std::string("no_cma_") + info.param;
    });

/* A fence orders an atomic after a put and after other atomics (swaps, a
 * loop of compare-swaps, included), and a put or a get after an atomic:
 * 1,000 pairs on one address, each checked */
TEST_F(OrcUct, FenceOrdersAtomics)
{
    const int pairs    = 1000;
    const char *what[] = {"put -> fetch-add", "add -> fetch-add",
                          "swap -> fetch-add", "add -> put", "add -> get"};
    entity::mem t      = b.alloc_mem(64);
    uct_rkey_t rkey    = a.unpack_rkey(t.rkey_buf);
    uint64_t *cell     = (uint64_t *)t.ptr;
    uintptr_t addr     = (uintptr_t)cell;
    int refused = 0, wrong[5] = {};

    for (int i = 0; i < pairs; ++i) {
        const uint64_t before = 1000003 * (i + 1), x = 7 * (i + 1);
        uint64_t expect, result                      = 0, scratch;
        ucs_status_t first, second;
        comp_t c;
        comp_init(&c);

        *cell = before;
        switch (i % 5) {
        case 0:
            first  = uct_ep_put_short(ep, &x, 8, addr, rkey);
            expect = x;
            break;
        case 2:
            first  = uct_ep_atomic64_fetch(ep, UCT_ATOMIC_OP_SWAP, x, &scratch,
                                           addr, rkey, NULL);
            expect = x;
            break;
        default:
            first  = uct_ep_atomic64_post(ep, UCT_ATOMIC_OP_ADD, x, addr, rkey);
            expect = before + x;
            break;
        }
        ASSERT_EQ(UCS_OK, uct_ep_fence(ep, 0));
        switch (i % 5) {
        case 3:
            second = uct_ep_put_short(ep, &before, 8, addr, rkey);
            expect = before;
            break;
        case 4:
            second =
                uct_ep_get_bcopy(ep, unpack_cb, &result, 8, addr, rkey, &c.uct);
            break;
        default:
            second = uct_ep_atomic64_fetch(ep, UCT_ATOMIC_OP_ADD, 0, &result,
                                           addr, rkey, &c.uct);
            break;
        }
        refused += UCS_STATUS_IS_ERR(first) + UCS_STATUS_IS_ERR(second);
        flush_ep(a, ep);
        if ((i % 5) == 3) {
            result = *cell; /* the put overwrote the sum */
        }
        wrong[i % 5] += (result != expect);
    }
    EXPECT_EQ(0, refused) << "operations refused";
    for (int k = 0; k < 5; ++k) {
        EXPECT_EQ(0, wrong[k]) << what[k] << ": " << wrong[k] << " of "
                               << pairs / 5 << " pairs came out unordered";
    }
    b.free_mem(t);
}

namespace
{
/* an AM request for the pending queue; `sent` counts it */
struct am_req {
    uct_pending_req_t uct;
    uct_ep_h ep;
    uint64_t hdr;
    int sent;
};

ucs_status_t am_req_send(uct_pending_req_t *self)
{
    am_req *r       = ucs_container_of(self, am_req, uct);
    ucs_status_t st = uct_ep_am_short(r->ep, 1, r->hdr, NULL, 0);
    r->sent += (st == UCS_OK);
    return st;
}

/* a flush through the pending queue: done counts the completions */
struct flush_req {
    uct_pending_req_t uct;
    uct_completion_t comp;
    uct_ep_h ep;
    am_req *before; /* requests that must be sent first */
    int nbefore;
    int done;
    int sent_before; /* of `before`, when it completed */
};

void flush_req_done(uct_completion_t *self)
{
    flush_req *f = ucs_container_of(self, flush_req, comp);
    ++f->done;
    f->sent_before = 0;
    for (int i = 0; i < f->nbefore; ++i) {
        f->sent_before += f->before[i].sent;
    }
}

ucs_status_t flush_req_start(uct_pending_req_t *self)
{
    flush_req *f    = ucs_container_of(self, flush_req, uct);
    ucs_status_t st = uct_ep_flush(f->ep, 0, &f->comp);
    if (st == UCS_OK) {
        flush_req_done(&f->comp);
    }
    return (st == UCS_INPROGRESS) ? UCS_OK : st;
}
} // namespace

/* A flush while AMs sit in the pending queue covers them: its completion
 * runs once, after they went out */
TEST_F(OrcUct, FlushBehindPendingAmCompletesOnce)
{
    am_pair p("4");
    ASSERT_TRUE(p.open());
    entity &s = p.s, &r = p.r;
    am_rx &rx  = p.rx;
    uct_ep_h e = p.e;

    /* the receiver does not progress: its credits run out */
    size_t direct = p.exhaust_credits();
    std::vector<am_req> reqs(10);
    for (am_req &q : reqs) {
        q.uct.func = am_req_send;
        q.ep       = e;
        q.hdr      = 1;
        ASSERT_EQ(UCS_OK, uct_ep_pending_add(e, &q.uct, 0));
    }

    flush_req f     = {};
    f.comp.func     = flush_req_done;
    f.comp.count    = 1;
    f.ep            = e;
    f.before        = reqs.data();
    f.nbefore       = reqs.size();
    f.uct.func      = flush_req_start;
    ucs_status_t st = uct_ep_flush(e, 0, &f.comp);
    if (st == UCS_ERR_NO_RESOURCE) {
        ASSERT_EQ(UCS_OK, uct_ep_pending_add(e, &f.uct, 0));
    } else {
        ASSERT_EQ(UCS_INPROGRESS, st) << "a flush cannot be done yet";
    }

    ASSERT_TRUE(s.progress_until([&]() {
        r.progress();
        return (f.done > 0) && (rx.msgs.size() == direct + reqs.size());
    }));
    double until = entity::now() + 0.5;
    while (entity::now() < until) {
        s.progress();
        r.progress();
    }
    EXPECT_EQ(1, f.done) << "the flush completion ran more than once";
    EXPECT_EQ((int)reqs.size(), f.sent_before)
        << "the flush completed before the pending AMs went out";
    EXPECT_TRUE(s.errors.empty());
}

/* A send posted while the ep has pending requests does not overtake them:
 * it is refused with UCS_ERR_NO_RESOURCE (or accepted in order) */
TEST_F(OrcUct, SendWithPendingRequestsKeepsOrder)
{
    am_pair p("4");
    ASSERT_TRUE(p.open());
    entity &s = p.s, &r = p.r;
    uct_ep_h e      = p.e;
    entity::mem src = s.alloc_mem(4096), dst = r.alloc_mem(4096);
    uct_rkey_t rkey = s.unpack_rkey(dst.rkey_buf);

    p.exhaust_credits();
    am_req q   = {};
    q.uct.func = am_req_send;
    q.ep       = e;
    q.hdr      = 1;
    ASSERT_EQ(UCS_OK, uct_ep_pending_add(e, &q.uct, 0));

    /* zcopy operations with a completion, issued after the pending AM */
    uct_iov_t iov = {src.ptr, 64, src.memh, 0, 1};
    uint64_t hdr  = 2;
    std::vector<std::pair<const char *, std::function<ucs_status_t(comp_t *)>>>
        ops =
            {
                {"put_zcopy",
                 [&](comp_t *c) {
        return uct_ep_put_zcopy(e, &iov, 1, (uintptr_t)dst.ptr, rkey, &c->uct);
                 }},
                {"get_zcopy",
                 [&](comp_t *c) {
        return uct_ep_get_zcopy(e, &iov, 1, (uintptr_t)dst.ptr, rkey, &c->uct);
                 }},
        {"am_zcopy",
         [&](comp_t *c) {
        return uct_ep_am_zcopy(e, 1, &hdr, 8, &iov, 1, 0, &c->uct);
         }},
        };
    for (auto &op : ops) {
        int sent_at_completion = -1;
        comp_t c;
        comp_init(&c);
        ucs_status_t st = op.second(&c);
        EXPECT_TRUE((st == UCS_ERR_NO_RESOURCE) || (st == UCS_INPROGRESS))
            << op.first << ": " << ucs_status_string(st);
        if (st == UCS_INPROGRESS) {
            /* accepted: then in order, after the pending AM */
            ASSERT_TRUE(s.progress_until([&]() {
                if (c.done == 0) {
                    sent_at_completion = q.sent;
                }
                r.progress();
                return c.done > 0;
            }));
            EXPECT_EQ(1, sent_at_completion)
                << op.first << " overtook a pending request";
        }
    }
    ASSERT_TRUE(s.progress_until([&]() {
        r.progress();
        return q.sent == 1;
    }));
    EXPECT_TRUE(s.errors.empty());
    s.free_mem(src);
    r.free_mem(dst);
}

namespace
{
struct pending_req {
    uct_pending_req_t uct;
    uct_ep_h ep;
    uint64_t value;
    uint64_t addr;
    uct_rkey_t rkey;
    int calls;
    int purged;
};

ucs_status_t pending_put(uct_pending_req_t *self)
{
    pending_req *r = ucs_container_of(self, pending_req, uct);
    ++r->calls;
    return uct_ep_put_short(r->ep, &r->value, 8, r->addr, r->rkey);
}

void pending_purge_cb(uct_pending_req_t *self, void *)
{
    pending_req *r = ucs_container_of(self, pending_req, uct);
    ++r->purged;
}
} // namespace

/* fill up an ep's send queue: operations until one is refused; returns how
 * many were accepted */
static unsigned fill_until_no_resource(uct_ep_h e, void *addr, uct_rkey_t rkey)
{
    uint64_t v        = 0;
    unsigned accepted = 0;
    ucs_status_t st;
    while ((st = uct_ep_put_short(e, &v, 8, (uintptr_t)addr, rkey)) == UCS_OK) {
        EXPECT_LT(++accepted, 100000u);
    }
    EXPECT_EQ(UCS_ERR_NO_RESOURCE, st);
    return accepted;
}

/* An ep takes work from the moment it exists: the first operations wait
 * for the pairing and go out in order, with their completions as usual */
TEST_F(OrcUct, EpTakesWorkWhilePairing)
{
    entity c;
    ASSERT_EQ(UCS_OK, c.open());
    am_rx rx;
    ASSERT_EQ(UCS_OK, uct_iface_set_am_handler(c.iface(), 9, am_cb, &rx, 0));
    entity::mem t = c.alloc_mem(64);
    uct_ep_h ep2;
    ASSERT_EQ(UCS_OK, a.connect_to(c, &ep2));
    uct_rkey_t rkey = a.unpack_rkey(t.rkey_buf);
    uint64_t *cell  = (uint64_t *)t.ptr;
    uint64_t v = 42, fetched = 0;

    /* pairing goes through orcd in other threads: not done yet, and every
     * operation is accepted anyway */
    ASSERT_EQ(UCS_OK, uct_ep_put_short(ep2, &v, 8, (uintptr_t)cell, rkey));
    uint64_t got = 0;
    comp_t get_comp;
    comp_init(&get_comp);
    ASSERT_EQ(UCS_INPROGRESS,
              uct_ep_get_bcopy(ep2, unpack_cb, &got, 8, (uintptr_t)cell, rkey,
                               &get_comp.uct));
    ASSERT_EQ(UCS_OK, uct_ep_am_short(ep2, 9, 7, NULL, 0));
    ASSERT_EQ(UCS_OK, uct_ep_atomic64_post(ep2, UCT_ATOMIC_OP_ADD, 5,
                                           (uintptr_t)(cell + 1), rkey));
    comp_t fetch_comp;
    comp_init(&fetch_comp);
    ASSERT_EQ(UCS_INPROGRESS,
              uct_ep_atomic64_fetch(ep2, UCT_ATOMIC_OP_ADD, 1, &fetched,
                                    (uintptr_t)(cell + 1), rkey,
                                    &fetch_comp.uct));
    comp_t flush_comp;
    comp_init(&flush_comp);
    ASSERT_EQ(UCS_INPROGRESS, uct_ep_flush(ep2, 0, &flush_comp.uct));

    /* bounded: more are refused, and wait in the pending queue */
    unsigned more = fill_until_no_resource(ep2, cell + 2, rkey);
    EXPECT_LT(more, 64u);
    pending_req r = {};
    r.uct.func    = pending_put;
    r.ep          = ep2;
    r.value       = 4242;
    r.addr        = (uintptr_t)cell;
    r.rkey        = rkey;
    ASSERT_EQ(UCS_OK, uct_ep_pending_add(ep2, &r.uct, 0));

    /* c never progresses but for the AM: its agent pairs anyway */
    ASSERT_TRUE(a.progress_until([&]() {
        c.progress();
        return (r.calls > 0) && (flush_comp.done > 0) && !rx.msgs.empty();
    }));
    flush_ep(a, ep2);
    EXPECT_TRUE(a.errors.empty());
    EXPECT_EQ(1, get_comp.done);
    EXPECT_EQ(UCS_OK, get_comp.status);
    EXPECT_EQ(42u, got) << "the get went after the put";
    EXPECT_EQ(1, fetch_comp.done);
    EXPECT_EQ(5u, fetched) << "the fetch went after the add";
    EXPECT_EQ(6u, cell[1]);
    EXPECT_EQ(1, flush_comp.done);
    EXPECT_EQ(UCS_OK, flush_comp.status);
    EXPECT_EQ(1, r.calls) << "the pending request went after the queue";
    EXPECT_EQ(4242u, *cell);
    ASSERT_EQ(1u, rx.msgs.size());
    uct_ep_pending_purge(ep2, pending_purge_cb, NULL);
    EXPECT_EQ(0, r.purged);
    c.free_mem(t);
}

TEST_F(OrcUct, PendingWhenSendQueueFull)
{
    scoped_setenv q("UCX_ORC_TX_QUEUE_LEN", "4");
    entity s, t;
    ASSERT_EQ(UCS_OK, s.open());
    ASSERT_EQ(UCS_OK, t.open());
    uct_ep_h e = s.connect_and_wait(t);
    ASSERT_TRUE(e != NULL);
    entity::mem dst = t.alloc_mem(1 << 20);
    entity::mem src = s.alloc_mem(1 << 20);
    uct_rkey_t rkey = s.unpack_rkey(dst.rkey_buf);

    int posted = 0;
    ucs_status_t status;
    do {
        uct_iov_t iov = {src.ptr, 1 << 18, src.memh, 0, 1};
        status = uct_ep_put_zcopy(e, &iov, 1, (uintptr_t)dst.ptr, rkey, NULL);
        posted += (status == UCS_INPROGRESS);
    } while ((status == UCS_INPROGRESS) && (posted < 100));
    EXPECT_EQ(UCS_ERR_NO_RESOURCE, status);
    EXPECT_EQ(4, posted);

    pending_req r = {};
    r.uct.func    = pending_put;
    r.ep          = e;
    r.value       = 99;
    r.addr        = (uintptr_t)dst.ptr + (1 << 19);
    r.rkey        = rkey;
    ASSERT_EQ(UCS_OK, uct_ep_pending_add(e, &r.uct, 0));
    ASSERT_TRUE(s.progress_until([&]() { return r.calls > 0; }));
    flush_ep(s, e);
    EXPECT_EQ(99u, *(uint64_t *)((char *)dst.ptr + (1 << 19)));
    s.free_mem(src);
    t.free_mem(dst);
}

TEST_F(OrcUct, AmFlowControlSlowReceiver)
{
    am_pair p("8");
    ASSERT_TRUE(p.open());
    entity &s = p.s, &r = p.r;
    am_rx &rx  = p.rx;
    uct_ep_h e = p.e;

    /* the receiver does not progress: exactly its credits go out */
    uint64_t seq = 0;
    while (uct_ep_am_short(e, 1, seq, NULL, 0) == UCS_OK) {
        ++seq;
        ASSERT_LT(seq, 1000u);
    }
    EXPECT_EQ(8u, seq);
    double until = entity::now() + 0.3;
    while (entity::now() < until) {
        s.progress();
    }
    EXPECT_EQ(UCS_ERR_NO_RESOURCE, uct_ep_am_short(e, 1, seq, NULL, 0));
    EXPECT_TRUE(rx.msgs.empty());

    /* now both progress: 2000 messages arrive, in order, none lost */
    const uint64_t total = 2000;
    ASSERT_TRUE(s.progress_until(
        [&]() {
        r.progress();
        while ((seq < total) &&
               (uct_ep_am_short(e, 1, seq, NULL, 0) == UCS_OK)) {
            ++seq;
        }
        return rx.msgs.size() == total;
        },
        30));
    for (uint64_t i = 0; i < total; ++i) {
        uint64_t got;
        ASSERT_EQ(8u, rx.msgs[i].size());
        memcpy(&got, rx.msgs[i].data(), 8);
        ASSERT_EQ(i, got);
    }
}

/*
 * A grant never promises a receive buffer the receiver holds back from its
 * SRQ (released, not yet posted again): 16 buffers, of which the receiver
 * may hold 4, and 15 credits asked for. Each round the sender spends its
 * whole window while the receiver stands still but for one progress call,
 * then the receiver takes the rest. Without RNR retry a message that finds
 * no posted buffer fails the ep. With held buffers counted in the window
 * (15), round 2 sends 14 into 13 posted buffers.
 */
TEST_F(OrcUct, AmWindowLeavesOutHeldBuffers)
{
    scoped_setenv rxq("UCX_ORC_RX_QUEUE_LEN", "16");
    scoped_setenv rnr("UCX_ORC_RNR_RETRY", "0");
    am_pair p("15");
    ASSERT_TRUE(p.open());
    entity &s = p.s, &r = p.r;
    uint64_t seq = 0;
    auto idle    = [](entity &e) {
        double until = entity::now() + 0.05;
        while (entity::now() < until) {
            e.progress();
        }
    };

    for (int round = 0; round < 6; ++round) {
        /* the sender's window, once its grants are in */
        ASSERT_TRUE(s.progress_until(
            [&]() { return uct_ep_am_short(p.e, 1, seq, NULL, 0) == UCS_OK; }));
        for (++seq; uct_ep_am_short(p.e, 1, seq, NULL, 0) == UCS_OK; ++seq) {
            ASSERT_LT(seq, 1000u);
        }
        idle(s); /* the messages reach the receiver */
        r.progress();
        idle(s); /* a miss is reported */
        ASSERT_TRUE(s.errors.empty()) << "round " << round << ": "
                                      << ucs_status_string(s.errors[0].status);
        ASSERT_TRUE(r.progress_until([&]() {
            s.progress();
            return (p.rx.msgs.size() == seq) || !s.errors.empty();
        })) << "round "
            << round;
        ASSERT_TRUE(s.errors.empty()) << "round " << round;
    }
    for (uint64_t i = 0; i < seq; ++i) {
        uint64_t got;
        ASSERT_EQ(8u, p.rx.msgs[i].size());
        memcpy(&got, p.rx.msgs[i].data(), 8);
        ASSERT_EQ(i, got);
    }
}

TEST_F(OrcUct, AmBothDirectionsNoDeadlock)
{
    scoped_setenv credits("UCX_ORC_AM_CREDITS", "4");
    entity x, y;
    ASSERT_EQ(UCS_OK, x.open());
    ASSERT_EQ(UCS_OK, y.open());
    am_rx rx_x, rx_y;
    ASSERT_EQ(UCS_OK, uct_iface_set_am_handler(x.iface(), 2, am_cb, &rx_x, 0));
    ASSERT_EQ(UCS_OK, uct_iface_set_am_handler(y.iface(), 2, am_cb, &rx_y, 0));
    uct_ep_h xy = x.connect_and_wait(y);
    uct_ep_h yx = y.connect_and_wait(x);
    ASSERT_TRUE((xy != NULL) && (yx != NULL));

    const uint64_t total = 3000;
    uint64_t sx = 0, sy = 0;
    std::vector<uint8_t> payload(1000, 0x5a);
    pack_arg arg = {payload.data(), payload.size()};
    ASSERT_TRUE(x.progress_until(
        [&]() {
        while ((sx < total) && (uct_ep_am_bcopy(xy, 2, pack_cb, &arg, 0) > 0)) {
            ++sx;
        }
        while ((sy < total) && (uct_ep_am_bcopy(yx, 2, pack_cb, &arg, 0) > 0)) {
            ++sy;
        }
        y.progress();
        return (rx_x.msgs.size() == total) && (rx_y.msgs.size() == total);
        },
        60));
}

/* orc's device address: backend (1 byte), coordinator domain (4), host id
 * (8), network namespace (4) */
enum {
    DEV_ADDR_DOMAIN = 1,
    DEV_ADDR_HOST   = 5
};

TEST_F(OrcUct, UnreachableAddress)
{
    std::vector<uint8_t> dev = b.dev_addr();
    std::vector<uint8_t> ifa = b.iface_addr();
    dev[DEV_ADDR_DOMAIN] ^= 0xff; /* another coordinator domain */
    EXPECT_FALSE(uct_iface_is_reachable(a.iface(),
                                        (uct_device_addr_t *)dev.data(),
                                        (uct_iface_addr_t *)ifa.data()));
    uct_ep_h e;
    EXPECT_EQ(UCS_ERR_UNREACHABLE, a.create_ep(dev, ifa, &e));
}

#if UCT_API >= UCT_VERSION(1, 18)
extern "C" {
#include <uct/api/v2/uct_v2.h>
}

/* What UCP >= 1.18 asks instead of the public is_reachable op: reachability
 * with a scope (the same device: this host and network namespace), and
 * whether an ep leads to a given peer. And orc reaches other hosts. */
TEST_F(OrcUct, ReachabilityScopeAndEpIsConnected)
{
    EXPECT_TRUE(a.attr().cap.flags & UCT_IFACE_FLAG_INTER_NODE);

    std::vector<uint8_t> dev = b.dev_addr();
    std::vector<uint8_t> ifa = b.iface_addr();
    char info[256];
    uct_iface_is_reachable_params_t params = {};
    params.field_mask = UCT_IFACE_IS_REACHABLE_FIELD_DEVICE_ADDR |
                        UCT_IFACE_IS_REACHABLE_FIELD_IFACE_ADDR |
                        UCT_IFACE_IS_REACHABLE_FIELD_SCOPE |
                        UCT_IFACE_IS_REACHABLE_FIELD_INFO_STRING |
                        UCT_IFACE_IS_REACHABLE_FIELD_INFO_STRING_LENGTH;
    params.device_addr        = (uct_device_addr_t *)dev.data();
    params.iface_addr         = (uct_iface_addr_t *)ifa.data();
    params.info_string        = info;
    params.info_string_length = sizeof(info);
    for (auto scope : {UCT_IFACE_REACHABILITY_SCOPE_NETWORK,
                       UCT_IFACE_REACHABILITY_SCOPE_DEVICE}) {
        params.scope = scope;
        EXPECT_TRUE(uct_iface_is_reachable_v2(a.iface(), &params)) << info;
    }

    /* a peer on another host: reachable over the network only */
    std::vector<uint8_t> remote = dev;
    remote[DEV_ADDR_HOST] ^= 0xff;
    params.device_addr = (uct_device_addr_t *)remote.data();
    params.scope       = UCT_IFACE_REACHABILITY_SCOPE_NETWORK;
    EXPECT_TRUE(uct_iface_is_reachable_v2(a.iface(), &params)) << info;
    params.scope = UCT_IFACE_REACHABILITY_SCOPE_DEVICE;
    EXPECT_FALSE(uct_iface_is_reachable_v2(a.iface(), &params));
    EXPECT_NE(0u, strlen(info)); /* why not */

    /* another coordinator domain: not at all */
    std::vector<uint8_t> other = dev;
    other[DEV_ADDR_DOMAIN] ^= 0xff;
    params.device_addr = (uct_device_addr_t *)other.data();
    params.scope       = UCT_IFACE_REACHABILITY_SCOPE_NETWORK;
    EXPECT_FALSE(uct_iface_is_reachable_v2(a.iface(), &params));

    /* the fixture's ep leads to b, and to nothing else */
    uct_ep_is_connected_params_t conn = {};
    conn.field_mask                   = UCT_EP_IS_CONNECTED_FIELD_DEVICE_ADDR |
                      UCT_EP_IS_CONNECTED_FIELD_IFACE_ADDR;
    conn.device_addr = (uct_device_addr_t *)dev.data();
    conn.iface_addr  = (uct_iface_addr_t *)ifa.data();
    EXPECT_TRUE(uct_ep_is_connected(ep, &conn));
    std::vector<uint8_t> a_ifa = a.iface_addr();
    conn.iface_addr            = (uct_iface_addr_t *)a_ifa.data();
    EXPECT_FALSE(uct_ep_is_connected(ep, &conn));
    conn.iface_addr  = (uct_iface_addr_t *)ifa.data();
    conn.device_addr = (uct_device_addr_t *)other.data();
    EXPECT_FALSE(uct_ep_is_connected(ep, &conn));
}
#endif

/* A node that is registered but never answers its mailbox */
class fake_node
{
  public:
    fake_node()
    {
        orc_client_params_t params = {};
        params.field_mask =
            ORC_CLIENT_PARAM_FIELD_URL | ORC_CLIENT_PARAM_FIELD_JOB;
        params.url = uct_env::url().c_str();
        params.job = "uct-test";
        EXPECT_EQ(ORC_CL_OK, orc_client_create(&params, &client));
        EXPECT_EQ(ORC_CL_OK,
                  orc_client_register(client, "fake", getpid(), "{}", 30, &id));
    }
    ~fake_node()
    {
        orc_client_destroy(client);
    }
    /* the address of an iface of node `node` (node id, iface id 1) */
    static std::vector<uint8_t> iface_addr(uint64_t node)
    {
        std::vector<uint8_t> addr(12, 0);
        uint32_t iface_id = 1;
        memcpy(addr.data(), &node, 8);
        memcpy(addr.data() + 8, &iface_id, 4);
        return addr;
    }
    std::vector<uint8_t> iface_addr() const
    {
        return iface_addr(id);
    }
    orc_client_t *client = NULL;
    uint64_t id          = 0;
};

TEST_F(OrcUct, PairTimeoutFailsEpOnce)
{
    scoped_setenv t("UCX_ORC_PAIR_TIMEOUT", "1s");
    entity s;
    ASSERT_EQ(UCS_OK, s.open());
    fake_node fake;
    std::vector<uint8_t> ifa = fake.iface_addr();
    uct_ep_h e;
    double start = entity::now();
    ASSERT_EQ(UCS_OK, s.create_ep(b.dev_addr(), ifa, &e));
    /* accepted while pairing: completes with the pairing's failure */
    uint64_t v = 1, got = 0;
    comp_t c;
    comp_init(&c);
    EXPECT_EQ(UCS_INPROGRESS,
              uct_ep_get_bcopy(e, unpack_cb, &got, 8, 0, 0, &c.uct));
    fill_until_no_resource(e, NULL, 0);
    pending_req r = {};
    r.uct.func    = pending_put;
    r.ep          = e;
    ASSERT_EQ(UCS_OK, uct_ep_pending_add(e, &r.uct, 0));
    ASSERT_TRUE(s.progress_until([&]() { return !s.errors.empty(); }, 10));
    EXPECT_EQ(1, c.done);
    EXPECT_EQ(UCS_ERR_ENDPOINT_TIMEOUT, c.status);
    /* after the error callback the pending request ran once (its put
     * failed with the ep's status): nothing is left to purge */
    EXPECT_EQ(1, r.calls);
    uct_ep_pending_purge(e, pending_purge_cb, NULL);
    EXPECT_EQ(0, r.purged);
    EXPECT_GE(entity::now() - start, 0.9);
    ASSERT_EQ(1u, s.errors.size());
    EXPECT_EQ(e, s.errors[0].ep);
    EXPECT_EQ(UCS_ERR_ENDPOINT_TIMEOUT, s.errors[0].status);
    /* sticky status, no second callback */
    s.progress(1000);
    EXPECT_EQ(1u, s.errors.size());
    EXPECT_EQ(1, c.done);
    EXPECT_EQ(UCS_ERR_ENDPOINT_TIMEOUT, uct_ep_put_short(e, &v, 8, 0, 0));
    EXPECT_EQ(UCS_ERR_ENDPOINT_TIMEOUT, uct_ep_flush(e, 0, NULL));
    /* other eps keep working */
    uct_ep_h good = s.connect_and_wait(b);
    EXPECT_TRUE(good != NULL);
    EXPECT_EQ(1u, s.errors.size());
}

TEST_F(OrcUct, ExpiredPeerFailsEp)
{
    entity s;
    ASSERT_EQ(UCS_OK, s.open());
    uint64_t gone_id;
    {
        fake_node fake;
        gone_id = fake.id;
        ASSERT_EQ(ORC_CL_OK, orc_client_deregister(fake.client, fake.id));
    }
    std::vector<uint8_t> ifa = fake_node::iface_addr(gone_id);
    uct_ep_h e;
    ASSERT_EQ(UCS_OK, s.create_ep(b.dev_addr(), ifa, &e));
    ASSERT_TRUE(s.progress_until([&]() { return !s.errors.empty(); }, 10));
    ASSERT_EQ(1u, s.errors.size());
    EXPECT_EQ(UCS_ERR_CONNECTION_RESET, s.errors[0].status);
}

/* Every iface of a process shares one node in orcd: one registration, one
 * lease, one mailbox and one watch. The connections to orcd do not grow
 * with the ifaces. */
TEST_F(OrcUct, IfacesShareOneCoordinatorSession)
{
    const size_t nmore = 6;
    std::vector<std::unique_ptr<entity>> more;
    for (size_t i = 0; i < nmore; ++i) {
        more.emplace_back(new entity);
        ASSERT_EQ(UCS_OK, more.back()->open());
        /* paired: every mailbox poll and watch of the process runs */
        ASSERT_TRUE(more.back()->connect_and_wait(a) != NULL);
    }

    orc_client_params_t params = {};
    params.field_mask = ORC_CLIENT_PARAM_FIELD_URL | ORC_CLIENT_PARAM_FIELD_JOB;
    params.url        = uct_env::url().c_str();
    params.job        = "uct-test";
    orc_client_t *observer;
    ASSERT_EQ(ORC_CL_OK, orc_client_create(&params, &observer));
    orc_node_info_t *nodes;
    size_t count, ours = 0, ifaces = 0;
    uint64_t index;
    orc_cl_status_t cl_status =
        orc_client_nodes_list(observer, 0, 0, &nodes, &count, &index);
    orc_client_destroy(observer);
    ASSERT_EQ(ORC_CL_OK, cl_status);
    for (size_t i = 0; i < count; ++i) {
        if (nodes[i].pid != getpid()) {
            continue;
        }
        ++ours;
        ASSERT_TRUE(nodes[i].endpoint_json != NULL);
        for (const char *p = nodes[i].endpoint_json;
             (p = strstr(p, "\"device\":\"soft_")) != NULL; ++p) {
            ++ifaces;
        }
    }
    orc_client_nodes_free(nodes, count);
    EXPECT_EQ(1u, ours) << "one node per process";
    EXPECT_EQ(nmore + 2, ifaces) << "its endpoint record lists every iface";

    /* two long-polls (mailbox, watch), one connection for sends and one
     * the keep-alive may take while a send is in flight */
    EXPECT_LE(tcp_connections(uct_env::port(), true), 4);
}

TEST(OrcUctConfig, OrcdUnreachableAtOpen)
{
    uct_env::setup();
    scoped_setenv url("UCX_ORC_COORDINATOR", "http://127.0.0.1:1");
    {
        entity e;
        double start = entity::now();
        EXPECT_EQ(UCS_ERR_UNREACHABLE, e.open());
        EXPECT_LT(entity::now() - start, 10.0);
    }
    {
        scoped_setenv wait("UCX_ORC_COORDINATOR_WAIT", "1s");
        entity e;
        double start = entity::now();
        EXPECT_EQ(UCS_ERR_UNREACHABLE, e.open());
        EXPECT_GE(entity::now() - start, 0.9);
    }
}

TEST(OrcUctConfig, InvalidValuesFailOpen)
{
    uct_env::setup();
    {
        scoped_setenv v("UCX_ORC_TX_QUEUE_LEN", "0");
        entity e;
        EXPECT_EQ(UCS_ERR_INVALID_PARAM, e.open());
    }
    for (const char *m : {"0", "1025"}) {
        scoped_setenv v("UCX_ORC_TX_CQ_MODERATION", m);
        entity e;
        EXPECT_EQ(UCS_ERR_INVALID_PARAM, e.open()) << m;
    }
    {
        scoped_setenv v("UCX_ORC_COORDINATOR", "ftp://x");
        entity e;
        EXPECT_EQ(UCS_ERR_INVALID_PARAM, e.open());
    }
    {
        scoped_setenv v("UCX_ORC_BACKEND", "bogus");
        entity e;
        EXPECT_NE(UCS_OK, e.open());
    }
}


/* UCX's parser rejects bad softnic knobs, naming the variable and the
 * allowed values */
TEST(OrcUctConfig, InvalidSoftnicKnobsFailOpen)
{
    uct_env::setup();
    for (const char *var : {"UCX_ORC_SOFT_NO_CMA", "UCX_ORC_SOFT_NO_RING"}) {
        for (const char *bad : {"bogus", "2", "yess", "-1", ""}) {
            scoped_setenv v(var, bad);
            log_capture cap(ucs_global_opts.log_component.log_level);
            entity e;
            EXPECT_NE(UCS_OK, e.open()) << var << "=" << bad;
            EXPECT_EQ(1u, cap.count(UCS_LOG_LEVEL_ERROR,
                                    {var + strlen("UCX_ORC_"),
                                     std::string("'") + bad + "'", "<y|n>"}))
                << var << "=" << bad;
        }
    }
}

/*
 * softnic's log through UCX's: the device configuration the md gives
 * softnic (uct_orc_md_dev_config, looked up in the loaded module) asks for
 * the most verbose softnic level that UCX's log level lets through, and its
 * callback hands each softnic level to UCX at the matching one (error and
 * warn as such, softnic's events at diag, debug at debug), prefixed with
 * "softnic <device>: ".
 */
TEST(OrcUctConfig, SoftnicLogThroughUcx)
{
    typedef void (*dev_config_fn_t)(const uct_md_config_t *config,
                                    orc_dev_config_t *dev_config);
    uct_env::setup();
    dev_config_fn_t dev_config_fn =
        (dev_config_fn_t)orc_module_symbol("uct_orc_md_dev_config");
    ASSERT_TRUE(dev_config_fn != NULL);
    uct_md_config_t *md_config;
    ASSERT_EQ(UCS_OK,
              uct_md_config_read(orc_component(), NULL, NULL, &md_config));

    const struct {
        ucs_log_level_t ucx;
        softnic_log_level_t soft;
    } follows[] = {
        {UCS_LOG_LEVEL_FATAL, SOFTNIC_LOG_NONE},
        {UCS_LOG_LEVEL_ERROR, SOFTNIC_LOG_ERROR},
        {UCS_LOG_LEVEL_WARN, SOFTNIC_LOG_WARN},
        {UCS_LOG_LEVEL_DIAG, SOFTNIC_LOG_INFO},
        {UCS_LOG_LEVEL_INFO, SOFTNIC_LOG_INFO}, /* UCX's INFO is above DIAG */
        {UCS_LOG_LEVEL_DEBUG, SOFTNIC_LOG_DEBUG},
        {UCS_LOG_LEVEL_TRACE, SOFTNIC_LOG_DEBUG},
    };
    for (const auto &f : follows) {
        log_capture cap(f.ucx);
        orc_dev_config_t dev_config;
        dev_config_fn(md_config, &dev_config);
        EXPECT_EQ(f.soft, dev_config.soft.log_level)
            << "UCX log level " << ucs_log_level_names[f.ucx];
    }

    const struct {
        softnic_log_level_t soft;
        const char *name;
        ucs_log_level_t ucx;
    } maps[] = {
        {SOFTNIC_LOG_ERROR, "error", UCS_LOG_LEVEL_ERROR},
        {SOFTNIC_LOG_WARN, "warn", UCS_LOG_LEVEL_WARN},
        {SOFTNIC_LOG_INFO, "info", UCS_LOG_LEVEL_DIAG},
        {SOFTNIC_LOG_DEBUG, "debug", UCS_LOG_LEVEL_DEBUG},
    };
    for (const auto &m : maps) {
        log_capture cap(UCS_LOG_LEVEL_TRACE);
        orc_dev_config_t dev_config;
        dev_config_fn(md_config, &dev_config);
        ASSERT_TRUE(dev_config.soft.log_fn != NULL);
        std::string text = std::string("test message at softnic level ") +
                           m.name + " (expected, not a failure)";
        dev_config.soft.log_fn(dev_config.soft.log_arg, m.soft, "soft_test",
                               text.c_str());
        EXPECT_EQ(1u, cap.count(m.ucx, {"softnic soft_test: " + text}))
            << m.name << " -> " << ucs_log_level_names[m.ucx];
        EXPECT_EQ(1u, cap.count({text})) << "logged once";
    }
    uct_config_release(md_config);
}

/* UCX_ORC_SOFT_NO_CMA / NO_RING reach softnic: they choose the path of a
 * same-host connection, which softnic reports at its debug level, and that
 * message reaches UCX's log at debug level. */
struct soft_knobs {
    const char *no_cma, *no_ring, *path;
};

void PrintTo(const soft_knobs &k, std::ostream *os)
{
    *os << "NO_CMA=" << k.no_cma << " NO_RING=" << k.no_ring;
}

class OrcUctSoftKnobs :
    public OrcUct,
    public ::testing::WithParamInterface<soft_knobs>
{
  protected:
    void SetUp() override
    {
        const char *backend = getenv("UCX_ORC_BACKEND");
        if ((backend == NULL) || strcmp(backend, "soft")) {
            GTEST_SKIP() << "the soft backend's settings; backend "
                         << (backend ? backend : "(unset)");
        }
        m_cma.reset(
            new scoped_setenv("UCX_ORC_SOFT_NO_CMA", GetParam().no_cma));
        m_ring.reset(
            new scoped_setenv("UCX_ORC_SOFT_NO_RING", GetParam().no_ring));
        m_cap.reset(new log_capture(UCS_LOG_LEVEL_DEBUG));
        OrcUct::SetUp();
    }

    void TearDown() override
    {
        m_cap.reset();
        m_ring.reset();
        m_cma.reset();
    }

    std::unique_ptr<scoped_setenv> m_cma, m_ring;
    std::unique_ptr<log_capture> m_cap;
};

TEST_P(OrcUctSoftKnobs, PathAndLog)
{
    entity::mem dst = b.alloc_mem(64);
    uct_rkey_t rkey = a.unpack_rkey(dst.rkey_buf);
    uint64_t value  = 0x5eed;

    /* a put, flushed: the QP's connection carried it */
    ASSERT_EQ(UCS_OK, retry([&]() {
                  return uct_ep_put_short(ep, &value, sizeof(value),
                                          (uintptr_t)dst.ptr, rkey);
              }));
    flush_ep(a, ep);
    EXPECT_EQ(value, *(uint64_t *)dst.ptr);

    std::string prefix = "softnic soft_" + test_iface() + ": qp 0x";
    EXPECT_GE(m_cap->count(UCS_LOG_LEVEL_DEBUG,
                           {prefix, ": connected to qp 0x",
                            std::string("(") + GetParam().path + ")"}),
              1u);
    EXPECT_EQ(m_cap->count(UCS_LOG_LEVEL_DEBUG, {prefix, "connected to qp"}),
              m_cap->count(UCS_LOG_LEVEL_DEBUG,
                           {prefix, std::string("(") + GetParam().path + ")"}))
        << "a connection took another path";
}

INSTANTIATE_TEST_SUITE_P(
    knobs, OrcUctSoftKnobs,
    ::testing::Values(soft_knobs{"n", "n", "same host, CMA and ring"},
                      soft_knobs{"n", "y", "same host, CMA"},
                      soft_knobs{"y", "n", "TCP"}),
    [](const ::testing::TestParamInfo<soft_knobs> &info) {
    return std::string("no_cma_") + info.param.no_cma + "_no_ring_" +
           info.param.no_ring;
    });

/* ------------------------------------------------ multi-process tests */

namespace
{

/* "node dev iface addr rkey" of a target child */
struct target_info {
    std::vector<uint8_t> dev, iface, rkey;
    uint64_t addr;
};

bool parse_target(const std::string &line, target_info *t)
{
    std::istringstream in(line);
    std::string word, dev, ifa, rkey;
    if (!(in >> word >> dev >> ifa >> std::hex >> t->addr >> rkey) ||
        (word != "target")) {
        return false;
    }
    t->dev   = unhex(dev);
    t->iface = unhex(ifa);
    t->rkey  = unhex(rkey);
    return true;
}

/* The "target ..." line a target child prints first. */
bool read_target(child &c, target_info *t)
{
    std::string line;
    return c.read_line(line) && parse_target(line, t);
}

std::string target_line(entity &e, entity::mem &m)
{
    std::ostringstream out;
    out << "target " << hex(e.dev_addr().data(), e.dev_addr().size()) << " "
        << hex(e.iface_addr().data(), e.iface_addr().size()) << " " << std::hex
        << (uintptr_t)m.ptr << " " << hex(m.rkey_buf.data(), m.rkey_buf.size());
    return out.str();
}

} // namespace

void orc_topo_child(); /* test_orc_topo.cc */

/* Child roles, run as "test_orc_uct --gtest_filter=OrcChild.Main" */
TEST(OrcChild, Main)
{
    const char *role = getenv("ORC_UCT_CHILD_ROLE");
    if (role == NULL) {
        GTEST_SKIP() << "runs only as a child process of the other tests";
    }
    if (!strcmp(role, "topo")) {
        orc_topo_child(); /* binds itself before it opens anything */
        return;
    }
    uct_env::setup();
    entity e;
    ASSERT_EQ(UCS_OK, e.open());

    if (!strcmp(role, "target")) {
        /* expose 1 MiB and never progress */
        entity::mem m = e.alloc_mem(1 << 20);
        fill_pattern(m.ptr, 1 << 20, 11);
        printf("ORC %s\n", target_line(e, m).c_str());
        fflush(stdout);
        char buf[64];
        while (fgets(buf, sizeof(buf), stdin) != NULL) {
            if (!strncmp(buf, "quit", 4)) {
                break;
            }
        }
        e.free_mem(m);
        return;
    }

    if (!strcmp(role, "fadd") || !strcmp(role, "swap")) {
        const bool swap   = !strcmp(role, "swap");
        const uint64_t id = strtoull(getenv("ORC_UCT_CHILD_ID"), NULL, 0);
        char line[1024];
        ASSERT_TRUE(fgets(line, sizeof(line), stdin) != NULL);
        target_info t;
        ASSERT_TRUE(parse_target(line, &t));
        uct_ep_h ep;
        ASSERT_EQ(UCS_OK, e.create_ep(t.dev, t.iface, &ep));
        uct_rkey_t rkey = e.unpack_rkey(t.rkey);
        const int n     = atoi(getenv("ORC_UCT_CHILD_COUNT"));
        std::vector<uint64_t> results(n);
        int done = 0, posted = 0;
        std::vector<comp_t> comps(n);
        ASSERT_TRUE(e.progress_until(
            [&]() {
            while (posted < n) {
                comp_init(&comps[posted]);
                /* swap writes values unique to this child and op */
                ucs_status_t s = uct_ep_atomic64_fetch(
                    ep, swap ? UCT_ATOMIC_OP_SWAP : UCT_ATOMIC_OP_ADD,
                    swap ? ((id << 32) | (uint64_t)(posted + 1)) : 1,
                    &results[posted], t.addr, rkey, &comps[posted].uct);
                if (s == UCS_ERR_NO_RESOURCE) {
                    break;
                }
                EXPECT_EQ(UCS_INPROGRESS, s);
                ++posted;
            }
            done = 0;
            for (int i = 0; i < posted; ++i) {
                done += comps[i].done;
            }
            return done == n;
            },
            60));
        for (int i = 0; i < n; ++i) {
            ASSERT_EQ(UCS_OK, comps[i].status) << role << " " << i;
        }
        std::ostringstream out;
        out << "ORC results";
        for (uint64_t r : results) {
            out << " " << r;
        }
        printf("%s\n", out.str().c_str());
        fflush(stdout);
        return;
    }
    FAIL() << "unknown role " << role;
}

TEST_F(OrcUct, PeerNeverProgresses)
{
    child c("target");
    target_info t;
    ASSERT_TRUE(read_target(c, &t));

    uct_ep_h e;
    ASSERT_EQ(UCS_OK, a.create_ep(t.dev, t.iface, &e));
    uct_rkey_t rkey   = a.unpack_rkey(t.rkey);
    entity::mem local = a.alloc_mem(1 << 20);
    uct_iov_t iov     = {local.ptr, 1 << 20, local.memh, 0, 1};
    ASSERT_NO_FATAL_FAILURE(wait_in_flight([&](uct_completion_t *comp) {
        return uct_ep_get_zcopy(e, &iov, 1, t.addr, rkey, comp);
    }));
    std::vector<uint8_t> expect(1 << 20);
    fill_pattern(expect.data(), expect.size(), 11);
    EXPECT_EQ(0, memcmp(expect.data(), local.ptr, expect.size()));
    c.write_line("quit");
    EXPECT_EQ(0, c.wait_exit());
    a.free_mem(local);
}

TEST_F(OrcUct, PeerKilledMidTransfer)
{
    child c("target");
    target_info t;
    ASSERT_TRUE(read_target(c, &t));

    uct_ep_h dead;
    ASSERT_EQ(UCS_OK, a.create_ep(t.dev, t.iface, &dead));
    uct_rkey_t rkey   = a.unpack_rkey(t.rkey);
    entity::mem local = a.alloc_mem(1 << 20);
    uct_iov_t iov     = {local.ptr, 1 << 20, local.memh, 0, 1};

    /* stream writes, kill the peer in the middle, keep streaming (a write
     * the device finished at once returns UCS_OK: it counts as started) */
    int completed = 0, failed = 0, posted = 0, started = 0;
    std::vector<comp_t> comps(4000);
    bool killed       = false;
    ucs_status_t last = UCS_OK;
    ASSERT_TRUE(a.progress_until(
        [&]() {
        if ((posted < (int)comps.size()) && a.errors.empty()) {
            comp_init(&comps[posted]);
            last = uct_ep_put_zcopy(dead, &iov, 1, t.addr, rkey,
                                    &comps[posted].uct);
            started += (last == UCS_OK) || (last == UCS_INPROGRESS);
            if (last == UCS_INPROGRESS) {
                ++posted;
            }
        }
        if (!killed && (started >= 20)) {
            c.kill_now();
            killed = true;
        }
        return !a.errors.empty();
        },
        60));
    EXPECT_TRUE(killed);
    /* everything posted completes, with an error after the kill */
    ASSERT_TRUE(a.progress_until(
        [&]() {
        completed = failed = 0;
        for (int i = 0; i < posted; ++i) {
            completed += comps[i].done;
            failed += comps[i].done && (comps[i].status != UCS_OK);
        }
        return completed == posted;
        },
        30));
    a.progress(1000);
    ASSERT_EQ(1u, a.errors.size());
    EXPECT_EQ(dead, a.errors[0].ep);
    ucs_status_t st = a.errors[0].status;
    EXPECT_TRUE((st == UCS_ERR_ENDPOINT_TIMEOUT) ||
                (st == UCS_ERR_CONNECTION_RESET))
        << ucs_status_string(st);
    /* sticky */
    uint64_t v = 1;
    EXPECT_EQ(st, uct_ep_put_short(dead, &v, 8, t.addr, rkey));
    EXPECT_EQ(st, uct_ep_put_zcopy(dead, &iov, 1, t.addr, rkey, NULL));
    EXPECT_EQ(st, uct_ep_am_short(dead, 1, 0, NULL, 0));
    EXPECT_EQ(st, uct_ep_flush(dead, 0, NULL));
    pending_req r = {};
    r.uct.func    = pending_put;
    EXPECT_EQ(st, uct_ep_pending_add(dead, &r.uct, 0));
    uct_ep_pending_purge(dead, pending_purge_cb, NULL);
    EXPECT_EQ(0, r.purged);
    /* the ep to b is fine */
    entity::mem bm   = b.alloc_mem(64);
    uct_rkey_t brkey = a.unpack_rkey(bm.rkey_buf);
    uint64_t w       = 77;
    ASSERT_EQ(UCS_OK, retry([&]() {
                  return uct_ep_put_short(ep, &w, 8, (uintptr_t)bm.ptr, brkey);
              }));
    flush_ep(a, ep);
    EXPECT_EQ(77u, *(uint64_t *)bm.ptr);
    EXPECT_EQ(1u, a.errors.size());
    b.free_mem(bm);
    a.free_mem(local);
}

/* A peer dies under a stream of unsignaled work (short and bcopy puts)
 * between signaled zcopy puts and flushes: every callback runs exactly
 * once, those of the operations the QP flushed with an error, and the ep
 * fails once */
TEST_F(OrcUct, PeerKilledCompletesUnsignaledWorkOnce)
{
    child c("target");
    target_info t;
    ASSERT_TRUE(read_target(c, &t));

    uct_ep_h dead;
    ASSERT_EQ(UCS_OK, a.create_ep(t.dev, t.iface, &dead));
    uct_rkey_t rkey   = a.unpack_rkey(t.rkey);
    entity::mem local = a.alloc_mem(4096);
    uct_iov_t iov     = {local.ptr, 4096, local.memh, 0, 1};
    uint64_t v        = 5;
    pack_arg pa       = {&v, sizeof(v)};

    std::vector<comp_t> comps(3000);
    int posted = 0, step = 0;
    bool killed = false;
    /* one step of the stream: 3 short puts, 2 bcopy puts (no completion of
     * their own), then a zcopy put or a flush with a callback */
    auto post_one = [&]() -> ucs_status_t {
        int k = step % 6;
        if (k < 3) {
            return uct_ep_put_short(dead, &v, sizeof(v), t.addr + 8 * k, rkey);
        } else if (k < 5) {
            ssize_t r =
                uct_ep_put_bcopy(dead, pack_cb, &pa, t.addr + 8 * k, rkey);
            return (r >= 0) ? UCS_OK : (ucs_status_t)r;
        }
        comp_init(&comps[posted]);
        ucs_status_t st = ((posted % 2) == 0)
                              ? uct_ep_put_zcopy(dead, &iov, 1, t.addr + 4096,
                                                 rkey, &comps[posted].uct)
                              : uct_ep_flush(dead, 0, &comps[posted].uct);
        if (st == UCS_INPROGRESS) {
            ++posted;
            return UCS_OK;
        }
        return st;
    };
    ASSERT_TRUE(a.progress_until(
        [&]() {
        if ((posted < (int)comps.size()) && a.errors.empty()) {
            ucs_status_t st = post_one();
            if (st == UCS_OK) {
                ++step;
            } else {
                EXPECT_TRUE((st == UCS_ERR_NO_RESOURCE) || !a.errors.empty() ||
                            killed)
                    << ucs_status_string(st);
            }
        }
        if (!killed && (posted >= 40)) {
            c.kill_now();
            killed = true;
        }
        return !a.errors.empty();
        },
        60));
    ASSERT_TRUE(killed);
    int completed = 0, failed = 0;
    ASSERT_TRUE(a.progress_until(
        [&]() {
        completed = failed = 0;
        for (int i = 0; i < posted; ++i) {
            completed += (comps[i].done > 0);
            failed += (comps[i].done > 0) && (comps[i].status != UCS_OK);
        }
        return completed == posted;
        },
        30))
        << completed << " of " << posted << " callbacks ran";
    a.progress(1000);
    for (int i = 0; i < posted; ++i) {
        EXPECT_EQ(1, comps[i].done) << "callback " << i;
    }
    EXPECT_GE(failed, 1);
    ASSERT_EQ(1u, a.errors.size());
    EXPECT_EQ(dead, a.errors[0].ep);
    a.destroy_ep(dead);
    /* nothing of it is left in flight; the ep to b still works */
    EXPECT_TRUE(a.progress_until(
        [&]() { return uct_iface_flush(a.iface(), 0, NULL) == UCS_OK; }));
    entity::mem bm   = b.alloc_mem(64);
    uct_rkey_t brkey = a.unpack_rkey(bm.rkey_buf);
    uint64_t w       = 78;
    ASSERT_EQ(UCS_OK, retry([&]() {
                  return uct_ep_put_short(ep, &w, 8, (uintptr_t)bm.ptr, brkey);
              }));
    flush_ep(a, ep);
    EXPECT_EQ(78u, *(uint64_t *)bm.ptr);
    b.free_mem(bm);
    a.free_mem(local);
    c.wait_exit();
}

/* Unsignaled WRs to a dead peer, then nothing more: their failure (a
 * failed WR completes even when unsignaled) is still found and reported,
 * though no signaled WR is in flight */
TEST_F(OrcUct, DeadPeerUnderUnsignaledWritesIsReported)
{
    /* the child's lease outlives the test: only the QP tells */
    scoped_setenv ttl("UCX_ORC_LEASE_TTL", "300");
    child c("target");
    target_info t;
    ASSERT_TRUE(read_target(c, &t));
    uct_ep_h e;
    ASSERT_EQ(UCS_OK, a.create_ep(t.dev, t.iface, &e));
    uct_rkey_t rkey = a.unpack_rkey(t.rkey);
    ASSERT_NO_FATAL_FAILURE(put_paired(e, t.addr, rkey));
    c.kill_now();
    EXPECT_EQ(137, c.wait_exit());

    for (uint64_t i = 0; i < 3; ++i) { /* fewer than the moderation */
        ASSERT_EQ(UCS_OK, uct_ep_put_short(e, &i, 8, t.addr, rkey));
    }
    ASSERT_TRUE(a.progress_until([&]() { return !a.errors.empty(); }, 25))
        << "the failure of unsignaled WRs was never seen";
    ASSERT_EQ(1u, a.errors.size());
    EXPECT_EQ(e, a.errors[0].ep);
}

TEST_F(OrcUct, EpCheckHealthyAndDeadPeer)
{
    /* a live peer: no error */
    ASSERT_EQ(UCS_OK, uct_ep_check(ep, 0, NULL));
    flush_ep(a, ep);
    a.progress(100);
    EXPECT_TRUE(a.errors.empty());

    /* a dead peer, idle ep: ep_check reports it */
    child c("target");
    target_info t;
    ASSERT_TRUE(read_target(c, &t));
    uct_ep_h e;
    ASSERT_EQ(UCS_OK, a.create_ep(t.dev, t.iface, &e));
    uct_rkey_t rkey = a.unpack_rkey(t.rkey);
    ASSERT_NO_FATAL_FAILURE(put_paired(e, t.addr, rkey));
    c.kill_now();
    EXPECT_EQ(137, c.wait_exit());
    ASSERT_TRUE(a.progress_until(
        [&]() {
        ucs_status_t st = uct_ep_check(e, 0, NULL);
        EXPECT_TRUE((st == UCS_OK) || (st == UCS_ERR_NO_RESOURCE) ||
                    !a.errors.empty());
        return !a.errors.empty();
        },
        30));
    ASSERT_EQ(1u, a.errors.size());
    EXPECT_EQ(e, a.errors[0].ep);
}

TEST_F(OrcUct, EventFdWakesOnReceive)
{
    am_rx rx;
    ASSERT_EQ(UCS_OK, uct_iface_set_am_handler(b.iface(), 3, am_cb, &rx, 0));
    int fd;
    ASSERT_EQ(UCS_OK, uct_iface_event_fd_get(b.iface(), &fd));
    ucs_status_t st;
    ASSERT_TRUE(b.progress_until([&]() {
        st = uct_iface_event_arm(b.iface(), UCT_EVENT_RECV);
        return st == UCS_OK;
    }));
    struct pollfd pfd = {fd, POLLIN, 0};
    EXPECT_EQ(0, poll(&pfd, 1, 100)) << "woke up with nothing to do";

    ASSERT_EQ(UCS_OK,
              retry([&]() { return uct_ep_am_short(ep, 3, 7, NULL, 0); }));
    pfd.revents = 0;
    EXPECT_EQ(1, poll(&pfd, 1, 10000)) << "no wakeup on receive";
    ASSERT_TRUE(b.progress_until([&]() { return rx.msgs.size() == 1; }));
}

/* An armed interface signals its event fd only for what it was armed for:
 * not for a peer pairing with it or leaving, not for credit grants, not for
 * send completions when armed for receives; an active message still
 * signals */
TEST_F(OrcUct, ArmedIfaceStaysQuietWithNothingNew)
{
    scoped_setenv credits("UCX_ORC_AM_CREDITS", "4");
    entity s, r;
    ASSERT_EQ(UCS_OK, s.open());
    ASSERT_EQ(UCS_OK, r.open());
    am_rx rx_s, rx_r;
    ASSERT_EQ(UCS_OK, uct_iface_set_am_handler(s.iface(), 5, am_cb, &rx_s, 0));
    ASSERT_EQ(UCS_OK, uct_iface_set_am_handler(r.iface(), 5, am_cb, &rx_r, 0));
    int fd_s, fd_r;
    ASSERT_EQ(UCS_OK, uct_iface_event_fd_get(s.iface(), &fd_s));
    ASSERT_EQ(UCS_OK, uct_iface_event_fd_get(r.iface(), &fd_r));
    auto arm = [](entity &e, unsigned events) {
        return e.progress_until(
            [&]() { return uct_iface_event_arm(e.iface(), events) == UCS_OK; });
    };
    auto quiet = [](int fd) {
        struct pollfd pfd = {fd, POLLIN, 0};
        return poll(&pfd, 1, 300) == 0;
    };

    /* r armed: s pairs with it (r's agent answers without r), then goes */
    ASSERT_TRUE(arm(r, UCT_EVENT_RECV | UCT_EVENT_SEND_COMP));
    uct_ep_h e = s.connect_and_wait(r);
    ASSERT_TRUE(e != NULL);
    EXPECT_TRUE(quiet(fd_r)) << "a peer pairing woke the interface";

    /* s armed for receives: its AMs' completions and r's credit grants
     * are nothing to receive */
    ASSERT_TRUE(s.progress_until([&]() {
        return uct_ep_am_short(e, 5, 1, NULL, 0) == UCS_ERR_NO_RESOURCE;
    }));
    ASSERT_TRUE(arm(s, UCT_EVENT_RECV));
    ASSERT_TRUE(r.progress_until([&]() { return rx_r.msgs.size() == 4; }));
    double until = entity::now() + 0.3;
    while (entity::now() < until) {
        r.progress(); /* returns credits, completes s's sends */
    }
    EXPECT_TRUE(quiet(fd_s)) << "credits or send completions woke a "
                                "receive-armed interface";

    /* an AM does wake it */
    uct_ep_h back = r.connect_and_wait(s);
    ASSERT_TRUE(back != NULL);
    ASSERT_TRUE(arm(s, UCT_EVENT_RECV));
    ASSERT_EQ(UCS_OK, uct_ep_am_short(back, 5, 2, NULL, 0));
    struct pollfd pfd = {fd_s, POLLIN, 0};
    EXPECT_EQ(1, poll(&pfd, 1, 10000)) << "no wakeup on an active message";
    ASSERT_TRUE(s.progress_until([&]() { return rx_s.msgs.size() == 1; }));

    /* r armed again: s's ep goes away */
    ASSERT_TRUE(arm(r, UCT_EVENT_RECV));
    flush_ep(s, e);
    s.destroy_ep(e);
    EXPECT_TRUE(quiet(fd_r)) << "a peer leaving woke the interface";
}

namespace
{
/* AM requests for the pending queue of an ep whose peer dies */
struct dead_req {
    uct_pending_req_t uct;
    uct_ep_h ep;
    int calls;
    int purged;
    ucs_status_t status; /* of the last call's operation */
};

ucs_status_t dead_req_send(uct_pending_req_t *self)
{
    dead_req *r = ucs_container_of(self, dead_req, uct);
    ++r->calls;
    r->status = uct_ep_am_short(r->ep, 1, 0, NULL, 0);
    return r->status;
}

void dead_req_purged(uct_pending_req_t *self, void *)
{
    ++ucs_container_of(self, dead_req, uct)->purged;
}
} // namespace

/* When the peer fails, the requests waiting in the ep's pending queue are
 * handed back through their callbacks (their operations fail with the
 * ep's status): nothing stays pending, and destroying the ep warns about
 * nothing */
TEST_F(OrcUct, FailedPeerPendingQueueEmptiedCleanly)
{
    scoped_setenv credits("UCX_ORC_AM_CREDITS", "4");
    child c("target", {"UCX_ORC_LEASE_TTL=2"});
    target_info t;
    ASSERT_TRUE(read_target(c, &t));

    uct_ep_h dead;
    ASSERT_EQ(UCS_OK, a.create_ep(t.dev, t.iface, &dead));
    /* paired; the target never progresses: its credits run out */
    ASSERT_TRUE(a.progress_until(
        [&]() { return uct_ep_am_short(dead, 1, 0, NULL, 0) == UCS_OK; }));
    for (int i = 0; uct_ep_am_short(dead, 1, 0, NULL, 0) == UCS_OK; ++i) {
        ASSERT_LT(i, 1000);
    }
    std::vector<dead_req> reqs(3);
    for (dead_req &q : reqs) {
        q.uct.func = dead_req_send;
        q.ep       = dead;
        q.status   = UCS_OK;
        ASSERT_EQ(UCS_OK, uct_ep_pending_add(dead, &q.uct, 0));
    }

    c.kill_now();
    ASSERT_TRUE(a.progress_until([&]() { return !a.errors.empty(); }, 60));
    ucs_status_t st = a.errors[0].status;
    a.progress(100);

    /* each request ran once more, and learnt the failure */
    for (dead_req &q : reqs) {
        EXPECT_GE(q.calls, 1);
        EXPECT_EQ(st, q.status) << "a request left in the queue";
    }
    uct_ep_pending_purge(dead, dead_req_purged, NULL);
    for (dead_req &q : reqs) {
        EXPECT_EQ(0, q.purged);
    }
    log_capture log;
    a.destroy_ep(dead);
    EXPECT_EQ(0u, log.warnings("pending")) << log.first_warning();
    EXPECT_EQ(1u, a.errors.size());
}

TEST_F(OrcUct, EpsComeAndGoWithoutLeaks)
{
    /* room for only 4 passive QPs at a time on the receiver: destroyed eps
     * must give theirs back (goodbye through orcd) */
    scoped_setenv rxq("UCX_ORC_RX_QUEUE_LEN", "64");
    scoped_setenv cr("UCX_ORC_AM_CREDITS", "16");
    entity s, r;
    ASSERT_EQ(UCS_OK, s.open());
    ASSERT_EQ(UCS_OK, r.open());
    am_rx rx;
    ASSERT_EQ(UCS_OK, uct_iface_set_am_handler(r.iface(), 4, am_cb, &rx, 0));

    for (uint64_t i = 0; i < 12; ++i) {
        uct_ep_h e;
        ASSERT_EQ(UCS_OK, s.connect_to(r, &e));
        ucs_status_t st;
        ASSERT_TRUE(s.progress_until([&]() {
            r.progress();
            st = uct_ep_am_short(e, 4, i, NULL, 0);
            return (st != UCS_ERR_NO_RESOURCE) || !s.errors.empty();
        }));
        ASSERT_EQ(UCS_OK, st) << "ep " << i;
        ASSERT_TRUE(r.progress_until([&]() {
            s.progress();
            return rx.msgs.size() == i + 1;
        }));
        flush_ep(s, e);
        s.destroy_ep(e);
    }
    EXPECT_TRUE(s.errors.empty());
}

TEST_F(OrcUct, OrcdGoneWhilePairingFailsEp)
{
    scoped_setenv t("UCX_ORC_PAIR_TIMEOUT", "1s");
    entity s;
    ASSERT_EQ(UCS_OK, s.open());
    /* the established ep keeps working without orcd */
    entity::mem m   = b.alloc_mem(64);
    uct_rkey_t rkey = a.unpack_rkey(m.rkey_buf);

    uct_env::stop_orcd();
    uct_ep_h e;
    ASSERT_EQ(UCS_OK, s.connect_to(b, &e));
    double start = entity::now();
    ASSERT_TRUE(s.progress_until([&]() { return !s.errors.empty(); }, 15));
    EXPECT_LT(entity::now() - start, 10.0);
    ASSERT_EQ(1u, s.errors.size());
    EXPECT_EQ(UCS_ERR_ENDPOINT_TIMEOUT, s.errors[0].status);

    uint64_t v = 11;
    ASSERT_EQ(UCS_OK, retry([&]() {
                  return uct_ep_put_short(ep, &v, 8, (uintptr_t)m.ptr, rkey);
              }));
    flush_ep(a, ep);
    EXPECT_EQ(11u, *(uint64_t *)m.ptr);
    EXPECT_TRUE(a.errors.empty());
    b.free_mem(m);
    uct_env::start_orcd(); /* for the next tests */
}

TEST_F(OrcUct, PeerLeavingCleanlyIsNoError)
{
    uct_ep_h e;
    {
        entity c;
        ASSERT_EQ(UCS_OK, c.open());
        e = a.connect_and_wait(c);
        ASSERT_TRUE(e != NULL);
    } /* c closes: it deregisters from orcd */
    double until = entity::now() + 2.5;
    while (entity::now() < until) {
        a.progress();
    }
    EXPECT_TRUE(a.errors.empty()) << "an idle ep to a peer that left "
                                     "cleanly reported an error";
}

TEST_F(OrcUct, PeerLeaseExpiresWhileIdle)
{
    child c("target", {"UCX_ORC_LEASE_TTL=2"});
    target_info t;
    ASSERT_TRUE(read_target(c, &t));
    uct_ep_h e;
    ASSERT_EQ(UCS_OK, a.create_ep(t.dev, t.iface, &e));
    uct_rkey_t rkey = a.unpack_rkey(t.rkey);
    ASSERT_NO_FATAL_FAILURE(put_paired(e, t.addr, rkey));

    /* no traffic after the kill: the lease running out tells us */
    c.kill_now();
    double start = entity::now();
    ASSERT_TRUE(a.progress_until([&]() { return !a.errors.empty(); }, 30));
    EXPECT_LT(entity::now() - start, 15.0);
    ASSERT_EQ(1u, a.errors.size());
    EXPECT_EQ(e, a.errors[0].ep);
    EXPECT_EQ(UCS_ERR_CONNECTION_RESET, a.errors[0].status);
    uint64_t v = 5;
    EXPECT_EQ(UCS_ERR_CONNECTION_RESET,
              uct_ep_put_short(e, &v, 8, t.addr, rkey));
}

/* nproc children run `mode` count times each against the target in info
 * (child ids 1..nproc); every result they report is added to results */
static void run_atomic_children(const char *mode, int nproc, int count,
                                const std::string &info,
                                std::multiset<uint64_t> &results)
{
    std::vector<std::unique_ptr<child>> children;
    for (int i = 0; i < nproc; ++i) {
        children.emplace_back(
            new child(mode, {"ORC_UCT_CHILD_COUNT=" + std::to_string(count),
                             "ORC_UCT_CHILD_ID=" + std::to_string(i + 1)}));
        children.back()->write_line(info);
    }
    for (auto &c : children) {
        std::string line;
        ASSERT_TRUE(c->read_line(line, 60));
        std::istringstream in(line);
        std::string word;
        in >> word;
        ASSERT_EQ("results", word);
        uint64_t v;
        while (in >> v) {
            results.insert(v);
        }
        EXPECT_EQ(0, c->wait_exit());
    }
}

TEST_F(OrcUct, AtomicsFromSeveralProcesses)
{
    const int nproc = 3, count = 300;
    entity::mem counter      = a.alloc_mem(64);
    *(uint64_t *)counter.ptr = 0;
    std::string info         = target_line(a, counter);

    /* the target's agent pairs; atomics need no progress from us */
    std::multiset<uint64_t> seen;
    ASSERT_NO_FATAL_FAILURE(
        run_atomic_children("fadd", nproc, count, info, seen));
    EXPECT_EQ((uint64_t)nproc * count, *(uint64_t *)counter.ptr);
    /* fetch-add results are exactly 0..N-1, each once */
    ASSERT_EQ((size_t)nproc * count, seen.size());
    uint64_t expect = 0;
    for (uint64_t v : seen) {
        ASSERT_EQ(expect++, v);
    }
    a.free_mem(counter);
}

TEST_F(OrcUct, SwapFromSeveralProcessesIsExact)
{
    /* every value written by a swap is returned by exactly one later swap,
     * or is the final value: no value lost, none returned twice */
    const int nproc = 3, count = 200;
    entity::mem cell      = a.alloc_mem(64);
    *(uint64_t *)cell.ptr = 0;
    std::string info      = target_line(a, cell);

    std::multiset<uint64_t> returned;
    ASSERT_NO_FATAL_FAILURE(
        run_atomic_children("swap", nproc, count, info, returned));
    returned.insert(*(uint64_t *)cell.ptr);

    std::multiset<uint64_t> written = {0};
    for (uint64_t id = 1; id <= (uint64_t)nproc; ++id) {
        for (uint64_t i = 1; i <= (uint64_t)count; ++i) {
            written.insert((id << 32) | i);
        }
    }
    EXPECT_TRUE(returned == written);
    a.free_mem(cell);
}

TEST(OrcUctConfig, JobNameCharacterSet)
{
    uct_env::setup();
    /* 1..128 characters of [A-Za-z0-9._-] */
    for (const std::string &job :
         {std::string("a.b_c-D9"), std::string(128, 'j')}) {
        scoped_setenv v("UCX_ORC_JOB", job);
        entity e;
        EXPECT_EQ(UCS_OK, e.open()) << job;
    }
    for (const std::string &job :
         {std::string("bad job"), std::string("a/b"), std::string("x\xc3\xa9"),
          std::string(129, 'j')}) {
        scoped_setenv v("UCX_ORC_JOB", job);
        log_capture log;
        entity e;
        EXPECT_EQ(UCS_ERR_INVALID_PARAM, e.open()) << job;
        /* the error names the variable and what is allowed */
        EXPECT_EQ(1u, log.warnings("UCX_ORC_JOB")) << job;
        EXPECT_EQ(1u, log.warnings("[A-Za-z0-9._-]")) << job;
    }
}

/* orcd refuses the registration: the error says what orcd said */
TEST(OrcUctConfig, CoordinatorRefusalSaysWhy)
{
    uct_env::setup();
    orcd_process orcd("auth:\n  enabled: true\n"
                      "  tokens:\n    uct-auth: good-token-1234\n");
    scoped_setenv url("UCX_ORC_COORDINATOR", orcd.url());
    scoped_setenv job("UCX_ORC_JOB", "uct-auth");
    {
        scoped_setenv token("UCX_ORC_TOKEN", "wrong-token-5678");
        log_capture log;
        entity e;
        EXPECT_EQ(UCS_ERR_REJECTED, e.open());
        EXPECT_EQ(1u, log.warnings("HTTP 401 unauthorized: invalid token"))
            << log.first_warning();
    }
    {
        scoped_setenv token("UCX_ORC_TOKEN", "good-token-1234");
        entity e;
        EXPECT_EQ(UCS_OK, e.open());
    }
}
