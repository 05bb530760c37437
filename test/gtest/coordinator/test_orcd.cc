/*
 * orcd black-box tests: the daemon as a child process on a free loopback
 * port, driven over HTTP (libcurl) and raw sockets.
 */
#include "etcd_test_util.h"
#include "orcd_test_util.h"

#include <atomic>
#include <mutex>
#include <set>
#include <thread>

using namespace orcd_test;

namespace
{

static mode_t lstat_mode(const std::string &path)
{
    struct stat st;
    return (lstat(path.c_str(), &st) == 0) ? st.st_mode : 0;
}

const char *const k_tok_a = "token-for-job-a-0123456789";
const char *const k_tok_b = "token-for-job-b-9876543210";

class orcd_daemon : public ::testing::Test
{
  protected:
    void SetUp() override
    {
        ASSERT_EQ(access(orcd_binary().c_str(), X_OK), 0)
            << "orcd not built at " << orcd_binary();
    }

    /* the store section of the configuration ("": the memory store) */
    virtual std::string store_yaml()
    {
        return "";
    }
    bool on_etcd()
    {
        return !store_yaml().empty();
    }

    /* start orcd with a config text (empty: no --config) */
    void start(const std::string &yaml_in     = "",
               std::vector<std::string> extra = {})
    {
        std::vector<std::string> args = extra;
        std::string yaml              = store_yaml() + yaml_in;
        if (!yaml.empty()) {
            write_file(m_dir.file("orcd.yaml"), yaml);
            args.push_back("--config");
            args.push_back(m_dir.file("orcd.yaml"));
        }
        ASSERT_TRUE(m_orcd.start(args)) << m_orcd.log();
    }

    std::string u(const std::string &path)
    {
        return m_orcd.url(path);
    }

    /* *index_p: the registration's index (the record's create revision) */
    long long register_node(http_client &c, const std::string &job, int ttl = 0,
                            long long *index_p = nullptr)
    {
        std::string body = "{\"host\":\"h1\",\"pid\":42";
        if (ttl > 0) {
            body += ",\"ttl\":" + std::to_string(ttl);
        }
        body += "}";
        http_result r = c.post(u("/v1/jobs/" + job + "/nodes"), body);
        EXPECT_EQ(r.status, 201) << r.body;
        if (index_p != nullptr) {
            *index_p = r.jint("index");
        }
        return r.jint("id");
    }

    /* wait (bounded) until /metrics shows orcd_long_polls == n (asked from
     * 127.0.0.2: not counted against 127.0.0.1's connection limit) */
    bool wait_long_polls(int n, double timeout = 30)
    {
        http_client c;
        c.set_source("127.0.0.2");
        std::string want = "\norcd_long_polls " + std::to_string(n) + "\n";
        double deadline  = now_s() + timeout;
        while (now_s() < deadline) {
            http_result r = c.get(u("/metrics"));
            if (r.body.find(want) != std::string::npos) {
                return true;
            }
            std::this_thread::yield();
        }
        return false;
    }

    /* wait (bounded) until /metrics shows needle (the etcd store counts
     * what its cache has seen, a moment after the write) */
    std::string metrics_with(const std::string &needle, double timeout = 10)
    {
        http_client c;
        c.set_source("127.0.0.2");
        double deadline = now_s() + timeout;
        std::string body;
        do {
            body = c.get(u("/metrics")).body;
        } while ((body.find(needle) == std::string::npos) &&
                 (now_s() < deadline));
        return body;
    }

    tmpdir m_dir;
    orcd_process m_orcd{m_dir};
};

/*
 * The API suites run against both stores: memory, and etcd (a real
 * one-member etcd shared by the suite, each test under its own key prefix).
 */
class orcd_api :
    public orcd_daemon,
    public ::testing::WithParamInterface<std::string>
{
  protected:
    std::string store_yaml() override
    {
        if (GetParam() != "etcd") {
            return "";
        }
        if (m_prefix.empty()) {
            m_prefix = etcd_test::unique_prefix("orcd");
        }
        std::string why;
        etcd_test::etcd_cluster *c = etcd_test::shared_etcd(1, &why);
        EXPECT_NE(c, nullptr) << why;
        return (c == nullptr)
                   ? ""
                   : "store:\n  backend: etcd\n  etcd:\n    endpoints: " +
                         c->endpoint_yaml() + "\n    prefix: " + m_prefix +
                         "\n";
    }

    std::string m_prefix;
};

INSTANTIATE_TEST_SUITE_P(store, orcd_api, ::testing::Values("memory", "etcd"),
                         [](const ::testing::TestParamInfo<std::string> &i) {
    return i.param;
});

TEST_F(orcd_daemon, check_config)
{
    std::string out;
    EXPECT_EQ(run_capture({orcd_binary(), "--check-config",
                           srcdir() + "/config/orcd.yaml"},
                          &out),
              0)
        << out;
    write_file(m_dir.file("bad.yaml"), "limits:\n  max_body: huge\n");
    EXPECT_EQ(run_capture({orcd_binary(), "--check-config",
                           m_dir.file("bad.yaml")},
                          &out),
              1);
    EXPECT_NE(out.find("bad.yaml:2:13: limits.max_body"), std::string::npos)
        << out;
    EXPECT_EQ(run_capture({orcd_binary(), "--check-config",
                           m_dir.file("missing.yaml")},
                          &out),
              1);
    EXPECT_NE(out.find("cannot open"), std::string::npos) << out;
    EXPECT_EQ(run_capture({orcd_binary(), "--bogus-flag"}, &out), 2);
    EXPECT_EQ(run_capture({orcd_binary(), "--listen", "nonsense"}, &out), 1);
    EXPECT_NE(out.find("--listen nonsense"), std::string::npos) << out;
    /* a non-loopback address needs allow_remote */
    EXPECT_EQ(run_capture({orcd_binary(), "--listen", "0.0.0.0:0"}, &out), 1);
    EXPECT_NE(out.find("allow_remote"), std::string::npos) << out;
}

/* etcd that cannot be reached when orcd starts: a clear error, exit 1,
 * within the configured timeout (no hang) */
TEST_F(orcd_daemon, etcd_unreachable_at_start_is_a_clear_error)
{
    unsigned port   = etcd_test::free_port(); /* nobody listens there */
    std::string url = "http://127.0.0.1:" + std::to_string(port), out;
    write_file(m_dir.file("e.yaml"),
               "store:\n  backend: etcd\n  etcd: {endpoints: [" + url +
                   "], timeout: 2}\n");
    double t0 = now_s();
    EXPECT_EQ(run_capture({orcd_binary(), "--listen", "127.0.0.1:0", "--config",
                           m_dir.file("e.yaml")},
                          &out),
              1);
    EXPECT_LT(now_s() - t0, 15.0);
    EXPECT_NE(out.find("store.etcd: " + url + ": "), std::string::npos) << out;
    /* --check-config checks the file, not the cluster */
    EXPECT_EQ(run_capture({orcd_binary(), "--check-config",
                           m_dir.file("e.yaml")},
                          &out),
              0)
        << out;
}

/* All of etcd down: orcd answers 503 with Retry-After (no hang, no crash)
 * and serves again by itself once etcd is back */
TEST_F(orcd_daemon, etcd_down_answers_503_and_recovers)
{
    std::string why;
    ASSERT_TRUE(etcd_test::etcd_available()) << "etcd-server not installed";
    etcd_test::etcd_cluster etcd(1);
    ASSERT_TRUE(etcd.start(&why)) << why;
    start("store:\n  backend: etcd\n  etcd: {endpoints: " +
          etcd.endpoint_yaml() + ", timeout: 2}\n");
    http_client c;
    long long id = register_node(c, "j", 300);
    ASSERT_GT(id, 0);
    EXPECT_EQ(c.get(u("/healthz")).status, 200);

    etcd.kill_member(0, SIGKILL);
    /* reads, writes and health: 503 + Retry-After, each within the
     * timeout (the watch notices the loss within a moment) */
    double deadline = now_s() + 20;
    http_result r;
    do {
        double t0 = now_s();
        r         = c.get(u("/v1/jobs/j/nodes"));
        EXPECT_LT(now_s() - t0, 10.0);
    } while ((r.status != 503) && (now_s() < deadline));
    EXPECT_EQ(r.status, 503) << r.body;
    EXPECT_EQ(r.headers["retry-after"], "1");
    EXPECT_EQ(r.jstr("error"), "store_unavailable") << r.body;
    double t0 = now_s();
    r         = c.post(u("/v1/jobs/j/nodes"), "{\"host\":\"h\",\"pid\":1}");
    EXPECT_LT(now_s() - t0, 10.0);
    EXPECT_EQ(r.status, 503) << r.body;
    EXPECT_EQ(r.headers["retry-after"], "1");
    r = c.put(u("/v1/jobs/j/kv/k"), "{\"value\":1}");
    EXPECT_EQ(r.status, 503) << r.body;
    r = c.get(u("/healthz"));
    EXPECT_EQ(r.status, 503) << r.body;
    EXPECT_EQ(r.headers["retry-after"], "1");

    /* etcd back (same data): orcd recovers without a restart */
    ASSERT_TRUE(etcd.restart(0)) << etcd.log(0);
    deadline = now_s() + 30;
    do {
        r = c.get(u("/healthz"));
    } while ((r.status != 200) && (now_s() < deadline));
    EXPECT_EQ(r.status, 200) << r.body;
    EXPECT_GT(register_node(c, "j", 300), id);
    r = c.get(u("/v1/jobs/j/nodes/" + std::to_string(id)));
    EXPECT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(m_orcd.stop(), 0) << m_orcd.log();
}

TEST_F(orcd_daemon, embedded_default_port)
{
    /* with no flags at all orcd listens on 127.0.0.1:7411 */
    int probe = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin;
    int one = 1;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family      = AF_INET;
    sin.sin_port        = htons(7411);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(probe, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    bool busy = bind(probe, (struct sockaddr *)&sin, sizeof(sin)) != 0;
    close(probe);
    if (busy) {
        GTEST_SKIP() << "port 7411 is in use on this machine";
    }
    if (!m_orcd.start({}, false)) {
        /* someone took the port between the probe and the start */
        if (m_orcd.log().find("cannot listen") != std::string::npos) {
            GTEST_SKIP() << "port 7411 became busy";
        }
        FAIL() << m_orcd.log();
    }
    EXPECT_EQ(m_orcd.port(), 7411u);
    http_client c;
    http_result r = c.get("http://127.0.0.1:7411/healthz");
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.jstr("status"), "ok");
    /* auth is off by default */
    EXPECT_EQ(c.get("http://127.0.0.1:7411/v1/jobs/x/nodes").status, 200);
    EXPECT_EQ(m_orcd.stop(), 0);
}

TEST_P(orcd_api, routes)
{
    start();
    http_client c;
    http_result r;

    r = c.get(u("/healthz"));
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.headers["content-type"], "application/json");

    /* unknown route, method not allowed */
    r = c.get(u("/v2/whatever"));
    EXPECT_EQ(r.status, 404);
    EXPECT_EQ(r.jstr("error"), "not_found");
    r = c.del(u("/v1/jobs/j/nodes"));
    EXPECT_EQ(r.status, 405);
    EXPECT_EQ(r.headers["allow"], "GET, POST");
    EXPECT_EQ(c.get(u("/v1/jobs/j/nodes/1/keepalive")).status, 405);

