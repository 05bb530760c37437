/*
 * orcctl end to end against the real orcd: every command, --json output
 * parsed and checked, exit codes, environment variables.
 */
#include "test_client_orcd.h"

#include <jansson.h>

using namespace orc_test;

namespace
{

const char *ORCD_CONFIG = "ttl:\n"
                          "  min: 1\n"
                          "auth:\n"
                          "  enabled: true\n"
                          "  tokens:\n"
                          "    jobA: orcctl-token-a-1\n"
                          "    jobB: orcctl-token-b-2\n";

class orcctl_test : public ::testing::TestWithParam<std::string>
{
  protected:
    void SetUp() override
    {
        std::string why;
        ASSERT_TRUE(store_param_setup(GetParam(), &why)) << why;
        ASSERT_TRUE(m_orcd.start(ORCD_CONFIG)) << m_orcd.error();
    }

    void TearDown() override
    {
        orcd_store_yaml().clear();
    }

    /* orcctl --url URL --job jobA --token T --json ARGS... */
    int ctl(const std::vector<std::string> &args, std::string *out,
            bool json = true, const std::vector<std::string> &env = {})
    {
        std::vector<std::string> argv = {builddir() + "/orcctl",
                                         "--url",
                                         m_orcd.url(),
                                         "--job",
                                         "jobA",
                                         "--token",
                                         "orcctl-token-a-1"};
        if (json) {
            argv.push_back("--json");
        }
        argv.insert(argv.end(), args.begin(), args.end());
        return run(argv, env, out, 20000, false);
    }

    /* parse the first line of `text` as a JSON object */
    static json_t *parse(const std::string &text)
    {
        json_error_t err;
        json_t *doc =
            json_loads(text.substr(0, text.find('\n')).c_str(), 0, &err);
        EXPECT_TRUE(json_is_object(doc)) << "not JSON: " << text;
        return doc;
    }

    /*
     * A node registered by `orcctl register` in the background. Its lease is
     * long enough to outlive a slow keep-alive on a loaded machine: no test
     * here waits for it to lapse.
     */
    uint64_t register_bg(child *reg, const std::string &host,
                         const std::string &labels = "{\"role\":\"demo\"}")
    {
        EXPECT_TRUE(
            reg->start({builddir() + "/orcctl", "--url", m_orcd.url(), "--job",
                        "jobA", "--token", "orcctl-token-a-1", "--json",
                        "register", host, "--ttl", "30", "--labels", labels}));
        std::string line;
        EXPECT_TRUE(reg->read_line(&line, 10000));
        json_t *doc = parse(line);
        uint64_t id = json_integer_value(json_object_get(doc, "id"));
        json_decref(doc);
        return id;
    }

    orcd_child m_orcd;
};

} // namespace

ORC_TEST_STORES(orcctl_test);

TEST_P(orcctl_test, health_and_usage)
{
    std::string out;
    ASSERT_EQ(0, ctl({"health"}, &out));
    json_t *doc = parse(out);
    EXPECT_STREQ("ok", json_string_value(json_object_get(doc, "status")));
    json_decref(doc);

    ASSERT_EQ(0, ctl({"health"}, &out, false));
    EXPECT_EQ("ok\n", out);

    EXPECT_EQ(0, run({builddir() + "/orcctl", "--help"}, {}, &out));
    EXPECT_NE(std::string::npos, out.find("Exit codes"));
    EXPECT_EQ(1, run({builddir() + "/orcctl"}, {}, &out));
    EXPECT_EQ(1, ctl({"frobnicate"}, &out));
    EXPECT_EQ(1, ctl({"node-get", "abc"}, &out));
    EXPECT_EQ(1, ctl({"kv-get"}, &out));
    EXPECT_EQ(1, ctl({"kv-get", "k", "--wait", "-1"}, &out));
    EXPECT_EQ(1, ctl({"--bogus", "health"}, &out));
}

