/*
 * orc coordinator session: one per process (and coordinator URL, job and
 * token), shared by every orc iface of the process.
 *
 * The session is one node of the job in orcd: one registration, whose lease
 * the client's keep-alive thread renews, one mailbox and one endpoint record
 * listing the process's ifaces. Three threads serve all its agents:
 *  - rx: long-polls the node's mailbox and hands every message to the agent
 *    of the iface it is addressed to ("dst"); a request for an iface that is
 *    gone is refused ("unreachable");
 *  - tx: sends the outbox one message at a time, replies and refusals
 *    first (they complete a peer's pairing), then pairing requests and
 *    goodbyes in order; retries transient failures, and fails pairings past
 *    their deadline;
 *  - watch: while any agent has peers, long-polls the job's node list and
 *    tells the agents about peers whose node left (cleanly: deregistered, or
 *    died: its lease expired).
 * So a process holds three connections to orcd (two of them long-polls) and
 * one lease, however many ifaces it opens.
 */
#include "orc.h"

#include <ucs/debug/log.h>
#include <ucs/debug/memtrack_int.h>
#include <ucs/sys/string.h>
#include <ucs/time/time.h>

#include <errno.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define UCT_ORC_SESSION_WAIT_MS      30000 /* mailbox and watch long-polls */
#define UCT_ORC_SESSION_TICK_MS      100   /* retry interval */
#define UCT_ORC_SESSION_WATCH_MIN_MS 1000  /* between two node lists */
#define UCT_ORC_SESSION_MSG_TIMEOUT \
    10.0 /* seconds a reply or goodbye is
                                               retried */
#define UCT_ORC_SESSION_CALL_TIMEOUT_MS 3000

/* A mailbox message waiting in the outbox */
typedef struct uct_orc_session_msg {
    ucs_queue_elem_t queue;
    uint64_t dst;
    uint32_t iface_id;   /* of the sending agent */
    uint64_t conn_id;    /* != 0: that agent's pairing request */
    int urgent;          /* in session->urgent */
    ucs_time_t deadline; /* transient failures retried until then,
                                  from the first attempt; 0 before it */
    char *text;
} uct_orc_session_msg_t;

/*
 * Locking: `lock` protects agents (and every agent's state, see
 * uct_orc_agent_t), the outboxes, next_iface_id, lost and stopping; tx_cond and
 * watch_cond are waited on with it. url, job, token, pid, client, node_id,
 * domain and the threads are set before the session is published in the
 * session list and read-only afterwards. refcount and the list linkage are
 * protected by uct_orc_sessions_lock, which also serialises attach and
 * detach (and so the endpoint record updates).
 */
struct uct_orc_session {
    ucs_list_link_t list; /* in uct_orc_sessions */
    char *url;
    char *job;
    char *token;       /* "" when none */
    pid_t pid;         /* a forked child opens its own */
    unsigned refcount; /* attached agents */
    orc_client_t *client;
    uint64_t node_id;
    uint32_t domain;
    pthread_mutex_t lock;
    pthread_cond_t tx_cond;
    pthread_cond_t watch_cond;
    ucs_list_link_t agents;  /* uct_orc_agent_t */
    ucs_queue_head_t urgent; /* uct_orc_session_msg_t: replies */
    ucs_queue_head_t outbox; /* uct_orc_session_msg_t: the others */
    uint32_t next_iface_id;
    int lost; /* orcd forgot the node: no new attach */
    int stopping;
    pthread_t rx_thread;
    pthread_t tx_thread;
    pthread_t watch_thread;
    int nthreads; /* started, in the order above */
};

static pthread_mutex_t uct_orc_sessions_lock = PTHREAD_MUTEX_INITIALIZER;
static UCS_LIST_HEAD(uct_orc_sessions);

/* ------------------------------------------------------------- helpers */

pthread_mutex_t *uct_orc_session_lock(uct_orc_session_t *session)
{
    return &session->lock;
}

uint64_t uct_orc_session_node_id(const uct_orc_session_t *session)
{
    return session->node_id;
}

static uint32_t uct_orc_session_domain_hash(const char *url, const char *job)
{
    uint32_t hash = 2166136261u; /* FNV-1a */
    const char *p;

    for (p = url; *p != '\0'; ++p) {
        hash = (hash ^ (uint8_t)*p) * 16777619u;
    }
    hash = (hash ^ '\n') * 16777619u;
    for (p = job; *p != '\0'; ++p) {
        hash = (hash ^ (uint8_t)*p) * 16777619u;
    }
    return hash;
}