    /* empty job lists fine */
    r = c.get(u("/v1/jobs/j/nodes"));
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.body.find("\"nodes\":[]") != std::string::npos, true) << r.body;
    EXPECT_FALSE(r.headers["x-orc-index"].empty());

    /* registration: bad bodies */
    EXPECT_EQ(c.post(u("/v1/jobs/j/nodes"), "{not json").status, 400);
    EXPECT_EQ(c.post(u("/v1/jobs/j/nodes"), "[1]").status, 400);
    EXPECT_EQ(c.post(u("/v1/jobs/j/nodes"), "{\"host\":\"h\"}").status, 400);
    EXPECT_EQ(c.post(u("/v1/jobs/j/nodes"),
                     "{\"host\":\"h\",\"pid\":1,\"labels\":{\"a\":1}}")
                  .status,
              400);
    EXPECT_EQ(c.post(u("/v1/jobs/bad%20job/nodes"),
                     "{\"host\":\"h\",\"pid\":1}")
                  .status,
              400);

    /* registration: ttl clamped to [5, 300] by default */
    r = c.post(u("/v1/jobs/j/nodes"),
               "{\"host\":\"h\",\"pid\":7,\"labels\":{\"rank\":\"0\"},"
               "\"ttl\":100000}");
    ASSERT_EQ(r.status, 201) << r.body;
    long long id = r.jint("id");
    EXPECT_EQ(id, 1);
    EXPECT_EQ(r.jint("ttl"), 300);
    EXPECT_GT(r.jint("index"), 0);
    r = c.post(u("/v1/jobs/j/nodes"), "{\"host\":\"h\",\"pid\":8,\"ttl\":1}");
    EXPECT_EQ(r.jint("id"), 2);
    EXPECT_EQ(r.jint("ttl"), 5);
    std::string n1 = "/v1/jobs/j/nodes/" + std::to_string(id);

    /* node get */
    r = c.get(u(n1));
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.jint("pid"), 7);
    EXPECT_NE(r.body.find("\"endpoint\":null"), std::string::npos) << r.body;
    EXPECT_EQ(c.get(u("/v1/jobs/j/nodes/99")).status, 404);
    EXPECT_EQ(c.get(u("/v1/jobs/j/nodes/0")).status, 400);
    EXPECT_EQ(c.get(u("/v1/jobs/j/nodes/abc")).status, 400);
    EXPECT_EQ(c.get(u("/v1/jobs/j/nodes/99999999999999999999999")).status, 400);

    /* endpoint */
    EXPECT_EQ(c.get(u(n1 + "/rdma/endpoint")).status, 404);
    EXPECT_EQ(c.post(u(n1 + "/rdma/endpoint"), "\"str\"").status, 400);
    r = c.post(u(n1 + "/rdma/endpoint"), "{\"gid\":\"fe80::1\",\"qpn\":7}");
    EXPECT_EQ(r.status, 201) << r.body;
    EXPECT_EQ(c.post(u(n1 + "/rdma/endpoint"), "{\"gid\":\"x\"}").status, 409);
    r = c.get(u(n1 + "/rdma/endpoint"));
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.jstr("gid"), "fe80::1");
    EXPECT_EQ(c.put(u(n1 + "/rdma/endpoint"), "{\"gid\":\"y\"}").status, 200);
    EXPECT_EQ(c.get(u(n1 + "/rdma/endpoint")).jstr("gid"), "y");
    std::string big = "{\"x\":\"" + std::string(5000, 'a') + "\"}";
    EXPECT_EQ(c.put(u(n1 + "/rdma/endpoint"), big).status, 413);
    EXPECT_EQ(c.put(u("/v1/jobs/j/nodes/77/rdma/endpoint"), "{}").status, 404);

    /* list shows both nodes, node 1 with its endpoint */
    r         = c.get(u("/v1/jobs/j/nodes"));
    json_t *o = r.json();
    ASSERT_NE(o, nullptr);
    json_t *nodes = json_object_get(o, "nodes");
    ASSERT_EQ(json_array_size(nodes), 2u);
    EXPECT_STREQ(json_string_value(json_object_get(
                     json_object_get(json_array_get(nodes, 0), "endpoint"),
                     "gid")),
                 "y");
    EXPECT_TRUE(
        json_is_null(json_object_get(json_array_get(nodes, 1), "endpoint")));
    EXPECT_EQ(std::to_string(json_integer_value(json_object_get(o, "index"))),
              r.headers["x-orc-index"]);
    json_decref(o);

    /* keepalive */
    r = c.put_empty(u(n1 + "/keepalive"));
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.jint("ttl"), 300);
    EXPECT_EQ(c.put_empty(u("/v1/jobs/j/nodes/55/keepalive")).status, 404);

    /* mailbox */
    EXPECT_EQ(c.post(u(n1 + "/mailbox"), "{\"from\":2}").status, 400);
    EXPECT_EQ(c.post(u(n1 + "/mailbox"), "{\"body\":5}").status, 400);
    r = c.post(u(n1 + "/mailbox"), "{\"from\":2,\"body\":{\"qpn\":1}}");
    EXPECT_EQ(r.status, 201);
    EXPECT_EQ(r.jint("seq"), 1);
    EXPECT_EQ(c.post(u("/v1/jobs/j/nodes/55/mailbox"), "{\"body\":{}}").status,
              404);
    EXPECT_EQ(c.get(u(n1 + "/mailbox?after=x")).status, 400);
    EXPECT_EQ(c.get(u(n1 + "/mailbox?wait=-1")).status, 400);
    r = c.get(u(n1 + "/mailbox?after=0"));
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.jint("last_seq"), 1);
    EXPECT_NE(r.body.find("\"qpn\":1"), std::string::npos);

    /* kv */
    EXPECT_EQ(c.get(u("/v1/jobs/j/kv/a")).status, 404);
    EXPECT_EQ(c.put(u("/v1/jobs/j/kv/a"), "{\"nope\":1}").status, 400);
    EXPECT_EQ(c.put(u("/v1/jobs/j/kv/a..b"), "{\"value\":1}").status, 400);
    EXPECT_EQ(c.put(u("/v1/jobs/j/kv/a//b"), "{\"value\":1}").status, 400);
    r = c.put(u("/v1/jobs/j/kv/worker/0"), "{\"value\":{\"b64\":\"AAEC\"}}");
    EXPECT_EQ(r.status, 200);
    EXPECT_GT(r.jint("index"), 0);
    r = c.get(u("/v1/jobs/j/kv/worker/0"));
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.jstr("key"), "worker/0");
    EXPECT_NE(r.body.find("\"value\":{\"b64\":\"AAEC\"}"), std::string::npos);
    EXPECT_EQ(c.put(u("/v1/jobs/j/kv/k2"), "{\"value\":1,\"node\":555}").status,
              404);
    EXPECT_EQ(c.put(u("/v1/jobs/j/kv/k2"),
                    "{\"value\":1,\"node\":" + std::to_string(id) + "}")
                  .status,
              200);
    EXPECT_EQ(c.del(u("/v1/jobs/j/kv/worker/0")).status, 204);
    EXPECT_EQ(c.del(u("/v1/jobs/j/kv/worker/0")).status, 404);
    EXPECT_EQ(c.get(u("/v1/jobs/j/kv/worker/0")).status, 404);

    /* delete the node: endpoint, mailbox and attached kv go with it */
    EXPECT_EQ(c.del(u(n1)).status, 204);
    EXPECT_EQ(c.get(u(n1)).status, 404);
    EXPECT_EQ(c.get(u(n1 + "/rdma/endpoint")).status, 404);
    EXPECT_EQ(c.get(u(n1 + "/mailbox")).status, 404);
    EXPECT_EQ(c.get(u("/v1/jobs/j/kv/k2")).status, 404);
    EXPECT_EQ(c.put_empty(u(n1 + "/keepalive")).status, 404);
    EXPECT_EQ(c.del(u(n1)).status, 404);
    /* ids are never reused */
    EXPECT_EQ(register_node(c, "j"), 3);

    /* metrics */
    r = c.get(u("/metrics"));
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.headers["content-type"].rfind("text/plain", 0), 0u);
    EXPECT_NE(r.body.find("orcd_requests_total{route=\"endpoint\","
                          "status=\"409\"} 1"),
              std::string::npos)
        << r.body;
    r.body = metrics_with("orcd_nodes 2\n");
    EXPECT_NE(r.body.find("orcd_nodes 2\n"), std::string::npos) << r.body;
    EXPECT_NE(r.body.find("orcd_request_duration_seconds_bucket{route=\"kv\","
                          "le=\"+Inf\"}"),
              std::string::npos);
    EXPECT_NE(r.body.find("orcd_store_bytes "), std::string::npos);
    EXPECT_NE(r.body.find("orcd_mailbox_messages "), std::string::npos);
    if (!on_etcd()) { /* etcd's expiries are not counted by orcd */
        EXPECT_NE(r.body.find("orcd_leases_expired_total 0"),
                  std::string::npos);
    }

    EXPECT_EQ(m_orcd.stop(), 0);
}

TEST_P(orcd_api, lease_expiry_and_keepalive)
{
    start("ttl: {min: 1, default: 1, max: 10}\n");
    http_client c;

    /* the kept node's TTL leaves room for a loaded machine between its
     * keep-alives; the other one has the shortest TTL */
    long long keep = register_node(c, "j", 5);
    long long dies = register_node(c, "j", 1);
    std::string nk = "/v1/jobs/j/nodes/" + std::to_string(keep);
    std::string nd = "/v1/jobs/j/nodes/" + std::to_string(dies);
    ASSERT_EQ(c.put(u(nd + "/rdma/endpoint"), "{\"a\":1}").status, 200);
    ASSERT_EQ(c.put(u("/v1/jobs/j/kv/owned"),
                    "{\"value\":1,\"node\":" + std::to_string(dies) + "}")
                  .status,
              200);
    ASSERT_EQ(c.post(u(nd + "/mailbox"), "{\"body\":{}}").status, 201);

    /* watch membership while keeping one node alive: the other expires and
     * the blocking list wakes up without it */
    http_result r     = c.get(u("/v1/jobs/j/nodes"));
    std::string index = r.headers["x-orc-index"];
    double t0         = now_s();
    bool gone         = false;
    while (!gone && now_s() - t0 < 10) {
        ASSERT_EQ(c.put_empty(u(nk + "/keepalive")).status, 200);
        r = c.get(u("/v1/jobs/j/nodes?index=" + index + "&wait=0.3"));
        ASSERT_EQ(r.status, 200);
        index = r.headers["x-orc-index"];
        gone  = r.body.find("\"id\":" + std::to_string(dies) + ",") ==
               std::string::npos;
    }
    ASSERT_TRUE(gone) << r.body;
    EXPECT_GE(now_s() - t0, 0.5); /* not before its TTL */
    EXPECT_NE(r.body.find("\"id\":" + std::to_string(keep) + ","),
              std::string::npos);

    EXPECT_EQ(c.put_empty(u(nd + "/keepalive")).status, 410);
    EXPECT_EQ(c.get(u(nd)).status, 410);
    EXPECT_EQ(c.get(u(nd + "/rdma/endpoint")).status, 410);
    EXPECT_EQ(c.post(u(nd + "/mailbox"), "{\"body\":{}}").status, 410);
    EXPECT_EQ(c.get(u("/v1/jobs/j/kv/owned")).status, 404);
    EXPECT_EQ(c.put_empty(u(nk + "/keepalive")).status, 200);
    if (!on_etcd()) { /* etcd's expiries are not counted by orcd */
        r = c.get(u("/metrics"));
        EXPECT_NE(r.body.find("orcd_leases_expired_total 1\n"),
                  std::string::npos)
            << r.body;
    }
}

