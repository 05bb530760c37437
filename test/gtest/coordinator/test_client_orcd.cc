/*
 * liborcclient against the real orcd (started as a child on a free loopback
 * port): every call's success and error mapping, leases and keep-alive,
 * blocking queries, mailbox delivery across reconnects, auth isolation,
 * concurrency, and the orc_hello example pairing two UCP processes by name.
 */
#include "test_client_orcd.h"

#include <atomic>
#include <functional>
#include <map>
#include <mutex>
#include <set>

using namespace orc_test;

namespace
{

/* Short TTLs for lease tests, a small mailbox for the 429 test, auth on */
const char *ORCD_CONFIG = "ttl:\n"
                          "  min: 1\n"
                          "  default: 10\n"
                          "limits:\n"
                          "  mailbox_depth: 600\n"
                          "auth:\n"
                          "  enabled: true\n"
                          "  tokens:\n"
                          "    jobA: token-of-job-a-123\n"
                          "    jobB: token-of-job-b-456\n";

const char *TOKEN_A = "token-of-job-a-123";
const char *TOKEN_B = "token-of-job-b-456";

class client_orcd : public ::testing::TestWithParam<std::string>
{
  protected:
    void SetUp() override
    {
        std::string why;
        ASSERT_TRUE(store_param_setup(GetParam(), &why)) << why;
        ASSERT_TRUE(m_orcd.start(ORCD_CONFIG)) << m_orcd.error();
        m_client = m_orcd.client("jobA", TOKEN_A);
        ASSERT_NE(nullptr, m_client);
    }

    void TearDown() override
    {
        orcd_store_yaml().clear();
        orc_client_destroy(m_client);
    }

    bool node_listed(orc_client_t *client, uint64_t id, uint64_t *index_p)
    {
        orc_node_info_t *nodes;
        size_t count;
        EXPECT_EQ(ORC_CL_OK,
                  orc_client_nodes_list(client, 0, 0, &nodes, &count, index_p));
        bool found = false;
        for (size_t i = 0; i < count; ++i) {
            found |= (nodes[i].id == id);
        }
        orc_client_nodes_free(nodes, count);
        return found;
    }

    /* block on the membership until `id` is gone (true) or timeout_ms */
    bool wait_node_gone(orc_client_t *client, uint64_t id, int timeout_ms)
    {
        auto t0 = steady::now();
        uint64_t index;
        bool present = node_listed(client, id, &index);
        while (present && (ms_since(t0) < timeout_ms)) {
            orc_node_info_t *nodes;
            size_t count;
            int left = timeout_ms - (int)ms_since(t0);
            if (orc_client_nodes_list(client, index, (left > 0) ? left : 1,
                                      &nodes, &count, &index) != ORC_CL_OK) {
                return false;
            }
            present = false;
            for (size_t i = 0; i < count; ++i) {
                present |= (nodes[i].id == id);
            }
            orc_client_nodes_free(nodes, count);
        }
        return !present;
    }

    orcd_child m_orcd;
    orc_client_t *m_client = NULL;
};

} // namespace

ORC_TEST_STORES(client_orcd);

TEST_P(client_orcd, health)
{
    EXPECT_EQ(ORC_CL_OK, orc_client_health(m_client));
}

TEST_P(client_orcd, register_list_get_deregister)
{
    uint64_t id1, id2, index;
    ASSERT_EQ(ORC_CL_OK, orc_client_register(m_client, "host-1", 111,
                                             "{\"rank\":\"0\"}", 30, &id1));
    ASSERT_EQ(ORC_CL_OK,
              orc_client_register(m_client, "host-2", 222, NULL, 0, &id2));
    EXPECT_NE(id1, id2);

    orc_node_info_t *nodes;
    size_t count;
    ASSERT_EQ(ORC_CL_OK,
              orc_client_nodes_list(m_client, 0, 0, &nodes, &count, &index));
    ASSERT_EQ(2u, count);
    EXPECT_GT(index, 0u);
    std::map<uint64_t, std::string> hosts;
    for (size_t i = 0; i < count; ++i) {
        hosts[nodes[i].id] = nodes[i].host;
        EXPECT_EQ(nullptr, nodes[i].endpoint_json);
    }
    orc_client_nodes_free(nodes, count);
    EXPECT_EQ("host-1", hosts[id1]);
    EXPECT_EQ("host-2", hosts[id2]);

    orc_node_info_t *node;
    ASSERT_EQ(ORC_CL_OK, orc_client_node_get(m_client, id1, &node));
    EXPECT_EQ(id1, node->id);
    EXPECT_STREQ("host-1", node->host);
    EXPECT_EQ(111, node->pid);
    EXPECT_STREQ("{\"rank\":\"0\"}", node->labels_json);
    orc_client_nodes_free(node, 1);

    ASSERT_EQ(ORC_CL_OK, orc_client_deregister(m_client, id1));
    EXPECT_EQ(ORC_CL_ERR_NOT_FOUND, orc_client_node_get(m_client, id1, &node));
    EXPECT_FALSE(node_listed(m_client, id1, &index));
    EXPECT_TRUE(node_listed(m_client, id2, &index));
    /* a second deregister: the node is unknown now */
    EXPECT_EQ(ORC_CL_ERR_NOT_FOUND, orc_client_deregister(m_client, id1));
    EXPECT_EQ(ORC_CL_ERR_NOT_FOUND,
              orc_client_node_get(m_client, 999999, &node));
}

TEST_P(client_orcd, endpoint_put_get_and_errors)
{
    uint64_t id;
    char *json = NULL;
    ASSERT_EQ(ORC_CL_OK, orc_client_register(m_client, "h", 1, NULL, 0, &id));

    EXPECT_EQ(ORC_CL_ERR_NOT_FOUND,
              orc_client_endpoint_get(m_client, id, &json));
    ASSERT_EQ(ORC_CL_OK, orc_client_endpoint_put(m_client, id,
                                                 "{\"qpn\":7,\"gid\":\"g\"}"));
    ASSERT_EQ(ORC_CL_OK, orc_client_endpoint_get(m_client, id, &json));
    EXPECT_NE(nullptr, strstr(json, "\"qpn\":7"));
    free(json);

    /* replace */
    ASSERT_EQ(ORC_CL_OK, orc_client_endpoint_put(m_client, id, "{\"qpn\":8}"));
    ASSERT_EQ(ORC_CL_OK, orc_client_endpoint_get(m_client, id, &json));
    EXPECT_STREQ("{\"qpn\":8}", json);
    free(json);

    /* listed with the node */
    orc_node_info_t *node;
    ASSERT_EQ(ORC_CL_OK, orc_client_node_get(m_client, id, &node));
    EXPECT_STREQ("{\"qpn\":8}", node->endpoint_json);
    orc_client_nodes_free(node, 1);

    /* unknown node; record over the 4 KiB endpoint limit */
    EXPECT_EQ(ORC_CL_ERR_NOT_FOUND,
              orc_client_endpoint_put(m_client, 987654, "{\"a\":1}"));
    EXPECT_EQ(ORC_CL_ERR_NOT_FOUND,
              orc_client_endpoint_get(m_client, 987654, &json));
    std::string big = "{\"pad\":\"" + std::string(5000, 'x') + "\"}";
    EXPECT_EQ(ORC_CL_ERR_TOO_LARGE,
              orc_client_endpoint_put(m_client, id, big.c_str()));
    /* and over the 64 KiB body limit */
    std::string huge = "{\"pad\":\"" + std::string(70000, 'x') + "\"}";
    EXPECT_EQ(ORC_CL_ERR_TOO_LARGE,
              orc_client_endpoint_put(m_client, id, huge.c_str()));
}