TEST_P(orcctl_test, register_nodes_endpoint_roundtrip)
{
    child reg;
    uint64_t id = register_bg(&reg, "demo-host");
    ASSERT_GT(id, 0u);

    std::string out;
    ASSERT_EQ(0, ctl({"nodes"}, &out));
    json_t *doc   = parse(out);
    json_t *nodes = json_object_get(doc, "nodes");
    ASSERT_EQ(1u, json_array_size(nodes));
    json_t *node = json_array_get(nodes, 0);
    EXPECT_EQ((json_int_t)id, json_integer_value(json_object_get(node, "id")));
    EXPECT_STREQ("demo-host", json_string_value(json_object_get(node, "host")));
    EXPECT_EQ((json_int_t)reg.pid(),
              json_integer_value(json_object_get(node, "pid")));
    EXPECT_STREQ("demo",
                 json_string_value(
                     json_object_get(json_object_get(node, "labels"), "role")));
    EXPECT_TRUE(json_is_null(json_object_get(node, "endpoint")));
    json_decref(doc);

    std::string sid = std::to_string(id);
    EXPECT_EQ(2, ctl({"endpoint-get", sid}, &out));
    ASSERT_EQ(0,
              ctl({"endpoint-put", sid, "{\"qpn\": 42, \"mtu\": 4096}"}, &out));
    ASSERT_EQ(0, ctl({"endpoint-get", sid}, &out));
    doc = parse(out);
    EXPECT_EQ(42, json_integer_value(json_object_get(doc, "qpn")));
    json_decref(doc);

    ASSERT_EQ(0, ctl({"node-get", sid}, &out));
    doc = parse(out);
    EXPECT_EQ(4096,
              json_integer_value(
                  json_object_get(json_object_get(doc, "endpoint"), "mtu")));
    json_decref(doc);

    /* human-readable listing names the host */
    ASSERT_EQ(0, ctl({"nodes"}, &out, false));
    EXPECT_NE(std::string::npos, out.find("demo-host"));
    EXPECT_NE(std::string::npos, out.find("1 node,"));

    EXPECT_EQ(6, ctl({"endpoint-put", sid, "[1,2]"}, &out));
    EXPECT_EQ(2, ctl({"node-get", "99999"}, &out));

    /* SIGINT: deregisters and exits 0 */
    reg.signal(SIGINT);
    EXPECT_EQ(0, reg.wait_exit(10000));
    EXPECT_EQ(2, ctl({"node-get", sid}, &out));
}

/* The transport's topology summary label, shown one part per line */
TEST_P(orcctl_test, nodes_show_topology_summary)
{
    const std::string summary = "2 NUMA nodes; soft_nic0 pci 0000:03:00.0 "
                                "numa 0 cpus 0; soft_lo unknown";
    child reg;
    uint64_t id =
        register_bg(&reg, "topo-host",
                    "{\"transport\":\"orc\",\"topology\":\"" + summary + "\"}");
    ASSERT_GT(id, 0u);

    std::string out;
    ASSERT_EQ(0, ctl({"nodes"}, &out, false));
    EXPECT_NE(std::string::npos,
              out.find(" {\"transport\":\"orc\"}\n"
                       "         topology: 2 NUMA nodes\n"
                       "                   soft_nic0 pci 0000:03:00.0 numa 0 "
                       "cpus 0\n"
                       "                   soft_lo unknown\n"))
        << out;

    ASSERT_EQ(0, ctl({"node-get", std::to_string(id)}, &out, false));
    EXPECT_NE(std::string::npos,
              out.find("labels:   {\"transport\":\"orc\"}\n"
                       "topology: 2 NUMA nodes\n"
                       "          soft_nic0 pci 0000:03:00.0 numa 0 cpus 0\n"
                       "          soft_lo unknown\n"))
        << out;

    /* --json keeps the label as it is */
    ASSERT_EQ(0, ctl({"nodes"}, &out));
    json_t *doc  = parse(out);
    json_t *node = json_array_get(json_object_get(doc, "nodes"), 0);
    ASSERT_NE(nullptr, node) << out;
    EXPECT_STREQ(summary.c_str(),
                 json_string_value(
                     json_object_get(json_object_get(node, "labels"),
                                     "topology")));
    json_decref(doc);

    reg.signal(SIGINT);
    EXPECT_EQ(0, reg.wait_exit(10000));
}