TEST_P(orcd_api, blocking_queries)
{
    start();
    http_client c;
    long long id   = register_node(c, "j");
    std::string nb = "/v1/jobs/j/nodes/" + std::to_string(id);

    /* timeout: list with the current index returns after ~wait, unchanged */
    http_result r     = c.get(u("/v1/jobs/j/nodes"));
    std::string index = r.headers["x-orc-index"];
    double t0         = now_s();
    r         = c.get(u("/v1/jobs/j/nodes?index=" + index + "&wait=0.4"));
    double dt = now_s() - t0;
    EXPECT_EQ(r.status, 200);
    EXPECT_GE(dt, 0.39);
    EXPECT_LT(dt, 3.0);
    EXPECT_EQ(r.headers["x-orc-index"], index);

    /* a stale index returns at once */
    t0 = now_s();
    r  = c.get(u("/v1/jobs/j/nodes?index=0&wait=10"));
    EXPECT_EQ(r.status, 200);
    EXPECT_LT(now_s() - t0, 2.0);

    /* wake on change: another client registers while we wait */
    std::thread t([&] {
        ASSERT_TRUE(wait_long_polls(1));
        http_client c2;
        register_node(c2, "j");
    });
    t0 = now_s();
    r  = c.get(u("/v1/jobs/j/nodes?index=" + index + "&wait=20"));
    dt = now_s() - t0;
    t.join();
    EXPECT_EQ(r.status, 200);
    EXPECT_LT(dt, 10.0);
    EXPECT_NE(r.headers["x-orc-index"], index);
    EXPECT_NE(r.body.find("\"id\":2,"), std::string::npos) << r.body;

    /* changes in another job or in kv do not wake a membership watch */
    index = r.headers["x-orc-index"];
    ASSERT_EQ(c.put(u("/v1/jobs/other/kv/x"), "{\"value\":1}").status, 200);
    t0 = now_s();
    r  = c.get(u("/v1/jobs/j/nodes?index=" + index + "&wait=0.3"));
    EXPECT_GE(now_s() - t0, 0.29);

    /* mailbox long-poll: times out empty, wakes on a post */
    t0 = now_s();
    r  = c.get(u(nb + "/mailbox?after=0&wait=0.3"));
    EXPECT_GE(now_s() - t0, 0.29);
    EXPECT_NE(r.body.find("\"messages\":[]"), std::string::npos);
    std::thread t2([&] {
        ASSERT_TRUE(wait_long_polls(1));
        http_client c2;
        c2.post(u(nb + "/mailbox"), "{\"from\":9,\"body\":{\"hi\":1}}");
    });
    t0 = now_s();
    r  = c.get(u(nb + "/mailbox?after=0&wait=20"));
    t2.join();
    EXPECT_LT(now_s() - t0, 10.0);
    EXPECT_EQ(r.jint("last_seq"), 1);

    /* kv wait: 404 at timeout, value once put */
    t0 = now_s();
    r  = c.get(u("/v1/jobs/j/kv/later?wait=0.3"));
    EXPECT_EQ(r.status, 404);
    EXPECT_GE(now_s() - t0, 0.29);
    std::thread t3([&] {
        ASSERT_TRUE(wait_long_polls(1));
        http_client c2;
        c2.put(u("/v1/jobs/j/kv/later"), "{\"value\":\"addr\"}");
    });
    r = c.get(u("/v1/jobs/j/kv/later?wait=20"));
    t3.join();
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.jstr("value"), "addr");

    /* a long-poll on a node that gets deleted returns 404 */
    std::thread t4([&] {
        ASSERT_TRUE(wait_long_polls(1));
        http_client c2;
        c2.del(u(nb));
    });
    r = c.get(u(nb + "/mailbox?after=1&wait=20"));
    t4.join();
    EXPECT_EQ(r.status, 404) << r.body;
}

TEST_P(orcd_api, mailbox_cursor_across_reconnects)
{
    start();
    http_client c;
    long long id    = register_node(c, "j");
    std::string mb  = "/v1/jobs/j/nodes/" + std::to_string(id) + "/mailbox";
    const int total = 300;

    std::thread sender([&] {
        http_client s;
        for (int i = 1; i <= total; ++i) {
            http_result r = s.post(u(mb), "{\"from\":7,\"body\":{\"n\":" +
                                              std::to_string(i) + "}}");
            ASSERT_EQ(r.status, 201) << r.body;
        }
    });

    /* receiver: a fresh connection for every poll; every third poll is
     * "lost" (the reply is discarded and the same cursor is re-sent), so the
     * messages must come again */
    std::vector<int> got;
    unsigned long long after = 0;
    int polls                = 0;
    double deadline          = now_s() + 60;
    while ((int)got.size() < total && now_s() < deadline) {
        http_client r_client;
        http_result r =
            r_client.get(u(mb + "?after=" + std::to_string(after) + "&wait=5"));
        ASSERT_EQ(r.status, 200) << r.body;
        if (++polls % 3 == 0) {
            continue; /* simulated lost reply */
        }
        json_t *o = r.json();
        ASSERT_NE(o, nullptr);
        size_t i;
        json_t *m;
        json_array_foreach(json_object_get(o, "messages"), i, m)
        {
            unsigned long long seq =
                json_integer_value(json_object_get(m, "seq"));
            EXPECT_EQ(seq, after + 1) << "gap or duplicate";
            after = seq;
            got.push_back((int)json_integer_value(
                json_object_get(json_object_get(m, "body"), "n")));
            EXPECT_EQ(json_integer_value(json_object_get(m, "from")), 7);
        }
        EXPECT_EQ((unsigned long long)json_integer_value(
                      json_object_get(o, "last_seq")),
                  after);
        json_decref(o);
    }
    sender.join();
    ASSERT_EQ((int)got.size(), total);
    for (int i = 0; i < total; ++i) {
        EXPECT_EQ(got[i], i + 1);
    }
    /* everything acknowledged: an ack of all leaves the mailbox empty */
    http_result r = c.get(u(mb + "?after=" + std::to_string(after)));
    EXPECT_NE(r.body.find("\"messages\":[]"), std::string::npos);
    EXPECT_NE(metrics_with("orcd_mailbox_messages 0\n")
                  .find("orcd_mailbox_messages 0\n"),
              std::string::npos);
}

TEST_P(orcd_api, mailbox_depth_limit)
{
    start("limits: {mailbox_depth: 3}\n");
    http_client c;
    long long id   = register_node(c, "j");
    std::string mb = "/v1/jobs/j/nodes/" + std::to_string(id) + "/mailbox";
    for (int i = 0; i < 3; ++i) {
        EXPECT_EQ(c.post(u(mb), "{\"body\":{}}").status, 201);
    }
    http_result r = c.post(u(mb), "{\"body\":{}}");
    EXPECT_EQ(r.status, 429);
    EXPECT_EQ(r.headers["retry-after"], "1");
    /* acknowledging frees room */
    EXPECT_EQ(c.get(u(mb + "?after=2")).status, 200);
    EXPECT_EQ(c.post(u(mb), "{\"body\":{}}").jint("seq"), 4);
}

/* A POST sent again because its answer was lost (the same Idempotency-Key,
 * X-Orc-Attempt above 1, as the client library retries on another replica)
 * is answered as the first attempt and made once: one node, one message,
 * also after the message was received and acknowledged. Without the key
 * the retry is a second node (the storm's "no node registered twice"). */
TEST_P(orcd_api, retried_posts_are_made_once)
{
    start();
    http_client c;
    const std::string reg = "{\"host\":\"h1\",\"pid\":42}";
    auto attempt          = [&c](const std::string &rid, int n) {
        c.set_header("Idempotency-Key: " + rid +
                              "\nX-Orc-Attempt: " + std::to_string(n));
    };
    auto node_count = [&]() {
        json_t *o = c.get(u("/v1/jobs/j/nodes")).json();
        size_t n  = json_array_size(json_object_get(o, "nodes"));
        json_decref(o);
        return n;
    };

    attempt("reg-1", 1);
    http_result first = c.post(u("/v1/jobs/j/nodes"), reg);
    ASSERT_EQ(first.status, 201) << first.body;
    attempt("reg-1", 2);
    http_result again = c.post(u("/v1/jobs/j/nodes"), reg);
    EXPECT_EQ(again.status, 201) << again.body;
    EXPECT_EQ(again.jint("id"), first.jint("id"));
    EXPECT_EQ(node_count(), 1u);
    /* another key is another registration */
    attempt("reg-2", 2);
    EXPECT_EQ(c.post(u("/v1/jobs/j/nodes"), reg).jint("id"),
              first.jint("id") + 1);
    EXPECT_EQ(node_count(), 2u);

    std::string mb =
        "/v1/jobs/j/nodes/" + std::to_string(first.jint("id")) + "/mailbox";
    attempt("msg-1", 1);
    long long seq = c.post(u(mb), "{\"body\":{\"n\":1}}").jint("seq");
    ASSERT_EQ(seq, 1);
    attempt("msg-1", 2);
    EXPECT_EQ(c.post(u(mb), "{\"body\":{\"n\":1}}").jint("seq"), seq);
    c.set_header("");
    EXPECT_EQ(c.get(u(mb + "?after=0")).body,
              "{\"messages\":[{\"from\":0,\"body\":{\"n\":1},\"seq\":1}],"
              "\"last_seq\":1}");
    /* received and acknowledged, then the retry comes */
    EXPECT_EQ(c.get(u(mb + "?after=1")).body,
              "{\"messages\":[],\"last_seq\":1}");
    attempt("msg-1", 3);
    EXPECT_EQ(c.post(u(mb), "{\"body\":{\"n\":1}}").jint("seq"), seq);
    c.set_header("");
    EXPECT_EQ(c.get(u(mb + "?after=1")).body,
              "{\"messages\":[],\"last_seq\":1}");
}

/* One receive acknowledges everything up to its cursor, however many */
TEST_P(orcd_api, one_receive_acknowledges_every_message_before_it)
{
    start();
    http_client c;
    long long id    = register_node(c, "j");
    std::string mb  = "/v1/jobs/j/nodes/" + std::to_string(id) + "/mailbox";
    const int total = 150;
    for (int i = 0; i < total; ++i) {
        ASSERT_EQ(c.post(u(mb), "{\"body\":{}}").status, 201);
    }
    EXPECT_EQ(c.get(u(mb + "?after=" + std::to_string(total))).body,
              "{\"messages\":[],\"last_seq\":" + std::to_string(total) + "}");
    EXPECT_EQ(c.get(u(mb + "?after=0")).body,
              "{\"messages\":[],\"last_seq\":0}");
    EXPECT_NE(metrics_with("orcd_mailbox_messages 0\n")
                  .find("orcd_mailbox_messages 0\n"),
              std::string::npos);
}

/* The seqs of the messages a mailbox holds (read with after=0: no ack) */
static std::vector<long long> mailbox_seqs(http_client &c,
                                           const std::string &url)
{
    std::vector<long long> seqs;
    json_t *o = c.get(url + "?after=0").json();
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(o, "messages"), i, m)
    {
        seqs.push_back(json_integer_value(json_object_get(m, "seq")));
    }
    json_decref(o);
    return seqs;
}

/* A post's body from node `from` with "ack": {"after", "index"} */
static std::string post_with_ack(long long from, long long after,
                                 long long index)
{
    return "{\"from\":" + std::to_string(from) +
           ",\"body\":{},\"ack\":{\"after\":" + std::to_string(after) +
           ",\"index\":" + std::to_string(index) + "}}";
}

/* A post that carries the poster's ack deletes exactly the acknowledged
 * messages of the poster's own mailbox, in the post's own transaction, and
 * nothing of another mailbox; the receive with that cursor then writes
 * nothing */
TEST_P(orcd_api, a_post_acknowledges_the_posters_own_mailbox)
{
    start();
    http_client c;
    long long ia, ib, ix;
    long long a = register_node(c, "j", 0, &ia),
              b = register_node(c, "j", 0, &ib),
              x = register_node(c, "j", 0, &ix);
    auto mb     = [&](long long id) {
        return u("/v1/jobs/j/nodes/" + std::to_string(id) + "/mailbox");
    };
    for (int i = 0; i < 3; ++i) {
        ASSERT_EQ(c.post(mb(a),
                         "{\"from\":" + std::to_string(b) + ",\"body\":{}}")
                      .status,
                  201);
        ASSERT_EQ(c.post(mb(b), "{\"body\":{}}").status, 201);
        ASSERT_EQ(c.post(mb(x), "{\"body\":{}}").status, 201);
    }
    ASSERT_EQ(mailbox_seqs(c, mb(a)), (std::vector<long long>{1, 2, 3}));

    /* a has read 1..2 (3 came later): its post to b acknowledges them */
    http_result r = c.post(mb(b), post_with_ack(a, 2, ia));
    ASSERT_EQ(r.status, 201) << r.body;
    EXPECT_EQ(r.jint("seq"), 4);
    EXPECT_EQ(r.jint("acked"), 2);
    EXPECT_EQ(mailbox_seqs(c, mb(a)), (std::vector<long long>{3}));
    EXPECT_EQ(mailbox_seqs(c, mb(b)), (std::vector<long long>{1, 2, 3, 4}));
    EXPECT_EQ(mailbox_seqs(c, mb(x)), (std::vector<long long>{1, 2, 3}));

    /* the receive with that cursor finds nothing to delete: no store write
     * (memory: the revision stays; etcd: no transaction is sent) */
    const std::string counter =
        on_etcd() ? "orcd_store_txns_total " : "orcd_store_revision ";
    auto writes = [&]() {
        std::string m = metrics_with(counter);
        size_t at     = m.find("\n" + counter);
        return (at == std::string::npos)
                   ? std::string("?")
                   : m.substr(at, m.find('\n', at + 1) - at);
    };
    std::string before = writes();
    r                  = c.get(mb(a) + "?after=2");
    EXPECT_EQ(r.body, "{\"messages\":[{\"from\":" + std::to_string(b) +
                          ",\"body\":{},\"seq\":3}],\"last_seq\":3}");
    EXPECT_EQ(writes(), before);
    /* acknowledged before: nothing more */
    r = c.post(mb(b), post_with_ack(a, 2, ia));
    EXPECT_EQ(r.jint("acked"), 0) << r.body;
    /* its own mailbox too (a post to itself), and the GET still acks */
    r = c.post(mb(x), post_with_ack(x, 1, ix));
    EXPECT_EQ(r.jint("acked"), 1) << r.body;
    EXPECT_EQ(mailbox_seqs(c, mb(x)), (std::vector<long long>{2, 3, 4}));
    EXPECT_EQ(c.get(mb(x) + "?after=3").status, 200);
    EXPECT_EQ(mailbox_seqs(c, mb(x)), (std::vector<long long>{4}));
    /* a post without an ack answers as before */
    EXPECT_EQ(c.post(mb(b), "{\"body\":{}}").body, "{\"seq\":6}");
}