TEST_P(client_orcd, keepalive_keeps_node_past_ttl_and_deregister_removes)
{
    uint64_t id, index;
    /* TTL 3 s: keep-alives every second, each given a second. With 2 s
     * (every 667 ms, each given 667 ms) two slow answers in a row at load
     * 20 let the node expire after 3.4 s. Without renewal it is gone after
     * 3 s, well inside the 6.75 s watched. */
    const int ttl_s = 3, watch_ms = ttl_s * 2250;
    ASSERT_EQ(ORC_CL_OK,
              orc_client_register(m_client, "h", 1, NULL, ttl_s, &id));
    ASSERT_TRUE(node_listed(m_client, id, &index));

    /* for 2.25 TTLs, block on the membership: the node never leaves */
    auto t0 = steady::now();
    while (ms_since(t0) < watch_ms) {
        orc_node_info_t *nodes;
        size_t count;
        int left = watch_ms - (int)ms_since(t0);
        ASSERT_EQ(ORC_CL_OK,
                  orc_client_nodes_list(m_client, index, (left > 0) ? left : 1,
                                        &nodes, &count, &index));
        bool present = false;
        for (size_t i = 0; i < count; ++i) {
            present |= (nodes[i].id == id);
        }
        orc_client_nodes_free(nodes, count);
        ASSERT_TRUE(present) << "after " << ms_since(t0) << " ms";
    }
    EXPECT_EQ(0, orc_client_node_lost(m_client, id));

    ASSERT_EQ(ORC_CL_OK, orc_client_deregister(m_client, id));
    EXPECT_FALSE(node_listed(m_client, id, &index));
    orc_cl_status_t ka = orc_client_keepalive(m_client, id);
    EXPECT_TRUE((ka == ORC_CL_ERR_NOT_FOUND) || (ka == ORC_CL_ERR_GONE))
        << orc_cl_status_str(ka);
}

TEST_P(client_orcd, node_deleted_elsewhere_is_reported_lost)
{
    uint64_t id;
    ASSERT_EQ(ORC_CL_OK, orc_client_register(m_client, "h", 1, NULL, 1, &id));

    orc_client_t *other = m_orcd.client("jobA", TOKEN_A);
    ASSERT_NE(nullptr, other);
    ASSERT_EQ(ORC_CL_OK, orc_client_deregister(other, id));
    orc_client_destroy(other);

    auto t0 = steady::now();
    while (!orc_client_node_lost(m_client, id) && (ms_since(t0) < 3000)) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    EXPECT_EQ(1, orc_client_node_lost(m_client, id));
}

TEST_P(client_orcd, stalled_keepalive_node_expires_and_is_reported_lost)
{
    uint64_t id;
    ASSERT_EQ(ORC_CL_OK, orc_client_register(m_client, "h", 1, NULL, 1, &id));

    /* orcd stops answering for more than the TTL: keep-alives time out */
    m_orcd.pause();
    auto t0 = steady::now();
    while (!orc_client_node_lost(m_client, id) && (ms_since(t0) < 4000)) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    int64_t lost_after = ms_since(t0);
    m_orcd.resume();

    EXPECT_EQ(1, orc_client_node_lost(m_client, id));
    EXPECT_GE(lost_after, 500);
    /* the keep-alive thread gave up, so orcd lets the lease expire */
    EXPECT_TRUE(wait_node_gone(m_client, id, 5000));
    EXPECT_EQ(ORC_CL_ERR_GONE, orc_client_keepalive(m_client, id));
}

TEST_P(client_orcd, killed_process_node_expires)
{
    /* orcctl register keeps a node alive in the foreground; SIGKILL it */
    child reg;
    ASSERT_TRUE(reg.start({builddir() + "/orcctl", "--url", m_orcd.url(),
                           "--job", "jobA", "--token", TOKEN_A, "--json",
                           "register", "doomed-host", "--ttl", "1"}));
    std::string line;
    ASSERT_TRUE(reg.read_line(&line, 10000));
    uint64_t id = strtoull(line.c_str() + line.find(':') + 1, NULL, 10);
    ASSERT_GT(id, 0u) << line;

    uint64_t index;
    ASSERT_TRUE(node_listed(m_client, id, &index));
    reg.kill_wait();

    auto t0 = steady::now();
    EXPECT_TRUE(wait_node_gone(m_client, id, 6000));
    EXPECT_GE(ms_since(t0), 300); /* not before the lease ran out */
    EXPECT_EQ(ORC_CL_ERR_GONE, orc_client_keepalive(m_client, id));
    char *json;
    orc_cl_status_t st = orc_client_endpoint_get(m_client, id, &json);
    EXPECT_TRUE((st == ORC_CL_ERR_NOT_FOUND) || (st == ORC_CL_ERR_GONE));
}

TEST_P(client_orcd, nodes_list_blocks_until_change_or_timeout)
{
    uint64_t index, id;
    orc_node_info_t *nodes;
    size_t count;
    ASSERT_EQ(ORC_CL_OK,
              orc_client_nodes_list(m_client, 0, 0, &nodes, &count, &index));
    orc_client_nodes_free(nodes, count);

    /* nothing changes: returns at the wait with the same index */
    auto t0 = steady::now();
    uint64_t index2;
    ASSERT_EQ(ORC_CL_OK, orc_client_nodes_list(m_client, index, 400, &nodes,
                                               &count, &index2));
    orc_client_nodes_free(nodes, count);
    EXPECT_GE(ms_since(t0), 350);
    EXPECT_LT(ms_since(t0), 3000);
    EXPECT_EQ(index, index2);

    /* a registration wakes the waiter long before its 10 s wait */
    std::atomic<int> woke{0};
    uint64_t seen_index = 0;
    size_t seen_count   = 0;
    std::thread waiter([&] {
        orc_client_t *c = m_orcd.client("jobA", TOKEN_A);
        orc_node_info_t *n;
        size_t k;
        if (orc_client_nodes_list(c, index, 10000, &n, &k, &seen_index) ==
            ORC_CL_OK) {
            seen_count = k;
            orc_client_nodes_free(n, k);
            woke = 1;
        }
        orc_client_destroy(c);
    });
    t0 = steady::now();
    ASSERT_EQ(ORC_CL_OK, orc_client_register(m_client, "h", 1, NULL, 0, &id));
    waiter.join();
    EXPECT_EQ(1, woke.load());
    EXPECT_LT(ms_since(t0), 5000);
    EXPECT_GT(seen_index, index);
    EXPECT_EQ(1u, seen_count);
}