/* Wait on cond (session lock held) until deadline (UINT64_MAX: signal) */
static void uct_orc_session_wait(uct_orc_session_t *session,
                                 pthread_cond_t *cond, ucs_time_t deadline)
{
    ucs_time_t now = ucs_get_time();
    struct timespec ts;
    uint64_t ns;

    if (deadline == UINT64_MAX) {
        pthread_cond_wait(cond, &session->lock);
        return;
    }
    if (deadline <= now) {
        return;
    }

    ns = ucs_time_to_nsec(deadline - now);
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ns / UCS_NSEC_PER_SEC;
    ts.tv_nsec += ns % UCS_NSEC_PER_SEC;
    if (ts.tv_nsec >= UCS_NSEC_PER_SEC) {
        ts.tv_nsec -= UCS_NSEC_PER_SEC;
        ++ts.tv_sec;
    }
    pthread_cond_timedwait(cond, &session->lock, &ts);
}

static int uct_orc_session_is_lost(uct_orc_session_t *session)
{
    int lost;

    pthread_mutex_lock(&session->lock);
    lost = session->lost;
    pthread_mutex_unlock(&session->lock);
    return lost;
}

static int uct_orc_session_is_stopping(uct_orc_session_t *session)
{
    int stopping;

    pthread_mutex_lock(&session->lock);
    stopping = session->stopping;
    pthread_mutex_unlock(&session->lock);
    return stopping;
}

static uct_orc_agent_t *
uct_orc_session_find_agent_locked(uct_orc_session_t *session, uint32_t iface_id)
{
    uct_orc_agent_t *agent;

    ucs_list_for_each(agent, &session->agents, list) {
        if (agent->iface_id == iface_id) {
            return agent;
        }
    }
    return NULL;
}

char *uct_orc_json_dump(json_t *object)
{
    char *text;

    if (object == NULL) {
        return NULL;
    }
    text = json_dumps(object, JSON_COMPACT);
    json_decref(object);
    return text;
}

static int uct_orc_session_transient(orc_cl_status_t cl_status)
{
    return (cl_status == ORC_CL_ERR_UNREACHABLE) ||
           (cl_status == ORC_CL_ERR_TIMEOUT) || (cl_status == ORC_CL_ERR_BUSY);
}

/* ------------------------------------------------------------- outbox */

void uct_orc_session_post_locked(uct_orc_session_t *session, uint32_t iface_id,
                                 uint64_t dst, uint64_t conn_id, int urgent,
                                 char *text)
{
    uct_orc_session_msg_t *msg;

    if (text == NULL) {
        ucs_error("orc: node %" PRIu64 ": failed to encode a mailbox message",
                  session->node_id);
        return;
    }

    msg = ucs_calloc(1, sizeof(*msg), "orc mailbox message");
    if (msg == NULL) {
        ucs_error("orc: node %" PRIu64 ": no memory for a mailbox message",
                  session->node_id);
        free(text);
        return;
    }

    msg->dst      = dst;
    msg->iface_id = iface_id;
    msg->conn_id  = conn_id;
    msg->urgent   = urgent;
    msg->text     = text;
    ucs_queue_push(urgent ? &session->urgent : &session->outbox, &msg->queue);
    pthread_cond_signal(&session->tx_cond);
}

static void uct_orc_session_msg_free(uct_orc_session_msg_t *msg)
{
    free(msg->text);
    ucs_free(msg);
}

/* Fail the pairings past their deadline; the earliest other deadline. A
 * request orcd did not take for a whole PAIR_TIMEOUT means orcd is out of
 * reach: the requests queued behind it fail too. */
static ucs_time_t uct_orc_session_expire_locked(uct_orc_session_t *session)
{
    ucs_time_t now = ucs_get_time(), next = UINT64_MAX;
    uct_orc_agent_t *agent;
    int unsent = 0;

    ucs_list_for_each(agent, &session->agents, list) {
        next = ucs_min(next, uct_orc_agent_expire_locked(agent, now, &unsent));
    }
    if (unsent) {
        ucs_list_for_each(agent, &session->agents, list) {
            uct_orc_agent_fail_unsent_locked(agent);
        }
    }
    return next;
}

/* Send one outbox message, lock dropped meanwhile; returns whether it is to
 * be retried */
static int uct_orc_session_send_locked(uct_orc_session_t *session,
                                       uct_orc_session_msg_t *msg)
{
    orc_cl_status_t cl_status;
    uct_orc_agent_t *agent;

    pthread_mutex_unlock(&session->lock);
    cl_status = orc_client_mbox_send(session->client, msg->dst,
                                     session->node_id, msg->text, NULL);
    pthread_mutex_lock(&session->lock);

    if (msg->conn_id != 0) {
        agent = uct_orc_session_find_agent_locked(session, msg->iface_id);
        return (agent != NULL) &&
               uct_orc_agent_request_sent_locked(agent, msg->conn_id,
                                                 cl_status);
    }

    if (cl_status != ORC_CL_OK) {
        ucs_debug("orc: node %" PRIu64 ": message to node %" PRIu64 ": %s",
                  session->node_id, msg->dst, orc_client_last_error());
    }
    return uct_orc_session_transient(cl_status) && !session->stopping &&
           (ucs_get_time() < msg->deadline);
}