TEST_P(orcctl_test, nodes_wait_wakes_on_change)
{
    std::string out;
    ASSERT_EQ(0, ctl({"nodes"}, &out));
    json_t *doc    = parse(out);
    json_int_t idx = json_integer_value(json_object_get(doc, "index"));
    json_decref(doc);

    child watcher;
    ASSERT_TRUE(
        watcher.start({builddir() + "/orcctl", "--url", m_orcd.url(), "--job",
                       "jobA", "--token", "orcctl-token-a-1", "--json", "nodes",
                       "--index", std::to_string(idx), "--wait", "20"}));
    child reg;
    uint64_t id = register_bg(&reg, "late-host");
    auto t0     = steady::now();
    ASSERT_EQ(0, watcher.wait_exit(15000, &out));
    EXPECT_LT(ms_since(t0), 10000);
    doc = parse(out);
    EXPECT_GT(json_integer_value(json_object_get(doc, "index")), idx);
    json_t *nodes = json_object_get(doc, "nodes");
    ASSERT_EQ(1u, json_array_size(nodes));
    EXPECT_EQ((json_int_t)id,
              json_integer_value(
                  json_object_get(json_array_get(nodes, 0), "id")));
    json_decref(doc);
}

TEST_P(orcctl_test, mailbox_send_and_watch)
{
    child reg;
    uint64_t id     = register_bg(&reg, "mbox-host");
    std::string sid = std::to_string(id), out;

    for (int i = 1; i <= 3; ++i) {
        ASSERT_EQ(0, ctl({"mailbox-send", sid,
                          "{\"n\":" + std::to_string(i) + "}", "--from", "7"},
                         &out));
        json_t *doc = parse(out);
        EXPECT_EQ(i, json_integer_value(json_object_get(doc, "seq")));
        json_decref(doc);
    }

    ASSERT_EQ(0, ctl({"mailbox-watch", sid, "--count", "2"}, &out));
    std::istringstream lines(out);
    std::string line;
    int n = 0;
    while (std::getline(lines, line)) {
        json_t *doc = parse(line);
        ++n;
        EXPECT_EQ(n, json_integer_value(json_object_get(doc, "seq")));
        EXPECT_EQ(7, json_integer_value(json_object_get(doc, "from")));
        EXPECT_EQ(n, json_integer_value(
                         json_object_get(json_object_get(doc, "body"), "n")));
        json_decref(doc);
    }
    EXPECT_EQ(2, n);

    /* the watch acknowledged what it printed: the next one starts at 3 */
    ASSERT_EQ(0, ctl({"mailbox-watch", sid, "--count", "1"}, &out));
    json_t *doc = parse(out);
    EXPECT_EQ(3, json_integer_value(json_object_get(doc, "seq")));
    json_decref(doc);

    /* nothing more within the wait: exit code 3 */
    EXPECT_EQ(3, ctl({"mailbox-watch", sid, "--after", "3", "--count", "1",
                      "--wait", "0.3"},
                     &out));
    EXPECT_EQ(2, ctl({"mailbox-send", "99999", "{}"}, &out));
}

TEST_P(orcctl_test, kv_commands)
{
    std::string out;
    ASSERT_EQ(0, ctl({"kv-put", "app/addr", "tcp://127.0.0.1:5000"}, &out));
    ASSERT_EQ(0, ctl({"kv-get", "app/addr"}, &out));
    json_t *doc = parse(out);
    EXPECT_STREQ("app/addr", json_string_value(json_object_get(doc, "key")));
    EXPECT_STREQ("tcp://127.0.0.1:5000",
                 json_string_value(json_object_get(doc, "value")));
    EXPECT_STREQ("dGNwOi8vMTI3LjAuMC4xOjUwMDA=",
                 json_string_value(json_object_get(doc, "b64")));
    json_decref(doc);

    ASSERT_EQ(0, ctl({"kv-get", "app/addr"}, &out, false));
    EXPECT_EQ("tcp://127.0.0.1:5000\n", out);

    /* kv-wait: times out (3), then wakes on a put */
    auto t0 = steady::now();
    EXPECT_EQ(3, ctl({"kv-wait", "later", "0.4"}, &out));
    EXPECT_GE(ms_since(t0), 350);

    child waiter;
    ASSERT_TRUE(waiter.start({builddir() + "/orcctl", "--url", m_orcd.url(),
                              "--job", "jobA", "--token", "orcctl-token-a-1",
                              "kv-wait", "later", "20"}));
    ASSERT_EQ(0, ctl({"kv-put", "later", "now"}, &out));
    ASSERT_EQ(0, waiter.wait_exit(15000, &out));
    EXPECT_EQ("now\n", out);

    ASSERT_EQ(0, ctl({"kv-delete", "app/addr"}, &out));
    EXPECT_EQ(2, ctl({"kv-get", "app/addr"}, &out));
    EXPECT_EQ(2, ctl({"kv-delete", "app/addr"}, &out));
    EXPECT_EQ(6, ctl({"kv-put", "../escape", "x"}, &out));
}