TEST_P(client_orcd, kv_put_get_delete_and_wait)
{
    const unsigned char value[] = {0, 'o', 'r', 'c', 0xff, '\n'};
    void *got;
    size_t length;

    EXPECT_EQ(ORC_CL_ERR_NOT_FOUND,
              orc_client_kv_get(m_client, "app/rank0", 0, &got, &length));
    ASSERT_EQ(ORC_CL_OK,
              orc_client_kv_put(m_client, "app/rank0", value, sizeof(value)));
    ASSERT_EQ(ORC_CL_OK,
              orc_client_kv_get(m_client, "app/rank0", 0, &got, &length));
    ASSERT_EQ(sizeof(value), length);
    EXPECT_EQ(0, memcmp(value, got, length));
    free(got);

    /* an empty value is a value */
    ASSERT_EQ(ORC_CL_OK, orc_client_kv_put(m_client, "empty", NULL, 0));
    ASSERT_EQ(ORC_CL_OK,
              orc_client_kv_get(m_client, "empty", 0, &got, &length));
    EXPECT_EQ(0u, length);
    free(got);

    ASSERT_EQ(ORC_CL_OK, orc_client_kv_delete(m_client, "app/rank0"));
    EXPECT_EQ(ORC_CL_ERR_NOT_FOUND,
              orc_client_kv_get(m_client, "app/rank0", 0, &got, &length));
    EXPECT_EQ(ORC_CL_ERR_NOT_FOUND,
              orc_client_kv_delete(m_client, "app/rank0"));

    /* the wait expires: TIMEOUT, after about the wait */
    auto t0 = steady::now();
    EXPECT_EQ(ORC_CL_ERR_TIMEOUT,
              orc_client_kv_get(m_client, "late", 400, &got, &length));
    EXPECT_GE(ms_since(t0), 350);
    EXPECT_LT(ms_since(t0), 3000);

    /* a put wakes a waiter long before its 10 s wait */
    std::string seen;
    orc_cl_status_t wstatus = ORC_CL_ERR_PROTOCOL;
    std::thread waiter([&] {
        orc_client_t *c = m_orcd.client("jobA", TOKEN_A);
        void *v;
        size_t l;
        wstatus = orc_client_kv_get(c, "late", 10000, &v, &l);
        if (wstatus == ORC_CL_OK) {
            seen.assign((char *)v, l);
            free(v);
        }
        orc_client_destroy(c);
    });
    t0 = steady::now();
    ASSERT_EQ(ORC_CL_OK, orc_client_kv_put(m_client, "late", "here", 4));
    waiter.join();
    EXPECT_EQ(ORC_CL_OK, wstatus);
    EXPECT_EQ("here", seen);
    EXPECT_LT(ms_since(t0), 5000);
}

TEST_P(client_orcd, kv_attached_to_node_goes_with_it)
{
    uint64_t id;
    void *got;
    size_t length;
    ASSERT_EQ(ORC_CL_OK, orc_client_register(m_client, "h", 1, NULL, 0, &id));
    ASSERT_EQ(ORC_CL_OK, orc_client_kv_put_node(m_client, "owned", "x", 1, id));
    ASSERT_EQ(ORC_CL_OK,
              orc_client_kv_get(m_client, "owned", 0, &got, &length));
    free(got);
    ASSERT_EQ(ORC_CL_OK, orc_client_deregister(m_client, id));
    EXPECT_EQ(ORC_CL_ERR_NOT_FOUND,
              orc_client_kv_get(m_client, "owned", 0, &got, &length));
}

TEST_P(client_orcd, mailbox_cursor_retry_and_ack)
{
    uint64_t a, b, seq;
    ASSERT_EQ(ORC_CL_OK, orc_client_register(m_client, "a", 1, NULL, 0, &a));
    ASSERT_EQ(ORC_CL_OK, orc_client_register(m_client, "b", 2, NULL, 0, &b));

    for (int i = 1; i <= 5; ++i) {
        std::string body = "{\"n\":" + std::to_string(i) + "}";
        ASSERT_EQ(ORC_CL_OK,
                  orc_client_mbox_send(m_client, b, a, body.c_str(), &seq));
        EXPECT_EQ((uint64_t)i, seq);
    }

    orc_mbox_msg_t *msgs;
    size_t count;
    ASSERT_EQ(ORC_CL_OK,
              orc_client_mbox_recv(m_client, b, 0, 0, &msgs, &count));
    ASSERT_EQ(5u, count);
    EXPECT_EQ(1u, msgs[0].seq);
    EXPECT_EQ(a, msgs[0].from);
    EXPECT_STREQ("{\"n\":1}", msgs[0].body_json);
    orc_client_mbox_free(msgs, count);

    /* a retry with the same cursor (the reply was "lost") gets them again */
    ASSERT_EQ(ORC_CL_OK,
              orc_client_mbox_recv(m_client, b, 0, 0, &msgs, &count));
    EXPECT_EQ(5u, count);
    orc_client_mbox_free(msgs, count);

    /* cursor 3 acknowledges 1..3: even a reader from 0 now sees 4, 5 */
    ASSERT_EQ(ORC_CL_OK,
              orc_client_mbox_recv(m_client, b, 3, 0, &msgs, &count));
    ASSERT_EQ(2u, count);
    EXPECT_EQ(4u, msgs[0].seq);
    orc_client_mbox_free(msgs, count);
    ASSERT_EQ(ORC_CL_OK,
              orc_client_mbox_recv(m_client, b, 0, 0, &msgs, &count));
    ASSERT_EQ(2u, count);
    EXPECT_EQ(4u, msgs[0].seq);
    EXPECT_EQ(5u, msgs[1].seq);
    orc_client_mbox_free(msgs, count);

    /* empty long-poll returns after its wait */
    auto t0 = steady::now();
    ASSERT_EQ(ORC_CL_OK,
              orc_client_mbox_recv(m_client, b, 5, 300, &msgs, &count));
    EXPECT_EQ(0u, count);
    EXPECT_GE(ms_since(t0), 250);
    orc_client_mbox_free(msgs, count);

    /* unknown destination */
    EXPECT_EQ(ORC_CL_ERR_NOT_FOUND,
              orc_client_mbox_send(m_client, 424242, a, "{}", &seq));
    EXPECT_EQ(ORC_CL_ERR_NOT_FOUND,
              orc_client_mbox_recv(m_client, 424242, 0, 0, &msgs, &count));
    /* over the 4 KiB message limit */
    std::string big = "{\"pad\":\"" + std::string(5000, 'x') + "\"}";
    EXPECT_EQ(ORC_CL_ERR_TOO_LARGE,
              orc_client_mbox_send(m_client, b, a, big.c_str(), &seq));
}

/* The seqs a mailbox holds, read through a client that registered no
 * node (so its reads acknowledge nothing) */