/* The next message to send: replies first */
static uct_orc_session_msg_t *
uct_orc_session_next_locked(uct_orc_session_t *session)
{
    ucs_queue_head_t *queue = !ucs_queue_is_empty(&session->urgent)
                                  ? &session->urgent
                                  : &session->outbox;
    uct_orc_session_msg_t *msg;

    if (ucs_queue_is_empty(queue)) {
        return NULL;
    }
    msg = ucs_queue_head_elem_non_empty(queue, uct_orc_session_msg_t, queue);
    ucs_queue_pull_non_empty(queue);
    return msg;
}

/* Whether a queued message is still worth sending; its first attempt
 * starts its retry deadline (a pairing request's: its pairing's) */
static int uct_orc_session_msg_start_locked(uct_orc_session_t *session,
                                            uct_orc_session_msg_t *msg)
{
    uct_orc_agent_t *agent;

    if (msg->deadline == 0) {
        msg->deadline =
            ucs_get_time() + ucs_time_from_sec(UCT_ORC_SESSION_MSG_TIMEOUT);
    }
    if (msg->conn_id == 0) {
        return 1;
    }
    agent = uct_orc_session_find_agent_locked(session, msg->iface_id);
    return (agent != NULL) &&
           uct_orc_agent_request_start_locked(agent, msg->conn_id);
}

/* The tx thread: the outbox in order, and the pairing deadlines. When the
 * session stops it sends what is queued (goodbyes of the last eps) once. */
static void *uct_orc_session_tx_main(void *arg)
{
    uct_orc_session_t *session = arg;
    uct_orc_session_msg_t *msg;
    ucs_time_t next;

    pthread_mutex_lock(&session->lock);
    for (;;) {
        next = uct_orc_session_expire_locked(session);
        msg  = uct_orc_session_next_locked(session);
        if (msg == NULL) {
            if (session->stopping) {
                break;
            }
            uct_orc_session_wait(session, &session->tx_cond, next);
            continue;
        }

        if (uct_orc_session_msg_start_locked(session, msg) &&
            uct_orc_session_send_locked(session, msg)) {
            /* a transient failure: the same message again after a tick */
            ucs_queue_push_head(msg->urgent ? &session->urgent
                                            : &session->outbox,
                                &msg->queue);
            uct_orc_session_wait(session, &session->tx_cond,
                                 ucs_get_time() + ucs_time_from_msec(
                                                      UCT_ORC_SESSION_TICK_MS));
            continue;
        }
        uct_orc_session_msg_free(msg);
    }
    pthread_mutex_unlock(&session->lock);
    return NULL;
}

/* ----------------------------------------------------------------- rx */

/* A pairing request for an iface of ours that is closed */
static void uct_orc_session_refuse_locked(uct_orc_session_t *session,
                                          uint64_t from, json_int_t src,
                                          json_int_t dst, json_int_t conn_id)
{
    char *text = uct_orc_json_dump(
        json_pack("{s:s, s:I, s:I, s:I, s:s}", "type", "rej", "dst", src, "src",
                  dst, "conn", conn_id, "reason", "unreachable"));

    uct_orc_session_post_locked(session, dst, from, 0, 1, text);
}

/* Hand one mailbox message to the agent it is addressed to */
static void uct_orc_session_dispatch_locked(uct_orc_session_t *session,
                                            const orc_mbox_msg_t *msg)
{
    json_int_t dst, src, conn_id = 0;
    uct_orc_agent_t *agent;
    json_error_t error;
    const char *type;
    json_t *body;

    body = json_loads(msg->body_json, 0, &error);
    if ((body == NULL) || (json_unpack(body, "{s:s}", "type", &type) != 0)) {
        ucs_warn("orc: node %" PRIu64 ": malformed mailbox message %" PRIu64
                 " from node %" PRIu64,
                 session->node_id, msg->seq, msg->from);
        goto out;
    }

    if (!strcmp(type, "probe")) {
        goto out; /* a peer checking whether we are alive */
    }

    if ((msg->from == 0) ||
        (json_unpack(body, "{s:I, s:I, s?I}", "dst", &dst, "src", &src, "conn",
                     &conn_id) != 0) ||
        (dst < 0) || (dst > UINT32_MAX) || (src < 0) || (src > UINT32_MAX)) {
        ucs_warn("orc: node %" PRIu64
                 ": mailbox message '%s' from node %" PRIu64
                 " lacks a valid sender or destination",
                 session->node_id, type, msg->from);
        goto out;
    }

    agent = uct_orc_session_find_agent_locked(session, dst);
    if (agent != NULL) {
        uct_orc_agent_handle_msg_locked(agent, msg->from, src, type, body);
    } else if (!strcmp(type, "req")) {
        ucs_debug("orc: node %" PRIu64 ": refusing a pairing request for "
                  "closed iface %" PRId64,
                  session->node_id, (int64_t)dst);
        uct_orc_session_refuse_locked(session, msg->from, src, dst, conn_id);
    }

out:
    if (body != NULL) {
        json_decref(body);
    }
}

