/*
 * liborcclient against a scripted HTTP server (libmicrohttpd in this
 * process): request shapes, HTTP status mapping, strict reply parsing,
 * timeouts, unreachable servers and the keep-alive thread. No orcd needed.
 */
#include "orc_client.h"

#include <gtest/gtest.h>
#include <microhttpd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace
{

using steady = std::chrono::steady_clock;

struct fake_request {
    std::string method;
    std::string url; /* path and query */
    std::string body;
    std::string auth;      /* Authorization header, "" if none */
    std::string rid;       /* Idempotency-Key, "" if none */
    std::string attempt;   /* X-Orc-Attempt, "" if none */
    steady::time_point at; /* when it arrived whole */
};

struct fake_reply {
    unsigned code; /* 0: close the connection without an answer */
    std::string body;
    int delay_ms; /* answered this long after the request arrived */
};

/*
 * Scripted server. Routes are "METHOD path?query" -> reply; unknown routes
 * get 404. Locking: `lock` protects routes and requests; `cond` signals
 * each recorded request.
 */
class fake_server
{
  public:
    fake_server()
    {
        m_daemon = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD |
                                        MHD_USE_THREAD_PER_CONNECTION |
                                        MHD_USE_ERROR_LOG,
                                    0, NULL, NULL, &fake_server::handler, this,
                                    MHD_OPTION_SOCK_ADDR, loopback_any(),
                                    MHD_OPTION_END);
        if (m_daemon != NULL) {
            m_port =
                MHD_get_daemon_info(m_daemon, MHD_DAEMON_INFO_BIND_PORT)->port;
        }
    }

    ~fake_server()
    {
        stop();
    }

    void stop()
    {
        if (m_daemon != NULL) {
            MHD_stop_daemon(m_daemon);
            m_daemon = NULL;
        }
    }

    bool ok() const
    {
        return m_daemon != NULL;
    }

    std::string url() const
    {
        return "http://127.0.0.1:" + std::to_string(m_port);
    }

    void route(const std::string &key, unsigned code, const std::string &body,
               int delay_ms = 0)
    {
        std::lock_guard<std::mutex> guard(m_lock);
        m_routes[key] = fake_reply{code, body, delay_ms};
    }

    std::vector<fake_request> requests()
    {
        std::lock_guard<std::mutex> guard(m_lock);
        return m_requests;
    }

    size_t count(const std::string &key)
    {
        std::lock_guard<std::mutex> guard(m_lock);
        size_t n = 0;
        for (const auto &r : m_requests) {
            n += ((r.method + " " + r.url) == key);
        }
        return n;
    }

    /* wait (bounded) until `key` was requested at least n times */
    bool wait_count(const std::string &key, size_t n, int timeout_ms)
    {
        auto deadline = steady::now() + std::chrono::milliseconds(timeout_ms);
        std::unique_lock<std::mutex> guard(m_lock);
        for (;;) {
            size_t have = 0;
            for (const auto &r : m_requests) {
                have += ((r.method + " " + r.url) == key);
            }
            if (have >= n) {
                return true;
            }
            if (m_cond.wait_until(guard, deadline) == std::cv_status::timeout) {
                return false;
            }
        }
    }

  private:
    static const struct sockaddr *loopback_any()
    {
        static struct sockaddr_in sin;
        sin.sin_family      = AF_INET;
        sin.sin_port        = 0;
        sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        return (const struct sockaddr *)&sin;
    }

    struct conn_state {
        std::string body;
    };

    static void collect_query(std::string *query, const char *key,
                              const char *value)
    {
        *query += (query->empty() ? "?" : "&");
        *query += key;
        if (value != NULL) {
            *query += "=";
            *query += value;
        }
    }

    static enum MHD_Result query_iter(void *cls, enum MHD_ValueKind kind,
                                      const char *key, const char *value)
    {
        (void)kind;
        collect_query(static_cast<std::string *>(cls), key, value);
        return MHD_YES;
    }

    static enum MHD_Result handler(void *cls, struct MHD_Connection *conn,
                                   const char *url, const char *method,
                                   const char *version, const char *data,
                                   size_t *data_size, void **con_cls)
    {
        fake_server *self = static_cast<fake_server *>(cls);
        conn_state *state = static_cast<conn_state *>(*con_cls);
        (void)version;

        if (state == NULL) {
            *con_cls = new conn_state();
            return MHD_YES;
        }
        if (*data_size > 0) {
            state->body.append(data, *data_size);
            *data_size = 0;
            return MHD_YES;
        }

        std::string query;
        MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, query_iter,
                                  &query);
        const char *auth =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
        const char *rid = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                      "Idempotency-Key");
        const char *attempt =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Orc-Attempt");
        fake_request req{method,
                         std::string(url) + query,
                         state->body,
                         (auth != NULL) ? auth : "",
                         (rid != NULL) ? rid : "",
                         (attempt != NULL) ? attempt : "",
                         steady::now()};
        delete state;
        *con_cls = NULL;

        fake_reply reply{404,
                         "{\"error\":\"not_found\",\"detail\":\"no "
                         "such route\"}",
                         0};
        {
            std::lock_guard<std::mutex> guard(self->m_lock);
            auto it = self->m_routes.find(req.method + " " + req.url);
            if (it != self->m_routes.end()) {
                reply = it->second;
            }
            self->m_requests.push_back(req);
        }
        self->m_cond.notify_all();
        std::this_thread::sleep_for(std::chrono::milliseconds(reply.delay_ms));
        if (reply.code == 0) {
            return MHD_NO; /* as a replica that died before answering */
        }

        struct MHD_Response *resp =
            MHD_create_response_from_buffer(reply.body.size(),
                                            (void *)reply.body.data(),
                                            MHD_RESPMEM_MUST_COPY);
        MHD_add_response_header(resp, "Content-Type", "application/json");
        enum MHD_Result ret = MHD_queue_response(conn, reply.code, resp);
        MHD_destroy_response(resp);
        return ret;
    }

    struct MHD_Daemon *m_daemon = NULL;
    uint16_t m_port             = 0;
    std::mutex m_lock;
    std::condition_variable m_cond;
    std::map<std::string, fake_reply> m_routes;
    std::vector<fake_request> m_requests;
};

const char *TOKEN = "s3cret-token-value";