static std::vector<uint64_t> held_seqs(orc_client_t *peek, uint64_t node)
{
    std::vector<uint64_t> seqs;
    orc_mbox_msg_t *msgs;
    size_t count;
    EXPECT_EQ(ORC_CL_OK, orc_client_mbox_recv(peek, node, 0, 0, &msgs, &count))
        << orc_client_last_error();
    for (size_t i = 0; i < count; ++i) {
        seqs.push_back(msgs[i].seq);
    }
    orc_client_mbox_free(msgs, count);
    return seqs;
}

/*
 * A send from a node registered through the client acknowledges what recv
 * returned of that node's mailbox (orcd deletes it in the post's own
 * transaction), never a message recv did not return; another node's send
 * acknowledges nothing of it.
 */
TEST_P(client_orcd, a_send_acknowledges_what_recv_returned)
{
    uint64_t a, b, seq;
    ASSERT_EQ(ORC_CL_OK, orc_client_register(m_client, "a", 1, NULL, 0, &a));
    ASSERT_EQ(ORC_CL_OK, orc_client_register(m_client, "b", 2, NULL, 0, &b));
    orc_client_t *peek = m_orcd.client("jobA", TOKEN_A);
    ASSERT_NE(nullptr, peek);

    for (int i = 0; i < 3; ++i) {
        ASSERT_EQ(ORC_CL_OK, orc_client_mbox_send(m_client, b, a, "{}", &seq));
    }
    orc_mbox_msg_t *msgs;
    size_t count;
    ASSERT_EQ(ORC_CL_OK,
              orc_client_mbox_recv(m_client, b, 0, 0, &msgs, &count));
    ASSERT_EQ(3u, count);
    orc_client_mbox_free(msgs, count);
    /* a fourth arrives after the recv: unread */
    ASSERT_EQ(ORC_CL_OK, orc_client_mbox_send(m_client, b, a, "{}", &seq));
    EXPECT_EQ(held_seqs(peek, b), (std::vector<uint64_t>{1, 2, 3, 4}));

    /* a's send acknowledges nothing of b's; b's acknowledges 1..3 */
    ASSERT_EQ(ORC_CL_OK, orc_client_mbox_send(m_client, b, a, "{}", &seq));
    EXPECT_EQ(held_seqs(peek, b), (std::vector<uint64_t>{1, 2, 3, 4, 5}));
    ASSERT_EQ(ORC_CL_OK, orc_client_mbox_send(m_client, a, b, "{}", &seq));
    EXPECT_EQ(held_seqs(peek, b), (std::vector<uint64_t>{4, 5}));

    /* the next recv from the old cursor gets what is left, once */
    ASSERT_EQ(ORC_CL_OK,
              orc_client_mbox_recv(m_client, b, 3, 0, &msgs, &count));
    ASSERT_EQ(2u, count);
    EXPECT_EQ(4u, msgs[0].seq);
    EXPECT_EQ(5u, msgs[1].seq);
    orc_client_mbox_free(msgs, count);
    ASSERT_EQ(ORC_CL_OK, orc_client_mbox_send(m_client, a, b, "{}", &seq));
    EXPECT_EQ(held_seqs(peek, b), (std::vector<uint64_t>{}));
    /* a send without from, or from a node of another client: no ack */
    ASSERT_EQ(ORC_CL_OK, orc_client_mbox_send(m_client, b, 0, "{}", &seq));
    ASSERT_EQ(ORC_CL_OK, orc_client_mbox_recv(peek, b, 5, 0, &msgs, &count));
    EXPECT_EQ(1u, count);
    orc_client_mbox_free(msgs, count);
    ASSERT_EQ(ORC_CL_OK, orc_client_mbox_send(peek, a, b, "{}", &seq));
    EXPECT_EQ(held_seqs(peek, b), (std::vector<uint64_t>{6}));
    orc_client_destroy(peek);
}

TEST_P(client_orcd, mailbox_full_is_busy)
{
    uint64_t b, seq = 0;
    ASSERT_EQ(ORC_CL_OK, orc_client_register(m_client, "b", 2, NULL, 0, &b));
    orc_cl_status_t status = ORC_CL_OK;
    int sent               = 0;
    while ((status == ORC_CL_OK) && (sent < 1000)) {
        status = orc_client_mbox_send(m_client, b, 0, "{}", &seq);
        sent += (status == ORC_CL_OK);
    }
    EXPECT_EQ(ORC_CL_ERR_BUSY, status);
    EXPECT_EQ(600, sent); /* mailbox_depth in the test config */

    /* acknowledging frees room */
    orc_mbox_msg_t *msgs;
    size_t count;
    ASSERT_EQ(ORC_CL_OK,
              orc_client_mbox_recv(m_client, b, seq, 0, &msgs, &count));
    orc_client_mbox_free(msgs, count);
    EXPECT_EQ(ORC_CL_OK, orc_client_mbox_send(m_client, b, 0, "{}", &seq));
}

/*
 * A producer sends N messages while the consumer long-polls, dropping its
 * client (and so its connections) every few batches and re-reading some
 * batches as if a reply had been lost: every message arrives, in order,
 * exactly once past the cursor.
 */
TEST_P(client_orcd, mailbox_no_loss_across_reconnects)
{
    const int N = 400;
    uint64_t a, b;
    ASSERT_EQ(ORC_CL_OK, orc_client_register(m_client, "a", 1, NULL, 0, &a));
    ASSERT_EQ(ORC_CL_OK, orc_client_register(m_client, "b", 2, NULL, 0, &b));

    std::atomic<int> send_errors{0};
    std::thread producer([&] {
        orc_client_t *c = m_orcd.client("jobA", TOKEN_A);
        for (int i = 1; i <= N; ++i) {
            std::string body = "{\"n\":" + std::to_string(i) + "}";
            if (orc_client_mbox_send(c, b, a, body.c_str(), NULL) !=
                ORC_CL_OK) {
                ++send_errors;
            }
        }
        orc_client_destroy(c);
    });

    std::vector<int> received;
    uint64_t cursor = 0;
    int batches     = 0;
    orc_client_t *c = m_orcd.client("jobA", TOKEN_A);
    auto t0         = steady::now();
    while (((int)received.size() < N) && (ms_since(t0) < 30000)) {
        orc_mbox_msg_t *msgs;
        size_t count;
        ASSERT_EQ(ORC_CL_OK,
                  orc_client_mbox_recv(c, b, cursor, 2000, &msgs, &count));
        ++batches;
        if ((batches % 3) == 0) {
            /* pretend this reply was lost: retry with the same cursor */
            orc_client_mbox_free(msgs, count);
            continue;
        }
        for (size_t i = 0; i < count; ++i) {
            ASSERT_GT(msgs[i].seq, cursor);
            cursor = msgs[i].seq;
            received.push_back(atoi(strchr(msgs[i].body_json, ':') + 1));
        }
        orc_client_mbox_free(msgs, count);
        if ((batches % 4) == 0) {
            orc_client_destroy(c); /* reconnect */
            c = m_orcd.client("jobA", TOKEN_A);
        }
    }
    orc_client_destroy(c);
    producer.join();

    EXPECT_EQ(0, send_errors.load());
    ASSERT_EQ((size_t)N, received.size());
    for (int i = 0; i < N; ++i) {
        ASSERT_EQ(i + 1, received[i]);
    }
}