/*
 * orcd does not know our node any more: its lease expired (410; the peers
 * fail their eps to us, so ours fail too) or orcd lost its state (404; the
 * QPs still work, pairings in progress time out). Either way no message
 * will reach us: the mailbox is not polled again, and the ifaces opened
 * from now on register a new node.
 */
static void uct_orc_session_lost_locked(uct_orc_session_t *session,
                                        orc_cl_status_t cl_status)
{
    uct_orc_agent_t *agent;

    ucs_error("orc: node %" PRIu64 " of job '%s' is gone from orcd at %s "
              "(%s): this process's orc interfaces can pair no more%s",
              session->node_id, session->job, session->url,
              orc_client_last_error(),
              (cl_status == ORC_CL_ERR_GONE) ? ", their endpoints fail" : "");
    session->lost = 1;
    if (cl_status == ORC_CL_ERR_GONE) {
        ucs_list_for_each(agent, &session->agents, list) {
            uct_orc_agent_node_lost_locked(agent);
        }
    }
}

/* The rx thread: long-polls the mailbox; every answer acknowledges the
 * messages of the previous one */
static void *uct_orc_session_rx_main(void *arg)
{
    uct_orc_session_t *session = arg;
    orc_cl_status_t cl_status, last_error = ORC_CL_OK;
    orc_mbox_msg_t *msgs;
    uint64_t cursor = 0;
    size_t i, count;

    while (!uct_orc_session_is_stopping(session)) {
        cl_status =
            orc_client_mbox_recv(session->client, session->node_id, cursor,
                                 UCT_ORC_SESSION_WAIT_MS, &msgs, &count);
        if (cl_status != ORC_CL_OK) {
            if (uct_orc_session_is_stopping(session)) {
                break;
            }
            if ((cl_status == ORC_CL_ERR_GONE) ||
                (cl_status == ORC_CL_ERR_NOT_FOUND)) {
                pthread_mutex_lock(&session->lock);
                uct_orc_session_lost_locked(session, cl_status);
                pthread_mutex_unlock(&session->lock);
                break;
            }
            if (cl_status != last_error) {
                ucs_debug("orc: node %" PRIu64 ": mailbox: %s",
                          session->node_id, orc_client_last_error());
                last_error = cl_status;
            }
            usleep(UCT_ORC_SESSION_TICK_MS * 1000);
            continue;
        }

        last_error = ORC_CL_OK;
        pthread_mutex_lock(&session->lock);
        for (i = 0; i < count; ++i) {
            cursor = ucs_max(cursor, msgs[i].seq);
            uct_orc_session_dispatch_locked(session, &msgs[i]);
        }
        pthread_mutex_unlock(&session->lock);
        orc_client_mbox_free(msgs, count);
    }
    return NULL;
}

/* -------------------------------------------------------------- watch */

void uct_orc_session_links_changed_locked(uct_orc_session_t *session)
{
    pthread_cond_signal(&session->watch_cond);
}

static int uct_orc_session_has_links_locked(uct_orc_session_t *session)
{
    uct_orc_agent_t *agent;

    ucs_list_for_each(agent, &session->agents, list) {
        if (uct_orc_agent_has_links_locked(agent)) {
            return 1;
        }
    }
    return 0;
}

static int uct_orc_session_node_listed(const orc_node_info_t *nodes,
                                       size_t count, uint64_t id)
{
    size_t i;

    for (i = 0; i < count; ++i) {
        if (nodes[i].id == id) {
            return 1;
        }
    }
    return 0;
}

/* The peers of the agents that are not in the node list, each once */
typedef struct uct_orc_session_unlisted {
    const orc_node_info_t *nodes;
    size_t count;
    uint64_t *peers;
    size_t npeers;
    size_t capacity;
} uct_orc_session_unlisted_t;

static void uct_orc_session_add_unlisted(void *arg, uint64_t peer)
{
    uct_orc_session_unlisted_t *u = arg;
    uint64_t *grown;
    size_t i;

    if (uct_orc_session_node_listed(u->nodes, u->count, peer)) {
        return;
    }
    for (i = 0; i < u->npeers; ++i) {
        if (u->peers[i] == peer) {
            return;
        }
    }
    if (u->npeers == u->capacity) {
        grown =
            ucs_realloc(u->peers, ucs_max(16, 2 * u->capacity) * sizeof(*grown),
                        "orc unlisted peers");
        if (grown == NULL) {
            return; /* checked next time */
        }
        u->peers    = grown;
        u->capacity = ucs_max(16, 2 * u->capacity);
    }
    u->peers[u->npeers++] = peer;
}