class client_unit : public ::testing::Test
{
  protected:
    void SetUp() override
    {
        ASSERT_TRUE(m_server.ok());
        m_client = make_client(m_server.url(), 2000);
        ASSERT_NE(nullptr, m_client);
    }

    void TearDown() override
    {
        orc_client_destroy(m_client);
    }

    orc_client_t *make_client(const std::string &url, int timeout_ms)
    {
        orc_client_params_t params = {};
        params.field_mask =
            ORC_CLIENT_PARAM_FIELD_URL | ORC_CLIENT_PARAM_FIELD_JOB |
            ORC_CLIENT_PARAM_FIELD_TOKEN | ORC_CLIENT_PARAM_FIELD_TIMEOUT |
            ORC_CLIENT_PARAM_FIELD_LOG;
        params.url           = url.c_str();
        params.job           = "jobA";
        params.token         = TOKEN;
        params.timeout_ms    = timeout_ms;
        params.log           = log_cb;
        params.log_arg       = this;
        orc_client_t *client = NULL;
        EXPECT_EQ(ORC_CL_OK, orc_client_create(&params, &client));
        return client;
    }

    /* Node `id` (lease: ttl s) on m_server and, if given, on `other` too:
     * its keep-alives answered delay_ms after they arrive, its DELETE at
     * once; m_server takes its registration */
    void slow_node(unsigned id, unsigned ttl, int delay_ms,
                   fake_server *other = nullptr)
    {
        const std::string node   = "/v1/jobs/jobA/nodes/" + std::to_string(id);
        const std::string answer = "{\"id\": " + std::to_string(id) +
                                   ", \"ttl\": " + std::to_string(ttl) + "}";
        for (fake_server *server : {&m_server, other}) {
            if (server != nullptr) {
                server->route("PUT " + node + "/keepalive", 200, answer,
                              delay_ms);
                server->route("DELETE " + node, 204, "");
            }
        }
        m_server.route("POST /v1/jobs/jobA/nodes", 201, answer);
    }

    /* A client of two replicas, m_server and `other`, both serving node
     * `id` as slow_node() says */
    orc_client_t *slow_replicas(fake_server &other, unsigned id, unsigned ttl,
                                int delay_ms)
    {
        slow_node(id, ttl, delay_ms, &other);
        return make_client(m_server.url() + "," + other.url(), 2000);
    }

    static void log_cb(void *arg, const char *message)
    {
        client_unit *self = static_cast<client_unit *>(arg);
        std::lock_guard<std::mutex> guard(self->m_log_lock);
        self->m_log.push_back(message);
    }

    std::vector<std::string> logs()
    {
        std::lock_guard<std::mutex> guard(m_log_lock);
        return m_log;
    }

    fake_server m_server;
    orc_client_t *m_client = NULL;
    std::mutex m_log_lock;
    std::vector<std::string> m_log;
};

/* The longest time a lease that each arrival of `key` renews (as orcd
 * does, whatever becomes of the answer) went unrenewed from `from` until
 * now, over the requests of several servers (replicas) */
int64_t longest_unrenewed_ms(const std::vector<fake_server *> &servers,
                             const std::string &key, steady::time_point from)
{
    std::vector<steady::time_point> at{from, steady::now()};
    for (fake_server *server : servers) {
        for (const fake_request &r : server->requests()) {
            if (((r.method + " " + r.url) == key) && (r.at > from)) {
                at.push_back(r.at);
            }
        }
    }
    std::sort(at.begin(), at.end());
    int64_t longest = 0;
    for (size_t i = 1; i < at.size(); ++i) {
        longest = std::max<int64_t>(
            longest, std::chrono::duration_cast<std::chrono::milliseconds>(
                         at[i] - at[i - 1])
                         .count());
    }
    return longest;
}