/* /metrics says where a pairing's time goes: on etcd a write's wait for
 * its batch, the batch's request, the write's way to the cache and reads'
 * waits for the cache (the memory store has none of these: 0); on both the
 * time from a long poll's watch firing to its handler running again */
TEST_P(orcd_api, metrics_time_the_stages_of_a_pairing)
{
    start();
    http_client c;
    long long a = register_node(c, "j"), b = register_node(c, "j");
    std::string mb = u("/v1/jobs/j/nodes/" + std::to_string(b) + "/mailbox");
    std::thread poster([&] {
        ASSERT_TRUE(wait_long_polls(1));
        http_client c2;
        EXPECT_EQ(c2.post(mb,
                          "{\"from\":" + std::to_string(a) + ",\"body\":{}}")
                      .status,
                  201);
    });
    http_result r = c.get(mb + "?after=0&wait=20");
    poster.join();
    ASSERT_EQ(r.status, 200);
    ASSERT_NE(r.body.find("\"seq\":1"), std::string::npos) << r.body;

    /* a count of a histogram, -1 if absent */
    auto count = [](const std::string &m, const std::string &name) {
        size_t at = m.find("\n" + name + " ");
        return (at == std::string::npos)
                   ? -1LL
                   : std::stoll(m.substr(at + name.size() + 2));
    };
    const std::string stage = "orcd_store_stage_seconds_count{stage=\"";
    std::string m;
    double deadline = now_s() + 10;
    do { /* the watch stage counts once the cache applied the write */
        m = metrics_with("orcd_long_poll_wake_seconds_count");
    } while (on_etcd() && (count(m, stage + "watch\"}") < 1) &&
             (now_s() < deadline));
    for (const char *s : {"queue", "etcd", "watch", "cache"}) {
        long long n = count(m, stage + s + "\"}");
        if (on_etcd()) {
            EXPECT_GE(n, 1) << s << "\n" << m;
        } else {
            EXPECT_EQ(n, 0) << s << "\n" << m;
        }
    }
    EXPECT_GE(count(m, "orcd_long_poll_wake_seconds_count{}"), 1) << m;
    EXPECT_NE(m.find("orcd_long_poll_wake_seconds_bucket{le=\"+Inf\"}"),
              std::string::npos)
        << m;
}

/* What a pairing's requests cost the etcd store (orcd_mailbox.c's header):
 * a post is one write, and reads the destination's record and its mailbox
 * (one range), plus the poster's record and counter when it carries an
 * ack; a receive with nothing left to acknowledge writes nothing and reads
 * the record and the mailbox (one range). Every read may wait for the
 * cache: a read more per request is a context switch more per request. */
TEST_P(orcd_api, a_post_is_one_write_and_a_receive_none)
{
    if (!on_etcd()) {
        GTEST_SKIP() << "counts of the etcd store (memory: none)";
    }
    start();
    http_client c;
    long long ib;
    long long a = register_node(c, "j"), b = register_node(c, "j", 0, &ib);
    auto mbox = [&](long long id) {
        return u("/v1/jobs/j/nodes/" + std::to_string(id) + "/mailbox");
    };
    /* {store txns, store reads} so far */
    auto counts = [&]() {
        std::string m = metrics_with("orcd_store_txns_total");
        auto get      = [&](const std::string &name) {
            size_t at = m.find("\n" + name + " ");
            return (at == std::string::npos)
                            ? -1LL
                            : std::stoll(m.substr(at + name.size() + 2));
        };
        return std::make_pair(
            get("orcd_store_txns_total"),
            get("orcd_store_stage_seconds_count{stage=\"cache\"}"));
    };
    auto expect_cost = [&](std::pair<long long, long long> &last,
                           long long writes, long long reads,
                           const char *what) {
        std::pair<long long, long long> now = counts();
        EXPECT_EQ(now.first - last.first, writes) << what << ": writes";
        EXPECT_EQ(now.second - last.second, reads) << what << ": reads";
        last = now;
    };
    std::pair<long long, long long> last = counts();
    ASSERT_GE(last.first, 0);

    EXPECT_EQ(c.post(mbox(b),
                     "{\"from\":" + std::to_string(a) + ",\"body\":{}}")
                  .jint("seq"),
              1);
    expect_cost(last, 1, 2, "post");
    EXPECT_EQ(c.get(mbox(b) + "?after=0").jint("last_seq"), 1);
    expect_cost(last, 0, 2, "receive");
    /* b answers a, acknowledging what it received */
    EXPECT_EQ(c.post(mbox(a), "{\"from\":" + std::to_string(b) +
                                  ",\"body\":{},\"ack\":{\"after\":1,"
                                  "\"index\":" +
                                  std::to_string(ib) + "}}")
                  .body,
              "{\"seq\":1,\"acked\":1}");
    expect_cost(last, 1, 4, "post with an ack");
    EXPECT_EQ(c.get(mbox(b) + "?after=1").body,
              "{\"messages\":[],\"last_seq\":1}");
    expect_cost(last, 0, 2, "receive, acknowledged before");
}

/* An ack names the registration it acknowledges for: once the node's id
 * belongs to another registration (orcd restarted without its state), an
 * ack from the old one deletes nothing of the new node's mailbox */
TEST_P(orcd_api, an_ack_for_an_id_registered_again_deletes_nothing)
{
    start();
    http_client c;
    long long old_index;
    long long a = register_node(c, "j", 0, &old_index);
    ASSERT_EQ(m_orcd.stop(), 0) << m_orcd.log();
    /* orcd without its state (etcd: under a new prefix); a write first, so
     * that the memory store's revisions differ from the first run's too */
    m_prefix.clear();
    start();
    ASSERT_EQ(c.put(u("/v1/jobs/j/kv/first"), "{\"value\":1}").status, 200);
    long long new_index, b_index;
    ASSERT_EQ(register_node(c, "j", 0, &new_index), a);
    ASSERT_NE(new_index, old_index);
    long long b     = register_node(c, "j", 0, &b_index);
    std::string mba = u("/v1/jobs/j/nodes/" + std::to_string(a) + "/mailbox");
    std::string mbb = u("/v1/jobs/j/nodes/" + std::to_string(b) + "/mailbox");
    for (int i = 0; i < 2; ++i) {
        ASSERT_EQ(c.post(mba, "{\"body\":{}}").status, 201);
    }
    http_result r = c.post(mbb, post_with_ack(a, 2, old_index));
    ASSERT_EQ(r.status, 201) << r.body;
    EXPECT_EQ(r.jint("acked"), 0);
    /* another node's index is not a's either */
    r = c.post(mbb, post_with_ack(a, 2, b_index));
    EXPECT_EQ(r.jint("acked"), 0) << r.body;
    EXPECT_EQ(mailbox_seqs(c, mba), (std::vector<long long>{1, 2}));
    /* the message itself was delivered */
    EXPECT_EQ(mailbox_seqs(c, mbb), (std::vector<long long>{1, 2}));
    r = c.post(mbb, post_with_ack(a, 2, new_index));
    EXPECT_EQ(r.jint("acked"), 2) << r.body;
    EXPECT_EQ(mailbox_seqs(c, mba), (std::vector<long long>{}));
}

/* An ack past the last message the poster's mailbox issued is refused
 * (400, nothing posted, nothing deleted); malformed acks are 400 */
TEST_P(orcd_api, an_ack_past_the_last_message_is_refused)
{
    start();
    http_client c;
    long long ia, ib;
    long long a     = register_node(c, "j", 0, &ia),
              b     = register_node(c, "j", 0, &ib);
    std::string mba = u("/v1/jobs/j/nodes/" + std::to_string(a) + "/mailbox");
    std::string mbb = u("/v1/jobs/j/nodes/" + std::to_string(b) + "/mailbox");
    for (int i = 0; i < 2; ++i) {
        ASSERT_EQ(c.post(mba, "{\"body\":{}}").status, 201);
    }
    http_result r = c.post(mbb, post_with_ack(a, 3, ia));
    EXPECT_EQ(r.status, 400) << r.body;
    EXPECT_EQ(r.jstr("error"), "bad_field");
    EXPECT_NE(r.jstr("detail").find("past the last message (seq 2)"),
              std::string::npos)
        << r.body;
    EXPECT_EQ(mailbox_seqs(c, mba), (std::vector<long long>{1, 2}));
    EXPECT_EQ(mailbox_seqs(c, mbb), (std::vector<long long>{}));
    for (const char *bad :
         {"{\"body\":{},\"ack\":{\"after\":1,\"index\":1}}", /* no from */
          "{\"from\":1,\"body\":{},\"ack\":{\"after\":-1,\"index\":1}}",
          "{\"from\":1,\"body\":{},\"ack\":{\"after\":1}}",
          "{\"from\":1,\"body\":{},\"ack\":{\"after\":1,\"index\":0}}",
          "{\"from\":1,\"body\":{},\"ack\":7}"}) {
        r = c.post(mbb, bad);
        EXPECT_EQ(r.status, 400) << bad << ": " << r.body;
    }
    EXPECT_EQ(mailbox_seqs(c, mba), (std::vector<long long>{1, 2}));
    EXPECT_EQ(mailbox_seqs(c, mbb), (std::vector<long long>{}));
    /* after 0 and null acknowledge nothing */
    EXPECT_EQ(c.post(mbb, post_with_ack(a, 0, ia)).jint("acked"), 0);
    EXPECT_EQ(c.post(mbb, "{\"from\":1,\"body\":{},\"ack\":null}").body,
              "{\"seq\":2}");
    EXPECT_EQ(mailbox_seqs(c, mba), (std::vector<long long>{1, 2}));
}

TEST_P(orcd_api, auth_isolation)
{
    start(std::string("auth:\n  enabled: true\n  tokens:\n    job-a: ") +
          k_tok_a + "\n    job-b: [" + k_tok_b + "]\n");
    http_client none, a, b, bad;
    a.set_token(k_tok_a);
    b.set_token(k_tok_b);
    bad.set_token("not-a-valid-token");

    http_result r = none.get(u("/v1/jobs/job-a/nodes"));
    EXPECT_EQ(r.status, 401);
    EXPECT_EQ(r.headers["www-authenticate"], "Bearer");
    EXPECT_EQ(bad.get(u("/v1/jobs/job-a/nodes")).status, 401);
    EXPECT_EQ(a.get(u("/v1/jobs/job-a/nodes")).status, 200);
    r = b.get(u("/v1/jobs/job-a/nodes"));
    EXPECT_EQ(r.status, 403);
    EXPECT_EQ(r.body.find(k_tok_b), std::string::npos);
    EXPECT_EQ(a.get(u("/v1/jobs/job-b/nodes")).status, 403);
    /* a job without a token: 403 for a valid token of another job */
    EXPECT_EQ(a.get(u("/v1/jobs/job-c/nodes")).status, 403);

    long long ida = register_node(a, "job-a");
    ASSERT_GT(ida, 0);
    std::string na = "/v1/jobs/job-a/nodes/" + std::to_string(ida);
    EXPECT_EQ(a.put(u(na + "/rdma/endpoint"), "{\"x\":1}").status, 200);
    EXPECT_EQ(b.get(u(na + "/rdma/endpoint")).status, 403);
    EXPECT_EQ(b.put(u(na + "/rdma/endpoint"), "{\"x\":2}").status, 403);
    EXPECT_EQ(b.post(u(na + "/mailbox"), "{\"body\":{}}").status, 403);
    EXPECT_EQ(b.put(u("/v1/jobs/job-a/kv/k"), "{\"value\":1}").status, 403);
    EXPECT_EQ(a.get(u(na + "/rdma/endpoint")).jint("x"), 1);
    /* same node id in job b is a different node */
    EXPECT_EQ(b.get(u("/v1/jobs/job-b/nodes/" + std::to_string(ida))).status,
              404);

    /* healthz and metrics need no token (metrics_auth off) */
    EXPECT_EQ(none.get(u("/healthz")).status, 200);
    EXPECT_EQ(none.get(u("/metrics")).status, 200);

    EXPECT_EQ(m_orcd.stop(), 0);
    std::string log = m_orcd.log();
    EXPECT_EQ(log.find(k_tok_a), std::string::npos);
    EXPECT_EQ(log.find(k_tok_b), std::string::npos);
    EXPECT_EQ(log.find("not-a-valid-token"), std::string::npos);
}