/*
 * Called with the lock held; drops it while probing. A peer whose node is
 * not in the job's node list any more either left cleanly (deregistered:
 * orcd answers 404 for its mailbox) or died (its lease expired: 410). Our
 * own node missing from the list means orcd lost its state (a restart):
 * nothing is concluded about the peers then.
 */
static void uct_orc_session_check_peers_locked(uct_orc_session_t *session,
                                               const orc_node_info_t *nodes,
                                               size_t count)
{
    static const char probe[]           = "{\"type\":\"probe\"}";
    uct_orc_session_unlisted_t unlisted = {nodes, count, NULL, 0, 0};
    orc_cl_status_t cl_status;
    uct_orc_agent_t *agent;
    uint64_t peer;
    size_t i;

    if (!uct_orc_session_node_listed(nodes, count, session->node_id)) {
        return;
    }

    ucs_list_for_each(agent, &session->agents, list) {
        uct_orc_agent_foreach_peer_locked(agent, uct_orc_session_add_unlisted,
                                          &unlisted);
    }

    for (i = 0; (i < unlisted.npeers) && !session->stopping; ++i) {
        peer = unlisted.peers[i];
        pthread_mutex_unlock(&session->lock);
        cl_status = orc_client_mbox_send(session->client, peer,
                                         session->node_id, probe, NULL);
        pthread_mutex_lock(&session->lock);
        if ((cl_status != ORC_CL_ERR_GONE) &&
            (cl_status != ORC_CL_ERR_NOT_FOUND)) {
            continue; /* alive after all, or orcd in trouble */
        }

        ucs_debug("orc: node %" PRIu64 ": peer node %" PRIu64 " %s",
                  session->node_id, peer,
                  (cl_status == ORC_CL_ERR_GONE) ? "died (lease expired)"
                                                 : "left");
        ucs_list_for_each(agent, &session->agents, list) {
            uct_orc_agent_peer_gone_locked(agent, peer,
                                           cl_status == ORC_CL_ERR_GONE);
        }
    }
    ucs_free(unlisted.peers);
}

/*
 * The watch thread: while there are peers to watch, long-polls the job's
 * node list (it returns when the membership revision moves) and checks the
 * peers against it, at most once per UCT_ORC_SESSION_WATCH_MIN_MS (a job
 * starting up changes its list often, and every list goes to every
 * watcher). orcd being unreachable is not a peer failure: nothing happens
 * then.
 */
static void *uct_orc_session_watch_main(void *arg)
{
    uct_orc_session_t *session = arg;
    orc_cl_status_t cl_status;
    orc_node_info_t *nodes;
    uint64_t index = 0, new_index;
    ucs_time_t next;
    size_t count;

    pthread_mutex_lock(&session->lock);
    while (!session->stopping) {
        if (!uct_orc_session_has_links_locked(session)) {
            uct_orc_session_wait(session, &session->watch_cond, UINT64_MAX);
            continue;
        }

        pthread_mutex_unlock(&session->lock);
        cl_status = orc_client_nodes_list(session->client, index,
                                          UCT_ORC_SESSION_WAIT_MS, &nodes,
                                          &count, &new_index);
        pthread_mutex_lock(&session->lock);
        if (cl_status != ORC_CL_OK) {
            uct_orc_session_wait(session, &session->watch_cond,
                                 ucs_get_time() + ucs_time_from_msec(
                                                      UCT_ORC_SESSION_TICK_MS));
            continue;
        }

        index = new_index;
        uct_orc_session_check_peers_locked(session, nodes, count);
        orc_client_nodes_free(nodes, count);
        next =
            ucs_get_time() + ucs_time_from_msec(UCT_ORC_SESSION_WATCH_MIN_MS);
        while (!session->stopping && (ucs_get_time() < next)) {
            uct_orc_session_wait(session, &session->watch_cond, next);
        }
    }
    pthread_mutex_unlock(&session->lock);
    return NULL;
}

/* ----------------------------------------------------- join and leave */

static void uct_orc_session_client_log(void *arg, const char *message)
{
    ucs_warn("orc: coordinator: %s", message);
}

/* The job's token: UCX_ORC_TOKEN, or the first line of UCX_ORC_TOKEN_FILE,
 * or none (""); *token_p is ucs_free'd by the caller */