TEST_P(client_orcd, auth_isolation_between_jobs)
{
    uint64_t id;
    ASSERT_EQ(ORC_CL_OK, orc_client_kv_put(m_client, "secret", "A", 1));
    ASSERT_EQ(ORC_CL_OK, orc_client_register(m_client, "h", 1, NULL, 0, &id));

    orc_client_t *b = m_orcd.client("jobB", TOKEN_B);
    void *got;
    size_t length;
    /* job B has its own space */
    EXPECT_EQ(ORC_CL_ERR_NOT_FOUND,
              orc_client_kv_get(b, "secret", 0, &got, &length));
    orc_node_info_t *nodes;
    size_t count;
    ASSERT_EQ(ORC_CL_OK, orc_client_nodes_list(b, 0, 0, &nodes, &count, NULL));
    EXPECT_EQ(0u, count);
    orc_client_nodes_free(nodes, count);
    orc_client_destroy(b);

    /* B's token on job A: forbidden; no token or a wrong one: 401 */
    orc_client_t *cross = m_orcd.client("jobA", TOKEN_B);
    EXPECT_EQ(ORC_CL_ERR_FORBIDDEN,
              orc_client_kv_get(cross, "secret", 0, &got, &length));
    EXPECT_EQ(ORC_CL_ERR_FORBIDDEN,
              orc_client_register(cross, "h", 1, NULL, 0, &id));
    EXPECT_EQ(std::string::npos,
              std::string(orc_client_last_error()).find(TOKEN_B));
    orc_client_destroy(cross);

    orc_client_t *anon = m_orcd.client("jobA");
    EXPECT_EQ(ORC_CL_ERR_UNAUTHORIZED,
              orc_client_kv_get(anon, "secret", 0, &got, &length));
    EXPECT_EQ(ORC_CL_OK, orc_client_health(anon)); /* /healthz: no auth */
    orc_client_destroy(anon);

    orc_client_t *wrong = m_orcd.client("jobA", "not-a-valid-token-999");
    EXPECT_EQ(ORC_CL_ERR_UNAUTHORIZED,
              orc_client_kv_put(wrong, "secret", "B", 1));
    EXPECT_EQ(std::string::npos, std::string(orc_client_last_error())
                                     .find("not-a-valid-token-999"));
    orc_client_destroy(wrong);

    ASSERT_EQ(ORC_CL_OK,
              orc_client_kv_get(m_client, "secret", 0, &got, &length));
    EXPECT_EQ(0, memcmp("A", got, 1));
    free(got);
}

TEST_P(client_orcd, concurrent_threads_lose_nothing)
{
    const int THREADS = 12, PER = 60;
    uint64_t sink;
    ASSERT_EQ(ORC_CL_OK,
              orc_client_register(m_client, "sink", 1, NULL, 0, &sink));

    /* one shared client used by every thread at once */
    std::atomic<int> errors{0};
    std::mutex why_lock;
    std::string why; /* the first failure */
    std::vector<std::thread> threads;
    for (int t = 0; t < THREADS; ++t) {
        threads.emplace_back([&, t] {
            for (int i = 0; i < PER; ++i) {
                std::string key =
                    "t" + std::to_string(t) + "/k" + std::to_string(i);
                std::string body = "{\"t\":" + std::to_string(t) +
                                   ",\"i\":" + std::to_string(i) + "}";
                if ((orc_client_kv_put(m_client, key.c_str(), key.data(),
                                       key.size()) != ORC_CL_OK) ||
                    (orc_client_mbox_send(m_client, sink, 0, body.c_str(),
                                          NULL) != ORC_CL_OK)) {
                    std::lock_guard<std::mutex> g(why_lock);
                    if (errors++ == 0) {
                        why = orc_client_last_error();
                    }
                }
            }
        });
    }

    std::set<std::string> bodies;
    uint64_t cursor = 0;
    auto t0         = steady::now();
    while ((bodies.size() < (size_t)(THREADS * PER)) &&
           (ms_since(t0) < 30000)) {
        orc_mbox_msg_t *msgs;
        size_t count;
        ASSERT_EQ(ORC_CL_OK, orc_client_mbox_recv(m_client, sink, cursor, 2000,
                                                  &msgs, &count));
        for (size_t i = 0; i < count; ++i) {
            EXPECT_TRUE(bodies.insert(msgs[i].body_json).second)
                << "duplicate " << msgs[i].body_json;
            cursor = msgs[i].seq;
        }
        orc_client_mbox_free(msgs, count);
    }
    for (auto &th : threads) {
        th.join();
    }

    EXPECT_EQ(0, errors.load()) << "first: " << why;
    EXPECT_EQ((size_t)(THREADS * PER), bodies.size());
    for (int t = 0; t < THREADS; ++t) {
        for (int i = 0; i < PER; i += 7) {
            std::string key =
                "t" + std::to_string(t) + "/k" + std::to_string(i);
            void *got;
            size_t length;
            ASSERT_EQ(ORC_CL_OK, orc_client_kv_get(m_client, key.c_str(), 0,
                                                   &got, &length));
            EXPECT_EQ(key, std::string((char *)got, length));
            free(got);
        }
    }
}

TEST_P(client_orcd, unreachable_after_orcd_exits)
{
    uint64_t id;
    ASSERT_EQ(ORC_CL_OK, orc_client_register(m_client, "h", 1, NULL, 0, &id));
    EXPECT_EQ(0, m_orcd.terminate()); /* graceful: exit 0 */

    orc_client_t *c = m_orcd.client("jobA", TOKEN_A, 1000);
    auto t0         = steady::now();
    void *got;
    size_t length;
    EXPECT_EQ(ORC_CL_ERR_UNREACHABLE,
              orc_client_kv_get(c, "k", 5000, &got, &length));
    EXPECT_EQ(ORC_CL_ERR_UNREACHABLE, orc_client_health(c));
    EXPECT_LT(ms_since(t0), 1000);
    orc_client_destroy(c);
    /* m_client's destroy tries to deregister: bounded by its timeout */
}

/* ------------------------------------------------------------------ UCP */

