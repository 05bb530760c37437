/*
 * orcd unit tests: the store (etcd semantics), the YAML configuration loader,
 * the counter locks and the request router, all called directly (no
 * sockets).
 */
extern "C" {
#include "coordinator/common/orc_util.h"
#include "coordinator/orcd/orcd.h"
#include "coordinator/orcd/orcd_api.h"
#include "coordinator/orcd/orcd_counter.h"
#include "coordinator/store/orc_store.h"
#include "coordinator/store/orc_store_etcd.h"
#include "coordinator/store/orc_store_replica.h"
}

#include "etcd_test_util.h"

#include <gtest/gtest.h>
#include <inttypes.h>
#include <jansson.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace
{

/* ------------------------------------------------------------------ store */

const orc_store_params_t k_store_params = {20, 2, nullptr};

/* Watch callback target: records the revision, signals a waiter. */
struct watch_sink {
    std::mutex m;
    std::condition_variable cv;
    int fired    = 0;
    uint64_t rev = 0;

    static void cb(void *arg, uint64_t rev)
    {
        watch_sink *w = static_cast<watch_sink *>(arg);
        std::lock_guard<std::mutex> g(w->m);
        ++w->fired;
        w->rev = rev;
        w->cv.notify_all();
    }
    bool wait(double seconds)
    {
        std::unique_lock<std::mutex> g(m);
        return cv.wait_for(g, std::chrono::duration<double>(seconds),
                           [this] { return fired > 0; });
    }
    int count()
    {
        std::lock_guard<std::mutex> g(m);
        return fired;
    }
};

/*
 * The store's semantics (orc_store.h), for both implementations: the memory
 * store, and the etcd store on a real etcd (one member, shared by the tests,
 * each under its own key prefix). The etcd store's reads and watches come
 * from its cache, which follows etcd's writes asynchronously: a test reads
 * at the revision of its last write (read-your-writes) before it looks at
 * what only the cache shows (watches, usage).
 */
class store_test : public ::testing::TestWithParam<std::string>
{
  protected:
    void SetUp() override
    {
        if (etcd()) {
            std::string why;
            etcd_test::etcd_cluster *c = etcd_test::shared_etcd(1, &why);
            ASSERT_NE(c, nullptr) << why;
            m_endpoints               = c->endpoints();
            m_prefix                  = etcd_test::unique_prefix("store");
            orc_store_etcd_params_t p = {};
            std::vector<const char *> eps;
            for (auto &e : m_endpoints) {
                eps.push_back(e.c_str());
            }
            p.store           = k_store_params;
            p.etcd.endpoints  = eps.data();
            p.etcd.nendpoints = eps.size();
            p.etcd.timeout_ms = 5000;
            p.prefix          = m_prefix.c_str();
            char err[512];
            ASSERT_EQ(orc_store_etcd_open(&p, &m_s, err, sizeof(err)),
                      ORC_STORE_OK)
                << err;
        } else {
            ASSERT_EQ(orc_store_mem_open(&k_store_params, &m_s), ORC_STORE_OK);
        }
        m_base = m_s->ops->revision(m_s);
        m_last = m_base;
    }
    void TearDown() override
    {
        orc_store_close(m_s);
    }

    bool etcd() const
    {
        return GetParam() == "etcd";
    }

    /* revision n writes after the test's start (nothing else writes to
     * the test's etcd meanwhile) */
    uint64_t rev(uint64_t n)
    {
        return m_base + n;
    }

    uint64_t put(const char *k, const char *v, uint64_t lease = 0)
    {
        uint64_t r = 0;
        EXPECT_EQ(orc_store_put(m_s, k, v, strlen(v), lease, &r), ORC_STORE_OK);
        m_last = (r > m_last) ? r : m_last;
        return r;
    }
    /* read-your-writes: at the revision of the last write or later */
    bool get(const char *k, orc_store_kv_t *kv)
    {
        return orc_store_get(m_s, k, m_last, kv, NULL) == ORC_STORE_OK;
    }
    size_t count(const char *prefix)
    {
        char *end = orc_store_prefix_end(prefix);
        orc_store_range_result_t res;
        EXPECT_EQ(m_s->ops->range(m_s, prefix, end, ORC_STORE_RANGE_COUNT_ONLY,
                                  0, m_last, &res),
                  ORC_STORE_OK);
        free(end);
        return res.total;
    }
    /* the store's reads (and watches) are at the last write */
    void settle()
    {
        count("/");
    }

    orc_store_t *m_s = nullptr;
    uint64_t m_base  = 0;
    uint64_t m_last  = 0;
    std::vector<std::string> m_endpoints;
    std::string m_prefix;
};

INSTANTIATE_TEST_SUITE_P(backend, store_test,
                         ::testing::Values("memory", "etcd"),
                         [](const ::testing::TestParamInfo<std::string> &i) {
    return i.param;
});

TEST_P(store_test, revisions_like_etcd)
{
    orc_store_kv_t kv;

    EXPECT_GE(m_base, 1u); /* revisions start at 1 */
    EXPECT_EQ(put("/a", "1"), rev(1));
    EXPECT_EQ(put("/b", "2"), rev(2));
    EXPECT_EQ(put("/a", "11"), rev(3));
    ASSERT_TRUE(get("/a", &kv));
    EXPECT_STREQ(kv.value, "11");
    EXPECT_EQ(kv.value_len, 2u);
    EXPECT_EQ(kv.create_rev, rev(1));
    EXPECT_EQ(kv.mod_rev, rev(3));
    EXPECT_EQ(kv.version, 2u);
    EXPECT_EQ(kv.lease, 0u);
    orc_store_kv_free(&kv);

    size_t deleted;
    uint64_t r;
    EXPECT_EQ(orc_store_delete(m_s, "/a", NULL, &deleted, &r), ORC_STORE_OK);
    EXPECT_EQ(deleted, 1u);
    EXPECT_EQ(r, rev(4));
    m_last = r;
    /* deleting nothing does not bump the revision */
    EXPECT_EQ(orc_store_delete(m_s, "/a", NULL, &deleted, &r), ORC_STORE_OK);
    EXPECT_EQ(deleted, 0u);
    EXPECT_EQ(put("/c", "3"), rev(5));
    /* re-creation starts a new version history */
    EXPECT_EQ(put("/a", "x"), rev(6));
    ASSERT_TRUE(get("/a", &kv));
    EXPECT_EQ(kv.create_rev, rev(6));
    EXPECT_EQ(kv.version, 1u);
    orc_store_kv_free(&kv);
    EXPECT_FALSE(get("/zz", &kv));
    /* the reads are at the last write */
    settle();
    EXPECT_EQ(m_s->ops->revision(m_s), rev(6));
    /* keys are bytes: any byte but NUL, including non-UTF-8 */
    EXPECT_EQ(orc_store_put(m_s, "/bin", "\xff\x01", 2, 0, &m_last),
              ORC_STORE_OK);
    ASSERT_TRUE(get("/bin", &kv));
    EXPECT_EQ(kv.value_len, 2u);
    EXPECT_EQ(memcmp(kv.value, "\xff\x01", 2), 0);
    orc_store_kv_free(&kv);
}

TEST_P(store_test, ranges_and_prefixes)
{
    put("/j/a", "1");
    put("/j/b", "2");
    put("/j/b/c", "3");
    put("/j0", "4");
    put("/i", "5");
    EXPECT_EQ(count("/j/"), 3u);
    EXPECT_EQ(count("/j"), 4u);
    EXPECT_EQ(count(""), 5u); /* whole keyspace */

    orc_store_range_result_t res;
    ASSERT_EQ(m_s->ops->range(m_s, "/j/", "/j/c", 0, 2, m_last, &res),
              ORC_STORE_OK);
    EXPECT_EQ(res.total, 3u);
    ASSERT_EQ(res.count, 2u);
    EXPECT_STREQ(res.kvs[0].key, "/j/a");
    EXPECT_STREQ(res.kvs[1].key, "/j/b");
    EXPECT_EQ(res.revision, rev(5));
    orc_store_range_result_free(&res);
    ASSERT_EQ(m_s->ops->range(m_s, "/j/", "/j/c", ORC_STORE_RANGE_KEYS_ONLY, 0,
                              m_last, &res),
              ORC_STORE_OK);
    ASSERT_EQ(res.count, 3u);
    EXPECT_EQ(res.kvs[2].value_len, 0u);
    EXPECT_EQ(res.kvs[2].version, 1u);
    orc_store_range_result_free(&res);

    char *end = orc_store_prefix_end("/j/");
    EXPECT_STREQ(end, "/j0");
    free(end);
    end = orc_store_prefix_end("a\xff");
    EXPECT_STREQ(end, "b");
    free(end);

    size_t deleted;
    end = orc_store_prefix_end("/j/");
    EXPECT_EQ(orc_store_delete(m_s, "/j/", end, &deleted, &m_last),
              ORC_STORE_OK);
    free(end);
    EXPECT_EQ(deleted, 3u);
    EXPECT_EQ(count(""), 2u);
}

TEST_P(store_test, txn_compare_is_all_or_nothing)
{
    put("/k", "v");
    orc_store_cmp_t cmps[2] = {
        {"/k", ORC_STORE_CMP_VERSION, ORC_STORE_CMP_EQUAL, 1},
        {"/new", ORC_STORE_CMP_CREATE, ORC_STORE_CMP_EQUAL, 0},
    };
    orc_store_op_t ops[2] = {
        {ORC_STORE_OP_PUT, "/k", NULL, "w", 1, 0},
        {ORC_STORE_OP_PUT, "/new", NULL, "n", 1, 0},
    };
    orc_store_txn_result_t res;
    ASSERT_EQ(m_s->ops->txn(m_s, cmps, 2, ops, 2, &res), ORC_STORE_OK);
    EXPECT_EQ(res.revision, rev(2)); /* one revision for the whole txn */
    m_last = res.revision;
    orc_store_kv_t kv;
    ASSERT_TRUE(get("/new", &kv));
    EXPECT_EQ(kv.mod_rev, rev(2));
    orc_store_kv_free(&kv);

    /* now both compares fail: nothing changes */
    EXPECT_EQ(m_s->ops->txn(m_s, cmps, 2, ops, 2, &res), ORC_STORE_ECOMPARE);
    EXPECT_EQ(res.failed_cmp, 0u);
    /* the first failing compare is named */
    orc_store_cmp_t second[2] = {
        {"/k", ORC_STORE_CMP_VERSION, ORC_STORE_CMP_EQUAL, 2},
        {"/new", ORC_STORE_CMP_CREATE, ORC_STORE_CMP_EQUAL, 0},
    };
    EXPECT_EQ(m_s->ops->txn(m_s, second, 2, ops, 2, &res), ORC_STORE_ECOMPARE);
    EXPECT_EQ(res.failed_cmp, 1u);
    EXPECT_EQ(orc_store_put(m_s, "/probe", "p", 1, 0, &m_last), ORC_STORE_OK);
    EXPECT_EQ(m_last, rev(3)); /* the failed ones wrote nothing */
    /* a missing lease fails the whole txn */
    orc_store_op_t bad[2] = {
        {ORC_STORE_OP_PUT, "/x", NULL, "1", 1, 0},
        {ORC_STORE_OP_PUT, "/y", NULL, "1", 1, 12345},
    };
    EXPECT_EQ(m_s->ops->txn(m_s, NULL, 0, bad, 2, &res), ORC_STORE_ENOENT);
    EXPECT_FALSE(get("/x", &kv));
    /* GREATER/LESS/NOT_EQUAL and the lease target */
    orc_store_cmp_t c2[3] = {
        {"/k", ORC_STORE_CMP_MOD, ORC_STORE_CMP_GREATER, rev(1)},
        {"/k", ORC_STORE_CMP_CREATE, ORC_STORE_CMP_LESS, rev(2)},
        {"/k", ORC_STORE_CMP_LEASE, ORC_STORE_CMP_NOT_EQUAL, 7},
    };
    EXPECT_EQ(m_s->ops->txn(m_s, c2, 3, NULL, 0, &res), ORC_STORE_OK);
    EXPECT_EQ(m_s->ops->txn(m_s, NULL, 0, NULL, 0, &res), ORC_STORE_OK);
    EXPECT_EQ(orc_store_put(m_s, "/probe", "p", 1, 0, &m_last), ORC_STORE_OK);
    EXPECT_EQ(m_last, rev(4)); /* the read-only ones wrote nothing */
}

TEST_P(store_test, lease_revoke_deletes_attached_keys)
{
    uint64_t lease, other;
    ASSERT_EQ(m_s->ops->lease_grant(m_s, 60, &lease, NULL), ORC_STORE_OK);
    ASSERT_EQ(m_s->ops->lease_grant(m_s, 60, &other, NULL), ORC_STORE_OK);
    EXPECT_NE(lease, other);
    put("/n/1", "a", lease);
    put("/n/1/ep", "b", lease);
    put("/n/2", "c", other);
    put("/free", "d");
    /* moving a key to no lease detaches it */
    put("/n/moved", "e", lease);
    put("/n/moved", "e2", 0);
    orc_store_kv_t kv;
    ASSERT_TRUE(get("/n/1", &kv));
    EXPECT_EQ(kv.lease, lease);
    orc_store_kv_free(&kv);
    int64_t ttl = 0, granted = 0;
    EXPECT_EQ(m_s->ops->lease_ttl(m_s, lease, &ttl, &granted), ORC_STORE_OK);
    EXPECT_EQ(granted, 60);
    EXPECT_GT(ttl, 55);

    uint64_t before = m_last, after = 0;
    EXPECT_EQ(m_s->ops->lease_revoke(m_s, lease, &after), ORC_STORE_OK);
    EXPECT_EQ(after, before + 1); /* one revision */
    m_last = after;
    EXPECT_FALSE(get("/n/1", &kv));
    EXPECT_FALSE(get("/n/1/ep", &kv));
    EXPECT_TRUE(get("/n/2", &kv));
    orc_store_kv_free(&kv);
    EXPECT_TRUE(get("/n/moved", &kv));
    orc_store_kv_free(&kv);
    EXPECT_EQ(m_s->ops->lease_revoke(m_s, lease, NULL), ORC_STORE_ENOENT);
    EXPECT_EQ(m_s->ops->lease_keepalive(m_s, lease, &ttl), ORC_STORE_ENOENT);
    EXPECT_EQ(m_s->ops->lease_ttl(m_s, lease, &ttl, NULL), ORC_STORE_ENOENT);
    EXPECT_EQ(m_s->ops->lease_grant(m_s, 0, &lease, NULL), ORC_STORE_EINVAL);
    if (!etcd()) { /* etcd's leases are not counted here */
        orc_store_stats_t st;
        m_s->ops->stats(m_s, &st);
        EXPECT_EQ(st.leases, 1u);
        EXPECT_EQ(st.leases_expired, 0u);
    }
    EXPECT_EQ(m_s->ops->lease_revoke(m_s, other, NULL), ORC_STORE_OK);
}

TEST_P(store_test, lease_expiry_and_keepalive)
{
    uint64_t dies, lives;
    int64_t granted;
    ASSERT_EQ(m_s->ops->lease_grant(m_s, 1, &dies, &granted), ORC_STORE_OK);
    EXPECT_EQ(granted, 1);
    ASSERT_EQ(m_s->ops->lease_grant(m_s, 1, &lives, NULL), ORC_STORE_OK);
    put("/n/dies", "x", dies);
    put("/n/lives", "y", lives);
    settle();

    /* the key goes on expiry (not before its TTL); a watch sees it */
    watch_sink w;
    uint64_t wid;
    ASSERT_EQ(m_s->ops->watch_create(m_s, "/n/dies", NULL, 0, watch_sink::cb,
                                     &w, &wid),
              ORC_STORE_OK);
    auto t0 = std::chrono::steady_clock::now();
    while (!w.wait(0.25)) {
        int64_t ttl;
        ASSERT_EQ(m_s->ops->lease_keepalive(m_s, lives, &ttl), ORC_STORE_OK);
        ASSERT_LT(std::chrono::steady_clock::now() - t0,
                  std::chrono::seconds(10));
    }
    double dt =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
            .count();
    EXPECT_GE(dt, 0.8);
    m_last = w.rev;
    orc_store_kv_t kv;
    EXPECT_FALSE(get("/n/dies", &kv));
    EXPECT_TRUE(get("/n/lives", &kv));
    orc_store_kv_free(&kv);
    int64_t ttl;
    EXPECT_EQ(m_s->ops->lease_keepalive(m_s, dies, &ttl), ORC_STORE_ENOENT);
    if (!etcd()) {
        orc_store_stats_t st;
        m_s->ops->stats(m_s, &st);
        EXPECT_EQ(st.leases_expired, 1u);
    }
    EXPECT_EQ(m_s->ops->lease_revoke(m_s, lives, NULL), ORC_STORE_OK);
}

TEST_P(store_test, watches)
{
    uint64_t first = put("/w/a", "1");
    put("/x", "1");
    settle();

    /* from a past revision with a matching event: fires at once */
    watch_sink w1;
    uint64_t id;
    EXPECT_EQ(m_s->ops->watch_create(m_s, "/w/", "/w0", first, watch_sink::cb,
                                     &w1, &id),
              ORC_STORE_FIRED);
    EXPECT_EQ(w1.count(), 0); /* FIRED means: not registered, no callback */
    /* from the next revision: waits; unrelated keys do not fire it */
    watch_sink w2;
    ASSERT_EQ(m_s->ops->watch_create(m_s, "/w/", "/w0", 0, watch_sink::cb, &w2,
                                     &id),
              ORC_STORE_OK);
    put("/x", "2");
    put("/w", "2"); /* outside [/w/, /w0) */
    settle();
    EXPECT_EQ(w2.count(), 0);
    uint64_t r = put("/w/b", "2");
    ASSERT_TRUE(w2.wait(10));
    EXPECT_EQ(w2.rev, r);
    put("/w/c", "3"); /* one-shot */
    settle();
    EXPECT_EQ(w2.count(), 1);
    EXPECT_EQ(m_s->ops->watch_cancel(m_s, id), ORC_STORE_ENOENT);

    /* deletes fire too; cancel prevents firing */
    watch_sink w3, w4;
    uint64_t id3, id4;
    ASSERT_EQ(m_s->ops->watch_create(m_s, "/w/a", NULL, 0, watch_sink::cb, &w3,
                                     &id3),
              ORC_STORE_OK);
    ASSERT_EQ(m_s->ops->watch_create(m_s, "/w/a", NULL, 0, watch_sink::cb, &w4,
                                     &id4),
              ORC_STORE_OK);
    EXPECT_EQ(m_s->ops->watch_cancel(m_s, id4), ORC_STORE_OK);
    orc_store_delete(m_s, "/w/a", NULL, NULL, &m_last);
    EXPECT_TRUE(w3.wait(10));
    settle();
    EXPECT_EQ(w4.count(), 0);
}

/* An etcd store on a private cluster (tests that stop members) */
static orc_store_t *open_etcd_store(etcd_test::etcd_cluster &c,
                                    unsigned timeout_ms, std::string *err,
                                    const char *prefix = "/orc",
                                    unsigned pipeline  = 0)
{
    std::vector<std::string> eps = c.endpoints();
    std::vector<const char *> ptrs;
    for (auto &e : eps) {
        ptrs.push_back(e.c_str());
    }
    orc_store_etcd_params_t p = {};
    p.store                   = k_store_params;
    p.etcd.endpoints          = ptrs.data();
    p.etcd.nendpoints         = ptrs.size();
    p.etcd.timeout_ms         = timeout_ms;
    p.prefix                  = prefix;
    p.pipeline                = pipeline;
    char buf[512]             = "";
    orc_store_t *s            = nullptr;
    if (orc_store_etcd_open(&p, &s, buf, sizeof(buf)) != ORC_STORE_OK) {
        *err = buf;
        return nullptr;
    }
    return s;
}

/* etcd down: every call fails with EUNAVAIL within its budget (no hang),
 * health says so; the store serves again by itself when etcd is back */
TEST(store_etcd, etcd_down_is_unavailable_then_recovers)
{
    std::string why;
    ASSERT_TRUE(etcd_test::etcd_available()) << "etcd-server not installed";
    etcd_test::etcd_cluster c(1);
    ASSERT_TRUE(c.start(&why)) << why;
    orc_store_t *s = open_etcd_store(c, 2000, &why);
    ASSERT_NE(s, nullptr) << why;
    uint64_t rev;
    ASSERT_EQ(orc_store_put(s, "/a", "1", 1, 0, &rev), ORC_STORE_OK);

    c.kill_member(0, SIGKILL);
    double t0 = etcd_test::now_s();
    EXPECT_EQ(orc_store_put(s, "/b", "2", 1, 0, NULL), ORC_STORE_EUNAVAIL);
    uint64_t lease;
    EXPECT_EQ(s->ops->lease_grant(s, 10, &lease, NULL), ORC_STORE_EUNAVAIL);
    EXPECT_LT(etcd_test::now_s() - t0, 10.0);
    /* the watch notices within a moment; then reads go to etcd and fail */
    double deadline = etcd_test::now_s() + 10;
    while ((s->ops->health(s) == ORC_STORE_OK) &&
           (etcd_test::now_s() < deadline)) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    EXPECT_EQ(s->ops->health(s), ORC_STORE_EUNAVAIL);
    orc_store_range_result_t res;
    EXPECT_EQ(s->ops->range(s, "/a", NULL, 0, 0, 0, &res), ORC_STORE_EUNAVAIL);

    ASSERT_TRUE(c.restart(0)) << c.log(0);
    deadline = etcd_test::now_s() + 30;
    while ((s->ops->health(s) != ORC_STORE_OK) &&
           (etcd_test::now_s() < deadline)) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    EXPECT_EQ(s->ops->health(s), ORC_STORE_OK);
    uint64_t rev2;
    EXPECT_EQ(orc_store_put(s, "/b", "2", 1, 0, &rev2), ORC_STORE_OK);
    EXPECT_GT(rev2, rev);
    orc_store_kv_t kv;
    ASSERT_EQ(orc_store_get(s, "/a", rev2, &kv, NULL), ORC_STORE_OK);
    EXPECT_STREQ(kv.value, "1");
    orc_store_kv_free(&kv);
    orc_store_close(s);
}

/* Three members, the leader SIGKILLed in the middle of a stream of writes:
 * writes pause for the election and continue on the others; none is lost,
 * revisions keep rising, and the cache's watch moves on (a watch fires) */
TEST(store_etcd, leader_killed_mid_writes_loses_nothing)
{
    std::string why;
    ASSERT_TRUE(etcd_test::etcd_available()) << "etcd-server not installed";
    etcd_test::etcd_cluster c(3);
    ASSERT_TRUE(c.start(&why)) << why;
    orc_store_t *s = open_etcd_store(c, 10000, &why);
    ASSERT_NE(s, nullptr) << why;
    const int n   = 60;
    uint64_t last = 0;
    int retries   = 0;
    for (int i = 0; i < n; ++i) {
        if (i == n / 3) {
            int leader = c.leader();
            ASSERT_GE(leader, 0);
            c.kill_member((size_t)leader, SIGKILL);
        }
        std::string key = "/k/" + std::to_string(1000 + i);
        uint64_t rev    = 0;
        int status;
        /* a put whose outcome is uncertain is retried (putting the same
         * value twice is harmless); bounded */
        for (int attempt = 0; attempt < 10; ++attempt) {
            status = orc_store_put(s, key.c_str(), "v", 1, 0, &rev);
            if (status != ORC_STORE_EUNAVAIL) {
                break;
            }
            ++retries;
        }
        ASSERT_EQ(status, ORC_STORE_OK) << key;
        EXPECT_GT(rev, last) << key;
        last = rev;
    }
    orc_store_range_result_t res;
    char *end = orc_store_prefix_end("/k/");
    ASSERT_EQ(s->ops->range(s, "/k/", end, ORC_STORE_RANGE_KEYS_ONLY, 0, last,
                            &res),
              ORC_STORE_OK);
    free(end);
    EXPECT_EQ(res.count, (size_t)n);
    orc_store_range_result_free(&res);
    /* the cache follows the survivors: a watch fires for a new write */
    watch_sink w;
    uint64_t id;
    ASSERT_EQ(s->ops->watch_create(s, "/after", NULL, 0, watch_sink::cb, &w,
                                   &id),
              ORC_STORE_OK);
    ASSERT_EQ(orc_store_put(s, "/after", "x", 1, 0, &last), ORC_STORE_OK);
    EXPECT_TRUE(w.wait(30));
    EXPECT_EQ(w.rev, last);
    printf("# %d puts retried after an uncertain outcome\n", retries);
    orc_store_close(s);
}

/* ------------------------------------------- the etcd store's batches */

/* A store on the shared one-member etcd, under a prefix of its own */
static orc_store_t *open_shared_etcd_store(unsigned timeout_ms,
                                           std::string *err,
                                           unsigned pipeline = 0)
{
    etcd_test::etcd_cluster *c = etcd_test::shared_etcd(1, err);
    std::string prefix         = etcd_test::unique_prefix("batch");
    return (c != nullptr)
               ? open_etcd_store(*c, timeout_ms, err, prefix.c_str(), pipeline)
               : nullptr;
}

static orc_store_stats_t store_stats(orc_store_t *s)
{
    orc_store_stats_t st;
    s->ops->stats(s, &st);
    return st;
}

/* Wait (bounded) until `waiting` txns are queued for the next batch */
/* Wait (bounded) until the store's stat `field` reaches n */
static bool wait_stat(orc_store_t *s, uint64_t orc_store_stats_t::*field,
                      uint64_t n, double timeout)
{
    double deadline = etcd_test::now_s() + timeout;
    while (store_stats(s).*field < n) {
        if (etcd_test::now_s() > deadline) {
            return false;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return true;
}

/* ... until `waiting` txns are queued for the next request */
static bool wait_queued(orc_store_t *s, uint64_t waiting, double timeout)
{
    return wait_stat(s, &orc_store_stats_t::txns_waiting, waiting, timeout);
}

/* ... until the store has sent `batches` txn requests in all: a caller
 * started after it cannot join the batch of the one before */
static bool wait_sent(orc_store_t *s, uint64_t batches, double timeout)
{
    return wait_stat(s, &orc_store_stats_t::txn_batches, batches, timeout);
}

/* Many threads, each its own keys, at once: the store sends them to etcd
 * together, and each caller gets its own answer: its compare's outcome
 * (half of them fail, the second compare, in the same batches as others'
 * successes), its revision, its deleted count; every successful write is
 * applied once */
TEST(store_etcd_batch, concurrent_txns_each_get_their_own_answer)
{
    std::string why;
    orc_store_t *s = open_shared_etcd_store(5000, &why);
    ASSERT_NE(s, nullptr) << why;
    const int threads = 24, rounds = 30;
    std::atomic<int> wrong{0};
    std::vector<std::string> errors(threads);
    std::vector<std::thread> ts;
    for (int t = 0; t < threads; ++t) {
        ts.emplace_back([&, t] {
            std::string k    = "/t/" + std::to_string(t) + "/k";
            std::string n    = "/t/" + std::to_string(t) + "/n/";
            uint64_t version = 0, last = 0;
            for (int i = 0; i < rounds; ++i) {
                bool fail               = ((i + t) % 2) == 1;
                std::string put         = n + std::to_string(version);
                std::string old         = n + std::to_string(version - 1);
                orc_store_cmp_t cmps[2] = {{k.c_str(), ORC_STORE_CMP_VERSION,
                                            ORC_STORE_CMP_EQUAL, version},
                                           {k.c_str(), ORC_STORE_CMP_VERSION,
                                            ORC_STORE_CMP_LESS,
                                            fail ? version : version + 1}};
                orc_store_op_t ops[3]   = {
                      {ORC_STORE_OP_PUT, k.c_str(), NULL, "v", 1, 0},
                      {ORC_STORE_OP_PUT, put.c_str(), NULL, "v", 1, 0},
                      {ORC_STORE_OP_DELETE_RANGE, old.c_str(), NULL, NULL, 0, 0}};
                orc_store_txn_result_t res;
                int st = s->ops->txn(s, cmps, 2, ops, 3, &res);
                std::string bad;
                if (fail &&
                    ((st != ORC_STORE_ECOMPARE) || (res.failed_cmp != 1))) {
                    bad = "a failing txn got " + std::to_string(st) + "/" +
                          std::to_string(res.failed_cmp);
                } else if (!fail &&
                           ((st != ORC_STORE_OK) || (res.revision <= last) ||
                            (res.deleted != (version > 0 ? 1u : 0u)))) {
                    bad = "a txn got " + std::to_string(st) + " rev " +
                          std::to_string(res.revision) + " deleted " +
                          std::to_string(res.deleted);
                }
                if (!bad.empty()) {
                    ++wrong;
                    errors[t] = bad;
                    return;
                }
                if (!fail) {
                    last = res.revision;
                    ++version;
                }
            }
        });
    }
    for (auto &t : ts) {
        t.join();
    }
    for (int t = 0; t < threads; ++t) {
        EXPECT_EQ(errors[t], "") << "thread " << t;
    }
    EXPECT_EQ(wrong.load(), 0);
    /* every success applied once: version = successes, one /n/ key left */
    uint64_t floor = 0;
    for (int t = 0; t < threads; ++t) {
        std::string k = "/t/" + std::to_string(t) + "/k";
        std::string n = "/t/" + std::to_string(t) + "/n/";
        orc_store_kv_t kv;
        ASSERT_EQ(orc_store_get(s, k.c_str(), floor, &kv, NULL), ORC_STORE_OK);
        EXPECT_EQ(kv.version, (uint64_t)rounds / 2) << k;
        orc_store_kv_free(&kv);
        char *end = orc_store_prefix_end(n.c_str());
        orc_store_range_result_t res;
        ASSERT_EQ(s->ops->range(s, n.c_str(), end, ORC_STORE_RANGE_COUNT_ONLY,
                                0, 0, &res),
                  ORC_STORE_OK);
        EXPECT_EQ(res.total, 1u) << n;
        orc_store_range_result_free(&res);
        free(end);
    }
    orc_store_stats_t st = store_stats(s);
    EXPECT_EQ(st.txns_batched, (uint64_t)threads * rounds);
    /* they did go together: fewer requests than txns */
    EXPECT_LT(st.txn_batches, st.txns_batched);
    EXPECT_GT(st.txn_batch_max, 1u);
    printf("# %" PRIu64 " txns in %" PRIu64 " requests, at most %" PRIu64
           " in one\n",
           st.txns_batched, st.txn_batches, st.txn_batch_max);
    orc_store_close(s);
}

/* 24 threads writing at once: never more batches on their way than the
 * pipeline's depth; with a depth of 1 each batch waits for the one before
 * (so the queue fills and batches grow), with 4 several are on their way;
 * every txn is applied, each thread's revisions rise */
TEST(store_etcd_batch, the_pipeline_bounds_the_batches_in_flight)
{
    for (unsigned depth : {1u, 4u}) {
        std::string why;
        orc_store_t *s = open_shared_etcd_store(5000, &why, depth);
        ASSERT_NE(s, nullptr) << why;
        const int threads = 24, rounds = 20;
        std::atomic<int> wrong{0};
        std::vector<std::thread> ts;
        for (int t = 0; t < threads; ++t) {
            ts.emplace_back([&, t] {
                std::string k = "/p/" + std::to_string(t);
                uint64_t last = 0;
                for (int i = 0; i < rounds; ++i) {
                    orc_store_op_t op = {
                        ORC_STORE_OP_PUT, k.c_str(), NULL, "v", 1, 0};
                    orc_store_txn_result_t res;
                    if ((s->ops->txn(s, NULL, 0, &op, 1, &res) !=
                         ORC_STORE_OK) ||
                        (res.revision <= last)) {
                        ++wrong;
                        return;
                    }
                    last = res.revision;
                }
            });
        }
        for (auto &t : ts) {
            t.join();
        }
        EXPECT_EQ(wrong.load(), 0) << "depth " << depth;
        orc_store_stats_t st = store_stats(s);
        EXPECT_EQ(st.txns_batched, (uint64_t)threads * rounds);
        EXPECT_GE(st.txn_inflight_max, 1u);
        EXPECT_LE(st.txn_inflight_max, depth) << "depth " << depth;
        printf("# depth %u: %" PRIu64 " txns in %" PRIu64
               " requests, at most %" PRIu64 " on their way\n",
               depth, st.txns_batched, st.txn_batches, st.txn_inflight_max);
        orc_store_close(s);
    }
}

/* Txns on a common key never go in one batch (etcd would evaluate both
 * compares before either write): every token is taken exactly once,
 * although every thread tries to take every token at the same time, and
 * every txn completes */
TEST(store_etcd_batch, same_key_txns_are_never_in_one_batch)
{
    std::string why;
    orc_store_t *s = open_shared_etcd_store(5000, &why);
    ASSERT_NE(s, nullptr) << why;
    const int threads = 16, tokens = 40;
    uint64_t rev = 0;
    for (int i = 0; i < tokens; ++i) {
        std::string k = "/tok/" + std::to_string(i);
        ASSERT_EQ(orc_store_put(s, k.c_str(), "t", 1, 0, &rev), ORC_STORE_OK);
    }
    std::vector<std::atomic<int>> taken(tokens);
    std::atomic<int> errors{0};
    std::vector<std::thread> ts;
    for (int t = 0; t < threads; ++t) {
        ts.emplace_back([&] {
            for (int i = 0; i < tokens; ++i) {
                std::string k       = "/tok/" + std::to_string(i);
                orc_store_cmp_t cmp = {k.c_str(), ORC_STORE_CMP_VERSION,
                                       ORC_STORE_CMP_GREATER, 0};
                orc_store_op_t op   = {
                      ORC_STORE_OP_DELETE_RANGE, k.c_str(), NULL, NULL, 0, 0};
                orc_store_txn_result_t res;
                int st = s->ops->txn(s, &cmp, 1, &op, 1, &res);
                if (st == ORC_STORE_OK) {
                    ++taken[i];
                } else if (st != ORC_STORE_ECOMPARE) {
                    ++errors;
                }
            }
        });
    }
    for (auto &t : ts) {
        t.join();
    }
    EXPECT_EQ(errors.load(), 0);
    for (int i = 0; i < tokens; ++i) {
        EXPECT_EQ(taken[i].load(), 1) << "token " << i;
    }
    orc_store_stats_t st = store_stats(s);
    EXPECT_EQ(st.txns_batched, (uint64_t)tokens + threads * tokens);
    EXPECT_EQ(st.txns_waiting, 0u);
    orc_store_close(s);
}

/* A lone txn is sent at once: with etcd frozen (SIGSTOP), it is on its way
 * while no other txn exists (nothing holds it back to wait for company) */
TEST(store_etcd_batch, a_lone_txn_is_sent_at_once)
{
    std::string why;
    ASSERT_TRUE(etcd_test::etcd_available()) << "etcd-server not installed";
    etcd_test::etcd_cluster c(1);
    ASSERT_TRUE(c.start(&why)) << why;
    orc_store_t *s = open_etcd_store(c, 5000, &why);
    ASSERT_NE(s, nullptr) << why;
    orc_store_stats_t before = store_stats(s);
    c.kill_member(0, SIGSTOP);
    int status = -1;
    std::thread t([&] { status = orc_store_put(s, "/lone", "1", 1, 0, NULL); });
    double deadline = etcd_test::now_s() + 3;
    while ((store_stats(s).txn_batches == before.txn_batches) &&
           (etcd_test::now_s() < deadline)) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    orc_store_stats_t st = store_stats(s);
    EXPECT_EQ(st.txn_batches, before.txn_batches + 1);
    EXPECT_EQ(st.txns_batched, before.txns_batched + 1);
    EXPECT_EQ(st.txns_waiting, 0u);
    c.kill_member(0, SIGCONT);
    t.join();
    EXPECT_EQ(status, ORC_STORE_OK);
    orc_store_close(s);
}

/* A batch etcd refuses whole before applying anything (here: one txn puts
 * on a lease that is gone) is sent again txn by txn: that txn gets
 * ORC_STORE_ENOENT as it would alone, the others of its batch succeed */
TEST(store_etcd_batch, a_refused_batch_is_sent_again_txn_by_txn)
{
    std::string why;
    ASSERT_TRUE(etcd_test::etcd_available()) << "etcd-server not installed";
    etcd_test::etcd_cluster c(1);
    ASSERT_TRUE(c.start(&why)) << why;
    /* two batches on their way at most */
    orc_store_t *s = open_etcd_store(c, 5000, &why, "/orc", 2);
    ASSERT_NE(s, nullptr) << why;
    uint64_t gone;
    ASSERT_EQ(s->ops->lease_grant(s, 60, &gone, NULL), ORC_STORE_OK);
    ASSERT_EQ(s->ops->lease_revoke(s, gone, NULL), ORC_STORE_OK);
    const int threads = 10;
    std::vector<int> status(threads, -1);
    uint64_t sent = store_stats(s).txn_batches;
    c.kill_member(0, SIGSTOP);
    std::vector<std::thread> ts;
    for (int t = 0; t < threads; ++t) {
        ts.emplace_back([&, t] {
            std::string k = "/r/" + std::to_string(t);
            status[t]     = orc_store_put(s, k.c_str(), "v", 1,
                                      (t == threads - 1) ? gone : 0, NULL);
        });
        /* two batches of one on their way to the frozen etcd (each sent
         * before the next caller starts, or a slow sender takes two), then
         * the others queue for one batch, the one on the lease that is gone
         * last */
        EXPECT_TRUE((t < 2) ? wait_sent(s, sent + t + 1, 10)
                            : wait_queued(s, t - 1, 10));
    }
    c.kill_member(0, SIGCONT);
    for (auto &t : ts) {
        t.join();
    }
    for (int t = 0; t < threads; ++t) {
        EXPECT_EQ(status[t],
                  (t == threads - 1) ? ORC_STORE_ENOENT : ORC_STORE_OK)
            << "caller " << t;
    }
    EXPECT_GT(store_stats(s).txn_batch_max, 1u);
    orc_store_close(s);
}

/* A batch that fails fails every caller in it, as each would have failed
 * alone: etcd frozen while two batches are on their way and the others
 * queue, then killed: every caller gets ORC_STORE_EUNAVAIL (uncertain: sent;
 * refused: queued), within its budget; none hangs. */
static std::vector<std::string> g_batch_log;
static std::mutex g_batch_log_lock;

static void batch_logger(orc_store_log_level_t, const char *fmt, va_list ap)
{
    char line[512];
    vsnprintf(line, sizeof(line), fmt, ap);
    std::lock_guard<std::mutex> g(g_batch_log_lock);
    g_batch_log.push_back(line);
}

TEST(store_etcd_batch, a_failed_batch_fails_every_caller)
{
    std::string why;
    ASSERT_TRUE(etcd_test::etcd_available()) << "etcd-server not installed";
    etcd_test::etcd_cluster c(1);
    ASSERT_TRUE(c.start(&why)) << why;
    const unsigned timeout_ms = 3000;
    orc_store_set_logger(batch_logger); /* before the store, as it says */
    /* two batches on their way at most */
    orc_store_t *s = open_etcd_store(c, timeout_ms, &why, "/orc", 2);
    ASSERT_NE(s, nullptr) << why;
    ASSERT_EQ(orc_store_put(s, "/before", "1", 1, 0, NULL), ORC_STORE_OK);
    const int threads = 12;
    std::vector<int> status(threads, -1);
    std::vector<double> took(threads, 0);
    uint64_t sent = store_stats(s).txn_batches;
    c.kill_member(0, SIGSTOP);
    std::vector<std::thread> ts;
    for (int t = 0; t < threads; ++t) {
        ts.emplace_back([&, t] {
            std::string k = "/f/" + std::to_string(t);
            double t0     = etcd_test::now_s();
            status[t]     = orc_store_put(s, k.c_str(), "v", 1, 0, NULL);
            took[t]       = etcd_test::now_s() - t0;
        });
        /* the first two alone in their batches (each sent before the next
         * caller starts, or a slow sender takes two) */
        if (t < 2) {
            EXPECT_TRUE(wait_sent(s, sent + t + 1, 10));
        }
    }
    /* two batches on their way to the frozen etcd, the rest queued */
    EXPECT_TRUE(wait_queued(s, threads - 2, 10));
    c.kill_member(0, SIGKILL);
    for (auto &t : ts) {
        t.join();
    }
    for (int t = 0; t < threads; ++t) {
        EXPECT_EQ(status[t], ORC_STORE_EUNAVAIL) << "caller " << t;
        /* queued for at most its budget, and then sent with what is left */
        EXPECT_LT(took[t], timeout_ms / 1000.0 + 2) << "caller " << t;
    }
    orc_store_stats_t st = store_stats(s);
    EXPECT_GT(st.txn_batch_max, 1u);
    EXPECT_EQ(st.txns_waiting, 0u);
    /* the reason is etcd's unavailability, as for a txn alone */
    bool said = false;
    {
        /* not held past the scan: the store's watcher logs through
         * batch_logger until orc_store_close joins it */
        std::lock_guard<std::mutex> g(g_batch_log_lock);
        for (auto &l : g_batch_log) {
            said |= (l.find("/v3/kv/txn: unavailable") != std::string::npos);
        }
    }
    EXPECT_TRUE(said);
    ASSERT_TRUE(c.restart(0)) << c.log(0);
    uint64_t rev = 0;
    double until = etcd_test::now_s() + 30;
    int st2;
    while (
        ((st2 = orc_store_put(s, "/after", "1", 1, 0, &rev)) != ORC_STORE_OK) &&
        (etcd_test::now_s() < until)) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    EXPECT_EQ(st2, ORC_STORE_OK);
    orc_store_close(s);
    orc_store_set_logger(NULL);
}

TEST(store_memory, watch_history_compacted)
{
    orc_store_t *s;
    uint64_t first, id;
    ASSERT_EQ(orc_store_mem_open(&k_store_params, &s), ORC_STORE_OK);
    ASSERT_EQ(orc_store_put(s, "/w/a", "1", 1, 0, &first), ORC_STORE_OK);
    /* history compacted past start_rev: fires at once (caller re-reads) */
    for (int i = 0; i < 9000; ++i) {
        orc_store_put(s, "/spam", "x", 1, 0, NULL);
    }
    watch_sink w5;
    EXPECT_EQ(s->ops->watch_create(s, "/nothing-here", NULL, first + 1,
                                   watch_sink::cb, &w5, &id),
              ORC_STORE_FIRED);
    orc_store_close(s);
}

TEST_P(store_test, usage_by_group_and_class)
{
    /* groups: the first two components ("/g/1" of "/g/1/x") */
    uint64_t keys, bytes;
    put("/g/1/a", "12345");
    put("/g/1/b", "1");
    put("/g/2/a", "1");
    put("/g/10/a", "1"); /* not part of /g/1 */
    settle();
    m_s->ops->usage(m_s, "/g/1", &keys, &bytes);
    EXPECT_EQ(keys, 2u);
    EXPECT_EQ(bytes, 6u + 5 + 6 + 1);
    put("/g/1/a", "1"); /* a shorter value */
    settle();
    m_s->ops->usage(m_s, "/g/1", &keys, &bytes);
    EXPECT_EQ(bytes, 6u + 1 + 6 + 1);
    m_s->ops->usage(m_s, "/g/10", &keys, &bytes);
    EXPECT_EQ(keys, 1u);
    m_s->ops->usage(m_s, "/none", &keys, &bytes);
    EXPECT_EQ(keys, 0u);
    EXPECT_EQ(bytes, 0u);
    size_t deleted;
    char *end = orc_store_prefix_end("/g/1/");
    ASSERT_EQ(orc_store_delete(m_s, "/g/1/", end, &deleted, &m_last),
              ORC_STORE_OK);
    free(end);
    settle();
    m_s->ops->usage(m_s, "/g/1", &keys, &bytes);
    EXPECT_EQ(keys, 0u);
    EXPECT_EQ(bytes, 0u);
    orc_store_stats_t st;
    m_s->ops->stats(m_s, &st);
    EXPECT_EQ(st.keys, 2u);
    EXPECT_EQ(st.bytes, 7u + 8);
}

TEST_P(store_test, snapshots_are_the_memory_stores)
{
    char path[] = "/tmp/orc-store-snap.XXXXXX";
    int fd      = mkstemp(path);
    ASSERT_GE(fd, 0);
    close(fd);
    put("/a", "1");
    EXPECT_EQ(m_s->ops->snapshot_save(m_s, path),
              etcd() ? ORC_STORE_ENOTSUP : ORC_STORE_OK);
    EXPECT_EQ(m_s->ops->health(m_s), ORC_STORE_OK);
    unlink(path);
}

static unsigned class_of_key(const char *key)
{
    return (key[1] == 'c') ? 2 : 0;
}

TEST(store_memory, classes_and_a_replica)
{
    const orc_store_params_t params = {20, 2, class_of_key};
    orc_store_t *s, *r;
    orc_store_stats_t st;

    ASSERT_EQ(orc_store_mem_open(&params, &s), ORC_STORE_OK);
    orc_store_put(s, "/c1", "x", 1, 0, NULL);
    orc_store_put(s, "/c2", "x", 1, 0, NULL);
    orc_store_put(s, "/d", "x", 1, 0, NULL);
    s->ops->stats(s, &st);
    EXPECT_EQ(st.class_keys[2], 2u);
    EXPECT_EQ(st.class_keys[0], 1u);
    orc_store_delete(s, "/c1", NULL, NULL, NULL);
    s->ops->stats(s, &st);
    EXPECT_EQ(st.class_keys[2], 1u);
    orc_store_close(s);

    /* a replica takes revisions and metadata from its feed */
    ASSERT_EQ(orc_store_mem_open_replica(&params, &r), ORC_STORE_OK);
    orc_store_kv_t kvs[2] = {
        {(char *)"/a", (char *)"1", 1, 3, 5, 2, 77},
        {(char *)"/c", (char *)"", 0, 4, 4, 1, 0},
    };
    ASSERT_EQ(orc_store_mem_reset(r, 10, kvs, 2), ORC_STORE_OK);
    EXPECT_EQ(r->ops->revision(r), 10u);
    orc_store_kv_t kv;
    ASSERT_EQ(orc_store_get(r, "/a", 0, &kv, NULL), ORC_STORE_OK);
    EXPECT_EQ(kv.mod_rev, 5u);
    EXPECT_EQ(kv.version, 2u);
    EXPECT_EQ(kv.lease, 77u);
    orc_store_kv_free(&kv);
    watch_sink w;
    uint64_t id;
    ASSERT_EQ(r->ops->watch_create(r, "/b", NULL, 0, watch_sink::cb, &w, &id),
              ORC_STORE_OK);
    orc_store_event_t ev[2] = {
        {0, {(char *)"/b", (char *)"new", 3, 12, 12, 1, 0}},
        {1, {(char *)"/a", NULL, 0, 0, 0, 0, 0}},
    };
    EXPECT_EQ(orc_store_mem_wait_rev(r, 12, 0), 0);
    ASSERT_EQ(orc_store_mem_apply(r, 12, ev, 2), ORC_STORE_OK);
    EXPECT_EQ(w.fired, 1);
    EXPECT_EQ(w.rev, 12u);
    EXPECT_EQ(orc_store_mem_wait_rev(r, 12, 0), 1);
    EXPECT_EQ(orc_store_get(r, "/a", 0, &kv, NULL), ORC_STORE_ENOENT);
    ASSERT_EQ(orc_store_get(r, "/b", 0, &kv, NULL), ORC_STORE_OK);
    EXPECT_EQ(kv.create_rev, 12u);
    orc_store_kv_free(&kv);
    r->ops->stats(r, &st);
    EXPECT_EQ(st.keys, 2u);
    EXPECT_EQ(st.class_keys[2], 1u);
    /* a reset fires the watches waiting (what they wait for may be gone) */
    watch_sink w2;
    ASSERT_EQ(r->ops->watch_create(r, "/zz", NULL, 0, watch_sink::cb, &w2, &id),
              ORC_STORE_OK);
    ASSERT_EQ(orc_store_mem_reset(r, 20, kvs, 1), ORC_STORE_OK);
    EXPECT_EQ(w2.fired, 1);
    r->ops->stats(r, &st);
    EXPECT_EQ(st.keys, 1u);
    /* the owner answers writes, leases and snapshots */
    orc_store_txn_result_t tres;
    uint64_t lease;
    EXPECT_EQ(r->ops->txn(r, NULL, 0, NULL, 0, &tres), ORC_STORE_ENOTSUP);
    EXPECT_EQ(r->ops->lease_grant(r, 5, &lease, NULL), ORC_STORE_ENOTSUP);
    orc_store_close(r);
}

TEST(store_memory, snapshot_round_trip)
{
    orc_store_t *m_s;
    ASSERT_EQ(orc_store_mem_open(&k_store_params, &m_s), ORC_STORE_OK);
    auto put = [&](const char *k, const char *v, uint64_t lease) {
        return orc_store_put(m_s, k, v, strlen(v), lease, NULL);
    };
    char path[] = "/tmp/orc-store-snap.XXXXXX";
    int fd      = mkstemp(path);
    ASSERT_GE(fd, 0);
    close(fd);

    uint64_t lease;
    ASSERT_EQ(m_s->ops->lease_grant(m_s, 30, &lease, NULL), ORC_STORE_OK);
    put("/a", "{\"json\":true}", lease);
    put("/a", "{\"json\":2}", lease);
    put("/b", "", 0);
    uint64_t rev = m_s->ops->revision(m_s);
    ASSERT_EQ(m_s->ops->snapshot_save(m_s, path), ORC_STORE_OK);

    orc_store_t *s2;
    ASSERT_EQ(orc_store_mem_open(&k_store_params, &s2), ORC_STORE_OK);
    ASSERT_EQ(s2->ops->snapshot_load(s2, path), ORC_STORE_OK);
    EXPECT_EQ(s2->ops->revision(s2), rev);
    orc_store_kv_t kv;
    ASSERT_EQ(orc_store_get(s2, "/a", 0, &kv, NULL), ORC_STORE_OK);
    EXPECT_STREQ(kv.value, "{\"json\":2}");
    EXPECT_EQ(kv.version, 2u);
    EXPECT_EQ(kv.lease, lease);
    orc_store_kv_free(&kv);
    int64_t ttl;
    EXPECT_EQ(s2->ops->lease_keepalive(s2, lease, &ttl), ORC_STORE_OK);
    EXPECT_EQ(ttl, 30);
    uint64_t l2;
    ASSERT_EQ(s2->ops->lease_grant(s2, 5, &l2, NULL), ORC_STORE_OK);
    EXPECT_GT(l2, lease); /* lease ids not reused */
    /* loading into a non-empty store is refused */
    EXPECT_EQ(s2->ops->snapshot_load(s2, path), ORC_STORE_EINVAL);
    orc_store_close(s2);

    /* damaged files are refused */
    const char *bad[] = {
        "",
        "[]",
        "{\"format\":\"other\"}",
        "{\"format\":\"orc-store-mem/1\",\"revision\":5,\"last_lease_id\":0,"
        "\"leases\":[],\"kvs\":[{\"key\":\"/a\",\"value\":\"\",\"create_rev\":1,"
        "\"mod_rev\":1,\"version\":1,\"lease\":9}]}",
        "{\"format\":\"orc-store-mem/1\",\"revision\":5,\"last_lease_id\":0,"
        "\"leases\":[],\"kvs\":[{\"key\":\"/a\",\"value\":\"\",\"create_rev\":1,"
        "\"mod_rev\":1,\"version\":1,\"lease\":0},{\"key\":\"/a\",\"value\":"
        "\"\",\"create_rev\":1,\"mod_rev\":1,\"version\":1,\"lease\":0}]}",
    };
    for (const char *b : bad) {
        std::ofstream(path) << b;
        ASSERT_EQ(orc_store_mem_open(&k_store_params, &s2), ORC_STORE_OK);
        EXPECT_NE(s2->ops->snapshot_load(s2, path), ORC_STORE_OK) << b;
        orc_store_stats_t st;
        s2->ops->stats(s2, &st);
        EXPECT_EQ(st.keys, 0u);
        orc_store_close(s2);
    }
    unlink(path);
    orc_store_close(m_s);
}

/* ----------------------------------------------------------------- config */

class config_test : public ::testing::Test
{
  protected:
    void SetUp() override
    {
        ASSERT_EQ(orcd_config_init_defaults(&m_cfg), 0);
    }
    void TearDown() override
    {
        orcd_config_cleanup(&m_cfg);
    }

    /* load yaml + finalize; returns the error text ("" on success) */
    std::string load(const std::string &yaml)
    {
        char err[1024];
        if (orcd_config_load_buffer(&m_cfg, "t.yaml",
                                    (const unsigned char *)yaml.data(),
                                    yaml.size(), err, sizeof(err))) {
            return err;
        }
        if (orcd_config_finalize(&m_cfg, err, sizeof(err))) {
            return err;
        }
        return "";
    }

    orcd_config_t m_cfg;
};

TEST_F(config_test, embedded_defaults)
{
    EXPECT_EQ(load(""), "");
    EXPECT_STREQ(m_cfg.address, "127.0.0.1");
    EXPECT_EQ(m_cfg.port, 7411u);
    EXPECT_FALSE(m_cfg.auth_enabled);
    EXPECT_FALSE(m_cfg.allow_remote);
    EXPECT_EQ(m_cfg.max_body, 65536u);
    EXPECT_EQ(m_cfg.endpoint_max, 4096u);
    EXPECT_EQ(m_cfg.mailbox_msg_max, 4096u);
    EXPECT_EQ(m_cfg.mailbox_depth, 1024u);
    EXPECT_EQ(m_cfg.ttl_default, 10);
    EXPECT_EQ(m_cfg.max_wait, 60.0);
    EXPECT_EQ(m_cfg.snapshot_path, nullptr);
}

TEST_F(config_test, http_threads_auto_is_half_the_cpus)
{
    long cpus       = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned expect = (cpus < 2) ? 1u : (unsigned)std::min(cpus / 2, 64L);

    EXPECT_EQ(load(""), "");
    EXPECT_EQ(m_cfg.threads, 0u) << "the default is auto";
    EXPECT_EQ(orcd_config_threads(&m_cfg), expect);
    orcd_config_cleanup(&m_cfg);
    ASSERT_EQ(orcd_config_init_defaults(&m_cfg), 0);
    EXPECT_EQ(load("listen:\n  threads: 3\n"), "");
    EXPECT_EQ(orcd_config_threads(&m_cfg), 3u);
    orcd_config_cleanup(&m_cfg);
    ASSERT_EQ(orcd_config_init_defaults(&m_cfg), 0);
    EXPECT_EQ(load("listen:\n  threads: 1024\n"), "");
    EXPECT_EQ(orcd_config_threads(&m_cfg), 1024u);
    orcd_config_cleanup(&m_cfg);
    ASSERT_EQ(orcd_config_init_defaults(&m_cfg), 0);
    EXPECT_NE(load("listen:\n  threads: 1025\n"), "");
}

/* on etcd a request holds its thread through its etcd round trips, and so
 * does every connection libmicrohttpd gave that thread: one thread per
 * connection of 64 pairing clients */
TEST_F(config_test, http_threads_auto_on_etcd)
{
    EXPECT_EQ(load("store:\n  backend: etcd\n  etcd:\n"
                   "    endpoints: [http://127.0.0.1:2379]\n"),
              "");
    EXPECT_EQ(m_cfg.threads, 0u);
    EXPECT_EQ(orcd_config_threads(&m_cfg), (unsigned)ORCD_THREADS_ETCD);
    EXPECT_GE(ORCD_THREADS_ETCD, 128);
    orcd_config_cleanup(&m_cfg);
    ASSERT_EQ(orcd_config_init_defaults(&m_cfg), 0);
    EXPECT_EQ(load("listen:\n  threads: 2\nstore:\n  backend: etcd\n"
                   "  etcd:\n    endpoints: [http://127.0.0.1:2379]\n"),
              "");
    EXPECT_EQ(orcd_config_threads(&m_cfg), 2u);
}

/* ------------------------------------------------------------ counters */

/* Requests for different counters never wait for each other (a lock shared
 * by two mailboxes made posts to one wait for the etcd round trips of posts
 * to the other), and one counter is one lock */
TEST(orcd_counter, different_counters_never_wait_for_each_other)
{
    std::vector<orcd_counter_t *> held;
    orcd_counters_t t;
    orcd_counter_t *c, *other;

    orcd_counters_init(&t);
    for (uint64_t id = 0; id < 3 * ORCD_COUNTER_BUCKETS; ++id) {
        /* until 0: no wait at all */
        c = orcd_counter_take(&t, "job-a", id, 0);
        ASSERT_NE(c, nullptr) << "counter " << id << " waited for another";
        held.push_back(c);
    }
    other = orcd_counter_take(&t, "job-b", 7, 0);
    ASSERT_NE(other, nullptr) << "job-b's counter 7 waited for job-a's";
    EXPECT_EQ(orcd_counters_entries(&t), held.size() + 1);

    EXPECT_EQ(orcd_counter_take(&t, "job-a", 7, 0), nullptr);
    EXPECT_EQ(orcd_counter_take(&t, "job-a", 7, orc_util_now_ms() + 20),
              nullptr)
        << "a taken counter was taken again";
    for (auto h : held) {
        orcd_counter_give(&t, h);
    }
    orcd_counter_give(&t, other);
    EXPECT_EQ(orcd_counters_entries(&t), 0u) << "entries outlive their use";
    orcd_counters_fini(&t);
}

TEST(orcd_counter, a_waiter_takes_the_counter_once_given)
{
    std::atomic<int> got{0};
    orcd_counters_t t;
    orcd_counter_t *c;

    orcd_counters_init(&t);
    c = orcd_counter_take(&t, "job", 5, 0);
    ASSERT_NE(c, nullptr);
    std::thread waiter([&] {
        orcd_counter_t *w =
            orcd_counter_take(&t, "job", 5, orc_util_now_ms() + 10000);
        got = (w != nullptr) ? 1 : -1;
        if (w != nullptr) {
            orcd_counter_give(&t, w);
        }
    });
    usleep(20000); /* most likely waiting by now (either way it must get it) */
    EXPECT_EQ(got.load(), 0) << "taken while held";
    orcd_counter_give(&t, c);
    waiter.join();
    EXPECT_EQ(got.load(), 1);
    EXPECT_EQ(orcd_counters_entries(&t), 0u);
    orcd_counters_fini(&t);
}

TEST_F(config_test, example_file_is_valid_and_matches_defaults)
{
    std::string path =
        std::string(getenv("ORC_TOP_SRCDIR") ? getenv("ORC_TOP_SRCDIR") : ".") +
        "/config/orcd.yaml";
    char err[1024];
    orcd_config_t defaults;
    ASSERT_EQ(orcd_config_init_defaults(&defaults), 0);
    ASSERT_EQ(orcd_config_load_file(&m_cfg, path.c_str(), err, sizeof(err)), 0)
        << err;
    ASSERT_EQ(orcd_config_finalize(&m_cfg, err, sizeof(err)), 0) << err;
    /* the example documents the defaults */
    EXPECT_STREQ(m_cfg.address, defaults.address);
    EXPECT_EQ(m_cfg.port, defaults.port);
    EXPECT_EQ(m_cfg.threads, defaults.threads);
    EXPECT_EQ(m_cfg.max_connections, defaults.max_connections);
    EXPECT_EQ(m_cfg.max_connections_per_ip, defaults.max_connections_per_ip);
    EXPECT_EQ(m_cfg.idle_timeout, defaults.idle_timeout);
    EXPECT_EQ(m_cfg.request_timeout, defaults.request_timeout);
    EXPECT_EQ(m_cfg.max_keys, defaults.max_keys);
    EXPECT_EQ(m_cfg.max_bytes, defaults.max_bytes);
    EXPECT_EQ(m_cfg.max_keys_per_job, defaults.max_keys_per_job);
    EXPECT_EQ(m_cfg.max_bytes_per_job, defaults.max_bytes_per_job);
    EXPECT_EQ(m_cfg.max_long_polls, defaults.max_long_polls);
    EXPECT_EQ(m_cfg.max_body, defaults.max_body);
    EXPECT_EQ(m_cfg.endpoint_max, defaults.endpoint_max);
    EXPECT_EQ(m_cfg.mailbox_msg_max, defaults.mailbox_msg_max);
    EXPECT_EQ(m_cfg.mailbox_depth, defaults.mailbox_depth);
    EXPECT_EQ(m_cfg.max_wait, defaults.max_wait);
    EXPECT_EQ(m_cfg.ttl_default, defaults.ttl_default);
    EXPECT_EQ(m_cfg.ttl_min, defaults.ttl_min);
    EXPECT_EQ(m_cfg.ttl_max, defaults.ttl_max);
    EXPECT_EQ(m_cfg.snapshot_interval, defaults.snapshot_interval);
    EXPECT_EQ(m_cfg.log_level, defaults.log_level);
    EXPECT_EQ(m_cfg.auth_enabled, defaults.auth_enabled);
    EXPECT_EQ(m_cfg.store_backend, defaults.store_backend);
    orcd_config_cleanup(&defaults);
}

TEST_F(config_test, good_file)
{
    EXPECT_EQ(load("listen:\n"
                   "  address: \"::1\"\n"
                   "  port: 0\n"
                   "  threads: 4\n"
                   "limits:\n"
                   "  max_body: 1MiB\n"
                   "  endpoint_max: 8K\n"
                   "  max_wait: 2.5\n"
                   "ttl: {min: 1, default: 3, max: 9}\n"
                   "auth:\n"
                   "  enabled: yes\n"
                   "  tokens:\n"
                   "    job-1: abcdefgh1234\n"
                   "    job.2: [tok2-aaaaaaa, tok2-bbbbbbb]\n"
                   "snapshot: {path: /tmp/x.snap, interval: 0}\n"
                   "log: {level: debug}\n"
                   "tls:\n"),
              "");
    EXPECT_STREQ(m_cfg.address, "::1");
    EXPECT_EQ(m_cfg.port, 0u);
    EXPECT_EQ(m_cfg.threads, 4u);
    EXPECT_EQ(m_cfg.max_body, 1048576u);
    EXPECT_EQ(m_cfg.endpoint_max, 8192u);
    EXPECT_EQ(m_cfg.max_wait, 2.5);
    EXPECT_EQ(m_cfg.ttl_min, 1);
    EXPECT_EQ(m_cfg.ttl_default, 3);
    EXPECT_EQ(m_cfg.ttl_max, 9);
    EXPECT_TRUE(m_cfg.auth_enabled);
    ASSERT_EQ(m_cfg.ntokens, 3u);
    EXPECT_STREQ(m_cfg.tokens[2].job, "job.2");
    EXPECT_STREQ(m_cfg.snapshot_path, "/tmp/x.snap");
    EXPECT_EQ(m_cfg.snapshot_interval, 0u);
    EXPECT_EQ(m_cfg.log_level, ORCD_LOG_DEBUG);
}

TEST_F(config_test, bad_files_name_position_and_key)
{
    struct {
        const char *yaml;
        const char *error;
    } cases[] = {
        /* unknown keys */
        {"listn: {}\n", "t.yaml:1:1: unknown key 'listn'"},
        {"limits:\n  max_bdy: 5\n", "t.yaml:2:3: unknown key 'limits.max_bdy'"},
        /* wrong types */
        {"listen:\n  port: [1]\n",
         "t.yaml:2:9: listen.port: expected an integer, got a sequence"},
        {"listen:\n  port: \"80\"\n",
         "t.yaml:2:9: listen.port: expected a non-negative integer"},
        {"listen:\n  allow_remote: maybe\n",
         "t.yaml:2:17: listen.allow_remote: expected a boolean"},
        {"limits: 5\n", "t.yaml:1:9: limits: expected a mapping"},
        {"log: {level: loud}\n", "t.yaml:1:14: log.level: expected one of"},
        {"limits: {max_wait: abc}\n",
         "t.yaml:1:20: limits.max_wait: expected a number of seconds"},
        {"- 1\n- 2\n", "t.yaml:1:1: expected a mapping of sections"},
        {"listen: {address: }\n",
         "listen.address: expected a string, got null"},
        /* out of range */
        {"listen: {port: 70000}\n",
         "t.yaml:1:16: listen.port: value 70000 out of range [0, 65535]"},
        {"limits: {max_body: 10}\n", "limits.max_body: value 10 out of range"},
        {"ttl: {min: 0}\n", "t.yaml:1:12: ttl.min: value 0 out of range"},
        {"limits: {max_connections: 99999999999999999999999}\n",
         "limits.max_connections: value 99999999999999999999999 out of range"},
        {"limits: {max_wait: 7200}\n",
         "limits.max_wait: value 7200 out of range"},
        {"limits: {max_body: -1}\n", "limits.max_body: expected a size"},
        /* structure */
        {"a: [[[[[[[[1]]]]]]]]\n", "t.yaml:1:"},
        {"listen: &x {port: 1}\nlimits: *x\n",
         "t.yaml:2:9: YAML aliases are not supported"},
        {"listen: {port: 1, port: 2}\n",
         "t.yaml:1:19: listen.port: duplicate key"},
        {"---\nlisten: {}\n---\nlimits: {}\n",
         "t.yaml:3:1: more than one YAML document"},
        {"listen: {port: 1\n", "t.yaml:2:1: YAML syntax:"},
        {"listen:\n\tport: 1\n", "YAML syntax"},
        /* tokens */
        {"auth: {tokens: {\"bad job\": abcdefghij}}\n",
         "auth.tokens: invalid job name"},
        {"auth: {tokens: {j: short}}\n", "auth.tokens.j: invalid token"},
        {"auth: {tokens: [a]}\n", "auth.tokens: expected a mapping"},
        /* cross-key checks */
        {"ttl: {min: 20, default: 10}\n",
         "t.yaml:1:12: ttl: need min <= default <= max"},
        {"auth: {enabled: true}\n",
         "t.yaml:1:17: auth.enabled is true but no tokens are configured"},
        {"listen: {address: 10.1.2.3}\n",
         "t.yaml:1:19: listen.address: 10.1.2.3 is not a loopback address"},
        {"listen: {address: not-an-ip}\n", "is not an IPv4 or IPv6 address"},
        {"limits: {max_long_polls: 10, max_connections: 10}\n",
         "t.yaml:1:26: limits.max_long_polls (10) must be below"},
        {"limits: {endpoint_max: 128K}\n",
         "limits.endpoint_max (131072) must not exceed limits.max_body"},
        {"tls: {cert: /x}\n",
         "t.yaml:1:13: tls: cert and key must be given together"},
        {"auth: {tokens: {a: same-token-1, b: same-token-1}}\n",
         "the same token is configured for jobs 'a' and 'b'"},
        {"auth: {token_file: /nonexistent/tokens}\n",
         "auth.token_file: /nonexistent/tokens: cannot open"},
    };
    for (auto &c : cases) {
        orcd_config_cleanup(&m_cfg);
        ASSERT_EQ(orcd_config_init_defaults(&m_cfg), 0);
        std::string err = load(c.yaml);
        EXPECT_NE(err.find(c.error), std::string::npos)
            << "yaml: " << c.yaml << "\nerror: " << err;
    }
    /* the depth error says what the limit is */
    orcd_config_cleanup(&m_cfg);
    ASSERT_EQ(orcd_config_init_defaults(&m_cfg), 0);
    EXPECT_NE(load("a: [[[[[[[[1]]]]]]]]\n").find("nesting deeper than"),
              std::string::npos);
    /* a bad token is not echoed */
    orcd_config_cleanup(&m_cfg);
    ASSERT_EQ(orcd_config_init_defaults(&m_cfg), 0);
    EXPECT_EQ(load("auth: {tokens: {j: \"has space secretvalue\"}}\n")
                  .find("secretvalue"),
              std::string::npos);
}

TEST_F(config_test, store_section)
{
    EXPECT_EQ(load(""), "");
    EXPECT_EQ(m_cfg.store_backend, ORCD_STORE_MEMORY);
    orcd_config_cleanup(&m_cfg);
    ASSERT_EQ(orcd_config_init_defaults(&m_cfg), 0);
    EXPECT_EQ(load("store:\n"
                   "  backend: etcd\n"
                   "  etcd:\n"
                   "    endpoints: [http://127.0.0.1:2379, "
                   "\"https://[::1]:2379,https://e3:2379\"]\n"
                   "    prefix: /orc/prod-1\n"
                   "    timeout: 2.5\n"
                   "    pipeline: 3\n"
                   "    username: orcd\n"
                   "    password: secret-pw\n"
                   "    tls: {ca: /ca.pem, cert: /c.pem, key: /k.pem}\n"),
              "");
    EXPECT_EQ(m_cfg.store_backend, ORCD_STORE_ETCD);
    ASSERT_EQ(m_cfg.etcd.nendpoints, 3u);
    EXPECT_STREQ(m_cfg.etcd.endpoints[0], "http://127.0.0.1:2379");
    EXPECT_STREQ(m_cfg.etcd.endpoints[1], "https://[::1]:2379");
    EXPECT_STREQ(m_cfg.etcd.endpoints[2], "https://e3:2379");
    EXPECT_STREQ(m_cfg.etcd.prefix, "/orc/prod-1");
    EXPECT_EQ(m_cfg.etcd.timeout, 2.5);
    EXPECT_EQ(m_cfg.etcd.pipeline, 3u);
    EXPECT_STREQ(m_cfg.etcd.username, "orcd");
    EXPECT_STREQ(m_cfg.etcd.password, "secret-pw");
    EXPECT_STREQ(m_cfg.etcd.ca, "/ca.pem");
    EXPECT_STREQ(m_cfg.etcd.key, "/k.pem");
    EXPECT_GT(orcd_config_threads(&m_cfg), 1u);

    struct {
        const char *yaml;
        const char *error;
    } cases[] = {
        {"store: {backend: redis}\n",
         "t.yaml:1:18: store.backend: expected memory or etcd, got 'redis'"},
        {"store: {backend: etcd}\n",
         "store.backend is etcd but store.etcd.endpoints is empty"},
        {"store: {etcd: {endpoints: [127.0.0.1:2379]}}\n",
         "store.etcd.endpoints: '127.0.0.1:2379' is not http://host:port"},
        {"store: {etcd: {endpoints: \"http://a:1,\"}}\n",
         "store.etcd.endpoints: '' is not http://host:port"},
        {"store: {etcd: {endpoints: [[http://a:1]]}}\n",
         "store.etcd.endpoints: expected URLs"},
        {"store: {etcd: {endpoint: http://a:1}}\n",
         "unknown key 'store.etcd.endpoint'"},
        {"store: {etcd: 5}\n", "store.etcd: expected a mapping"},
        {"store: {etcd: {tls: {ca: /a, crt: /b}}}\n",
         "unknown key 'store.etcd.tls.crt'"},
        {"store: {etcd: {timeout: 0}}\n", "store.etcd.timeout: value 0"},
        {"store: {etcd: {pipeline: 0}}\n", "store.etcd.pipeline: value 0"},
        {"store: {etcd: {pipeline: 65}}\n", "store.etcd.pipeline: value 65"},
        {"store: {backend: etcd, etcd: {endpoints: http://a:1, prefix: "
         "orc}}\n",
         "store.etcd.prefix 'orc': 1..128 characters"},
        {"store: {backend: etcd, etcd: {endpoints: http://a:1, prefix: "
         "/orc/}}\n",
         "store.etcd.prefix '/orc/'"},
        {"store: {backend: etcd, etcd: {endpoints: http://a:1, tls: "
         "{cert: /c}}}\n",
         "store.etcd.tls: cert and key must be given together"},
        {"store: {backend: etcd, etcd: {endpoints: http://a:1, username: "
         "u}}\n",
         "store.etcd: username and password (or password_file) must be "
         "given together"},
        {"store: {backend: etcd, etcd: {endpoints: http://a:1, username: u, "
         "password: p, password_file: /f}}\n",
         "store.etcd: password and password_file are exclusive"},
        {"store: {backend: etcd, etcd: {endpoints: http://a:1, username: u, "
         "password_file: /nonexistent/pw}}\n",
         "/nonexistent/pw: cannot open"},
        {"store: {backend: etcd, etcd: {endpoints: http://a:1}}\n"
         "snapshot: {path: /tmp/s}\n",
         "snapshot.path is for the memory store"},
    };
    for (auto &c : cases) {
        orcd_config_cleanup(&m_cfg);
        ASSERT_EQ(orcd_config_init_defaults(&m_cfg), 0);
        std::string err = load(c.yaml);
        EXPECT_NE(err.find(c.error), std::string::npos)
            << "yaml: " << c.yaml << "\nerror: " << err;
    }
    /* a password is never echoed */
    orcd_config_cleanup(&m_cfg);
    ASSERT_EQ(orcd_config_init_defaults(&m_cfg), 0);
    EXPECT_EQ(load("store: {backend: etcd, etcd: {endpoints: bad, password: "
                   "secretvalue}}\n")
                  .find("secretvalue"),
              std::string::npos);
}

TEST_F(config_test, token_file)
{
    char path[] = "/tmp/orcd-tokens.XXXXXX";
    int fd      = mkstemp(path);
    ASSERT_GE(fd, 0);
    close(fd);
    std::ofstream(path) << "# comment\n\njob-a  token-aaaaaaaa   # trailing\n"
                           "job-b token-bbbbbbbb\n";
    EXPECT_EQ(load(std::string("auth: {enabled: true, token_file: ") + path +
                   "}\n"),
              "");
    ASSERT_EQ(m_cfg.ntokens, 2u);
    EXPECT_STREQ(m_cfg.tokens[1].job, "job-b");
    EXPECT_STREQ(m_cfg.tokens[1].token, "token-bbbbbbbb");

    std::ofstream(path) << "job-a token-aaaaaaaa\njob-b\n";
    orcd_config_cleanup(&m_cfg);
    ASSERT_EQ(orcd_config_init_defaults(&m_cfg), 0);
    std::string err = load(std::string("auth: {token_file: ") + path + "}\n");
    EXPECT_NE(err.find(std::string(path) + ":2: expected 'JOB TOKEN'"),
              std::string::npos)
        << err;
    std::ofstream(path) << "job-a tok\n";
    orcd_config_cleanup(&m_cfg);
    ASSERT_EQ(orcd_config_init_defaults(&m_cfg), 0);
    err = load(std::string("auth: {token_file: ") + path + "}\n");
    EXPECT_NE(err.find(":1: invalid token"), std::string::npos) << err;
    EXPECT_EQ(err.find("tok\n"), std::string::npos);
    unlink(path);
}

TEST(config_listen, parse)
{
    char *addr    = NULL;
    unsigned port = 1;
    EXPECT_EQ(orcd_config_parse_listen("127.0.0.1:0", &addr, &port), 0);
    EXPECT_STREQ(addr, "127.0.0.1");
    EXPECT_EQ(port, 0u);
    EXPECT_EQ(orcd_config_parse_listen("[::1]:8080", &addr, &port), 0);
    EXPECT_STREQ(addr, "::1");
    EXPECT_EQ(port, 8080u);
    EXPECT_NE(orcd_config_parse_listen("::1:80", &addr, &port), 0);
    EXPECT_NE(orcd_config_parse_listen("localhost:80", &addr, &port), 0);
    EXPECT_NE(orcd_config_parse_listen("1.2.3.4:99999", &addr, &port), 0);
    EXPECT_NE(orcd_config_parse_listen("1.2.3.4:", &addr, &port), 0);
    EXPECT_NE(orcd_config_parse_listen("1.2.3.4", &addr, &port), 0);
    free(addr);
}

/* ----------------------------------------------------------------- router */

class router_test : public ::testing::Test
{
  protected:
    void SetUp() override
    {
        make("");
    }
    void TearDown() override
    {
        destroy();
    }

    void make(const std::string &yaml)
    {
        char err[512];
        orcd_config_t *cfg = (orcd_config_t *)calloc(1, sizeof(*cfg));
        ASSERT_EQ(orcd_config_init_defaults(cfg), 0);
        ASSERT_EQ(orcd_config_load_buffer(cfg, "t",
                                          (const unsigned char *)yaml.data(),
                                          yaml.size(), err, sizeof(err)),
                  0)
            << err;
        ASSERT_EQ(orcd_config_finalize(cfg, err, sizeof(err)), 0) << err;
        const orc_store_params_t params = {20, ORCD_STORE_GROUP_DEPTH,
                                           orcd_key_class};
        ASSERT_EQ(orc_store_mem_open(&params, &m_store), ORC_STORE_OK);
        ASSERT_EQ(orcd_api_create(cfg, m_store, &m_api), 0);
    }
    void destroy()
    {
        orcd_api_destroy(m_api);
        orc_store_close(m_store);
        m_api   = nullptr;
        m_store = nullptr;
    }

    struct result {
        unsigned status;
        std::string body;
        std::string allow;
        bool has_index;
        uint64_t index;
        unsigned retry_after;
        bool block;
        std::string watch_key;
        uint64_t watch_rev;
        double wait;
        long long jint(const char *k) const
        {
            json_t *o   = json_loads(body.c_str(), 0, NULL);
            long long v = -1;
            if (o && json_is_integer(json_object_get(o, k))) {
                v = json_integer_value(json_object_get(o, k));
            }
            json_decref(o);
            return v;
        }
    };

    result call(const char *method, const char *path,
                const std::string &body            = "",
                std::vector<orcd_query_arg_t> args = {},
                const char *auth = nullptr, bool may_block = false)
    {
        orcd_request_t req = {};
        orcd_response_t resp;
        req.method         = method;
        req.path           = path;
        req.args           = args.data();
        req.nargs          = args.size();
        req.authorization  = auth;
        req.body           = body.data();
        req.body_len       = body.size();
        req.may_block      = may_block;
        req.rid            = m_rid;
        req.attempt_text   = m_attempt;
        req.min_index_text = m_min_index;
        orcd_api_handle(m_api, &req, &resp);
        result r;
        r.status      = resp.status;
        r.body        = resp.body ? std::string(resp.body, resp.body_len) : "";
        r.allow       = resp.allow ? resp.allow : "";
        r.has_index   = resp.has_index;
        r.index       = resp.index;
        r.retry_after = resp.retry_after;
        r.block       = resp.block;
        r.watch_key   = resp.watch_key ? resp.watch_key : "";
        r.watch_rev   = resp.watch_rev;
        r.wait        = resp.wait;
        orcd_api_response_free(&resp);
        return r;
    }

    orc_store_t *m_store = nullptr;
    orcd_api_t *m_api    = nullptr;
    /* headers of the next calls (NULL: absent) */
    const char *m_rid       = nullptr;
    const char *m_attempt   = nullptr;
    const char *m_min_index = nullptr;
};

TEST_F(router_test, routing_and_methods)
{
    EXPECT_EQ(call("GET", "/healthz").status, 200u);
    EXPECT_EQ(call("GET", "/").status, 404u);
    EXPECT_EQ(call("GET", "").status, 404u);
    EXPECT_EQ(call("GET", "healthz").status, 404u);
    EXPECT_EQ(call("GET", "/v1/jobs").status, 404u);
    EXPECT_EQ(call("GET", "/v1/jobs/j").status, 404u);
    EXPECT_EQ(call("GET", "/v1/jobs/j/nodes/1/rdma").status, 404u);
    EXPECT_EQ(call("GET", "/v1/jobs/j/nodes/1/rdma/endpoint/x").status, 404u);
    EXPECT_EQ(call("GET", "/v1/jobs/j/kv").status, 404u);
    result r = call("PATCH", "/v1/jobs/j/kv/a");
    EXPECT_EQ(r.status, 405u);
    EXPECT_EQ(r.allow, "GET, PUT, DELETE");
    EXPECT_EQ(call("POST", "/metrics").allow, "GET");
    EXPECT_EQ(call("GE", "/healthz").status, 405u);
    EXPECT_EQ(call("", "/healthz").status, 405u); /* found by fuzzing: hung */
    EXPECT_EQ(call("ET", "/healthz").status, 405u);
    EXPECT_EQ(call("GET, POST", "/v1/jobs/j/nodes").status, 405u);
    EXPECT_EQ(call("GET", "/v1/jobs/../nodes").status, 400u);
    EXPECT_EQ(call("GET", "/v1/jobs//nodes").status, 400u);
    EXPECT_EQ(call("GET",
                   ("/v1/jobs/" + std::string(129, 'a') + "/nodes").c_str())
                  .status,
              400u);
    EXPECT_EQ(call("GET",
                   ("/v1/jobs/" + std::string(128, 'a') + "/nodes").c_str())
                  .status,
              200u);
    EXPECT_EQ(call("GET", "/v1/jobs/j/nodes/18446744073709551615").status,
              404u);
    EXPECT_EQ(call("GET", "/v1/jobs/j/nodes/18446744073709551616").status,
              400u);
    EXPECT_EQ(call("GET", "/v1/jobs/j/kv/.hidden").status, 404u);
    EXPECT_EQ(call("GET", "/v1/jobs/j/kv/a/").status, 400u);
    EXPECT_EQ(
        call("GET", ("/v1/jobs/j/kv/" + std::string(129, 'k')).c_str()).status,
        400u);
}

TEST_F(router_test, blocking_specs)
{
    result r = call("POST", "/v1/jobs/j/nodes", "{\"host\":\"h\",\"pid\":1}");
    ASSERT_EQ(r.status, 201u);
    /* may_block = 0 never blocks */
    r = call("GET", "/v1/jobs/j/nodes/1/mailbox", "", {{"wait", "5"}});
    EXPECT_FALSE(r.block);
    /* empty mailbox: watch the mailbox prefix from the next revision */
    uint64_t rev = m_store->ops->revision(m_store);
    r            = call("GET", "/v1/jobs/j/nodes/1/mailbox", "",
                        {{"after", "0"}, {"wait", "5"}}, nullptr, true);
    EXPECT_EQ(r.status, 200u);
    EXPECT_TRUE(r.block);
    EXPECT_EQ(r.watch_key, "/jobs/j/mbox/00000000000000000001/");
    EXPECT_EQ(r.watch_rev, rev + 1);
    EXPECT_EQ(r.wait, 5.0);
    /* wait capped at max_wait */
    r = call("GET", "/v1/jobs/j/kv/k", "", {{"wait", "100000"}}, nullptr, true);
    EXPECT_EQ(r.status, 404u);
    EXPECT_TRUE(r.block);
    EXPECT_EQ(r.wait, 60.0);
    EXPECT_EQ(r.watch_key, "/jobs/j/kv/k");
    /* list: watch from the client's index + 1 */
    std::string now = std::to_string(m_store->ops->revision(m_store));
    r               = call("GET", "/v1/jobs/j/nodes", "",
                           {{"index", now.c_str()}, {"wait", "0.5"}}, nullptr, true);
    EXPECT_TRUE(r.block);
    EXPECT_EQ(r.watch_rev, std::stoull(now) + 1);
    EXPECT_EQ(r.watch_key, "/jobs/j/nodes/");
    /* an index beyond the store's revision (orcd restarted empty): no
     * blocking, the client must resynchronise */
    r = call("GET", "/v1/jobs/j/nodes", "",
             {{"index", "1000000"}, {"wait", "5"}}, nullptr, true);
    EXPECT_EQ(r.status, 200u);
    EXPECT_FALSE(r.block);
    /* no index: plain read */
    r = call("GET", "/v1/jobs/j/nodes", "", {{"wait", "0.5"}}, nullptr, true);
    EXPECT_FALSE(r.block);
    /* bad numbers */
    for (const char *w : {"-1", "1e3", "nan", "inf", "0x10", "1.2.3", "", ".5",
                          "12345678901234567"}) {
        EXPECT_EQ(call("GET", "/v1/jobs/j/kv/k", "", {{"wait", w}}).status,
                  400u)
            << w;
    }
    EXPECT_EQ(call("GET", "/v1/jobs/j/nodes", "", {{"index", "-1"}}).status,
              400u);
    /* a message present: no blocking */
    ASSERT_EQ(
        call("POST", "/v1/jobs/j/nodes/1/mailbox", "{\"body\":{}}").status,
        201u);
    r = call("GET", "/v1/jobs/j/nodes/1/mailbox", "", {{"wait", "5"}}, nullptr,
             true);
    EXPECT_FALSE(r.block);
    EXPECT_EQ(r.jint("last_seq"), 1);
}

TEST_F(router_test, auth)
{
    destroy();
    make("auth: {enabled: true, metrics_auth: true, tokens: "
         "{a: tok-a-12345678, b: tok-b-12345678}}\n");
    EXPECT_EQ(call("GET", "/v1/jobs/a/nodes").status, 401u);
    EXPECT_EQ(call("GET", "/v1/jobs/a/nodes", "", {}, "Basic xyz").status,
              401u);
    EXPECT_EQ(call("GET", "/v1/jobs/a/nodes", "", {}, "Bearer ").status, 401u);
    EXPECT_EQ(
        call("GET", "/v1/jobs/a/nodes", "", {}, "Bearer tok-a-1234567").status,
        401u);
    EXPECT_EQ(call("GET", "/v1/jobs/a/nodes", "", {}, "Bearer tok-a-123456789")
                  .status,
              401u);
    EXPECT_EQ(
        call("GET", "/v1/jobs/a/nodes", "", {}, "Bearer tok-a-12345678").status,
        200u);
    EXPECT_EQ(
        call("GET", "/v1/jobs/a/nodes", "", {}, "bearer tok-a-12345678").status,
        200u);
    result r = call("GET", "/v1/jobs/a/nodes", "", {}, "Bearer tok-b-12345678");
    EXPECT_EQ(r.status, 403u);
    EXPECT_EQ(r.body.find("tok-b"), std::string::npos);
    EXPECT_EQ(call("GET", "/healthz").status, 200u);
    EXPECT_EQ(call("GET", "/metrics").status, 401u);
    EXPECT_EQ(call("GET", "/metrics", "", {}, "Bearer tok-b-12345678").status,
              200u);
}

TEST_F(router_test, precheck_content_length)
{
    orcd_request_t req = {};
    orcd_response_t resp;
    size_t max_body;
    req.method = "POST";
    req.path   = "/v1/jobs/j/nodes";
    EXPECT_EQ(orcd_api_precheck(m_api, &req, 65536, &max_body, &resp), 0);
    orcd_api_response_free(&resp);
    EXPECT_EQ(max_body, 65536u);
    EXPECT_EQ(orcd_api_precheck(m_api, &req, -1, &max_body, &resp), 0);
    orcd_api_response_free(&resp);
    EXPECT_EQ(orcd_api_precheck(m_api, &req, 65537, &max_body, &resp), 1);
    EXPECT_EQ(resp.status, 413u);
    orcd_api_response_free(&resp);
    req.method = "DELETE";
    EXPECT_EQ(orcd_api_precheck(m_api, &req, 5, &max_body, &resp), 1);
    EXPECT_EQ(resp.status, 405u);
    orcd_api_response_free(&resp);
}

TEST_F(router_test, node_lifecycle_in_store)
{
    result r = call("POST", "/v1/jobs/j/nodes",
                    "{\"host\":\"h\",\"pid\":3,\"ttl\":1}");
    ASSERT_EQ(r.status, 201u);
    EXPECT_EQ(r.jint("ttl"), 5); /* clamped to min */
    ASSERT_EQ(
        call("PUT", "/v1/jobs/j/nodes/1/rdma/endpoint", "{\"e\":1}").status,
        200u);
    /* the store holds the node under its lease, endpoint attached */
    orc_store_kv_t node, ep;
    ASSERT_EQ(orc_store_get(m_store, "/jobs/j/nodes/00000000000000000001", 0,
                            &node, NULL),
              ORC_STORE_OK);
    ASSERT_EQ(orc_store_get(m_store, "/jobs/j/nodes/00000000000000000001/ep", 0,
                            &ep, NULL),
              ORC_STORE_OK);
    EXPECT_NE(node.lease, 0u);
    EXPECT_EQ(node.lease, ep.lease);
    /* revoking the lease (as expiry would) removes it: 410 from then on */
    ASSERT_EQ(m_store->ops->lease_revoke(m_store, node.lease, NULL),
              ORC_STORE_OK);
    orc_store_kv_free(&node);
    orc_store_kv_free(&ep);
    EXPECT_EQ(call("PUT", "/v1/jobs/j/nodes/1/keepalive").status, 410u);
    EXPECT_EQ(call("GET", "/v1/jobs/j/nodes/1/rdma/endpoint").status, 410u);
    EXPECT_EQ(call("GET", "/v1/jobs/j/nodes/2").status, 404u);
    /* another job has its own ids */
    EXPECT_EQ(call("POST", "/v1/jobs/k/nodes", "{\"host\":\"h\",\"pid\":3}")
                  .jint("id"),
              1);
    EXPECT_EQ(call("POST", "/v1/jobs/j/nodes", "{\"host\":\"h\",\"pid\":3}")
                  .jint("id"),
              2);
}

TEST_F(router_test, bodies)
{
    ASSERT_EQ(
        call("POST", "/v1/jobs/j/nodes", "{\"host\":\"h\",\"pid\":1}").status,
        201u);
    const char *bad[] = {"",
                         "{",
                         "{\"a\":1,\"a\":2}",
                         "nul",
                         "{}x",
                         "{\"host\":\"\",\"pid\":1}",
                         "{\"host\":\"h\",\"pid\":-1}",
                         "{\"host\":\"h\",\"pid\":1,\"ttl\":0}",
                         "{\"host\":\"h\",\"pid\":1,\"labels\":[]}",
                         "{\"host\":5,\"pid\":1}"};
    for (const char *b : bad) {
        EXPECT_EQ(call("POST", "/v1/jobs/j/nodes", b).status, 400u) << b;
    }
    EXPECT_EQ(call("PUT", "/v1/jobs/j/kv/a", "{\"value\":1,\"node\":0}").status,
              400u);
    EXPECT_EQ(call("PUT", "/v1/jobs/j/kv/a", "{\"value\":null}").status, 200u);
    EXPECT_NE(call("GET", "/v1/jobs/j/kv/a").body.find("\"value\":null"),
              std::string::npos);
    EXPECT_EQ(call("POST", "/v1/jobs/j/nodes/1/mailbox",
                   "{\"from\":-1,\"body\":{}}")
                  .status,
              400u);
    std::string big = "{\"body\":{\"x\":\"" + std::string(5000, 'x') + "\"}}";
    EXPECT_EQ(call("POST", "/v1/jobs/j/nodes/1/mailbox", big).status, 413u);
}

TEST_F(router_test, retried_posts_are_answered_as_the_first_attempt)
{
    /* a registration whose answer was lost: the retry gets the same node */
    m_rid     = "reg-1";
    result r1 = call("POST", "/v1/jobs/j/nodes", "{\"host\":\"h\",\"pid\":1}");
    ASSERT_EQ(r1.status, 201u);
    m_attempt = "2";
    result r2 = call("POST", "/v1/jobs/j/nodes", "{\"host\":\"h\",\"pid\":1}");
    EXPECT_EQ(r2.status, 201u);
    EXPECT_EQ(r2.jint("id"), r1.jint("id"));
    EXPECT_EQ(r2.jint("ttl"), r1.jint("ttl"));
    /* the request id is not part of what is shown */
    m_rid = m_attempt = nullptr;
    EXPECT_EQ(call("GET", "/v1/jobs/j/nodes/1").body.find("reg-1"),
              std::string::npos);
    EXPECT_EQ(call("GET", "/v1/jobs/j/nodes").body.find("reg-1"),
              std::string::npos);
    /* another key is another registration */
    m_rid     = "reg-2";
    m_attempt = "2";
    EXPECT_EQ(call("POST", "/v1/jobs/j/nodes", "{\"host\":\"h\",\"pid\":1}")
                  .jint("id"),
              2);

    /* a mailbox message: the retry gets the same seq, also after the
     * message was delivered and acknowledged */
    m_rid     = "msg-1";
    m_attempt = nullptr;
    ASSERT_EQ(
        call("POST", "/v1/jobs/j/nodes/1/mailbox", "{\"body\":{}}").jint("seq"),
        1);
    m_attempt = "2";
    EXPECT_EQ(
        call("POST", "/v1/jobs/j/nodes/1/mailbox", "{\"body\":{}}").jint("seq"),
        1);
    m_rid = m_attempt = nullptr;
    result got =
        call("GET", "/v1/jobs/j/nodes/1/mailbox", "", {{"after", "0"}});
    EXPECT_EQ(got.jint("last_seq"), 1);
    EXPECT_EQ(got.body.find("msg-1"), std::string::npos);
    call("GET", "/v1/jobs/j/nodes/1/mailbox", "", {{"after", "1"}});
    m_rid     = "msg-1";
    m_attempt = "3";
    EXPECT_EQ(
        call("POST", "/v1/jobs/j/nodes/1/mailbox", "{\"body\":{}}").jint("seq"),
        1);
    /* the first attempt of a new message is just posted */
    m_rid     = "msg-2";
    m_attempt = "1";
    EXPECT_EQ(
        call("POST", "/v1/jobs/j/nodes/1/mailbox", "{\"body\":{}}").jint("seq"),
        2);
    m_attempt = nullptr;
    for (int i = 0; i < 20; ++i) {
        std::string id = "m" + std::to_string(i);
        m_rid          = id.c_str();
        ASSERT_EQ(
            call("POST", "/v1/jobs/j/nodes/1/mailbox", "{\"body\":{}}").status,
            201u);
    }
    m_rid = nullptr;
    call("GET", "/v1/jobs/j/nodes/1/mailbox", "", {{"after", "22"}});
    /* what a key did is kept under /rid/: a registration's on its node's
     * lease, a post's on a lease of its own (it must not grow with the
     * node's life: it lives ORCD_RID_TTL at most) */
    orc_store_kv_t node, rec;
    int64_t ttl = 0;
    ASSERT_EQ(orc_store_get(m_store, "/jobs/j/nodes/00000000000000000001", 0,
                            &node, NULL),
              ORC_STORE_OK);
    ASSERT_EQ(orc_store_get(m_store, "/jobs/j/rid/reg-1", 0, &rec, NULL),
              ORC_STORE_OK);
    EXPECT_EQ(rec.lease, node.lease);
    orc_store_kv_free(&rec);
    ASSERT_EQ(orc_store_get(m_store, "/jobs/j/rid/m19", 0, &rec, NULL),
              ORC_STORE_OK);
    EXPECT_EQ(std::string(rec.value, rec.value_len), "{\"node\":1,\"seq\":22}");
    EXPECT_NE(rec.lease, node.lease);
    EXPECT_EQ(m_store->ops->lease_ttl(m_store, rec.lease, &ttl, NULL),
              ORC_STORE_OK);
    EXPECT_GT(ttl, 0);
    EXPECT_LE(ttl, 60);
    orc_store_kv_free(&rec);
    orc_store_kv_free(&node);
    char err[256];
    EXPECT_EQ(orcd_api_check_store(m_store, err, sizeof(err)), 0) << err;

    /* an endpoint created by the lost attempt */
    m_rid = "ep-1";
    ASSERT_EQ(
        call("POST", "/v1/jobs/j/nodes/1/rdma/endpoint", "{\"e\":1}").status,
        201u);
    m_attempt = "2";
    EXPECT_EQ(
        call("POST", "/v1/jobs/j/nodes/1/rdma/endpoint", "{\"e\":1}").status,
        201u);
    EXPECT_EQ(
        call("POST", "/v1/jobs/j/nodes/1/rdma/endpoint", "{\"e\":2}").status,
        409u);
    m_attempt = nullptr;
    EXPECT_EQ(
        call("POST", "/v1/jobs/j/nodes/1/rdma/endpoint", "{\"e\":1}").status,
        409u);

    /* malformed headers */
    m_rid = "bad key!";
    EXPECT_EQ(call("GET", "/v1/jobs/j/nodes").status, 400u);
    m_rid     = nullptr;
    m_attempt = "0";
    EXPECT_EQ(call("GET", "/v1/jobs/j/nodes").status, 400u);
    m_attempt   = nullptr;
    m_min_index = "-1";
    EXPECT_EQ(call("GET", "/v1/jobs/j/nodes").status, 400u);
}

/*
 * A store whose next transaction that puts a key containing `arm` is
 * applied late, as etcd applies a transaction still in raft when orcd's
 * call timed out: the call answers EUNAVAIL, lease revocations answer
 * EUNAVAIL too while it is pending (etcd is out of this orcd's reach), and
 * the transaction is applied just before the next one anybody makes (the
 * retry's own). Swaps the store's ops table while it lives; one at a time.
 */
class late_txn
{
  public:
    explicit late_txn(orc_store_t *store) : m_store(store), m_orig(store->ops)
    {
        m_ops              = *m_orig;
        m_ops.txn          = txn;
        m_ops.lease_revoke = lease_revoke;
        s_self             = this;
        m_store->ops       = &m_ops;
    }
    ~late_txn()
    {
        m_store->ops = m_orig;
        s_self       = nullptr;
    }
    std::string arm;        /* hold the next transaction putting such a key */
    int applied        = 0; /* held transactions applied, and their status: */
    int applied_status = ORC_STORE_OK;

  private:
    const char *keep(const void *p, size_t len)
    {
        if (p == nullptr) {
            return nullptr;
        }
        m_text.emplace_back(new std::string((const char *)p, len));
        return m_text.back()->c_str();
    }
    void hold(const orc_store_cmp_t *cmps, size_t ncmp,
              const orc_store_op_t *ops, size_t nops)
    {
        m_cmps.clear();
        m_held.clear();
        for (size_t i = 0; i < ncmp; ++i) {
            m_cmps.push_back(cmps[i]);
            m_cmps.back().key = keep(cmps[i].key, strlen(cmps[i].key));
        }
        for (size_t i = 0; i < nops; ++i) {
            m_held.push_back(ops[i]);
            m_held.back().key = keep(ops[i].key, strlen(ops[i].key));
            m_held.back().range_end =
                (ops[i].range_end != nullptr)
                    ? keep(ops[i].range_end, strlen(ops[i].range_end))
                    : nullptr;
            m_held.back().value = keep(ops[i].value, ops[i].value_len);
        }
        m_holding = true;
    }
    static int txn(orc_store_t *store, const orc_store_cmp_t *cmps, size_t ncmp,
                   const orc_store_op_t *ops, size_t nops,
                   orc_store_txn_result_t *res)
    {
        late_txn *l = s_self;
        if (l->m_holding) {
            orc_store_txn_result_t r;
            l->m_holding = false;
            l->applied_status =
                l->m_orig->txn(store, l->m_cmps.data(), l->m_cmps.size(),
                               l->m_held.data(), l->m_held.size(), &r);
            ++l->applied;
        }
        for (size_t i = 0; !l->arm.empty() && (i < nops); ++i) {
            if ((ops[i].type == ORC_STORE_OP_PUT) &&
                (strstr(ops[i].key, l->arm.c_str()) != nullptr)) {
                l->arm.clear();
                l->hold(cmps, ncmp, ops, nops);
                memset(res, 0, sizeof(*res));
                return ORC_STORE_EUNAVAIL;
            }
        }
        return l->m_orig->txn(store, cmps, ncmp, ops, nops, res);
    }
    static int lease_revoke(orc_store_t *store, uint64_t id, uint64_t *rev_p)
    {
        return s_self->m_holding
                   ? ORC_STORE_EUNAVAIL
                   : s_self->m_orig->lease_revoke(store, id, rev_p);
    }

    static late_txn *s_self;
    orc_store_t *m_store;
    const orc_store_ops_t *m_orig;
    orc_store_ops_t m_ops;
    bool m_holding = false;
    std::vector<std::unique_ptr<std::string>> m_text;
    std::vector<orc_store_cmp_t> m_cmps;
    std::vector<orc_store_op_t> m_held;
};
late_txn *late_txn::s_self = nullptr;

/* A POST whose first attempt's transaction the store applied after orcd
 * gave up on it, just before the retry's: one node, one message, and the
 * retry answers what the first attempt did */
TEST_F(router_test, retry_racing_its_late_first_attempt_is_made_once)
{
    late_txn late(m_store);
    const std::string reg = "{\"host\":\"h\",\"pid\":1}";

    late.arm = "/nodes/";
    m_rid    = "reg-late";
    EXPECT_EQ(call("POST", "/v1/jobs/j/nodes", reg).status, 503u);
    m_attempt = "2";
    result r  = call("POST", "/v1/jobs/j/nodes", reg);
    EXPECT_EQ(late.applied, 1);
    EXPECT_EQ(late.applied_status, ORC_STORE_OK); /* the first one's node */
    EXPECT_EQ(r.status, 201u) << r.body;
    EXPECT_EQ(r.jint("id"), 1);
    m_rid = m_attempt = nullptr;
    json_t *o =
        json_loads(call("GET", "/v1/jobs/j/nodes").body.c_str(), 0, nullptr);
    EXPECT_EQ(json_array_size(json_object_get(o, "nodes")), 1u);
    json_decref(o);
    /* its lease is alive: the retry's client keeps it */
    EXPECT_EQ(call("PUT", "/v1/jobs/j/nodes/1/keepalive").status, 200u);

    late.arm = "/m/";
    m_rid    = "msg-late";
    EXPECT_EQ(
        call("POST", "/v1/jobs/j/nodes/1/mailbox", "{\"body\":{}}").status,
        503u);
    m_attempt = "2";
    r         = call("POST", "/v1/jobs/j/nodes/1/mailbox", "{\"body\":{}}");
    EXPECT_EQ(late.applied, 2);
    EXPECT_EQ(late.applied_status, ORC_STORE_OK);
    EXPECT_EQ(r.status, 201u) << r.body;
    EXPECT_EQ(r.jint("seq"), 1);
    m_rid = m_attempt = nullptr;
    r = call("GET", "/v1/jobs/j/nodes/1/mailbox", "", {{"after", "0"}});
    EXPECT_EQ(r.body, "{\"messages\":[{\"from\":0,\"body\":{},\"seq\":1}],"
                      "\"last_seq\":1}");
    char err[256];
    EXPECT_EQ(orcd_api_check_store(m_store, err, sizeof(err)), 0) << err;
}

/*
 * A store whose lease grants take grant_ms, and whose transactions that put
 * a key containing `arm` wait until release() (a call etcd is slow to
 * answer): swaps the store's ops table while it lives; one at a time.
 */
class slow_store
{
  public:
    explicit slow_store(orc_store_t *store) : m_store(store), m_orig(store->ops)
    {
        m_ops             = *m_orig;
        m_ops.lease_grant = lease_grant;
        m_ops.txn         = txn;
        s_self            = this;
        m_store->ops      = &m_ops;
    }
    ~slow_store()
    {
        release();
        m_store->ops = m_orig;
        s_self       = nullptr;
    }
    /* until a transaction waits in the store (bounded) */
    bool wait_blocked()
    {
        std::unique_lock<std::mutex> g(m_lock);
        return m_cv.wait_for(g, std::chrono::seconds(30),
                             [this] { return m_blocked > 0; });
    }
    void release()
    {
        std::lock_guard<std::mutex> g(m_lock);
        m_released = true;
        m_cv.notify_all();
    }
    unsigned grant_ms = 0;
    std::string arm;

  private:
    static int lease_grant(orc_store_t *store, int64_t ttl, uint64_t *id_p,
                           int64_t *granted_p)
    {
        std::this_thread::sleep_for(
            std::chrono::milliseconds(s_self->grant_ms));
        return s_self->m_orig->lease_grant(store, ttl, id_p, granted_p);
    }
    static int txn(orc_store_t *store, const orc_store_cmp_t *cmps, size_t ncmp,
                   const orc_store_op_t *ops, size_t nops,
                   orc_store_txn_result_t *res)
    {
        slow_store *s = s_self;
        for (size_t i = 0; !s->arm.empty() && (i < nops); ++i) {
            if (strstr(ops[i].key, s->arm.c_str()) != nullptr) {
                std::unique_lock<std::mutex> g(s->m_lock);
                ++s->m_blocked;
                s->m_cv.notify_all();
                s->m_cv.wait(g, [s] { return s->m_released; });
                break;
            }
        }
        return s->m_orig->txn(store, cmps, ncmp, ops, nops, res);
    }

    static slow_store *s_self;
    orc_store_t *m_store;
    const orc_store_ops_t *m_orig;
    orc_store_ops_t m_ops;
    std::mutex m_lock;
    std::condition_variable m_cv;
    int m_blocked   = 0;
    bool m_released = false;
};
slow_store *slow_store::s_self = nullptr;

/* A registration on etcd answers within one deadline, 2 x
 * store.etcd.timeout, however its calls go: here a slow lease grant, then
 * the job's id counter held by another registration whose transaction
 * etcd is slow to answer. It answers 503 in time (the client then tries
 * another replica), not after the lease grant plus the counter's whole
 * wait (ORCD_COUNTER_WAIT_MS), past the client's own timeout. */
TEST_F(router_test, a_slow_registration_answers_within_its_deadline)
{
    destroy();
    make("store:\n  backend: etcd\n  etcd: {endpoints: [http://127.0.0.1:9], "
         "timeout: 0.5}\n");
    const std::string reg = "{\"host\":\"h\",\"pid\":1}";
    slow_store slow(m_store);
    slow.grant_ms = 300;
    slow.arm      = "/nodes/";
    result first;
    std::thread holder([&] { first = call("POST", "/v1/jobs/j/nodes", reg); });
    ASSERT_TRUE(slow.wait_blocked());
    auto t0  = std::chrono::steady_clock::now();
    result r = call("POST", "/v1/jobs/j/nodes", reg);
    double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
            .count();
    EXPECT_EQ(r.status, 503u) << r.body;
    EXPECT_EQ(r.retry_after, 1u);
    EXPECT_LT(s, 1.0) << "answered after " << s << " s";
    slow.release();
    holder.join();
    /* the holder's transaction started in its time: it completes */
    EXPECT_EQ(first.status, 201u) << first.body;
}

TEST_F(router_test, every_answer_has_an_index)
{
    result r = call("POST", "/v1/jobs/j/nodes", "{\"host\":\"h\",\"pid\":1}");
    ASSERT_TRUE(r.has_index);
    EXPECT_EQ(r.index, (uint64_t)r.jint("index"));
    r = call("PUT", "/v1/jobs/j/nodes/1/keepalive");
    EXPECT_TRUE(r.has_index);
    r = call("GET", "/v1/jobs/j/nodes/1");
    EXPECT_TRUE(r.has_index);
    r = call("DELETE", "/v1/jobs/j/nodes/1");
    ASSERT_EQ(r.status, 204u);
    EXPECT_TRUE(r.has_index);
    EXPECT_EQ(r.index, m_store->ops->revision(m_store));
    r = call("GET", "/v1/jobs/j/kv/none");
    EXPECT_EQ(r.status, 404u);
    EXPECT_TRUE(r.has_index);
}

/* A store that forwards to another and counts the ranges it is asked for */
struct counting_store {
    orc_store_t super;
    orc_store_ops_t ops;
    orc_store_t *inner;
    std::atomic<int> ranges{0};

    static counting_store *of(orc_store_t *s)
    {
        return reinterpret_cast<counting_store *>(s);
    }
    static int range(orc_store_t *s, const char *key, const char *end,
                     unsigned flags, size_t limit, uint64_t min_rev,
                     orc_store_range_result_t *res)
    {
        ++of(s)->ranges;
        return of(s)->inner->ops->range(of(s)->inner, key, end, flags, limit,
                                        min_rev, res);
    }
    static void stats(orc_store_t *s, orc_store_stats_t *st)
    {
        of(s)->inner->ops->stats(of(s)->inner, st);
    }
    explicit counting_store(orc_store_t *in) : inner(in)
    {
        ops       = *in->ops;
        ops.range = range;
        ops.stats = stats;
        super.ops = &ops;
    }
};

TEST_F(router_test, metrics_count_without_scanning_the_store)
{
    for (int i = 0; i < 3; ++i) {
        ASSERT_EQ(call("POST", "/v1/jobs/j/nodes", "{\"host\":\"h\",\"pid\":1}")
                      .status,
                  201u);
    }
    ASSERT_EQ(
        call("POST", "/v1/jobs/j/nodes/1/mailbox", "{\"body\":{}}").status,
        201u);
    ASSERT_EQ(
        call("POST", "/v1/jobs/j/nodes/2/mailbox", "{\"body\":{}}").status,
        201u);
    ASSERT_EQ(call("PUT", "/v1/jobs/j/kv/a", "{\"value\":1}").status, 200u);
    counting_store counted(m_store);
    orcd_api_t *api;
    orcd_config_t *cfg = (orcd_config_t *)calloc(1, sizeof(*cfg));
    char err[256];
    ASSERT_EQ(orcd_config_init_defaults(cfg), 0);
    ASSERT_EQ(orcd_config_finalize(cfg, err, sizeof(err)), 0) << err;
    ASSERT_EQ(orcd_api_create(cfg, &counted.super, &api), 0);
    orcd_request_t req = {};
    orcd_response_t resp;
    req.method = "GET";
    req.path   = "/metrics";
    orcd_api_handle(api, &req, &resp);
    std::string body(resp.body, resp.body_len);
    orcd_api_response_free(&resp);
    orcd_api_destroy(api);
    EXPECT_EQ(counted.ranges.load(), 0) << "/metrics scanned the store";
    EXPECT_NE(body.find("\norcd_nodes 3\n"), std::string::npos) << body;
    EXPECT_NE(body.find("\norcd_mailbox_messages 2\n"), std::string::npos);
    /* and the counts follow deletions */
    call("GET", "/v1/jobs/j/nodes/1/mailbox", "", {{"after", "1"}});
    call("DELETE", "/v1/jobs/j/nodes/3");
    body = call("GET", "/metrics").body;
    EXPECT_NE(body.find("\norcd_nodes 2\n"), std::string::npos) << body;
    EXPECT_NE(body.find("\norcd_mailbox_messages 1\n"), std::string::npos);
}

TEST_F(router_test, quotas)
{
    destroy();
    make("limits: {max_keys_per_job: 16, max_bytes_per_job: 64KiB, "
         "max_keys: 32, max_bytes: 1MiB}\n");
    /* the job's id counter and 2 keys a node (a registration asks room
     * for 3): 7 fit in 16, the 8th does not */
    for (int i = 0; i < 7; ++i) {
        ASSERT_EQ(call("POST", "/v1/jobs/j/nodes", "{\"host\":\"h\",\"pid\":1}")
                      .status,
                  201u)
            << i;
    }
    result r = call("POST", "/v1/jobs/j/nodes", "{\"host\":\"h\",\"pid\":1}");
    EXPECT_EQ(r.status, 429u);
    EXPECT_EQ(r.retry_after, 1u);
    EXPECT_NE(r.body.find("quota_exceeded"), std::string::npos);
    EXPECT_NE(r.body.find("max_keys_per_job"), std::string::npos);
    EXPECT_EQ(call("PUT", "/v1/jobs/j/kv/x", "{\"value\":1}").status, 200u);
    EXPECT_EQ(call("PUT", "/v1/jobs/j/kv/y", "{\"value\":1}").status, 429u);
    EXPECT_EQ(
        call("POST", "/v1/jobs/j/nodes/1/mailbox", "{\"body\":{}}").status,
        429u);
    /* another job has its own quota, up to the total */
    for (int i = 0; i < 7; ++i) {
        ASSERT_EQ(call("POST", "/v1/jobs/k/nodes", "{\"host\":\"h\",\"pid\":1}")
                      .status,
                  201u)
            << i;
    }
    r = call("POST", "/v1/jobs/l/nodes", "{\"host\":\"h\",\"pid\":1}");
    EXPECT_EQ(r.status, 429u);
    EXPECT_NE(r.body.find("limits.max_keys"), std::string::npos) << r.body;
    /* deleting frees room */
    EXPECT_EQ(call("DELETE", "/v1/jobs/j/nodes/1").status, 204u);
    EXPECT_EQ(call("PUT", "/v1/jobs/j/kv/y", "{\"value\":1}").status, 200u);
    /* bytes count too */
    destroy();
    make("limits: {max_bytes_per_job: 64KiB, max_body: 64KiB}\n");
    std::string big = "{\"value\":\"" + std::string(40000, 'v') + "\"}";
    EXPECT_EQ(call("PUT", "/v1/jobs/j/kv/a", big).status, 200u);
    EXPECT_EQ(call("PUT", "/v1/jobs/j/kv/b", big).status, 429u);
}

} // namespace

/* The reply buffer of orcd's etcd client and of liborcclient: grows, stays
 * NUL-terminated, refuses what goes past its bound (and says so) */
TEST(util, reply_buffer)
{
    orc_util_buf_t b = {};
    b.max            = 10;
    EXPECT_EQ(0, orc_util_buf_append(&b, "hello", 5));
    EXPECT_EQ(0, orc_util_buf_append(&b, "", 0));
    EXPECT_EQ(0, orc_util_buf_append(&b, "world", 5));
    EXPECT_EQ(10u, b.len);
    EXPECT_STREQ("helloworld", b.data);
    EXPECT_EQ(0, b.overflow);
    EXPECT_EQ(-1, orc_util_buf_append(&b, "!", 1));
    EXPECT_EQ(1, b.overflow);
    EXPECT_EQ(10u, b.len);
    EXPECT_STREQ("helloworld", b.data);
    free(b.data);

    /* as libcurl's write callback: the bytes taken, 0 past the bound */
    std::string big(100000, 'x');
    orc_util_buf_t c = {}; /* no bound */
    EXPECT_EQ(big.size(), orc_util_buf_curl_write(&big[0], 1, big.size(), &c));
    EXPECT_EQ(big, std::string(c.data, c.len));
    EXPECT_EQ('\0', c.data[c.len]);
    free(c.data);
    orc_util_buf_t d = {};
    d.max            = 5;
    EXPECT_EQ(0u, orc_util_buf_curl_write(&big[0], 2, 3, &d));
    EXPECT_EQ(1, d.overflow);
    EXPECT_EQ(0u, d.len);
    free(d.data);
}