static ucs_status_t uct_orc_session_token(const uct_orc_iface_config_t *config,
                                          char **token_p)
{
    orc_cl_status_t cl_status;
    char *token;

    if ((config->token[0] != '\0') || (config->token_file[0] == '\0')) {
        *token_p = ucs_strdup(config->token, "orc token");
        return (*token_p == NULL) ? UCS_ERR_NO_MEMORY : UCS_OK;
    }

    cl_status = orc_client_read_token_file(config->token_file, &token);
    if (cl_status != ORC_CL_OK) {
        ucs_error("orc: invalid UCX_ORC_TOKEN_FILE='%s': %s",
                  config->token_file, orc_client_last_error());
        return UCS_ERR_INVALID_PARAM;
    }

    *token_p = ucs_strdup(token, "orc token");
    memset(token, 0, strlen(token));
    free(token);
    return (*token_p == NULL) ? UCS_ERR_NO_MEMORY : UCS_OK;
}

static ucs_status_t uct_orc_session_client(uct_orc_session_t *session)
{
    orc_client_params_t params = {0};
    orc_cl_status_t cl_status;

    params.field_mask =
        ORC_CLIENT_PARAM_FIELD_URL | ORC_CLIENT_PARAM_FIELD_JOB |
        ORC_CLIENT_PARAM_FIELD_TIMEOUT | ORC_CLIENT_PARAM_FIELD_LOG;
    params.url        = session->url;
    params.job        = session->job;
    params.timeout_ms = UCT_ORC_SESSION_CALL_TIMEOUT_MS;
    params.log        = uct_orc_session_client_log;
    params.log_arg    = session;
    if (session->token[0] != '\0') {
        params.field_mask |= ORC_CLIENT_PARAM_FIELD_TOKEN;
        params.token = session->token;
    }

    cl_status = orc_client_create(&params, &session->client);
    if (cl_status != ORC_CL_OK) {
        /* the client checks the URL, the job name and the token */
        ucs_error("orc: invalid UCX_ORC_COORDINATOR, UCX_ORC_JOB or "
                  "UCX_ORC_TOKEN: %s",
                  orc_client_last_error());
        return (cl_status == ORC_CL_ERR_NO_MEMORY) ? UCS_ERR_NO_MEMORY
                                                   : UCS_ERR_INVALID_PARAM;
    }
    return UCS_OK;
}

/* Register the process as a node of the job, waiting up to
 * UCX_ORC_COORDINATOR_WAIT for orcd */
static ucs_status_t
uct_orc_session_register(uct_orc_session_t *session,
                         const uct_orc_iface_config_t *config,
                         const orc_dev_config_t *dev_config)
{
    ucs_time_t deadline =
        ucs_get_time() + ucs_time_from_sec(config->coordinator_wait);
    orc_cl_status_t cl_status;
    char host[256], summary[ORC_TOPO_SUMMARY_MAX], *labels;

    if (gethostname(host, sizeof(host)) != 0) {
        ucs_strncpy_zero(host, "unknown", sizeof(host));
    }
    host[sizeof(host) - 1] = '\0';

    /* orcctl nodes shows the topology summary of the process's devices */
    uct_orc_topo_summary(dev_config, summary);
    labels = uct_orc_json_dump(json_pack("{s:s, s:s}", "transport",
                                         UCT_ORC_TL_NAME, "topology", summary));
    if (labels == NULL) {
        ucs_error("orc: cannot build the node labels");
        return UCS_ERR_NO_MEMORY;
    }

    for (;;) {
        cl_status = orc_client_register(session->client, host, getpid(), labels,
                                        config->lease_ttl, &session->node_id);
        if (!((cl_status == ORC_CL_ERR_UNREACHABLE) ||
              (cl_status == ORC_CL_ERR_TIMEOUT)) ||
            (ucs_get_time() >= deadline)) {
            break;
        }
        usleep(UCT_ORC_SESSION_TICK_MS * 1000);
    }
    free(labels);

    if ((cl_status == ORC_CL_ERR_UNREACHABLE) ||
        (cl_status == ORC_CL_ERR_TIMEOUT)) {
        ucs_error("orc: coordinator orcd at %s is unreachable (%s): start "
                  "orcd (contrib/orc-run does), set UCX_ORC_COORDINATOR, or "
                  "UCX_ORC_COORDINATOR_WAIT to wait for it",
                  session->url, orc_client_last_error());
        return UCS_ERR_UNREACHABLE;
    } else if (cl_status != ORC_CL_OK) {
        ucs_error("orc: orcd at %s refused to register a node of job '%s': "
                  "%s",
                  session->url, session->job, orc_client_last_error());
        return UCS_ERR_REJECTED;
    }

    ucs_debug("orc: pid %d is node %" PRIu64 " of job '%s' at %s", getpid(),
              session->node_id, session->job, session->url);
    return UCS_OK;
}