TEST_P(orcctl_test, environment_auth_and_unreachable)
{
    std::string out, path = m_orcd.dir() + "/token";
    write_file(path, "orcctl-token-b-2\n");

    /* URL, job and token file from the environment */
    ASSERT_EQ(0, run({builddir() + "/orcctl", "--json", "kv-put", "k", "b"},
                     {"ORC_COORDINATOR_URL=" + m_orcd.url(), "ORC_JOB=jobB",
                      "ORC_TOKEN_FILE=" + path, "ORC_TOKEN="},
                     &out));
    ASSERT_EQ(0, run({builddir() + "/orcctl", "kv-get", "k"},
                     {"ORC_COORDINATOR_URL=" + m_orcd.url(), "ORC_JOB=jobB",
                      "ORC_TOKEN=orcctl-token-b-2"},
                     &out));
    EXPECT_EQ("b\n", out);
    /* not visible in job A */
    EXPECT_EQ(2, ctl({"kv-get", "k"}, &out));

    /* wrong job for the token: 5; no token: 5; the token is never printed */
    std::string err;
    EXPECT_EQ(5, run({builddir() + "/orcctl", "--url", m_orcd.url(), "--job",
                      "jobA", "--token-file", path, "kv-get", "k"},
                     {}, &err, 20000, true));
    EXPECT_EQ(std::string::npos, err.find("orcctl-token-b-2")) << err;
    EXPECT_NE(std::string::npos, err.find("forbidden")) << err;
    EXPECT_EQ(5, run({builddir() + "/orcctl", "--url", m_orcd.url(), "--job",
                      "jobA", "kv-get", "k"},
                     {"ORC_TOKEN=", "ORC_TOKEN_FILE="}, &err));

    /* orcd gone: 4, quickly (a refused connection, not the 30 s timeout;
     * the margin is for a loaded machine) */
    std::string url = m_orcd.url();
    m_orcd.stop();
    auto t0 = steady::now();
    EXPECT_EQ(4, run({builddir() + "/orcctl", "--url", url, "--timeout", "30",
                      "health"},
                     {}, &err, 40000, true));
    EXPECT_LT(ms_since(t0), 10000);
    EXPECT_NE(std::string::npos, err.find("unreachable")) << err;
}

/* nodes --wait without --index waits for a change from its own start */
TEST_P(orcctl_test, nodes_wait_from_now)
{
    child watcher;
    ASSERT_TRUE(watcher.start({builddir() + "/orcctl", "--url", m_orcd.url(),
                               "--job", "jobA", "--token", "orcctl-token-a-1",
                               "--json", "nodes", "--wait", "20"}));

    /* membership keeps changing (paced, bounded) until the watcher is back;
     * whichever change follows its baseline must wake it */
    orc_client_t *c = m_orcd.client("jobA", "orcctl-token-a-1");
    ASSERT_NE(nullptr, c);
    std::string out;
    int rc  = -1;
    auto t0 = steady::now();
    while ((rc < 0) && (ms_since(t0) < 15000)) {
        uint64_t id;
        ASSERT_EQ(ORC_CL_OK, orc_client_register(c, "churn", 1, NULL, 0, &id));
        ASSERT_EQ(ORC_CL_OK, orc_client_deregister(c, id));
        rc = watcher.wait_exit(200, &out);
    }
    orc_client_destroy(c);
    ASSERT_EQ(0, rc) << out;
    EXPECT_LT(ms_since(t0), 10000);
    json_t *doc = parse(out);
    EXPECT_TRUE(json_is_array(json_object_get(doc, "nodes")));
    json_decref(doc);
}