TEST_F(orcd_daemon, reload_on_sighup)
{
    std::string cfg1 = std::string("auth:\n  enabled: true\n  tokens:\n"
                                   "    j: ") +
                       k_tok_a + "\n";
    start(cfg1, {"--log-level", "debug"});
    http_client a, b;
    a.set_token(k_tok_a);
    b.set_token(k_tok_b);
    EXPECT_EQ(a.get(u("/v1/jobs/j/nodes")).status, 200);
    EXPECT_EQ(b.get(u("/v1/jobs/j/nodes")).status, 401);

    /* a broken file is refused, the running configuration stays */
    write_file(m_dir.file("orcd.yaml"), "auth: [\n");
    m_orcd.signal(SIGHUP);
    double deadline = now_s() + 10;
    while (m_orcd.log().find("not reloaded") == std::string::npos &&
           now_s() < deadline) {
        std::this_thread::yield();
    }
    /* then a good one replaces the token */
    write_file(m_dir.file("orcd.yaml"),
               std::string("auth:\n  enabled: true\n  tokens:\n    j: ") +
                   k_tok_b +
                   "\nlimits: {max_body: 2KiB, endpoint_max: "
                   "1KiB, mailbox_msg_max: 1KiB, "
                   "max_long_polls: 0}\n");
    m_orcd.signal(SIGHUP);
    deadline = now_s() + 10;
    while (b.get(u("/v1/jobs/j/nodes")).status != 200 && now_s() < deadline) {
        std::this_thread::yield();
    }
    EXPECT_EQ(b.get(u("/v1/jobs/j/nodes")).status, 200);
    EXPECT_EQ(a.get(u("/v1/jobs/j/nodes")).status, 401);
    /* the new body limit applies */
    std::string body =
        "{\"host\":\"" + std::string(3000, 'h') + "\",\"pid\":1}";
    EXPECT_EQ(b.post(u("/v1/jobs/j/nodes"), body).status, 413);
    /* and so does the long-poll cap */
    EXPECT_EQ(b.get(u("/v1/jobs/j/kv/none?wait=5")).status, 429);
    EXPECT_EQ(m_orcd.stop(), 0);
    std::string log = m_orcd.log();
    EXPECT_NE(log.find("not reloaded"), std::string::npos) << log;
    EXPECT_EQ(log.find(k_tok_a), std::string::npos);
    EXPECT_EQ(log.find(k_tok_b), std::string::npos);
}