TEST(client_ucp_hello, two_processes_pair_by_name)
{
    orcd_child orcd;
    ASSERT_TRUE(orcd.start()) << orcd.error();

    std::string hello            = builddir() + "/contrib/examples/orc_hello";
    std::vector<std::string> env = {
        "ORC_COORDINATOR_URL=" + orcd.url(),
        "ORC_JOB=hello-test",
        "UCX_TLS=tcp,self",
        "UCX_NET_DEVICES=lo",
        "UCX_WARN_UNUSED_ENV_VARS=n",
    };

    child alice, bob;
    ASSERT_TRUE(alice.start({hello, "--name", "alice", "--peer", "bob",
                             "--timeout", "30"},
                            env, true));
    ASSERT_TRUE(bob.start({hello, "--name", "bob", "--peer", "alice",
                           "--timeout", "30"},
                          env, true));

    pid_t pid_a = alice.pid(), pid_b = bob.pid();
    std::string out_a, out_b;
    int rc_b = bob.wait_exit(40000, &out_b);
    int rc_a = alice.wait_exit(40000, &out_a);
    EXPECT_EQ(0, rc_a) << out_a;
    EXPECT_EQ(0, rc_b) << out_b;
    EXPECT_NE(std::string::npos,
              out_a.find("orc_hello alice: received 'hello from bob (pid " +
                         std::to_string(pid_b) + ")'"))
        << out_a;
    EXPECT_NE(std::string::npos,
              out_b.find("orc_hello bob: received 'hello from alice (pid " +
                         std::to_string(pid_a) + ")'"))
        << out_b;

    /* both names were withdrawn when they finished */
    orc_client_t *c = orcd.client("hello-test");
    void *got;
    size_t length;
    EXPECT_EQ(ORC_CL_ERR_NOT_FOUND,
              orc_client_kv_get(c, "ucp/alice", 0, &got, &length));
    EXPECT_EQ(ORC_CL_ERR_NOT_FOUND,
              orc_client_kv_get(c, "ucp/bob", 0, &got, &length));
    orc_client_destroy(c);
}

TEST(client_ucp_hello, peer_never_appears_times_out)
{
    orcd_child orcd;
    ASSERT_TRUE(orcd.start()) << orcd.error();

    std::string out;
    auto t0 = steady::now();
    int rc  = run({builddir() + "/contrib/examples/orc_hello", "--name",
                   "lonely", "--peer", "nobody", "--timeout", "1"},
                  {"ORC_COORDINATOR_URL=" + orcd.url(), "ORC_JOB=hello-test",
                   "UCX_TLS=tcp,self", "UCX_NET_DEVICES=lo"},
                  &out, 20000, true);
    EXPECT_EQ(1, rc) << out;
    EXPECT_NE(std::string::npos, out.find("timed out")) << out;
    EXPECT_LT(ms_since(t0), 15000);
}

/* The same pairing with UCX_TLS=orc alone: the orc transport (loaded the
 * way contrib/orc-run does: preloaded into UCX 1.13, from UCX_PLUGIN_PATH by
 * UCX 1.22) registers and pairs through the same orcd, and the application
 * still swaps no address itself. */
TEST(client_ucp_hello, two_processes_pair_by_name_over_orc)
{
    std::string module = builddir() + "/.libs/libuct_orc.so";
    if (access(module.c_str(), R_OK) != 0) {
        GTEST_SKIP() << module << " not built";
    }

    orcd_child orcd;
    ASSERT_TRUE(orcd.start()) << orcd.error();

    std::string hello            = builddir() + "/contrib/examples/orc_hello";
    std::vector<std::string> env = {
        "ORC_COORDINATOR_URL=" + orcd.url(),
        "ORC_JOB=hello-orc",
        "UCX_ORC_COORDINATOR=" + orcd.url(),
        "UCX_ORC_JOB=hello-orc",
        "UCX_TLS=orc",
        "UCX_WARN_UNUSED_ENV_VARS=n",
    };
    /* a UCX that reads UCX_PLUGIN_PATH (set by the test harness there)
     * loads orc itself; an older one needs it preloaded */
    const char *plugin_path = getenv("UCX_PLUGIN_PATH");
    if ((plugin_path == NULL) || (plugin_path[0] == '\0')) {
        env.push_back("LD_PRELOAD=" + module);
    }
    /* sanitizer builds: the preloaded module comes before libasan */
    const char *asan = getenv("ASAN_OPTIONS");
    env.push_back(std::string("ASAN_OPTIONS=verify_asan_link_order=0") +
                  ((asan != NULL) ? std::string(":") + asan : ""));

    child alice, bob;
    ASSERT_TRUE(alice.start({hello, "--name", "alice", "--peer", "bob",
                             "--timeout", "30"},
                            env, true));
    ASSERT_TRUE(bob.start({hello, "--name", "bob", "--peer", "alice",
                           "--timeout", "30"},
                          env, true));
    pid_t pid_a = alice.pid(), pid_b = bob.pid();
    std::string out_a, out_b;
    int rc_b = bob.wait_exit(40000, &out_b);
    int rc_a = alice.wait_exit(40000, &out_a);
    EXPECT_EQ(0, rc_a) << out_a;
    EXPECT_EQ(0, rc_b) << out_b;
    EXPECT_NE(std::string::npos, out_a.find("received 'hello from bob (pid " +
                                            std::to_string(pid_b) + ")'"))
        << out_a;
    EXPECT_NE(std::string::npos, out_b.find("received 'hello from alice (pid " +
                                            std::to_string(pid_a) + ")'"))
        << out_b;

    /* the transport's interfaces were members of the job while they ran
     * and left it when the processes closed them */
    orc_client_t *c = orcd.client("hello-orc");
    orc_node_info_t *nodes;
    size_t count;
    uint64_t index;
    ASSERT_EQ(ORC_CL_OK,
              orc_client_nodes_list(c, 0, 0, &nodes, &count, &index));
    EXPECT_EQ(0u, count);
    EXPECT_GE(index, 4u); /* >= 2 registrations and 2 removals */
    orc_client_nodes_free(nodes, count);
    orc_client_destroy(c);
}

/* orcd caps every wait at limits.max_wait; the library waits the caller's
 * whole wait anyway, by asking again for the rest */
TEST(client_orcd_capped, long_waits_span_max_wait)
{
    orcd_child orcd;
    ASSERT_TRUE(orcd.start("limits:\n  max_wait: 0.7\n")) << orcd.error();
    orc_client_t *c = orcd.client("capped");
    ASSERT_NE(nullptr, c);

    void *got;
    size_t length;
    auto t0 = steady::now();
    EXPECT_EQ(ORC_CL_ERR_TIMEOUT,
              orc_client_kv_get(c, "k", 1600, &got, &length));
    EXPECT_GE(ms_since(t0), 1500);
    EXPECT_LT(ms_since(t0), 5000);

    uint64_t id, index;
    ASSERT_EQ(ORC_CL_OK, orc_client_register(c, "h", 1, NULL, 0, &id));
    orc_mbox_msg_t *msgs;
    size_t count;
    t0 = steady::now();
    ASSERT_EQ(ORC_CL_OK, orc_client_mbox_recv(c, id, 0, 1600, &msgs, &count));
    EXPECT_EQ(0u, count);
    orc_client_mbox_free(msgs, count);
    EXPECT_GE(ms_since(t0), 1500);

    orc_node_info_t *nodes;
    ASSERT_EQ(ORC_CL_OK,
              orc_client_nodes_list(c, 0, 0, &nodes, &count, &index));
    orc_client_nodes_free(nodes, count);
    t0 = steady::now();
    uint64_t index2;
    ASSERT_EQ(ORC_CL_OK,
              orc_client_nodes_list(c, index, 1600, &nodes, &count, &index2));
    orc_client_nodes_free(nodes, count);
    EXPECT_GE(ms_since(t0), 1500);
    EXPECT_EQ(index, index2);

    /* a put after the first capped wait still wakes the waiter */
    orc_cl_status_t wstatus = ORC_CL_ERR_PROTOCOL;
    std::thread waiter([&] {
        orc_client_t *w = orcd.client("capped");
        void *v;
        size_t l;
        wstatus = orc_client_kv_get(w, "late", 5000, &v, &l);
        if (wstatus == ORC_CL_OK) {
            free(v);
        }
        orc_client_destroy(w);
    });
    /* no synchronisation needed: whenever the put lands within the 5 s,
     * the waiter must see it; the 1 s only makes a re-asked wait likely */
    std::this_thread::sleep_for(std::chrono::milliseconds(1000));
    ASSERT_EQ(ORC_CL_OK, orc_client_kv_put(c, "late", "x", 1));
    waiter.join();
    EXPECT_EQ(ORC_CL_OK, wstatus);
    orc_client_destroy(c);
}