/* The endpoint record of the node: the process and its ifaces. Called with
 * uct_orc_sessions_lock held (attach and detach publish in turn). */
static ucs_status_t uct_orc_session_publish(uct_orc_session_t *session)
{
    orc_cl_status_t cl_status;
    uct_orc_agent_t *agent;
    json_t *ifaces;
    char *text;

    ifaces = json_array();
    pthread_mutex_lock(&session->lock);
    ucs_list_for_each(agent, &session->agents, list) {
        json_array_append_new(
            ifaces,
            json_pack("{s:I, s:s, s:s, s:i}", "id", (json_int_t)agent->iface_id,
                      "device", agent->dev_name, "backend",
                      orc_dev_backend_name(agent->params.dev->backend), "mtu",
                      (int)agent->params.mtu));
    }
    pthread_mutex_unlock(&session->lock);

    text = uct_orc_json_dump(
        json_pack("{s:s, s:I, s:o}", "transport", UCT_ORC_TL_NAME, "pid",
                  (json_int_t)session->pid, "ifaces", ifaces));
    if (text == NULL) {
        ucs_error("orc: failed to encode the endpoint record");
        return UCS_ERR_NO_MEMORY;
    }

    cl_status =
        orc_client_endpoint_put(session->client, session->node_id, text);
    free(text);
    if (cl_status != ORC_CL_OK) {
        ucs_error("orc: cannot publish the endpoint record of node %" PRIu64
                  " at %s: %s",
                  session->node_id, session->url, orc_client_last_error());
        return UCS_ERR_IO_ERROR;
    }
    return UCS_OK;
}

static void uct_orc_session_stop_threads(uct_orc_session_t *session)
{
    pthread_mutex_lock(&session->lock);
    session->stopping = 1;
    pthread_cond_broadcast(&session->tx_cond);
    pthread_cond_broadcast(&session->watch_cond);
    pthread_mutex_unlock(&session->lock);
    orc_client_interrupt(session->client); /* ends the long-polls */

    if (session->nthreads > 2) {
        pthread_join(session->watch_thread, NULL);
    }
    if (session->nthreads > 1) {
        pthread_join(session->tx_thread, NULL);
    }
    if (session->nthreads > 0) {
        pthread_join(session->rx_thread, NULL);
    }
    session->nthreads = 0;
}

static ucs_status_t uct_orc_session_start_threads(uct_orc_session_t *session)
{
    void *(*mains[])(void *) = {uct_orc_session_rx_main,
                                uct_orc_session_tx_main,
                                uct_orc_session_watch_main};
    pthread_t *threads[]     = {&session->rx_thread, &session->tx_thread,
                                &session->watch_thread};
    int ret;

    for (session->nthreads = 0; session->nthreads < 3; ++session->nthreads) {
        ret = pthread_create(threads[session->nthreads], NULL,
                             mains[session->nthreads], session);
        if (ret != 0) {
            ucs_error("orc: failed to start a coordinator thread: %s",
                      strerror(ret));
            uct_orc_session_stop_threads(session);
            return UCS_ERR_IO_ERROR;
        }
    }
    return UCS_OK;
}

static void uct_orc_session_free(uct_orc_session_t *session)
{
    uct_orc_session_msg_t *msg;

    ucs_queue_for_each_extract(msg, &session->urgent, queue, 1) {
        uct_orc_session_msg_free(msg);
    }
    ucs_queue_for_each_extract(msg, &session->outbox, queue, 1) {
        uct_orc_session_msg_free(msg);
    }
    orc_client_destroy(session->client);
    pthread_cond_destroy(&session->watch_cond);
    pthread_cond_destroy(&session->tx_cond);
    pthread_mutex_destroy(&session->lock);
    if (session->token != NULL) {
        memset(session->token, 0, strlen(session->token));
    }
    ucs_free(session->token);
    ucs_free(session->job);
    ucs_free(session->url);
    ucs_free(session);
}

static uct_orc_session_t *uct_orc_session_alloc(const char *url,
                                                const char *job, char *token)
{
    uct_orc_session_t *session;
    pthread_condattr_t attr;

    session = ucs_calloc(1, sizeof(*session), "orc session");
    if (session == NULL) {
        ucs_free(token);
        return NULL;
    }

    session->url   = ucs_strdup(url, "orc url");
    session->job   = ucs_strdup(job, "orc job");
    session->token = token;
    session->pid   = getpid();
    ucs_list_head_init(&session->agents);
    ucs_queue_head_init(&session->urgent);
    ucs_queue_head_init(&session->outbox);
    pthread_mutex_init(&session->lock, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&session->tx_cond, &attr);
    pthread_cond_init(&session->watch_cond, &attr);
    pthread_condattr_destroy(&attr);
    if ((session->url == NULL) || (session->job == NULL)) {
        uct_orc_session_free(session);
        return NULL;
    }
    return session;
}