TEST_F(orcd_daemon, ipv6_loopback)
{
    int probe = socket(AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_in6 sin6;
    memset(&sin6, 0, sizeof(sin6));
    sin6.sin6_family = AF_INET6;
    sin6.sin6_addr   = in6addr_loopback;
    bool ok          = (probe >= 0) &&
              bind(probe, (struct sockaddr *)&sin6, sizeof(sin6)) == 0;
    if (probe >= 0) {
        close(probe);
    }
    if (!ok) {
        GTEST_SKIP() << "no IPv6 loopback here";
    }
    ASSERT_TRUE(m_orcd.start({"--listen", "[::1]:0"}, false)) << m_orcd.log();
    http_client c;
    http_result r =
        c.get("http://[::1]:" + std::to_string(m_orcd.port()) + "/healthz");
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(m_orcd.stop(), 0);
}

TEST_F(orcd_daemon, tls)
{
    std::string out, key = m_dir.file("key.pem"), cert = m_dir.file("cert.pem");
    if (access("/usr/bin/openssl", X_OK) != 0) {
        GTEST_SKIP() << "no openssl to make a test certificate";
    }
    ASSERT_EQ(run_capture({"/usr/bin/openssl", "req", "-x509", "-newkey",
                           "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                           "-days", "1", "-subj", "/CN=localhost", "-addext",
                           "subjectAltName=IP:127.0.0.1"},
                          &out),
              0)
        << out;
    start("tls: {cert: " + cert + ", key: " + key + "}\n");
    http_client c;
    c.set_ca(cert);
    std::string base = "https://127.0.0.1:" + std::to_string(m_orcd.port());
    http_result r    = c.get(base + "/healthz");
    EXPECT_EQ(r.code, CURLE_OK) << curl_easy_strerror(r.code);
    EXPECT_EQ(r.status, 200);
    r = c.post(base + "/v1/jobs/j/nodes", "{\"host\":\"h\",\"pid\":1}");
    EXPECT_EQ(r.status, 201);
    /* plain HTTP to the TLS port gets no HTTP answer */
    http_client plain;
    EXPECT_NE(plain.get(u("/healthz"), 5).status, 200);
    EXPECT_EQ(m_orcd.stop(), 0);
}

TEST_F(orcd_daemon, tls_key_that_does_not_match)
{
    std::string out, key = m_dir.file("key.pem"), cert = m_dir.file("cert.pem");
    if (access("/usr/bin/openssl", X_OK) != 0) {
        GTEST_SKIP() << "no openssl to make a test certificate";
    }
    ASSERT_EQ(run_capture({"/usr/bin/openssl", "req", "-x509", "-newkey",
                           "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                           "-days", "1", "-subj", "/CN=localhost"},
                          &out),
              0)
        << out;
    /* swapped, and a key of another pair: the TLS library's reason, from
     * --check-config and at start */
    write_file(m_dir.file("swapped.yaml"),
               "tls: {cert: " + key + ", key: " + cert + "}\n");
    EXPECT_EQ(run_capture({orcd_binary(), "--check-config",
                           m_dir.file("swapped.yaml")},
                          &out),
              1);
    EXPECT_NE(out.find("tls.cert " + key + " and tls.key " + cert + ": "),
              std::string::npos)
        << out;
    std::string other = m_dir.file("other.pem");
    ASSERT_EQ(run_capture({"/usr/bin/openssl", "genrsa", "-out", other, "2048"},
                          &out),
              0)
        << out;
    write_file(m_dir.file("other.yaml"),
               "tls: {cert: " + cert + ", key: " + other + "}\n");
    EXPECT_EQ(run_capture({orcd_binary(), "--check-config",
                           m_dir.file("other.yaml")},
                          &out),
              1);
    EXPECT_NE(out.find("do not match"), std::string::npos) << out;
    EXPECT_FALSE(m_orcd.start({"--config", m_dir.file("other.yaml")}));
    EXPECT_NE(m_orcd.log().find("do not match"), std::string::npos)
        << m_orcd.log();
    EXPECT_EQ(m_orcd.log().find("address in use"), std::string::npos);
}

TEST_F(orcd_daemon, body_limit_before_reading)
{
    start("limits: {max_body: 2048, endpoint_max: 1024, "
          "mailbox_msg_max: 1024}\n");
    /* Content-Length over the limit: 413 without sending any body byte */
    int fd = tcp_connect(m_orcd.port());
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(send_all(fd, "POST /v1/jobs/j/nodes HTTP/1.1\r\n"
                             "Host: x\r\nContent-Type: application/json\r\n"
                             "Content-Length: 100000000\r\n\r\n"));
    bool closed;
    std::string resp = recv_until(fd, 10, nullptr, &closed);
    EXPECT_EQ(resp.rfind("HTTP/1.1 413", 0), 0u) << resp;
    EXPECT_NE(resp.find("too_large"), std::string::npos);
    EXPECT_TRUE(closed);
    close(fd);

    /* with "Expect: 100-continue" the client is told before it sends */
    fd = tcp_connect(m_orcd.port());
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(send_all(fd, "PUT /v1/jobs/j/kv/a HTTP/1.1\r\nHost: x\r\n"
                             "Expect: 100-continue\r\n"
                             "Content-Length: 5000\r\n\r\n"));
    resp = recv_until(fd, 10, "\r\n\r\n");
    EXPECT_EQ(resp.rfind("HTTP/1.1 413", 0), 0u) << resp;
    close(fd);

    /* chunked body that grows past the limit */
    fd = tcp_connect(m_orcd.port());
    ASSERT_GE(fd, 0);
    std::string req = "PUT /v1/jobs/j/kv/a HTTP/1.1\r\nHost: x\r\n"
                      "Transfer-Encoding: chunked\r\n\r\n";
    for (int i = 0; i < 4; ++i) {
        req += "400\r\n" + std::string(1024, ' ') + "\r\n";
    }
    req += "0\r\n\r\n";
    ASSERT_TRUE(send_all(fd, req));
    resp = recv_until(fd, 10, "\r\n\r\n");
    EXPECT_EQ(resp.rfind("HTTP/1.1 413", 0), 0u) << resp;
    close(fd);

    /* within the limit is fine */
    http_client c;
    EXPECT_EQ(c.put(u("/v1/jobs/j/kv/a"),
                    "{\"value\":\"" + std::string(1500, 'v') + "\"}")
                  .status,
              200);
}

TEST_F(orcd_daemon, malformed_http)
{
    start();
    const char *bad[] = {
        "GARBAGE\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        "GET /healthz HTTP/9.9\r\n\r\n",
        "\x01\x02\x03\x04\r\n\r\n",
        ("GET /v1/jobs/j/nodes HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
         "chunked\r\n\r\nzz\r\n"),
    };
    for (const char *b : bad) {
        int fd = tcp_connect(m_orcd.port());
        ASSERT_GE(fd, 0);
        send_all(fd, b);
        shutdown(fd, SHUT_WR);
        std::string resp = recv_until(fd, 10);
        /* an HTTP error status, or a plain close */
        if (!resp.empty()) {
            EXPECT_TRUE(resp.rfind("HTTP/1.1 4", 0) == 0 ||
                        resp.rfind("HTTP/1.1 505", 0) == 0)
                << "request: " << b << "\nresponse: " << resp;
        }
        close(fd);
    }
    /* still alive */
    http_client c;
    EXPECT_EQ(c.get(u("/healthz")).status, 200);
}

/* One /healthz request on a new connection; the response text */
static std::string healthz_on(int fd)
{
    send_all(fd, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    return recv_until(fd, 10, "{\"status\":\"ok\"}");
}

TEST_F(orcd_daemon, connection_limits_idle)
{
    start("limits: {max_connections: 8, max_connections_per_ip: 2, "
          "max_long_polls: 4, idle_timeout: 1}\n");
    /* per-address limit, both connections idle: a third is served, and the
     * one that waited longest for a request is closed to make room */
    int a = tcp_connect(m_orcd.port()), b = tcp_connect(m_orcd.port());
    ASSERT_GE(a, 0);
    ASSERT_GE(b, 0);
    ASSERT_NE(healthz_on(a).find("200 OK"), std::string::npos);
    ASSERT_NE(healthz_on(b).find("200 OK"), std::string::npos);
    int extra = tcp_connect(m_orcd.port());
    ASSERT_GE(extra, 0);
    EXPECT_NE(healthz_on(extra).find("200 OK"), std::string::npos);
    bool closed;
    recv_until(a, 10, nullptr, &closed);
    EXPECT_TRUE(closed) << "the longest-idle connection stays open";
    close(a);
    /* idle timeout (1 s): orcd closes the idle connections itself */
    for (int fd : {b, extra}) {
        recv_until(fd, 10, nullptr, &closed);
        EXPECT_TRUE(closed);
        close(fd);
    }
}

/* Apart from the idle timeout above: a 1 s timeout can close a blocking
 * query's connection before a loaded orcd has read its request */
TEST_F(orcd_daemon, connection_limits_busy)
{
    start("limits: {max_connections: 8, max_connections_per_ip: 2, "
          "max_long_polls: 4}\n");
    /* both connections of the address busy (blocking queries): a third
     * is answered 503 + Retry-After and closed, nothing waits */
    bool closed;
    int extra;
    /* registered from 127.0.0.2: a keep-alive connection of 127.0.0.1
     * would make three of that address once both waiters connect, and one
     * is evictable only once orcd marked it idle, a moment after its
     * client already has the answer (libmicrohttpd reports a request
     * completed after sending its response): a waiter that connects in
     * between is answered 503 */
    http_client c;
    c.set_source("127.0.0.2");
    long long id   = register_node(c, "j");
    std::string mb = "/v1/jobs/j/nodes/" + std::to_string(id) + "/mailbox";
    std::vector<std::thread> waiters;
    std::atomic<int> ok{0};
    for (int i = 0; i < 2; ++i) {
        waiters.emplace_back([&] {
            http_client w;
            if (w.get(u(mb + "?after=0&wait=20")).status == 200) {
                ++ok;
            }
        });
    }
    bool waiting = wait_long_polls(2);
    EXPECT_TRUE(waiting);
    if (waiting) {
        extra = tcp_connect(m_orcd.port());
        EXPECT_GE(extra, 0);
        send_all(extra, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        std::string r = recv_until(extra, 10, nullptr, &closed);
        EXPECT_EQ(r.rfind("HTTP/1.1 503", 0), 0u) << r;
        EXPECT_NE(r.find("Retry-After: 1"), std::string::npos) << r;
        EXPECT_TRUE(closed);
        close(extra);
    }
    /* a message releases both waiters */
    http_client poster;
    poster.set_source("127.0.0.2");
    for (int i = 0; i < 100; ++i) {
        if (poster.post(u(mb), "{\"body\":{}}").status == 201) {
            break;
        }
    }
    for (auto &t : waiters) {
        t.join();
    }
    EXPECT_EQ(ok.load(), 2);
}

TEST_P(orcd_api, long_poll_limit)
{
    start("limits: {max_long_polls: 2}\n");
    /* long-poll cap: 2 waiting, the 3rd gets 429 */
    http_client c;
    long long id   = register_node(c, "j");
    std::string mb = "/v1/jobs/j/nodes/" + std::to_string(id) + "/mailbox";
    std::vector<std::thread> waiters;
    std::atomic<int> ok{0};
    for (int i = 0; i < 2; ++i) {
        waiters.emplace_back([&] {
            http_client w;
            if (w.get(u(mb + "?after=0&wait=20")).status == 200) {
                ++ok;
            }
        });
    }
    bool waiting = wait_long_polls(2);
    EXPECT_TRUE(waiting);
    if (waiting) {
        http_result res = c.get(u(mb + "?after=0&wait=20"));
        EXPECT_EQ(res.status, 429);
        EXPECT_EQ(res.headers["retry-after"], "1");
    }
    /* a message releases both waiters */
    EXPECT_EQ(c.post(u(mb), "{\"body\":{}}").status, 201);
    for (auto &t : waiters) {
        t.join();
    }
    EXPECT_EQ(ok.load(), 2);
}

TEST_F(orcd_daemon, connections_past_the_limit_are_answered)
{
    /* every slot taken by an idle keep-alive connection (idle timeout far
     * away): a new connection is served at once instead of waiting in the
     * kernel's accept queue */
    start("limits: {max_connections: 4, max_connections_per_ip: 4, "
          "max_long_polls: 2}\n");
    std::vector<int> fds;
    for (int i = 0; i < 4; ++i) {
        int fd = tcp_connect(m_orcd.port());
        ASSERT_GE(fd, 0);
        ASSERT_NE(healthz_on(fd).find("200 OK"), std::string::npos);
        fds.push_back(fd);
    }
    int extra = tcp_connect(m_orcd.port());
    ASSERT_GE(extra, 0);
    EXPECT_NE(healthz_on(extra).find("200 OK"), std::string::npos);
    close(extra);
    for (int fd : fds) {
        close(fd);
    }
}

TEST_F(orcd_daemon, slow_requests_are_cut_and_do_not_starve_others)
{
    /* 64 connections that each send one header line a second, as many as
     * the connection limit: another client is served meanwhile, and each
     * slow one is cut once its request is older than request_timeout */
    const int n = 64;
    start("limits: {max_connections: 64, max_connections_per_ip: 64, "
          "max_long_polls: 8, request_timeout: 2}\n");
    std::vector<int> slow;
    for (int i = 0; i < n; ++i) {
        int fd = tcp_connect(m_orcd.port());
        ASSERT_GE(fd, 0);
        ASSERT_TRUE(send_all(fd, "GET /healthz HTTP/1.1\r\n"));
        slow.push_back(fd);
    }
    /* the other client retries a 503 (every connection busy: the slow ones
     * not yet taken over by the HTTP thread on a loaded machine), as its
     * Retry-After says, within 6 s */
    std::atomic<bool> served{false};
    std::thread other([&] {
        http_client c;
        double until = now_s() + 6;
        while (!served && (now_s() < until)) {
            http_result r = c.get(u("/healthz"), 2);
            served        = (r.status == 200);
            if (!served) {
                struct pollfd none;
                poll(&none, 0, 100);
            }
        }
    });
    std::vector<bool> cut(n, false);
    double deadline = now_s() + 8;
    int ncut        = 0;
    while ((ncut < n) && (now_s() < deadline)) {
        for (int i = 0; i < n; ++i) {
            if (!cut[i] && !send_all(slow[i], "X-Slow: 1\r\n")) {
                cut[i] = true;
                ++ncut;
            }
            char buf[64];
            ssize_t got = recv(slow[i], buf, sizeof(buf), MSG_DONTWAIT);
            if (!cut[i] && (got == 0)) {
                cut[i] = true;
                ++ncut;
            }
        }
        struct pollfd none;
        poll(&none, 0, 1000); /* the attack's pace: a line a second */
    }
    other.join();
    EXPECT_TRUE(served) << "a slow client starved the others";
    EXPECT_EQ(ncut, n) << "slow requests were not cut";
    for (int fd : slow) {
        close(fd);
    }
}

TEST_F(orcd_daemon, many_query_arguments_are_answered)
{
    start();
    std::string q;
    for (int i = 0; i < 1000; ++i) {
        q += (i ? "&a" : "a") + std::to_string(i) + "=1";
    }
    http_client c;
    double t0     = now_s();
    http_result r = c.get(u("/v1/jobs/j/nodes?" + q), 10);
    EXPECT_EQ(r.status, 431) << curl_easy_strerror(r.code);
    EXPECT_EQ(r.jstr("error"), "bad_request");
    EXPECT_LT(now_s() - t0, 5.0);
    EXPECT_EQ(c.get(u("/healthz")).status, 200);
}

TEST_F(orcd_daemon, nul_bytes_in_headers_and_keys_are_refused)
{
    start(std::string("auth: {enabled: true, tokens: {j: ") + k_tok_a + "}}\n");
    const std::string good = std::string("Authorization: Bearer ") + k_tok_a;
    /* the token itself works */
    int fd = tcp_connect(m_orcd.port());
    ASSERT_GE(fd, 0);
    send_all(fd, "GET /v1/jobs/j/nodes HTTP/1.1\r\nHost: x\r\n" + good +
                     "\r\n\r\n");
    std::string r = recv_until(fd, 10, "\"nodes\"");
    EXPECT_EQ(r.rfind("HTTP/1.1 200", 0), 0u) << r;
    close(fd);
    /* the token followed by a NUL and more is not */
    fd = tcp_connect(m_orcd.port());
    ASSERT_GE(fd, 0);
    send_all(fd, "GET /v1/jobs/j/nodes HTTP/1.1\r\nHost: x\r\n" + good +
                     std::string("\0junk", 5) + "\r\n\r\n");
    r = recv_until(fd, 10, "}");
    EXPECT_EQ(r.rfind("HTTP/1.1 400", 0), 0u) << r;
    close(fd);
    /* a NUL in a key, escaped or raw, writes nothing */
    http_client c;
    c.set_token(k_tok_a);
    EXPECT_EQ(c.put(u("/v1/jobs/j/kv/a%00zzz"), "{\"value\":1}").status, 400);
    fd = tcp_connect(m_orcd.port());
    ASSERT_GE(fd, 0);
    std::string body = "{\"value\":2}";
    send_all(fd, std::string("PUT /v1/jobs/j/kv/a\0zzz HTTP/1.1\r\n", 34) +
                     "Host: x\r\n" + good + "\r\nContent-Length: " +
                     std::to_string(body.size()) + "\r\n\r\n" + body);
    r = recv_until(fd, 10, "}");
    EXPECT_EQ(r.rfind("HTTP/1.1 400", 0), 0u) << r;
    close(fd);
    EXPECT_EQ(c.get(u("/v1/jobs/j/kv/a")).status, 404);
}

TEST_F(orcd_daemon, second_orcd_on_a_taken_port_fails)
{
    start();
    orcd_process second(m_dir);
    EXPECT_FALSE(
        second.start({"--listen", "127.0.0.1:" + std::to_string(m_orcd.port())},
                     false));
    EXPECT_NE(second.log().find("cannot listen on 127.0.0.1 port " +
                                std::to_string(m_orcd.port())),
              std::string::npos)
        << second.log();
    http_client c;
    EXPECT_EQ(c.get(u("/healthz")).status, 200);
}

/* Is process pid stopped (state T in /proc/pid/stat)? */
static bool process_stopped(pid_t pid)
{
    std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
    size_t paren     = stat.rfind(')');
    return (paren != std::string::npos) && (paren + 2 < stat.size()) &&
           (stat[paren + 2] == 'T');
}

TEST_F(orcd_daemon, a_burst_of_exactly_128_requests_is_answered_at_once)
{
    /* libmicrohttpd 0.9.75's epoll loop takes events 128 at a time and,
     * when it got exactly 128, waits again with the timeout it computed
     * before them (the idle timeout, a minute): the 128 requests it holds
     * are not served until some other event comes. 64 pairing clients (128
     * connections) sending at once met it (orcd-bench.sh, issue 9). Here:
     * 128 idle keep-alive connections of one HTTP thread, orcd frozen while
     * each sends a request, then thawed: every one is answered at once. */
    const int n = 128;
    start("listen: {threads: 1}\n");
    std::vector<int> fds;
    for (int i = 0; i < n; ++i) {
        int fd = tcp_connect(m_orcd.port());
        ASSERT_GE(fd, 0);
        fds.push_back(fd);
        ASSERT_NE(healthz_on(fd).find("200 OK"), std::string::npos);
    }
    m_orcd.signal(SIGSTOP);
    for (int i = 0; (i < 1000) && !process_stopped(m_orcd.pid()); ++i) {
        std::this_thread::yield();
    }
    ASSERT_TRUE(process_stopped(m_orcd.pid()));
    for (int fd : fds) {
        ASSERT_TRUE(send_all(fd, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"));
    }
    m_orcd.signal(SIGCONT);
    /* answered within 10 s (the idle timeout is 60 s) */
    std::vector<std::string> got(n);
    int answered    = 0;
    double deadline = now_s() + 10;
    while ((answered < n) && (now_s() < deadline)) {
        std::vector<struct pollfd> pfds;
        for (int fd : fds) {
            pfds.push_back({fd, POLLIN, 0});
        }
        if (poll(pfds.data(), pfds.size(), 100) <= 0) {
            continue;
        }
        for (int i = 0; i < n; ++i) {
            char buf[4096];
            ssize_t len;
            if (!(pfds[i].revents & (POLLIN | POLLHUP | POLLERR)) ||
                ((len = recv(fds[i], buf, sizeof(buf), MSG_DONTWAIT)) <= 0)) {
                continue;
            }
            bool was = got[i].find("{\"status\":\"ok\"}") != std::string::npos;
            got[i].append(buf, (size_t)len);
            answered += !was && (got[i].find("{\"status\":\"ok\"}") !=
                                 std::string::npos);
        }
    }
    EXPECT_EQ(answered, n) << "requests held by orcd for 10 s";
    for (int fd : fds) {
        close(fd);
    }
}

TEST_P(orcd_api, many_concurrent_clients)
{
    start();
    const int nthreads = 16, per_thread = 25;
    std::atomic<int> failures{0};
    std::mutex first_lock;
    std::string first_failure;
    http_client c;
    /* long leases: nothing keeps these nodes alive, and on a loaded
     * machine with the etcd store the test takes a while */
    long long sink = register_node(c, "j", 300);
    std::string mb = "/v1/jobs/j/nodes/" + std::to_string(sink) + "/mailbox";
    std::vector<std::thread> threads;
    std::vector<std::vector<long long>> ids(nthreads);

    for (int t = 0; t < nthreads; ++t) {
        threads.emplace_back([&, t] {
            http_client h;
            /* a 503 (a store call that did not fit its time: etcd on a
             * loaded machine) is retried as its Retry-After says; POSTs
             * with an Idempotency-Key, so that each is made once */
            auto call = [&](const char *method, const std::string &url,
                            const std::string &body, const std::string &rid,
                            long want) {
                http_result r = h.request_retried(method, u(url), &body, rid);
                if (r.status != want) {
                    std::lock_guard<std::mutex> g(first_lock);
                    if (first_failure.empty()) {
                        first_failure = std::string(method) + " " + url + ": " +
                                        std::to_string(r.status) + " " + r.body;
                    }
                    ++failures;
                }
                return r;
            };
            for (int i = 0; i < per_thread; ++i) {
                std::string tag =
                    "t" + std::to_string(t) + "-" + std::to_string(i);
                http_result r = call("POST", "/v1/jobs/j/nodes",
                                     "{\"host\":\"t\",\"ttl\":300,\"pid\":" +
                                         std::to_string(t) + "}",
                                     tag + "-reg", 201);
                if (r.status != 201) {
                    continue;
                }
                long long id = r.jint("id");
                ids[t].push_back(id);
                std::string n = "/v1/jobs/j/nodes/" + std::to_string(id);
                if ((call("POST", n + "/rdma/endpoint",
                          "{\"id\":" + std::to_string(id) + "}", "", 201)
                         .status != 201) ||
                    (call("PUT",
                          "/v1/jobs/j/kv/t" + std::to_string(t) + "/" +
                              std::to_string(i),
                          "{\"value\":" + std::to_string(id) + "}", "", 200)
                         .status != 200)) {
                    continue;
                }
                call("POST", mb,
                     "{\"from\":" + std::to_string(id) + ",\"body\":{}}",
                     tag + "-msg", 201);
            }
        });
    }
    for (auto &t : threads) {
        t.join();
    }
    EXPECT_EQ(failures.load(), 0) << "first: " << first_failure;

    /* every id unique, every node listed with its own endpoint */
    std::set<long long> all;
    for (auto &v : ids) {
        all.insert(v.begin(), v.end());
    }
    EXPECT_EQ(all.size(), (size_t)nthreads * per_thread);
    http_result r = c.get(u("/v1/jobs/j/nodes"));
    json_t *o     = r.json();
    ASSERT_NE(o, nullptr);
    json_t *nodes = json_object_get(o, "nodes");
    EXPECT_EQ(json_array_size(nodes), (size_t)nthreads * per_thread + 1);
    size_t i;
    json_t *n;
    json_array_foreach(nodes, i, n)
    {
        long long id = json_integer_value(json_object_get(n, "id"));
        if (id == sink) {
            continue;
        }
        EXPECT_EQ(json_integer_value(
                      json_object_get(json_object_get(n, "endpoint"), "id")),
                  id);
    }
    json_decref(o);
    for (int t = 0; t < nthreads; ++t) {
        for (int k = 0; k < per_thread; k += 7) {
            r = c.get(u("/v1/jobs/j/kv/t" + std::to_string(t) + "/" +
                        std::to_string(k)));
            EXPECT_EQ(r.status, 200);
        }
    }
    /* the mailbox got every message exactly once, seqs 1..N */
    r = c.get(u(mb + "?after=0"));
    o = r.json();
    ASSERT_NE(o, nullptr);
    json_t *msgs = json_object_get(o, "messages");
    EXPECT_EQ(json_array_size(msgs), (size_t)nthreads * per_thread);
    std::set<long long> from;
    json_array_foreach(msgs, i, n)
    {
        EXPECT_EQ(json_integer_value(json_object_get(n, "seq")),
                  (long long)i + 1);
        from.insert(json_integer_value(json_object_get(n, "from")));
    }
    EXPECT_EQ(from, all);
    json_decref(o);
}

/* Pairing round trips through long-polled mailboxes, many at once: every
 * wake-up path of a suspended request (watch fired before/after suspend). */
TEST_P(orcd_api, concurrent_pairing_round_trips)
{
    start();
    const int pairs = 16, rounds = 40;
    http_client c;
    std::vector<long long> a(pairs), b(pairs), ia(pairs), ib(pairs);
    /* nobody keeps these nodes alive: a TTL longer than the test, which
     * under ASan on a loaded machine outlasted the default 10 s (410) */
    for (int i = 0; i < pairs; ++i) {
        a[i] = register_node(c, "p", 300, &ia[i]);
        b[i] = register_node(c, "p", 300, &ib[i]);
    }
    auto mbox = [&](long long id) {
        return u("/v1/jobs/p/nodes/" + std::to_string(id) + "/mailbox");
    };
    std::mutex first_lock;
    std::string first_failure;
    auto fail = [&](const std::string &what, const http_result &r) {
        std::lock_guard<std::mutex> g(first_lock);
        if (first_failure.empty()) {
            first_failure =
                what + ": " + std::to_string(r.status) + " " + r.body;
        }
    };
    /* post to id's mailbox, acknowledging what `from` received (up to
     * ack, registered at index) as liborcclient does; a 503 (a store call
     * that did not fit its time: etcd on a loaded machine) is retried as
     * its Retry-After says, with an Idempotency-Key: made once */
    auto post = [&](http_client &h, long long id, long long from,
                    long long index, unsigned long long ack, long long n,
                    const std::string &rid) -> bool {
        std::string b = "{\"from\":" + std::to_string(from) +
                        ",\"body\":{\"n\":" + std::to_string(n) +
                        "},\"ack\":{\"after\":" + std::to_string(ack) +
                        ",\"index\":" + std::to_string(index) + "}}";
        http_result r = h.request_retried("POST", mbox(id), &b, rid);
        if (r.status != 201) {
            fail("POST " + std::to_string(id), r);
        }
        return r.status == 201;
    };
    /* receive the next message on id's mailbox (cursor in *after) */
    auto recv = [&](http_client &h, long long id, unsigned long long *after,
                    long long *n) -> bool {
        for (int tries = 0; tries < 100; ++tries) {
            http_result r =
                h.request_retried("GET",
                                  mbox(id) + "?after=" +
                                      std::to_string(*after) + "&wait=10",
                                  nullptr);
            if (r.status != 200) {
                fail("GET " + std::to_string(id), r);
                return false;
            }
            json_t *o   = r.json();
            json_t *msg = json_array_get(json_object_get(o, "messages"), 0);
            if (msg != NULL) {
                *after = json_integer_value(json_object_get(msg, "seq"));
                *n     = json_integer_value(
                        json_object_get(json_object_get(msg, "body"), "n"));
                json_decref(o);
                return true;
            }
            json_decref(o);
        }
        return false;
    };
    std::atomic<int> done{0}, errors{0};
    std::vector<std::thread> threads;
    for (int i = 0; i < pairs; ++i) {
        threads.emplace_back(
            [&, i] { /* responder B */
            http_client h;
            unsigned long long after = 0;
            for (int k = 0; k < rounds; ++k) {
                long long n;
                if (!recv(h, b[i], &after, &n) || n != k ||
                    !post(h, a[i], b[i], ib[i], after, n,
                          "b" + std::to_string(i) + "-" + std::to_string(k))) {
                    ++errors;
                    return;
                }
            }
        });
        threads.emplace_back(
            [&, i] { /* initiator A */
            http_client h;
            unsigned long long after = 0;
            for (int k = 0; k < rounds; ++k) {
                long long n;
                if (!post(h, b[i], a[i], ia[i], after, k,
                          "a" + std::to_string(i) + "-" + std::to_string(k)) ||
                    !recv(h, a[i], &after, &n) || n != k) {
                    ++errors;
                    return;
                }
                ++done;
            }
        });
    }
    for (auto &t : threads) {
        t.join();
    }
    EXPECT_EQ(errors.load(), 0) << "first: " << first_failure;
    EXPECT_EQ(done.load(), pairs * rounds);
    EXPECT_TRUE(wait_long_polls(0));
    /* the posts acknowledged every message but each A's last reply */
    for (int i = 0; i < pairs; ++i) {
        EXPECT_EQ(mailbox_seqs(c, mbox(a[i])),
                  (std::vector<long long>{rounds}));
        EXPECT_EQ(mailbox_seqs(c, mbox(b[i])), (std::vector<long long>{}));
    }
}

TEST_P(orcd_api, graceful_shutdown_with_long_poll)
{
    start();
    http_client c;
    long long id   = register_node(c, "j");
    std::string mb = "/v1/jobs/j/nodes/" + std::to_string(id) + "/mailbox";
    http_result polled;
    double t_ret = 0;
    std::thread waiter([&] {
        http_client w;
        polled = w.get(u(mb + "?after=0&wait=60"));
        t_ret  = now_s();
    });
    EXPECT_TRUE(wait_long_polls(1));
    double t0 = now_s();
    m_orcd.signal(SIGTERM);
    waiter.join();
    EXPECT_EQ(polled.status, 200) << polled.body;
    EXPECT_NE(polled.body.find("\"messages\":[]"), std::string::npos);
    EXPECT_LT(t_ret - t0, 10.0);
    EXPECT_EQ(m_orcd.wait_exit(20), 0);
    /* and it no longer accepts connections */
    EXPECT_LT(tcp_connect(m_orcd.port()), 0);
}

TEST_F(orcd_daemon, snapshot_restart)
{
    std::string snap = m_dir.file("orcd.snap");
    start("ttl: {min: 1}\n", {"--snapshot", snap});
    http_client c;
    long long id   = register_node(c, "j", 30);
    std::string nb = "/v1/jobs/j/nodes/" + std::to_string(id);
    ASSERT_EQ(c.put(u(nb + "/rdma/endpoint"), "{\"gid\":\"g\"}").status, 200);
    ASSERT_EQ(c.put(u("/v1/jobs/j/kv/addr"), "{\"value\":\"w0\"}").status, 200);
    ASSERT_EQ(c.post(u(nb + "/mailbox"), "{\"body\":{\"m\":1}}").status, 201);
    long long gone = register_node(c, "j");
    ASSERT_EQ(c.del(u("/v1/jobs/j/nodes/" + std::to_string(gone))).status, 204);
    std::string index = c.get(u("/v1/jobs/j/nodes")).headers["x-orc-index"];
    ASSERT_EQ(m_orcd.stop(), 0);

    start("ttl: {min: 1}\n", {"--snapshot", snap});
    http_client c2;
    http_result r = c2.get(u(nb + "/rdma/endpoint"));
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.jstr("gid"), "g");
    EXPECT_EQ(c2.get(u("/v1/jobs/j/kv/addr")).jstr("value"), "w0");
    r = c2.get(u(nb + "/mailbox?after=0"));
    EXPECT_NE(r.body.find("\"m\":1"), std::string::npos) << r.body;
    r = c2.put_empty(u(nb + "/keepalive"));
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.jint("ttl"), 30);
    /* revisions continue, ids are not reused, deletions are remembered */
    r = c2.get(u("/v1/jobs/j/nodes"));
    EXPECT_EQ(r.headers["x-orc-index"], index);
    EXPECT_EQ(register_node(c2, "j"), gone + 1);
    EXPECT_EQ(c2.put_empty(u("/v1/jobs/j/nodes/" + std::to_string(gone) +
                             "/keepalive"))
                  .status,
              404);
    EXPECT_EQ(m_orcd.stop(), 0);

    /* a corrupt snapshot is an error, not an empty start */
    write_file(snap, "{\"format\":");
    EXPECT_FALSE(m_orcd.start({"--snapshot", snap}));
    EXPECT_NE(m_orcd.log().find("cannot restore the snapshot"),
              std::string::npos)
        << m_orcd.log();
    /* the store's own message about it comes through orcd's logger */
    std::istringstream lines(m_orcd.log());
    std::string line;
    bool store_line = false;
    while (std::getline(lines, line)) {
        EXPECT_NE(line.find("Z orcd "), std::string::npos) << line;
        store_line |=
            (line.find("orcd error: snapshot " + snap) != std::string::npos);
    }
    EXPECT_TRUE(store_line) << m_orcd.log();
}

TEST_F(orcd_daemon, snapshot_location_is_checked)
{
    /* a directory that does not exist: refuse to start, say why */
    std::string missing = m_dir.file("no-such-dir") + "/orcd.snap";
    EXPECT_FALSE(m_orcd.start({"--snapshot", missing}));
    EXPECT_NE(m_orcd.log().find(missing), std::string::npos) << m_orcd.log();
    /* a path that cannot be read (a symlink loop) is not "no snapshot" */
    std::string loop = m_dir.file("loop.snap");
    ASSERT_EQ(symlink(loop.c_str(), loop.c_str()), 0);
    EXPECT_FALSE(m_orcd.start({"--snapshot", loop}));
    EXPECT_NE(m_orcd.log().find(loop), std::string::npos) << m_orcd.log();
    EXPECT_TRUE(S_ISLNK(lstat_mode(loop))) << "the path was overwritten";
    /* the final snapshot cannot be written: exit non-zero */
    std::string sub = m_dir.file("sub");
    ASSERT_EQ(mkdir(sub.c_str(), 0700), 0);
    start("snapshot: {interval: 0}\n", {"--snapshot", sub + "/orcd.snap"});
    http_client c;
    register_node(c, "j");
    ASSERT_EQ(rmdir(sub.c_str()), 0);
    EXPECT_EQ(m_orcd.stop(), 1);
    EXPECT_NE(m_orcd.log().find("orcd.snap"), std::string::npos)
        << m_orcd.log();
}

TEST_F(orcd_daemon, snapshot_values_are_validated_on_load)
{
    std::string snap = m_dir.file("v.snap");
    start("", {"--snapshot", snap});
    http_client c;
    register_node(c, "j", 30);
    ASSERT_EQ(m_orcd.stop(), 0);
    std::string good = read_file(snap);
    ASSERT_NE(good.find("\"revision\":"), std::string::npos) << good;

    auto refused = [&](const std::string &text, const char *why) {
        write_file(snap, text);
        EXPECT_FALSE(m_orcd.start({"--snapshot", snap})) << why;
        EXPECT_NE(m_orcd.log().find("snapshot"), std::string::npos)
            << why << ": " << m_orcd.log();
    };
    /* a revision that cannot grow */
    std::string rev = good;
    size_t at       = rev.find("\"revision\":") + 11;
    rev.replace(at, rev.find_first_not_of("0123456789", at) - at,
                "9223372036854775807");
    refused(rev, "revision 2^63-1");
    /* a node record that is not JSON */
    std::string bad = good;
    at              = bad.find("{\\\"host\\\"");
    ASSERT_NE(at, std::string::npos) << good;
    bad.replace(at, 1, "X");
    refused(bad, "node value not JSON");
    /* the file itself still loads */
    write_file(snap, good);
    ASSERT_TRUE(m_orcd.start({"--snapshot", snap})) << m_orcd.log();
    EXPECT_EQ(m_orcd.stop(), 0);
    /* temporary files of a write cut short are removed at start */
    std::string tmp = snap + ".tmp.12345";
    write_file(tmp, "partial");
    ASSERT_TRUE(m_orcd.start({"--snapshot", snap})) << m_orcd.log();
    EXPECT_NE(access(tmp.c_str(), F_OK), 0) << "left behind: " << tmp;
    EXPECT_EQ(m_orcd.stop(), 0);
}

TEST_F(orcd_daemon, periodic_snapshot_survives_a_crash)
{
    std::string snap = m_dir.file("p.snap");
    start("snapshot: {path: " + snap + ", interval: 1}\n");
    http_client c;
    long long id = register_node(c, "j", 60);
    ASSERT_EQ(c.put(u("/v1/jobs/j/kv/name"), "{\"value\":\"v\"}").status, 200);
    /* the periodic snapshot (no shutdown) picks the state up */
    ASSERT_TRUE(wait_file_contains(snap, "/jobs/j/kv/name", 30));
    EXPECT_EQ(m_orcd.stop(SIGKILL), -1); /* crash: no final snapshot */

    start("snapshot: {path: " + snap + ", interval: 1}\n");
    http_client c2;
    EXPECT_EQ(c2.get(u("/v1/jobs/j/kv/name")).jstr("value"), "v");
    EXPECT_EQ(c2.put_empty(
                    u("/v1/jobs/j/nodes/" + std::to_string(id) + "/keepalive"))
                  .status,
              200);
    EXPECT_EQ(m_orcd.stop(SIGINT), 0); /* SIGINT is graceful too */
}

/*
 * Two orcd replicas on one etcd (the suite's shared member, one key prefix):
 * any replica answers any request, and a client waiting on one is woken by
 * a change made through the other.
 */
class orcd_replicas : public orcd_daemon
{
  protected:
    void SetUp() override
    {
        orcd_daemon::SetUp();
        std::string why;
        etcd_test::etcd_cluster *c = etcd_test::shared_etcd(1, &why);
        ASSERT_NE(c, nullptr) << why;
        m_yaml = "store:\n  backend: etcd\n  etcd:\n    endpoints: " +
                 c->endpoint_yaml() +
                 "\n    prefix: " + etcd_test::unique_prefix("replicas") +
                 "\nttl: {min: 1, default: 10, max: 300}\n";
        write_file(m_dir.file("orcd.yaml"), m_yaml);
        ASSERT_TRUE(m_orcd.start({"--config", m_dir.file("orcd.yaml")}))
            << m_orcd.log();
        ASSERT_TRUE(m_b.start({"--config", m_dir.file("orcd.yaml")}))
            << m_b.log();
    }
    std::string a(const std::string &path)
    {
        return m_orcd.url(path);
    }
    std::string b(const std::string &path)
    {
        return m_b.url(path);
    }

    std::string m_yaml;
    tmpdir m_dir_b;
    orcd_process m_b{m_dir_b};
};

TEST_F(orcd_replicas, any_replica_answers_any_request)
{
    http_client ca, cb;
    /* ids come from etcd transactions: unique across replicas */
    std::set<long long> ids;
    for (int i = 0; i < 6; ++i) {
        http_result r =
            ((i % 2) ? cb : ca)
                .post(((i % 2) ? b("/v1/jobs/j/nodes") : a("/v1/jobs/j/nodes")),
                      "{\"host\":\"h\",\"pid\":1,\"ttl\":300}");
        ASSERT_EQ(r.status, 201) << r.body;
        EXPECT_TRUE(ids.insert(r.jint("id")).second) << r.body;
    }
    long long id   = *ids.begin();
    std::string nd = "/v1/jobs/j/nodes/" + std::to_string(id);
    /* written through B, read through A at the index B answered */
    http_result w = cb.put(b("/v1/jobs/j/kv/cfg"), "{\"value\":{\"x\":1}}");
    ASSERT_EQ(w.status, 200) << w.body;
    ca.set_header("X-Orc-Min-Index: " + w.headers["x-orc-index"]);
    http_result r = ca.get(a("/v1/jobs/j/kv/cfg"));
    EXPECT_EQ(r.status, 200) << r.body;
    EXPECT_NE(r.body.find("\"x\":1"), std::string::npos) << r.body;
    r = ca.get(a("/v1/jobs/j/nodes"));
    EXPECT_EQ(r.status, 200);
    for (long long n : ids) {
        EXPECT_NE(r.body.find("\"id\":" + std::to_string(n) + ","),
                  std::string::npos)
            << r.body;
    }
    /* the lease is etcd's: a keep-alive through B renews a node of A */
    EXPECT_EQ(cb.put_empty(b(nd + "/keepalive")).status, 200);
    /* deleted through B: gone for A */
    EXPECT_EQ(cb.del(b(nd)).status, 204);
    w = cb.get(b(nd));
    EXPECT_EQ(w.status, 404);
    ca.set_header("X-Orc-Min-Index: " + w.headers["x-orc-index"]);
    EXPECT_EQ(ca.get(a(nd)).status, 404);
}

TEST_F(orcd_replicas, blocking_queries_wake_across_replicas)
{
    http_client ca, cb;
    long long id      = register_node(ca, "j", 300);
    std::string mb    = "/v1/jobs/j/nodes/" + std::to_string(id) + "/mailbox";
    http_result r     = ca.get(a("/v1/jobs/j/nodes"));
    std::string index = r.headers["x-orc-index"];

    /* a membership watch on A, a registration through B */
    std::thread t([&] {
        ASSERT_TRUE(wait_long_polls(1));
        http_client c2;
        EXPECT_EQ(c2.post(b("/v1/jobs/j/nodes"),
                          "{\"host\":\"h\",\"pid\":2,\"ttl\":300}")
                      .status,
                  201);
    });
    double t0 = now_s();
    r         = ca.get(a("/v1/jobs/j/nodes?index=" + index + "&wait=20"));
    t.join();
    EXPECT_LT(now_s() - t0, 10.0);
    EXPECT_NE(r.headers["x-orc-index"], index);
    EXPECT_NE(r.body.find("\"pid\":2"), std::string::npos) << r.body;

    /* a mailbox long poll on A, the message posted through B */
    std::thread t2([&] {
        ASSERT_TRUE(wait_long_polls(1));
        http_client c2;
        EXPECT_EQ(c2.post(b(mb), "{\"from\":7,\"body\":{\"hi\":1}}").status,
                  201);
    });
    t0 = now_s();
    r  = ca.get(a(mb + "?after=0&wait=20"));
    t2.join();
    EXPECT_LT(now_s() - t0, 10.0);
    EXPECT_NE(r.body.find("\"hi\":1"), std::string::npos) << r.body;
}

/* A node whose process dies expires after its TTL (not before), also when
 * the replica it registered with died first; its endpoint and kv keys go
 * with it, and a watcher on the surviving replica is told */
TEST_F(orcd_replicas, node_expires_after_its_replica_died)
{
    http_client ca, cb;
    http_result r =
        ca.post(a("/v1/jobs/j/nodes"), "{\"host\":\"h\",\"pid\":1,\"ttl\":2}");
    ASSERT_EQ(r.status, 201) << r.body;
    std::string nd = "/v1/jobs/j/nodes/" + std::to_string(r.jint("id"));
    ASSERT_EQ(ca.put(a(nd + "/rdma/endpoint"), "{\"qpn\":7}").status, 200);
    r = ca.put(a("/v1/jobs/j/kv/owned"),
               "{\"value\":1,\"node\":" + std::to_string(r.jint("id")) + "}");
    ASSERT_EQ(r.status, 200) << r.body;
    ASSERT_EQ(ca.put_empty(a(nd + "/keepalive")).status, 200);
    double renewed = now_s();
    cb.set_header("X-Orc-Min-Index: " + r.headers["x-orc-index"]);
    r                 = cb.get(b("/v1/jobs/j/nodes"));
    std::string index = r.headers["x-orc-index"];
    ASSERT_NE(r.body.find(nd.substr(nd.rfind('/') + 1)), std::string::npos);

    EXPECT_EQ(m_orcd.stop(SIGKILL), -1); /* killed, no exit code */
    /* B's membership watch wakes when etcd expires the lease */
    r = cb.get(b("/v1/jobs/j/nodes?index=" + index + "&wait=30"), 40);
    double expired = now_s() - renewed;
    EXPECT_EQ(r.status, 200);
    EXPECT_NE(r.body.find("\"nodes\":[]"), std::string::npos) << r.body;
    EXPECT_GE(expired, 1.9) << "the lease expired before its TTL";
    EXPECT_LT(expired, 20.0);
    EXPECT_EQ(cb.get(b(nd)).status, 410);
    EXPECT_NE(cb.get(b(nd + "/rdma/endpoint")).status, 200);
    EXPECT_EQ(cb.get(b("/v1/jobs/j/kv/owned")).status, 404);
}

} // namespace