/*
 * Failover between orcd replicas on one etcd: the client is given several
 * URLs, comma-separated.
 */
namespace
{

class client_failover : public ::testing::Test
{
  public:
    void SetUp() override
    {
        std::string why;
        ASSERT_TRUE(store_param_setup("etcd", &why)) << why;
        ASSERT_TRUE(m_a.start("ttl:\n  min: 1\n")) << m_a.error();
        ASSERT_TRUE(m_b.start("ttl:\n  min: 1\n")) << m_b.error();
    }
    void TearDown() override
    {
        orcd_store_yaml().clear();
    }

    static orc_client_t *client(const std::string &urls, int timeout_ms)
    {
        orc_client_params_t params = {};
        params.field_mask          = ORC_CLIENT_PARAM_FIELD_URL |
                            ORC_CLIENT_PARAM_FIELD_JOB |
                            ORC_CLIENT_PARAM_FIELD_TIMEOUT;
        params.url        = urls.c_str();
        params.job        = "jobF";
        params.timeout_ms = timeout_ms;
        orc_client_t *c   = NULL;
        EXPECT_EQ(ORC_CL_OK, orc_client_create(&params, &c))
            << orc_client_last_error();
        return c;
    }

    /* a URL nobody listens on */
    static std::string dead_url()
    {
        return "http://127.0.0.1:" + std::to_string(etcd_test::free_port());
    }

    orcd_child m_a, m_b;
};

} // namespace

TEST(client_urls, list_is_checked)
{
    const char *bad[] = {"http://a:1,", "http://a:1,,http://b:2",
                         "http://a:1,ftp://b:2", ",http://a:1"};
    for (const char *url : bad) {
        orc_client_params_t params = {};
        params.field_mask          = ORC_CLIENT_PARAM_FIELD_URL;
        params.url                 = url;
        orc_client_t *c            = NULL;
        EXPECT_EQ(ORC_CL_ERR_INVALID, orc_client_create(&params, &c)) << url;
        EXPECT_NE(std::string(orc_client_last_error()).find("http://"),
                  std::string::npos)
            << orc_client_last_error();
    }
}

TEST_F(client_failover, a_dead_replica_is_skipped)
{
    orc_client_t *c = client(dead_url() + "," + m_a.url(), 3000);
    ASSERT_NE(nullptr, c);
    uint64_t id, index;
    auto t0 = steady::now();
    ASSERT_EQ(ORC_CL_OK, orc_client_register(c, "h", 1, NULL, 30, &id))
        << orc_client_last_error();
    orc_node_info_t *nodes;
    size_t count;
    ASSERT_EQ(ORC_CL_OK,
              orc_client_nodes_list(c, 0, 0, &nodes, &count, &index));
    EXPECT_EQ(1u, count);
    orc_client_nodes_free(nodes, count);
    EXPECT_LT(ms_since(t0), 3000);
    orc_client_destroy(c);
}

TEST_F(client_failover, all_replicas_down_fails_within_the_budget)
{
    orc_client_t *c = client(dead_url() + "," + dead_url(), 1000);
    ASSERT_NE(nullptr, c);
    auto t0 = steady::now();
    uint64_t id;
    EXPECT_EQ(ORC_CL_ERR_UNREACHABLE,
              orc_client_register(c, "h", 1, NULL, 30, &id));
    void *got;
    size_t length;
    EXPECT_EQ(ORC_CL_ERR_UNREACHABLE,
              orc_client_kv_get(c, "k", 5000, &got, &length));
    EXPECT_LT(ms_since(t0), 3000);
    orc_client_destroy(c);
}

/* The replica a client uses is SIGKILLed: its long poll and its node's
 * keep-alives move to the other, new requests go there, nothing is lost;
 * the replica, back on its port, is used again once the other one dies */