/* A new session: client, node, threads. Called with uct_orc_sessions_lock
 * held. */
static ucs_status_t uct_orc_session_create(const uct_orc_iface_config_t *config,
                                           const orc_dev_config_t *dev_config,
                                           char *token,
                                           uct_orc_session_t **session_p)
{
    uct_orc_session_t *session;
    ucs_status_t status;

    session = uct_orc_session_alloc(config->coordinator, config->job, token);
    if (session == NULL) {
        return UCS_ERR_NO_MEMORY;
    }

    status = uct_orc_session_client(session);
    if (status != UCS_OK) {
        goto err_free;
    }

    status = uct_orc_session_register(session, config, dev_config);
    if (status != UCS_OK) {
        goto err_free;
    }

    status = uct_orc_session_start_threads(session);
    if (status != UCS_OK) {
        goto err_deregister;
    }

    session->domain = uct_orc_session_domain_hash(session->url, session->job);
    ucs_list_add_tail(&uct_orc_sessions, &session->list);
    *session_p = session;
    return UCS_OK;

err_deregister:
    orc_client_deregister(session->client, session->node_id);
err_free:
    uct_orc_session_free(session);
    return status;
}

/* Stop the threads, leave the job. Called with uct_orc_sessions_lock held,
 * once no agent is attached. */
static void uct_orc_session_destroy(uct_orc_session_t *session)
{
    orc_cl_status_t cl_status;

    ucs_list_del(&session->list);
    uct_orc_session_stop_threads(session);
    cl_status = orc_client_deregister(session->client, session->node_id);
    if ((cl_status != ORC_CL_OK) && (cl_status != ORC_CL_ERR_NOT_FOUND) &&
        (cl_status != ORC_CL_ERR_GONE)) {
        ucs_debug("orc: failed to deregister node %" PRIu64 ": %s",
                  session->node_id, orc_client_last_error());
    }
    uct_orc_session_free(session);
}

/* The session of this process for the config's coordinator, job and token,
 * created if there is none. Called with uct_orc_sessions_lock held. */
static ucs_status_t uct_orc_session_get(const uct_orc_iface_config_t *config,
                                        const orc_dev_config_t *dev_config,
                                        uct_orc_session_t **session_p)
{
    uct_orc_session_t *session;
    ucs_status_t status;
    char *token;

    status = uct_orc_session_token(config, &token);
    if (status != UCS_OK) {
        return status;
    }

    ucs_list_for_each(session, &uct_orc_sessions, list) {
        if ((session->pid == getpid()) && !uct_orc_session_is_lost(session) &&
            !strcmp(session->url, config->coordinator) &&
            !strcmp(session->job, config->job) &&
            !strcmp(session->token, token)) {
            memset(token, 0, strlen(token));
            ucs_free(token);
            *session_p = session;
            return UCS_OK;
        }
    }

    return uct_orc_session_create(config, dev_config, token, session_p);
}

ucs_status_t uct_orc_session_attach(uct_orc_agent_t *agent,
                                    const uct_orc_iface_config_t *config,
                                    const orc_dev_config_t *dev_config,
                                    uint64_t *node_id_p, uint32_t *domain_p)
{
    uct_orc_session_t *session;
    ucs_status_t status;

    pthread_mutex_lock(&uct_orc_sessions_lock);
    status = uct_orc_session_get(config, dev_config, &session);
    if (status != UCS_OK) {
        goto out;
    }

    pthread_mutex_lock(&session->lock);
    agent->session  = session;
    agent->iface_id = ++session->next_iface_id;
    ucs_list_add_tail(&session->agents, &agent->list);
    pthread_mutex_unlock(&session->lock);
    ++session->refcount;

    status = uct_orc_session_publish(session);
    if (status != UCS_OK) {
        pthread_mutex_unlock(&uct_orc_sessions_lock);
        uct_orc_session_detach(agent);
        return status;
    }

    *node_id_p = session->node_id;
    *domain_p  = session->domain;
out:
    pthread_mutex_unlock(&uct_orc_sessions_lock);
    return status;
}

void uct_orc_session_detach(uct_orc_agent_t *agent)
{
    uct_orc_session_t *session = agent->session;

    if (session == NULL) {
        return;
    }

    pthread_mutex_lock(&uct_orc_sessions_lock);
    pthread_mutex_lock(&session->lock);
    uct_orc_agent_farewell_locked(agent);
    ucs_list_del(&agent->list);
    pthread_mutex_unlock(&session->lock);
    agent->session = NULL;

    if (--session->refcount == 0) {
        uct_orc_session_destroy(session);
    } else {
        (void)uct_orc_session_publish(session); /* logged */
    }
    pthread_mutex_unlock(&uct_orc_sessions_lock);
}