/* poll a condition, bounded */
template<typename F> bool eventually(F cond, int timeout_ms)
{
    auto deadline = steady::now() + std::chrono::milliseconds(timeout_ms);
    while (steady::now() < deadline) {
        if (cond()) {
            return true;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return cond();
}

} // namespace

TEST(client_basic, status_strings)
{
    for (int s = ORC_CL_OK; s >= ORC_CL_ERR_CANCELED; --s) {
        const char *text = orc_cl_status_str((orc_cl_status_t)s);
        ASSERT_NE(nullptr, text);
        EXPECT_STRNE("unknown status", text) << s;
    }
    EXPECT_STREQ("unknown status", orc_cl_status_str((orc_cl_status_t)-99));
}

TEST(client_basic, base64_vectors)
{
    const char *plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    const char *coded[] = {"",         "Zg==",     "Zm8=",    "Zm9v",
                           "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    for (size_t i = 0; i < 7; ++i) {
        char *text = orc_client_b64_encode(plain[i], strlen(plain[i]));
        ASSERT_NE(nullptr, text);
        EXPECT_STREQ(coded[i], text);
        free(text);

        void *data;
        size_t length;
        ASSERT_EQ(0, orc_client_b64_decode(coded[i], strlen(coded[i]), &data,
                                           &length));
        EXPECT_EQ(strlen(plain[i]), length);
        EXPECT_EQ(0, memcmp(plain[i], data, length));
        free(data);
    }

    unsigned char all[256];
    for (int i = 0; i < 256; ++i) {
        all[i] = (unsigned char)(255 - i);
    }
    for (size_t len = 0; len <= sizeof(all); len += 37) {
        char *text = orc_client_b64_encode(all, len);
        void *data;
        size_t length;
        ASSERT_EQ(0, orc_client_b64_decode(text, strlen(text), &data, &length));
        ASSERT_EQ(len, length);
        EXPECT_EQ(0, memcmp(all, data, len));
        free(data);
        free(text);
    }
}

TEST(client_basic, base64_rejects_malformed)
{
    const char *bad[] = {"Zg=",  "Zm9v!A==", "Zh==", "Zm9=",
                         "=Zm9", "Zg==Zg==", "Z===", "Zm 9v"};
    for (const char *text : bad) {
        void *data = NULL;
        size_t length;
        EXPECT_EQ(-1, orc_client_b64_decode(text, strlen(text), &data, &length))
            << text;
        EXPECT_EQ(nullptr, data);
    }
}

TEST(client_basic, create_validates)
{
    orc_client_params_t params = {};
    orc_client_t *client       = NULL;

    params.field_mask = ORC_CLIENT_PARAM_FIELD_URL;
    params.url        = "ftp://127.0.0.1:7411";
    EXPECT_EQ(ORC_CL_ERR_INVALID, orc_client_create(&params, &client));

    params.field_mask = ORC_CLIENT_PARAM_FIELD_JOB;
    params.job        = "bad/job";
    EXPECT_EQ(ORC_CL_ERR_INVALID, orc_client_create(&params, &client));
    params.job = "";
    EXPECT_EQ(ORC_CL_ERR_INVALID, orc_client_create(&params, &client));
    std::string longname(129, 'a');
    params.job = longname.c_str();
    EXPECT_EQ(ORC_CL_ERR_INVALID, orc_client_create(&params, &client));

    params.field_mask = ORC_CLIENT_PARAM_FIELD_TIMEOUT;
    params.timeout_ms = 0;
    EXPECT_EQ(ORC_CL_ERR_INVALID, orc_client_create(&params, &client));

    params.field_mask = ORC_CLIENT_PARAM_FIELD_TOKEN;
    params.token      = "abc\r\nX-Evil: 1";
    EXPECT_EQ(ORC_CL_ERR_INVALID, orc_client_create(&params, &client));

    EXPECT_EQ(ORC_CL_ERR_INVALID, orc_client_create(NULL, &client));
    EXPECT_EQ(nullptr, client);

    params.field_mask = 0;
    ASSERT_EQ(ORC_CL_OK, orc_client_create(&params, &client));
    orc_client_destroy(client);
    orc_client_destroy(NULL);
}

TEST(client_basic, params_from_env)
{
    char path[] = "/tmp/orc-token-XXXXXX";
    int fd      = mkstemp(path);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(17, write(fd, "file-token-1234\r\n", 17));
    close(fd);

    setenv(ORC_CLIENT_ENV_URL, "http://127.0.0.1:9", 1);
    setenv(ORC_CLIENT_ENV_JOB, "envjob", 1);
    unsetenv(ORC_CLIENT_ENV_TOKEN);
    setenv(ORC_CLIENT_ENV_TOKEN_FILE, path, 1);

    orc_client_params_t params = {};
    char *buf                  = NULL;
    ASSERT_EQ(ORC_CL_OK, orc_client_params_from_env(&params, &buf));
    EXPECT_STREQ("http://127.0.0.1:9", params.url);
    EXPECT_STREQ("envjob", params.job);
    ASSERT_NE(nullptr, buf);
    EXPECT_STREQ("file-token-1234", params.token);
    free(buf);

    /* explicit fields win; ORC_TOKEN wins over the file */
    setenv(ORC_CLIENT_ENV_TOKEN, "env-token-5678", 1);
    params            = {};
    params.field_mask = ORC_CLIENT_PARAM_FIELD_JOB;
    params.job        = "mine";
    ASSERT_EQ(ORC_CL_OK, orc_client_params_from_env(&params, &buf));
    EXPECT_STREQ("mine", params.job);
    EXPECT_STREQ("env-token-5678", params.token);
    EXPECT_EQ(nullptr, buf);

    /* unreadable token file: a clear error naming the file, no crash */
    unsetenv(ORC_CLIENT_ENV_TOKEN);
    unlink(path);
    params = {};
    EXPECT_EQ(ORC_CL_ERR_INVALID, orc_client_params_from_env(&params, &buf));
    EXPECT_NE(nullptr, strstr(orc_client_last_error(), path));

    unsetenv(ORC_CLIENT_ENV_URL);
    unsetenv(ORC_CLIENT_ENV_JOB);
    unsetenv(ORC_CLIENT_ENV_TOKEN_FILE);
}

TEST_F(client_unit, register_request_shape_and_deregister)
{
    m_server.route("POST /v1/jobs/jobA/nodes", 201,
                   "{\"id\": 7, \"ttl\": 30, \"index\": 3}");
    m_server.route("DELETE /v1/jobs/jobA/nodes/7", 204, "");

    uint64_t id = 0;
    ASSERT_EQ(ORC_CL_OK, orc_client_register(m_client, "hostA", 4242,
                                             "{\"rank\": \"3\"}", 30, &id));
    EXPECT_EQ(7u, id);
    EXPECT_EQ(0, orc_client_node_lost(m_client, id));
    ASSERT_EQ(ORC_CL_OK, orc_client_deregister(m_client, id));

    auto reqs = m_server.requests();
    ASSERT_EQ(2u, reqs.size());
    EXPECT_EQ("POST", reqs[0].method);
    EXPECT_EQ(std::string("Bearer ") + TOKEN, reqs[0].auth);
    EXPECT_NE(std::string::npos, reqs[0].body.find("\"host\":\"hostA\""));
    EXPECT_NE(std::string::npos, reqs[0].body.find("\"pid\":4242"));
    EXPECT_NE(std::string::npos, reqs[0].body.find("\"ttl\":30"));
    EXPECT_NE(std::string::npos,
              reqs[0].body.find("\"labels\":{\"rank\":\"3\"}"));
    EXPECT_EQ("DELETE", reqs[1].method);
    EXPECT_EQ("/v1/jobs/jobA/nodes/7", reqs[1].url);
}

TEST_F(client_unit, register_rejects_bad_labels_locally)
{
    uint64_t id;
    EXPECT_EQ(ORC_CL_ERR_INVALID,
              orc_client_register(m_client, "h", 1, "[1]", 0, &id));
    EXPECT_EQ(ORC_CL_ERR_INVALID,
              orc_client_register(m_client, "h", 1, "{\"a\": 1}", 0, &id));
    EXPECT_EQ(ORC_CL_ERR_INVALID,
              orc_client_register(m_client, "h", 1, "{bad", 0, &id));
    EXPECT_EQ(ORC_CL_ERR_INVALID,
              orc_client_register(m_client, "", 1, NULL, 0, &id));
    EXPECT_EQ(0u, m_server.requests().size());
}

TEST_F(client_unit, http_status_mapping_and_error_text)
{
    const struct {
        unsigned code;
        orc_cl_status_t status;
    } cases[] = {
        {400, ORC_CL_ERR_INVALID},   {401, ORC_CL_ERR_UNAUTHORIZED},
        {403, ORC_CL_ERR_FORBIDDEN}, {404, ORC_CL_ERR_NOT_FOUND},
        {409, ORC_CL_ERR_CONFLICT},  {410, ORC_CL_ERR_GONE},
        {413, ORC_CL_ERR_TOO_LARGE}, {429, ORC_CL_ERR_BUSY},
        {503, ORC_CL_ERR_BUSY},      {500, ORC_CL_ERR_PROTOCOL},
        {302, ORC_CL_ERR_PROTOCOL},
    };

    for (const auto &c : cases) {
        m_server.route("PUT /v1/jobs/jobA/nodes/9/rdma/endpoint", c.code,
                       "{\"error\": \"e" + std::to_string(c.code) +
                           "\", \"detail\": \"because\"}");
        EXPECT_EQ(c.status,
                  orc_client_endpoint_put(m_client, 9, "{\"qpn\": 1}"))
            << c.code;
        std::string err = orc_client_last_error();
        EXPECT_NE(std::string::npos, err.find(std::to_string(c.code))) << err;
        EXPECT_NE(std::string::npos, err.find("because")) << err;
        EXPECT_EQ(std::string::npos, err.find(TOKEN)) << err;
    }
}

TEST_F(client_unit, endpoint_roundtrip_and_local_validation)
{
    m_server.route("PUT /v1/jobs/jobA/nodes/3/rdma/endpoint", 200, "{}");
    m_server.route("GET /v1/jobs/jobA/nodes/3/rdma/endpoint", 200,
                   "{\"gid\": \"fe80::1\", \"qpn\": 17}");

    EXPECT_EQ(ORC_CL_OK,
              orc_client_endpoint_put(m_client, 3, "{\"gid\":\"fe80::1\"}"));
    EXPECT_EQ("{\"gid\":\"fe80::1\"}", m_server.requests().back().body);

    char *json = NULL;
    ASSERT_EQ(ORC_CL_OK, orc_client_endpoint_get(m_client, 3, &json));
    EXPECT_STREQ("{\"gid\":\"fe80::1\",\"qpn\":17}", json);
    free(json);

    size_t before = m_server.requests().size();
    EXPECT_EQ(ORC_CL_ERR_INVALID, orc_client_endpoint_put(m_client, 3, "[]"));
    EXPECT_EQ(ORC_CL_ERR_INVALID, orc_client_endpoint_put(m_client, 3, "{"));
    EXPECT_EQ(ORC_CL_ERR_INVALID, orc_client_endpoint_put(m_client, 0, "{}"));
    EXPECT_EQ(ORC_CL_ERR_INVALID, orc_client_endpoint_put(m_client, 3, NULL));
    EXPECT_EQ(before, m_server.requests().size());
}

TEST_F(client_unit, strict_reply_parsing)
{
    uint64_t id;
    const char *bad_register[] = {
        "{\"id\": \"7\", \"ttl\": 30}",
        "{\"id\": 7}",
        "{\"id\": 0, \"ttl\": 3}",
        "{\"id\": -1, \"ttl\": 3}",
        "[7]",
        "not json",
        "{\"id\": 7, \"id\": 8, \"ttl\": 3}",
        "",
    };
    for (const char *body : bad_register) {
        m_server.route("POST /v1/jobs/jobA/nodes", 201, body);
        EXPECT_EQ(ORC_CL_ERR_PROTOCOL,
                  orc_client_register(m_client, "h", 1, NULL, 0, &id))
            << body;
    }

    orc_node_info_t *nodes;
    size_t count;
    const char *bad_list[] = {
        "{\"index\": 1, \"nodes\": {}}",
        "{\"nodes\": []}",
        ("{\"index\": 1, \"nodes\": [{\"id\": 1, \"host\": \"h\", "
         "\"pid\": \"1\"}]}"),
        "{\"index\": 1, \"nodes\": [{\"id\": 1, \"host\": 5, \"pid\": 1}]}",
        ("{\"index\": 1, \"nodes\": [{\"id\": 1, \"host\": \"h\", "
         "\"pid\": 1, \"endpoint\": 3}]}"),
        ("{\"index\": 1, \"nodes\": [{\"id\": 1, \"host\": \"h\", "
         "\"pid\": 1, \"labels\": {\"a\": 1}}]}"),
        "{\"index\": 1, \"nodes\": [7]}",
    };
    for (const char *body : bad_list) {
        m_server.route("GET /v1/jobs/jobA/nodes", 200, body);
        EXPECT_EQ(ORC_CL_ERR_PROTOCOL,
                  orc_client_nodes_list(m_client, 0, 0, &nodes, &count, NULL))
            << body;
    }

    orc_mbox_msg_t *msgs;
    const char *bad_mbox[] = {
        "{\"messages\": {}}",
        ("{\"messages\": [{\"seq\": 2, \"body\": {}}, {\"seq\": 2, "
         "\"body\": {}}]}"),
        "{\"messages\": [{\"seq\": 1, \"body\": []}]}",
        "{\"messages\": [{\"seq\": 1, \"from\": \"x\", \"body\": {}}]}",
        "{\"messages\": [{\"body\": {}}]}",
    };
    for (const char *body : bad_mbox) {
        m_server.route("GET /v1/jobs/jobA/nodes/4/mailbox?after=0&wait=0.000",
                       200, body);
        EXPECT_EQ(ORC_CL_ERR_PROTOCOL,
                  orc_client_mbox_recv(m_client, 4, 0, 0, &msgs, &count))
            << body;
    }

    void *value;
    size_t length;
    const char *bad_kv[] = {
        "{\"key\": \"k\", \"value\": \"plain\"}",
        "{\"key\": \"k\", \"value\": {\"b64\": \"@@@@\"}}",
        "{\"key\": \"k\", \"value\": {\"b64\": 5}}",
        "{\"key\": \"k\", \"value\": {\"b64\": \"AA==\", \"x\": 1}}",
        "{\"key\": \"k\"}",
    };
    for (const char *body : bad_kv) {
        m_server.route("GET /v1/jobs/jobA/kv/k", 200, body);
        EXPECT_EQ(ORC_CL_ERR_PROTOCOL,
                  orc_client_kv_get(m_client, "k", 0, &value, &length))
            << body;
    }
}

TEST_F(client_unit, nodes_list_parses_and_waits)
{
    m_server.route("GET /v1/jobs/jobA/nodes?index=5&wait=1.250", 200,
                   "{\"index\": 9, \"nodes\": ["
                   "{\"id\": 1, \"host\": \"a\", \"pid\": 10, \"labels\": "
                   "{\"k\": \"v\"}, \"ttl\": 10, \"endpoint\": {\"x\": 1}, "
                   "\"index\": 4},"
                   "{\"id\": 2, \"host\": \"b\", \"pid\": 11, \"endpoint\": "
                   "null}]}");

    orc_node_info_t *nodes = NULL;
    size_t count           = 0;
    uint64_t index         = 0;
    ASSERT_EQ(ORC_CL_OK,
              orc_client_nodes_list(m_client, 5, 1250, &nodes, &count, &index));
    ASSERT_EQ(2u, count);
    EXPECT_EQ(9u, index);
    EXPECT_EQ(1u, nodes[0].id);
    EXPECT_STREQ("a", nodes[0].host);
    EXPECT_EQ(10, nodes[0].pid);
    EXPECT_STREQ("{\"k\":\"v\"}", nodes[0].labels_json);
    EXPECT_STREQ("{\"x\":1}", nodes[0].endpoint_json);
    EXPECT_STREQ("{}", nodes[1].labels_json);
    EXPECT_EQ(nullptr, nodes[1].endpoint_json);
    orc_client_nodes_free(nodes, count);
}

TEST_F(client_unit, mailbox_send_and_recv)
{
    m_server.route("POST /v1/jobs/jobA/nodes/4/mailbox", 201, "{\"seq\": 12}");
    uint64_t seq = 0;
    ASSERT_EQ(ORC_CL_OK,
              orc_client_mbox_send(m_client, 4, 2, "{\"qpn\": 5}", &seq));
    EXPECT_EQ(12u, seq);
    EXPECT_EQ("{\"body\":{\"qpn\":5},\"from\":2}",
              m_server.requests().back().body);

    m_server.route("GET /v1/jobs/jobA/nodes/4/mailbox?after=11&wait=0.500", 200,
                   "{\"messages\": [{\"seq\": 12, \"from\": 2, \"body\": "
                   "{\"qpn\": 5}}, {\"seq\": 14, \"body\": {}}], "
                   "\"last_seq\": 14}");
    orc_mbox_msg_t *msgs = NULL;
    size_t count         = 0;
    ASSERT_EQ(ORC_CL_OK,
              orc_client_mbox_recv(m_client, 4, 11, 500, &msgs, &count));
    ASSERT_EQ(2u, count);
    EXPECT_EQ(12u, msgs[0].seq);
    EXPECT_EQ(2u, msgs[0].from);
    EXPECT_STREQ("{\"qpn\":5}", msgs[0].body_json);
    EXPECT_EQ(14u, msgs[1].seq);
    EXPECT_EQ(0u, msgs[1].from);
    orc_client_mbox_free(msgs, count);

    EXPECT_EQ(ORC_CL_ERR_INVALID,
              orc_client_mbox_send(m_client, 4, 0, "\"str\"", NULL));
}

TEST_F(client_unit, kv_base64_and_wait_mapping)
{
    m_server.route("PUT /v1/jobs/jobA/kv/app/w1", 200, "{\"index\": 3}");
    const unsigned char bytes[] = {0, 1, 2, 0xff, 'x'};
    ASSERT_EQ(ORC_CL_OK,
              orc_client_kv_put(m_client, "app/w1", bytes, sizeof(bytes)));
    EXPECT_EQ("{\"value\":{\"b64\":\"AAEC/3g=\"}}",
              m_server.requests().back().body);

    m_server.route("GET /v1/jobs/jobA/kv/app/w1", 200,
                   "{\"key\": \"app/w1\", \"value\": {\"b64\": \"AAEC/3g=\"}, "
                   "\"index\": 3}");
    void *value   = NULL;
    size_t length = 0;
    ASSERT_EQ(ORC_CL_OK,
              orc_client_kv_get(m_client, "app/w1", 0, &value, &length));
    ASSERT_EQ(sizeof(bytes), length);
    EXPECT_EQ(0, memcmp(bytes, value, length));
    free(value);

    /* absent: NOT_FOUND without a wait, TIMEOUT after one */
    EXPECT_EQ(ORC_CL_ERR_NOT_FOUND,
              orc_client_kv_get(m_client, "nope", 0, &value, &length));
    EXPECT_EQ(ORC_CL_ERR_TIMEOUT,
              orc_client_kv_get(m_client, "nope", 1500, &value, &length));
    EXPECT_EQ("/v1/jobs/jobA/kv/nope?wait=1.500",
              m_server.requests().back().url);

    m_server.route("DELETE /v1/jobs/jobA/kv/app/w1", 204, "");
    EXPECT_EQ(ORC_CL_OK, orc_client_kv_delete(m_client, "app/w1"));

    /* keys that could escape the route never leave the process */
    size_t before          = m_server.requests().size();
    const char *bad_keys[] = {"",    "/abs", "a/../b", "a b",
                              "a?b", "a%2f", "k#1"};
    for (const char *key : bad_keys) {
        EXPECT_EQ(ORC_CL_ERR_INVALID, orc_client_kv_put(m_client, key, "v", 1))
            << key;
        EXPECT_EQ(ORC_CL_ERR_INVALID,
                  orc_client_kv_get(m_client, key, 0, &value, &length))
            << key;
        EXPECT_EQ(ORC_CL_ERR_INVALID, orc_client_kv_delete(m_client, key))
            << key;
    }
    EXPECT_EQ(before, m_server.requests().size());
}

TEST_F(client_unit, keepalive_runs_until_deregister)
{
    m_server.route("POST /v1/jobs/jobA/nodes", 201, "{\"id\": 5, \"ttl\": 1}");
    m_server.route("PUT /v1/jobs/jobA/nodes/5/keepalive", 200,
                   "{\"id\": 5, \"ttl\": 1}");
    m_server.route("DELETE /v1/jobs/jobA/nodes/5", 204, "");

    uint64_t id;
    ASSERT_EQ(ORC_CL_OK, orc_client_register(m_client, "h", 1, NULL, 1, &id));
    /* interval ~ttl/3: several keep-alives within ~2 TTLs */
    ASSERT_TRUE(
        m_server.wait_count("PUT /v1/jobs/jobA/nodes/5/keepalive", 4, 2500));
    EXPECT_EQ(0, orc_client_node_lost(m_client, id));
    ASSERT_EQ(ORC_CL_OK, orc_client_deregister(m_client, id));

    /* no keep-alive after deregister returned */
    size_t n = m_server.count("PUT /v1/jobs/jobA/nodes/5/keepalive");
    EXPECT_FALSE(
        m_server.wait_count("PUT /v1/jobs/jobA/nodes/5/keepalive", n + 1, 700));
    EXPECT_EQ(1u, m_server.count("DELETE /v1/jobs/jobA/nodes/5"));
}

TEST_F(client_unit, keepalive_gone_marks_lost)
{
    m_server.route("POST /v1/jobs/jobA/nodes", 201, "{\"id\": 6, \"ttl\": 1}");
    m_server.route("PUT /v1/jobs/jobA/nodes/6/keepalive", 410,
                   "{\"error\": \"gone\", \"detail\": \"lease expired\"}");

    uint64_t id;
    ASSERT_EQ(ORC_CL_OK, orc_client_register(m_client, "h", 1, NULL, 1, &id));
    EXPECT_TRUE(
        eventually([&] { return orc_client_node_lost(m_client, id); }, 3000));
    /* one attempt, then the thread stops */
    EXPECT_EQ(1u, m_server.count("PUT /v1/jobs/jobA/nodes/6/keepalive"));
    bool logged = false;
    for (const auto &line : logs()) {
        logged |= (line.find("lost") != std::string::npos);
        EXPECT_EQ(std::string::npos, line.find(TOKEN));
    }
    EXPECT_TRUE(logged);
}

TEST_F(client_unit, keepalive_unreachable_marks_lost_after_ttl)
{
    m_server.route("POST /v1/jobs/jobA/nodes", 201, "{\"id\": 8, \"ttl\": 1}");
    m_server.route("PUT /v1/jobs/jobA/nodes/8/keepalive", 200,
                   "{\"id\": 8, \"ttl\": 1}");

    uint64_t id;
    ASSERT_EQ(ORC_CL_OK, orc_client_register(m_client, "h", 1, NULL, 1, &id));
    ASSERT_TRUE(
        m_server.wait_count("PUT /v1/jobs/jobA/nodes/8/keepalive", 1, 2000));
    auto stopped = steady::now();
    m_server.stop();

    EXPECT_TRUE(
        eventually([&] { return orc_client_node_lost(m_client, id); }, 6000));
    auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(
                       steady::now() - stopped)
                       .count();
    /* not before a TTL without a successful keep-alive (less the interval
     * that had already passed), and not much after */
    EXPECT_GE(elapsed, 500);
    EXPECT_LE(elapsed, 4000);
}

/* A keep-alive answered later than a third of the TTL (and later than the
 * client's request timeout) but within the lease renews it: an attempt may
 * take what is left of the lease. TTL 6 s: the first keep-alive leaves at
 * ~2 s with ~4 s of the lease left and is answered at ~5 s; bounded by
 * TTL/3 it timed out at ~4 s and logged a failure (1 s either way) */
TEST_F(client_unit, slow_keepalive_within_the_lease_renews_it)
{
    const std::string ka = "PUT /v1/jobs/jobA/nodes/9/keepalive";
    slow_node(9, 6, 3000);

    uint64_t id;
    ASSERT_EQ(ORC_CL_OK, orc_client_register(m_client, "h", 1, NULL, 6, &id));
    ASSERT_TRUE(m_server.wait_count(ka, 1, 5000));
    m_server.route(ka, 200, "{\"id\": 9, \"ttl\": 6}"); /* later: at once */
    /* the next attempt: at once (it was due 2 s after the slow one was
     * sent), or ~0.25 s after it failed */
    ASSERT_TRUE(m_server.wait_count(ka, 2, 10000));
    size_t late = 0;
    for (const auto &line : logs()) {
        EXPECT_EQ(std::string::npos, line.find("keep-alive failed")) << line;
        /* answered with ~1 s of the lease left: said, with the time orcd
         * took */
        late += (line.find("renewed the lease") != std::string::npos) &&
                (line.find("answered in 3") != std::string::npos);
    }
    EXPECT_EQ(1u, late);
    EXPECT_EQ(0, orc_client_node_lost(m_client, id));
    ASSERT_EQ(ORC_CL_OK, orc_client_deregister(m_client, id));
}

/* The next renewal is due a third of the TTL after the previous one was
 * sent, not after it was answered. orcd renews a lease when the keep-alive
 * arrives: with every answer taking 1.2 s of a 3 s TTL the lease goes
 * ~1.2 s unrenewed at a time. Counted from the answers, each keep-alive
 * arrived 2.2 s after the one before (and timed out with 0.8 s of the
 * lease to go), so a thread starved for 0.8 s lost a live lease. */
TEST_F(client_unit, slow_answers_do_not_delay_the_next_renewal)
{
    const std::string ka = "PUT /v1/jobs/jobA/nodes/10/keepalive";
    slow_node(10, 3, 1200);

    uint64_t id;
    ASSERT_EQ(ORC_CL_OK, orc_client_register(m_client, "h", 1, NULL, 3, &id));
    auto from = steady::now();
    ASSERT_TRUE(m_server.wait_count(ka, 5, 15000));
    EXPECT_LT(longest_unrenewed_ms({&m_server}, ka, from), 1700);
    EXPECT_EQ(0, orc_client_node_lost(m_client, id));
    ASSERT_EQ(ORC_CL_OK, orc_client_deregister(m_client, id));
}

/* With several replicas an attempt may take half of what is left of the
 * lease, so that the next one has time on another replica. When both
 * answer later than that (1.2 s of a 3 s TTL), the first attempt is given
 * up after 1 s, but its replica got it and renewed the lease: the client
 * goes on renewing, and the next attempts (given half of a lease counted
 * from the one given up) are answered. Counting only answers, the client
 * gave its attempts less and less time and stopped a TTL after the
 * registration, reporting lost a lease it had kept alive, which then
 * lapsed. */
TEST_F(client_unit, keepalives_go_on_while_every_replica_is_slow)
{
    const std::string ka = "PUT /v1/jobs/jobA/nodes/11/keepalive";
    fake_server other;
    ASSERT_TRUE(other.ok());
    orc_client_t *client = slow_replicas(other, 11, 3, 1200);
    ASSERT_NE(nullptr, client);

    uint64_t id;
    ASSERT_EQ(ORC_CL_OK, orc_client_register(client, "h", 1, NULL, 3, &id));
    auto from = steady::now();
    /* 2.5 TTLs: the duration under test, not a synchronisation */
    std::this_thread::sleep_for(std::chrono::milliseconds(7500));
    EXPECT_LT(longest_unrenewed_ms({&m_server, &other}, ka, from), 2500);
    EXPECT_EQ(0, orc_client_node_lost(client, id));
    size_t recovered = 0;
    for (const auto &line : logs()) {
        EXPECT_EQ(std::string::npos, line.find("lost")) << line;
        recovered += (line.find("renewed the lease") != std::string::npos) ||
                     (line.find("recovered") != std::string::npos);
    }
    EXPECT_GE(recovered, 1u);
    EXPECT_EQ(ORC_CL_OK, orc_client_deregister(client, id));
    orc_client_destroy(client);
}

/* Unanswered keep-alives extend the time the client keeps a lease for
 * alive (a replica may have renewed it), but not past two TTLs after orcd's
 * last answer: replicas that all take requests and never answer make the
 * node lost, not a client renewing forever without a word */
TEST_F(client_unit, keepalives_no_replica_answers_mark_lost)
{
    fake_server other;
    ASSERT_TRUE(other.ok());
    orc_client_t *client = slow_replicas(other, 12, 1, 2500);
    ASSERT_NE(nullptr, client);

    uint64_t id;
    auto from = steady::now();
    ASSERT_EQ(ORC_CL_OK, orc_client_register(client, "h", 1, NULL, 1, &id));
    EXPECT_TRUE(
        eventually([&] { return orc_client_node_lost(client, id); }, 6000));
    auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(
                       steady::now() - from)
                       .count();
    /* not before the lease may have lapsed (a TTL), by two TTLs after the
     * registration's answer and the attempt then under way (half a TTL) */
    EXPECT_GE(elapsed, 1000);
    EXPECT_LE(elapsed, 3500);
    bool logged = false;
    for (const auto &line : logs()) {
        logged |= (line.find("lease lost, no keep-alive answered") !=
                   std::string::npos);
    }
    EXPECT_TRUE(logged);
    orc_client_destroy(client);
}

/* A registration whose answer was lost (the replica closed the connection
 * after it took the request) is sent to the next replica with the same
 * Idempotency-Key and the next X-Orc-Attempt: orcd answers it as the first
 * attempt (test_orcd: retried_posts_are_made_once), so no node is
 * registered twice */
TEST_F(client_unit, lost_answer_is_retried_with_its_key)
{
    fake_server other;
    ASSERT_TRUE(other.ok());
    m_server.route("POST /v1/jobs/jobA/nodes", 0, "");
    other.route("POST /v1/jobs/jobA/nodes", 201,
                "{\"id\":7,\"ttl\":30,\"index\":3}");
    orc_client_t *c = make_client(m_server.url() + "," + other.url(), 2000);
    ASSERT_NE(nullptr, c);
    uint64_t id = 0;
    ASSERT_EQ(ORC_CL_OK, orc_client_register(c, "h", 1, NULL, 30, &id))
        << orc_client_last_error();
    EXPECT_EQ(7u, id);
    std::vector<fake_request> first  = m_server.requests();
    std::vector<fake_request> second = other.requests();
    ASSERT_EQ(1u, first.size());
    ASSERT_GE(second.size(), 1u);
    EXPECT_EQ("POST", second[0].method);
    EXPECT_EQ(32u, first[0].rid.size()) << first[0].rid;
    EXPECT_EQ(first[0].rid, second[0].rid);
    EXPECT_EQ("1", first[0].attempt);
    EXPECT_EQ("2", second[0].attempt);
    orc_client_destroy(c);
}

/* A TCP socket on an ephemeral loopback port, listening or only bound
 * (a connect is then refused); *url is its http:// URL. -1 on failure. */
static int loopback_socket(bool listening, std::string *url)
{
    int fd                 = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {};
    socklen_t len          = sizeof(sin);
    sin.sin_family         = AF_INET;
    sin.sin_addr.s_addr    = htonl(INADDR_LOOPBACK);
    if ((fd < 0) || (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0) ||
        (listening && (listen(fd, 16) != 0)) ||
        (getsockname(fd, (struct sockaddr *)&sin, &len) != 0)) {
        ADD_FAILURE() << "loopback socket: " << strerror(errno);
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    *url = "http://127.0.0.1:" + std::to_string(ntohs(sin.sin_port));
    return fd;
}

/* a client of URL alone (no job, no token), requests bounded by TIMEOUT_MS */
static orc_client_t *url_client(const std::string &url, int timeout_ms)
{
    orc_client_params_t params = {};
    params.field_mask =
        ORC_CLIENT_PARAM_FIELD_URL | ORC_CLIENT_PARAM_FIELD_TIMEOUT;
    params.url           = url.c_str();
    params.timeout_ms    = timeout_ms;
    orc_client_t *client = NULL;
    EXPECT_EQ(ORC_CL_OK, orc_client_create(&params, &client));
    return client;
}

TEST(client_net, unreachable_is_fast)
{
    /* a port bound but not listening: connection refused */
    std::string url;
    int fd = loopback_socket(false, &url);
    ASSERT_GE(fd, 0);

    orc_client_t *client = url_client(url, 1000);
    ASSERT_NE(nullptr, client);

    auto start = steady::now();
    uint64_t id;
    void *value;
    size_t length;
    EXPECT_EQ(ORC_CL_ERR_UNREACHABLE,
              orc_client_register(client, "h", 1, NULL, 0, &id));
    EXPECT_EQ(ORC_CL_ERR_UNREACHABLE,
              orc_client_kv_get(client, "k", 5000, &value, &length));
    EXPECT_EQ(ORC_CL_ERR_UNREACHABLE, orc_client_health(client));
    EXPECT_LT(steady::now() - start, std::chrono::milliseconds(1000));
    orc_client_destroy(client);
    close(fd);
}

TEST(client_net, silent_server_times_out)
{
    /* listening but never accepting: the connect succeeds, no reply comes */
    std::string url;
    int fd = loopback_socket(true, &url);
    ASSERT_GE(fd, 0);

    orc_client_t *client = url_client(url, 300);
    ASSERT_NE(nullptr, client);

    auto start = steady::now();
    EXPECT_EQ(ORC_CL_ERR_TIMEOUT, orc_client_health(client));
    auto t1 = steady::now();
    EXPECT_GE(t1 - start, std::chrono::milliseconds(250));
    EXPECT_LT(t1 - start, std::chrono::milliseconds(1500));

    /* a long-poll's wait extends the timeout */
    orc_mbox_msg_t *msgs;
    size_t count;
    EXPECT_EQ(ORC_CL_ERR_TIMEOUT,
              orc_client_mbox_recv(client, 1, 0, 400, &msgs, &count));
    auto t2 = steady::now();
    EXPECT_GE(t2 - t1, std::chrono::milliseconds(650));
    EXPECT_LT(t2 - t1, std::chrono::milliseconds(2000));
    orc_client_destroy(client);
    close(fd);
}

/* A server that answers the first request of its one connection and then
 * stays silent on it: a request that times out on that kept-alive
 * connection was sent, so it is a timeout, not an unreachable coordinator
 * (a reused connection has no connect time of its own) */
TEST(client_net, timeout_on_a_reused_connection_is_a_timeout)
{
    std::string url;
    int fd = loopback_socket(true, &url);
    ASSERT_GE(fd, 0);
    std::thread server([fd] {
        int c = accept(fd, NULL, NULL);
        std::string in;
        char buf[4096];
        ssize_t n;
        while ((in.find("\r\n\r\n") == std::string::npos) &&
               ((n = recv(c, buf, sizeof(buf), 0)) > 0)) {
            in.append(buf, (size_t)n);
        }
        const char ok[] = "HTTP/1.1 200 OK\r\nContent-Type: "
                          "application/json\r\nContent-Length: "
                          "15\r\n\r\n{\"status\":\"ok\"}";
        (void)!send(c, ok, sizeof(ok) - 1, MSG_NOSIGNAL);
        /* the second request: read, never answered, until the client
         * closes */
        while (recv(c, buf, sizeof(buf), 0) > 0) {
        }
        close(c);
    });

    orc_client_t *client = url_client(url, 300);
    ASSERT_NE(nullptr, client);
    EXPECT_EQ(ORC_CL_OK, orc_client_health(client));
    EXPECT_EQ(ORC_CL_ERR_TIMEOUT, orc_client_health(client))
        << orc_client_last_error();
    orc_client_destroy(client);
    server.join();
    close(fd);
}

/* one thread, one pooled handle: each request carries only its own method
 * and body, never the previous request's */
TEST_F(client_unit, pooled_handle_switches_methods)
{
    m_server.route("POST /v1/jobs/jobA/nodes/4/mailbox", 201, "{\"seq\": 1}");
    m_server.route("GET /v1/jobs/jobA/nodes/4/rdma/endpoint", 200, "{}");
    m_server.route("PUT /v1/jobs/jobA/nodes/4/keepalive", 200,
                   "{\"id\": 4, \"ttl\": 5}");
    m_server.route("DELETE /v1/jobs/jobA/kv/k", 204, "");
    m_server.route("PUT /v1/jobs/jobA/kv/k", 200, "{\"index\": 2}");

    char *json;
    ASSERT_EQ(ORC_CL_OK,
              orc_client_mbox_send(m_client, 4, 0, "{\"a\":1}", NULL));
    ASSERT_EQ(ORC_CL_OK, orc_client_endpoint_get(m_client, 4, &json));
    free(json);
    ASSERT_EQ(ORC_CL_OK, orc_client_keepalive(m_client, 4));
    ASSERT_EQ(ORC_CL_OK, orc_client_kv_delete(m_client, "k"));
    ASSERT_EQ(ORC_CL_OK, orc_client_kv_put(m_client, "k", "v", 1));
    ASSERT_EQ(ORC_CL_OK, orc_client_endpoint_get(m_client, 4, &json));
    free(json);

    auto reqs = m_server.requests();
    ASSERT_EQ(6u, reqs.size());
    const char *methods[] = {"POST", "GET", "PUT", "DELETE", "PUT", "GET"};
    for (size_t i = 0; i < 6; ++i) {
        EXPECT_EQ(methods[i], reqs[i].method) << i;
    }
    EXPECT_EQ("{\"body\":{\"a\":1}}", reqs[0].body);
    EXPECT_EQ("", reqs[1].body);
    EXPECT_EQ("", reqs[2].body);
    EXPECT_EQ("", reqs[3].body);
    EXPECT_EQ("{\"value\":{\"b64\":\"dg==\"}}", reqs[4].body);
    EXPECT_EQ("", reqs[5].body);
    for (const auto &r : reqs) {
        EXPECT_EQ(std::string("Bearer ") + TOKEN, r.auth);
    }
}

/* a long-poll blocked on a server that never answers: interrupt ends it at
 * once; later waits end before they start; plain requests still work */
TEST_F(client_unit, interrupt_ends_waits)
{
    std::string url;
    int fd = loopback_socket(true, &url);
    ASSERT_GE(fd, 0);
    orc_client_t *silent = make_client(url, 2000);
    ASSERT_NE(nullptr, silent);

    orc_cl_status_t status = ORC_CL_OK;
    steady::time_point returned;
    std::thread waiter([&] {
        void *v;
        size_t l;
        status   = orc_client_kv_get(silent, "k", 20000, &v, &l);
        returned = steady::now();
    });
    /* the waiter is connected (and so inside its call) once accept returns */
    int conn = accept(fd, NULL, NULL);
    ASSERT_GE(conn, 0);
    auto t0 = steady::now();
    orc_client_interrupt(silent);
    waiter.join();
    EXPECT_EQ(ORC_CL_ERR_CANCELED, status);
    EXPECT_LT(returned - t0, std::chrono::milliseconds(500));

    orc_mbox_msg_t *msgs;
    size_t count;
    t0 = steady::now();
    EXPECT_EQ(ORC_CL_ERR_CANCELED,
              orc_client_mbox_recv(silent, 1, 0, 5000, &msgs, &count));
    EXPECT_LT(steady::now() - t0, std::chrono::milliseconds(100));
    orc_client_destroy(silent);
    close(conn);
    close(fd);

    /* on a live server: waits cancelled, plain requests unaffected */
    m_server.route("GET /v1/jobs/jobA/nodes/4/rdma/endpoint", 200, "{}");
    orc_client_interrupt(m_client);
    char *json;
    ASSERT_EQ(ORC_CL_OK, orc_client_endpoint_get(m_client, 4, &json));
    free(json);
    orc_node_info_t *nodes;
    EXPECT_EQ(ORC_CL_ERR_CANCELED,
              orc_client_nodes_list(m_client, 1, 1000, &nodes, &count, NULL));
    EXPECT_EQ(1u, m_server.requests().size());
}