TEST_F(client_failover, long_polls_and_keepalives_move_to_a_live_replica)
{
    orc_client_t *c = client(m_a.url() + "," + m_b.url(), 2000);
    ASSERT_NE(nullptr, c);
    uint64_t id, index;
    ASSERT_EQ(ORC_CL_OK, orc_client_register(c, "h", 1, NULL, 2, &id));
    ASSERT_EQ(ORC_CL_OK, orc_client_kv_put(c, "before", "1", 1));
    orc_node_info_t *nodes;
    size_t count;
    ASSERT_EQ(ORC_CL_OK,
              orc_client_nodes_list(c, 0, 0, &nodes, &count, &index));
    orc_client_nodes_free(nodes, count);

    /* a long poll waiting on A when A dies: answered through B */
    orc_cl_status_t polled = ORC_CL_ERR_INVALID;
    std::thread poller([&] {
        orc_node_info_t *n;
        size_t k;
        uint64_t i;
        polled = orc_client_nodes_list(c, index, 15000, &n, &k, &i);
        if (polled == ORC_CL_OK) {
            orc_client_nodes_free(n, k);
        }
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    std::string a_port = m_a.url().substr(m_a.url().rfind(':') + 1);
    m_a.kill_now();
    orc_client_t *other = client(m_b.url(), 2000);
    uint64_t id2;
    ASSERT_EQ(ORC_CL_OK, orc_client_register(other, "h2", 2, NULL, 30, &id2));
    poller.join();
    EXPECT_EQ(ORC_CL_OK, polled) << orc_client_last_error();

    /* keep-alives of the TTL-2 node go to B: alive after 3 TTLs */
    std::this_thread::sleep_for(std::chrono::milliseconds(6000));
    EXPECT_EQ(0, orc_client_node_lost(c, id));
    void *got;
    size_t length;
    ASSERT_EQ(ORC_CL_OK, orc_client_kv_get(c, "before", 0, &got, &length));
    free(got);
    ASSERT_EQ(ORC_CL_OK,
              orc_client_nodes_list(c, 0, 0, &nodes, &count, &index));
    bool found = false;
    for (size_t i = 0; i < count; ++i) {
        found |= (nodes[i].id == id);
    }
    orc_client_nodes_free(nodes, count);
    EXPECT_TRUE(found);

    /* A back on its port, B gone: the client uses A again */
    ASSERT_TRUE(
        m_a.start("ttl:\n  min: 1\n", {"--listen", "127.0.0.1:" + a_port}))
        << m_a.error();
    m_b.stop();
    ASSERT_EQ(ORC_CL_OK, orc_client_kv_put(c, "after", "2", 1))
        << orc_client_last_error();
    EXPECT_EQ(0, orc_client_node_lost(c, id));
    orc_client_destroy(other);
    orc_client_destroy(c);
}

/* 64 clients pair up (32 pairs: register, find the partner, exchange 16
 * messages each way through the mailboxes) while the replica they use is
 * SIGKILLed: every pairing completes through the other replica, no node is
 * registered twice, no message is lost or delivered twice */
static void pairing_storm(const std::string &urls,
                          const std::function<void()> &fault,
                          const std::string &check_url)
{
    const int pairs = 32, clients = 2 * pairs, rounds = 16;
    std::atomic<int> sent{0}, done{0};
    std::atomic<bool> counted{false};
    std::vector<std::string> errors(clients);
    std::vector<uint64_t> ids(clients, 0);

    auto run_client = [&](int k) {
        orc_client_t *c = client_failover::client(urls, 5000);
        int partner     = (k + pairs) % clients;
        std::string err;
        uint64_t id = 0, peer = 0, after = 0;
        std::vector<int> got;
        char key[32], val[32];
        void *v;
        size_t len;

        if ((c == NULL) ||
            (orc_client_register(c, "h", k, NULL, 30, &id) != ORC_CL_OK)) {
            errors[k] = std::string("register: ") + orc_client_last_error();
            goto out;
        }
        ids[k] = id;
        snprintf(key, sizeof(key), "peer-%d", k);
        snprintf(val, sizeof(val), "%llu", (unsigned long long)id);
        if (orc_client_kv_put(c, key, val, strlen(val)) != ORC_CL_OK) {
            errors[k] = std::string("kv_put: ") + orc_client_last_error();
            goto out;
        }
        snprintf(key, sizeof(key), "peer-%d", partner);
        if (orc_client_kv_get(c, key, 30000, &v, &len) != ORC_CL_OK) {
            errors[k] = std::string("kv_get: ") + orc_client_last_error();
            goto out;
        }
        peer = strtoull(std::string((char *)v, len).c_str(), NULL, 10);
        free(v);
        for (int r = 0; r < rounds; ++r) {
            char body[64];
            uint64_t seq;
            snprintf(body, sizeof(body), "{\"k\":%d,\"r\":%d}", k, r);
            if (orc_client_mbox_send(c, peer, id, body, &seq) != ORC_CL_OK) {
                errors[k] = std::string("send: ") + orc_client_last_error();
                goto out;
            }
            ++sent;
        }
        while ((int)got.size() < rounds) {
            orc_mbox_msg_t *msgs;
            size_t count;
            if (orc_client_mbox_recv(c, id, after, 20000, &msgs, &count) !=
                ORC_CL_OK) {
                errors[k] = std::string("recv: ") + orc_client_last_error();
                goto out;
            }
            if (count == 0) {
                errors[k] = "recv: nothing for 20 s";
                goto out;
            }
            for (size_t i = 0; i < count; ++i) {
                int pk = -1, r = -1;
                sscanf(msgs[i].body_json, "{\"k\":%d,\"r\":%d}", &pk, &r);
                if ((pk != partner) || (msgs[i].from != peer)) {
                    errors[k] = std::string("stranger: ") + msgs[i].body_json;
                }
                got.push_back(r);
                after = msgs[i].seq;
            }
            orc_client_mbox_free(msgs, count);
        }
        for (int r = 0; r < rounds; ++r) {
            if ((r >= (int)got.size()) || (got[r] != r)) {
                errors[k] = "messages out of order, lost or twice";
            }
        }
        if ((int)got.size() != rounds) {
            errors[k] = "got " + std::to_string(got.size()) + " messages";
        }
        ++done;
        /* stay registered until the node count was taken (bounded) */
        for (auto w = steady::now();
             !counted.load() && (ms_since(w) < 60000);) {
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
    out:
        orc_client_destroy(c); /* deregisters */
    };

    std::vector<std::thread> threads;
    for (int k = 0; k < clients; ++k) {
        threads.emplace_back(run_client, k);
    }
    /* kill the replica when about a third of the messages are out */
    auto t0 = steady::now();
    while ((sent.load() < clients * rounds / 3) && (done.load() < clients) &&
           (ms_since(t0) < 60000)) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    int sent_at_kill = sent.load();
    fault();
    /* every pairing done: exactly one node per client (a registration
     * retried on the other replica was not made twice) */
    t0 = steady::now();
    while ((done.load() < clients) && (ms_since(t0) < 120000)) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    orc_client_t *check = client_failover::client(check_url, 5000);
    orc_node_info_t *nodes;
    size_t count = 0;
    uint64_t index;
    EXPECT_EQ(ORC_CL_OK,
              orc_client_nodes_list(check, 0, 0, &nodes, &count, &index));
    EXPECT_EQ((size_t)clients, count);
    if (count > 0) {
        orc_client_nodes_free(nodes, count);
    }
    orc_client_destroy(check);
    counted = true;
    for (auto &t : threads) {
        t.join();
    }
    for (int k = 0; k < clients; ++k) {
        EXPECT_EQ("", errors[k]) << "client " << k;
    }
    EXPECT_EQ(clients, done.load());
    EXPECT_LT(sent_at_kill, clients * rounds) << "the kill came too late";
    /* no node registered twice: 64 distinct ids */
    std::set<uint64_t> distinct(ids.begin(), ids.end());
    EXPECT_EQ((size_t)clients, distinct.size());
    printf("# %d of %d messages sent at the fault\n", sent_at_kill,
           clients * rounds);
}

TEST_F(client_failover, replica_killed_mid_pairing_storm_loses_nothing)
{
    pairing_storm(
        m_a.url() + "," + m_b.url(), [this] { m_a.kill_now(); }, m_b.url());
}

/* The same storm on two replicas over three etcd members whose leader is
 * SIGKILLed: requests pause for the election and continue; nothing lost */
TEST(client_etcd_cluster, leader_killed_mid_pairing_storm_loses_nothing)
{
    std::string why;
    ASSERT_TRUE(etcd_test::etcd_available()) << "etcd-server not installed";
    etcd_test::etcd_cluster etcd(3);
    ASSERT_TRUE(etcd.start(&why)) << why;
    orcd_store_yaml() = "store:\n  backend: etcd\n  etcd:\n    endpoints: " +
                        etcd.endpoint_yaml() + "\n    timeout: 2\n";
    orcd_child a, b;
    bool started = a.start() && b.start();
    orcd_store_yaml().clear();
    ASSERT_TRUE(started) << a.error() << b.error();
    pairing_storm(
        a.url() + "," + b.url(),
        [&etcd] {
        int leader = etcd.leader();
        ASSERT_GE(leader, 0);
        etcd.kill_member((size_t)leader, SIGKILL);
        },
        b.url());
}
