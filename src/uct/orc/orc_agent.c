/*
 * orc pairing agent: pairs RC queue pairs through orcd mailboxes.
 *
 * Protocol (JSON bodies of mailbox messages, "from" = sender node id):
 *   request  {"type":"req","conn":C,"qpn":Q,"psn":P,"mtu":M,"addr":"<hex>"}
 *   reply    {"type":"rep","conn":C,"qpn":Q,"psn":P,"mtu":M,"addr":"<hex>",
 *             "credits":N}
 *   refusal  {"type":"rej","conn":C,"reason":"unreachable"|"busy"|"error"}
 *   goodbye  {"type":"bye","conn":C}   (the initiator destroyed its ep)
 * C is the initiator's connection id (unique per initiator iface), addr the
 * device address packed by orc_dev_addr_pack(), N the number of AM credits
 * the passive side granted.
 *
 * The agent never touches UCT objects: it works on device-layer objects
 * (thread-safe) and hands results to the iface through its event queue.
 */
#include "orc.h"

#include <ucs/debug/log.h>
#include <ucs/debug/memtrack_int.h>
#include <ucs/sys/string.h>
#include <ucs/sys/sys.h>
#include <ucs/time/time.h>

#include <jansson.h>

#include <errno.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define UCT_ORC_AGENT_WAIT_MS      300  /* mailbox long-poll */
#define UCT_ORC_AGENT_TICK_MS      100  /* tx thread deadline scan */
#define UCT_ORC_AGENT_ADDR_MAX     256

static uint32_t uct_orc_agent_psn(void)
{
    return ucs_generate_uuid((uintptr_t)&uct_orc_agent_psn) & 0xffffff;
}

static void uct_orc_agent_signal(uct_orc_agent_t *agent)
{
    uint64_t one = 1;
    ssize_t ret;

    ret = write(agent->event_fd, &one, sizeof(one));
    (void)ret; /* a saturated eventfd is readable anyway */
}

/* Called with agent->lock held. wake: the event is one the application may
 * wait for (an ep connected or failed); passive QPs coming and going are
 * not (the iface takes them at its next progress, which a message on the
 * passive QP brings), so they do not signal the iface's event fd. */
static void uct_orc_agent_push_locked(uct_orc_agent_t *agent,
                                      uct_orc_agent_event_t *ev, int wake)
{
    ucs_queue_push(&agent->events, &ev->queue);
    __atomic_store_n(&agent->nevents, agent->nevents + 1, __ATOMIC_RELEASE);
    if (wake) {
        uct_orc_agent_signal(agent);
    }
}

static uct_orc_agent_event_t *
uct_orc_agent_event_new(uct_orc_agent_event_type_t type, uint64_t conn_id)
{
    uct_orc_agent_event_t *ev = ucs_calloc(1, sizeof(*ev), "orc agent event");

    if (ev == NULL) {
        ucs_error("orc: agent: out of memory");
        return NULL;
    }
    ev->type    = type;
    ev->conn_id = conn_id;
    return ev;
}

/* Called with agent->lock held; unlinks and frees the pairing */
static void uct_orc_agent_fail_locked(uct_orc_agent_t *agent,
                                      uct_orc_agent_pairing_t *pairing,
                                      ucs_status_t status, const char *why)
{
    uct_orc_agent_event_t *ev;

    ucs_debug("orc: node %" PRIu64 ": pairing %" PRIu64 " with node %" PRIu64
              " failed: %s", agent->params.node_id, pairing->conn_id,
              pairing->peer_node, why);
    ucs_list_del(&pairing->list);
    ev = uct_orc_agent_event_new(UCT_ORC_AGENT_EV_EP_FAILED, pairing->conn_id);
    if (ev != NULL) {
        ev->status = status;
        uct_orc_agent_push_locked(agent, ev, 1);
    }
    ucs_free(pairing);
}

static uct_orc_agent_pairing_t *
uct_orc_agent_find_locked(uct_orc_agent_t *agent, uint64_t conn_id)
{
    uct_orc_agent_pairing_t *pairing;

    ucs_list_for_each(pairing, &agent->pairings, list) {
        if (pairing->conn_id == conn_id) {
            return pairing;
        }
    }
    return NULL;
}

/* ------------------------------------------------------------ QP helpers */

orc_qp_t *uct_orc_agent_qp_create(uct_orc_agent_t *agent, uint32_t *psn_p)
{
    orc_qp_init_attr_t init_attr;
    struct ibv_qp_attr attr;
    orc_qp_t *qp;
    int ret;

    memset(&init_attr, 0, sizeof(init_attr));
    init_attr.send_cq    = agent->params.send_cq;
    init_attr.recv_cq    = agent->params.recv_cq;
    init_attr.srq        = agent->params.srq;
    init_attr.cap        = agent->params.qp_cap;
    init_attr.qp_type    = IBV_QPT_RC;
    init_attr.sq_sig_all = 0;

    qp = orc_qp_create(agent->params.pd, &init_attr);
    if (qp == NULL) {
        ucs_error("orc: failed to create an RC queue pair: %m");
        return NULL;
    }

    memset(&attr, 0, sizeof(attr));
    attr.qp_state        = IBV_QPS_INIT;
    attr.pkey_index      = 0;
    attr.port_num        = agent->params.port;
    attr.qp_access_flags = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE |
                           IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_ATOMIC;
    ret = orc_qp_modify(qp, &attr, IBV_QP_STATE | IBV_QP_PKEY_INDEX |
                                   IBV_QP_PORT | IBV_QP_ACCESS_FLAGS);
    if (ret != 0) {
        ucs_error("orc: qp 0x%x: RESET->INIT failed: %s", qp->qp_num,
                  strerror(ret));
        orc_qp_destroy(qp);
        return NULL;
    }

    *psn_p = uct_orc_agent_psn();
    return qp;
}

static int uct_orc_agent_hex_decode(const char *hex, uint8_t *buf,
                                    size_t max, size_t *len_p)
{
    size_t len = strlen(hex), i;
    unsigned byte;

    if ((len % 2) != 0 || (len / 2) > max) {
        return -1;
    }
    for (i = 0; i < len / 2; ++i) {
        if (sscanf(hex + 2 * i, "%2x", &byte) != 1) {
            return -1;
        }
        buf[i] = byte;
    }
    *len_p = len / 2;
    return 0;
}

/* INIT -> RTR -> RTS towards the peer. Returns 0, EHOSTUNREACH/EINVAL from
 * the address, or the failing modify's errno. */
static int uct_orc_agent_qp_connect(uct_orc_agent_t *agent, orc_qp_t *qp,
                                    uint32_t my_psn, uint32_t peer_qpn,
                                    uint32_t peer_psn, int peer_mtu,
                                    const char *peer_addr_hex)
{
    uint8_t addr[UCT_ORC_AGENT_ADDR_MAX];
    struct ibv_qp_attr attr;
    size_t addr_len;
    int ret;

    if (uct_orc_agent_hex_decode(peer_addr_hex, addr, sizeof(addr),
                                 &addr_len) != 0) {
        return EINVAL;
    }

    memset(&attr, 0, sizeof(attr));
    ret = orc_dev_addr_unpack(agent->params.dev, agent->params.port, addr,
                              addr_len, &attr.ah_attr);
    if (ret != 0) {
        return ret;
    }

    attr.qp_state           = IBV_QPS_RTR;
    attr.path_mtu           = (enum ibv_mtu)ucs_min((int)agent->params.mtu,
                                                    peer_mtu);
    attr.dest_qp_num        = peer_qpn;
    attr.rq_psn             = peer_psn;
    attr.max_dest_rd_atomic = agent->params.max_rd_atomic;
    attr.min_rnr_timer      = 12;
    attr.ah_attr.port_num   = agent->params.port;
    ret = orc_qp_modify(qp, &attr, IBV_QP_STATE | IBV_QP_AV |
                                   IBV_QP_PATH_MTU | IBV_QP_DEST_QPN |
                                   IBV_QP_RQ_PSN |
                                   IBV_QP_MAX_DEST_RD_ATOMIC |
                                   IBV_QP_MIN_RNR_TIMER);
    if (ret != 0) {
        ucs_debug("orc: qp 0x%x: INIT->RTR failed: %s", qp->qp_num,
                  strerror(ret));
        return ret;
    }

    memset(&attr, 0, sizeof(attr));
    attr.qp_state      = IBV_QPS_RTS;
    attr.timeout       = agent->params.qp_timeout;
    attr.retry_cnt     = agent->params.retry_count;
    attr.rnr_retry     = agent->params.rnr_retry;
    attr.sq_psn        = my_psn;
    attr.max_rd_atomic = agent->params.max_rd_atomic;
    ret = orc_qp_modify(qp, &attr, IBV_QP_STATE | IBV_QP_TIMEOUT |
                                   IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY |
                                   IBV_QP_SQ_PSN | IBV_QP_MAX_QP_RD_ATOMIC);
    if (ret != 0) {
        ucs_debug("orc: qp 0x%x: RTR->RTS failed: %s", qp->qp_num,
                  strerror(ret));
    }
    return ret;
}

/* ------------------------------------------------------------- rx thread */

static void uct_orc_agent_send_json(uct_orc_agent_t *agent, uint64_t dst,
                                    json_t *body)
{
    orc_cl_status_t cl_status;
    char *text;

    text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (text == NULL) {
        ucs_error("orc: agent: failed to encode a mailbox message");
        return;
    }

    cl_status = orc_client_mbox_send(agent->params.client, dst,
                                     agent->params.node_id, text, NULL);
    if (cl_status != ORC_CL_OK) {
        ucs_debug("orc: node %" PRIu64 ": failed to reply to node %" PRIu64
                  ": %s", agent->params.node_id, dst,
                  orc_cl_status_str(cl_status));
    }
    free(text);
}

static void uct_orc_agent_reject(uct_orc_agent_t *agent, uint64_t dst,
                                 uint64_t conn_id, const char *reason)
{
    json_t *body = json_pack("{s:s, s:I, s:s}", "type", "rej", "conn",
                             (json_int_t)conn_id, "reason", reason);

    if (body != NULL) {
        uct_orc_agent_send_json(agent, dst, body);
    }
}

static void uct_orc_agent_handle_request(uct_orc_agent_t *agent,
                                         uint64_t from, json_t *body)
{
    json_int_t conn_id, qpn, psn, mtu;
    uct_orc_agent_link_t *link;
    uct_orc_agent_event_t *ev;
    const char *addr;
    unsigned credits;
    uint32_t my_psn;
    json_t *reply;
    orc_qp_t *qp;
    int ret;

    if (json_unpack(body, "{s:I, s:I, s:I, s:I, s:s}", "conn", &conn_id,
                    "qpn", &qpn, "psn", &psn, "mtu", &mtu, "addr",
                    &addr) != 0) {
        ucs_warn("orc: node %" PRIu64 ": malformed pairing request from node "
                 "%" PRIu64, agent->params.node_id, from);
        return;
    }

    if (from == 0) {
        ucs_warn("orc: node %" PRIu64 ": pairing request without sender",
                 agent->params.node_id);
        return;
    }

    pthread_mutex_lock(&agent->lock);
    credits = ucs_min(agent->params.am_credits, agent->rx_budget);
    agent->rx_budget -= credits;
    pthread_mutex_unlock(&agent->lock);
    if (credits == 0) {
        ucs_warn("orc: node %" PRIu64 ": no receive buffers left for node "
                 "%" PRIu64 " (raise UCX_ORC_RX_QUEUE_LEN)",
                 agent->params.node_id, from);
        uct_orc_agent_reject(agent, from, conn_id, "busy");
        return;
    }

    qp = uct_orc_agent_qp_create(agent, &my_psn);
    if (qp == NULL) {
        goto err_release;
    }

    ret = uct_orc_agent_qp_connect(agent, qp, my_psn, qpn, psn, mtu, addr);
    if (ret != 0) {
        ucs_debug("orc: node %" PRIu64 ": cannot connect to node %" PRIu64
                  ": %s", agent->params.node_id, from, strerror(ret));
        orc_qp_destroy(qp);
        pthread_mutex_lock(&agent->lock);
        agent->rx_budget += credits;
        pthread_mutex_unlock(&agent->lock);
        uct_orc_agent_reject(agent, from, conn_id,
                             (ret == EHOSTUNREACH) ? "unreachable" : "error");
        return;
    }

    /* Hand the QP to the iface before the peer can send on it */
    ev = uct_orc_agent_event_new(UCT_ORC_AGENT_EV_PASSIVE_ADDED, conn_id);
    if (ev == NULL) {
        orc_qp_destroy(qp);
        goto err_release;
    }
    ev->qp        = qp;
    ev->credits   = credits;
    ev->peer_node = from;
    link = ucs_calloc(1, sizeof(*link), "orc agent link");
    if (link == NULL) {
        ucs_free(ev);
        orc_qp_destroy(qp);
        goto err_release;
    }
    link->conn_id   = conn_id;
    link->peer_node = from;
    link->qp_num    = qp->qp_num;
    link->credits   = credits;
    pthread_mutex_lock(&agent->lock);
    ucs_list_add_tail(&agent->passives, &link->list);
    agent->watch_dirty = 1;
    pthread_cond_signal(&agent->watch_cond);
    uct_orc_agent_push_locked(agent, ev, 0);
    pthread_mutex_unlock(&agent->lock);

    reply = json_pack("{s:s, s:I, s:I, s:I, s:I, s:s, s:I}", "type", "rep",
                      "conn", conn_id, "qpn", (json_int_t)qp->qp_num,
                      "psn", (json_int_t)my_psn,
                      "mtu", (json_int_t)agent->params.mtu,
                      "addr", agent->dev_addr_hex,
                      "credits", (json_int_t)credits);
    if (reply != NULL) {
        uct_orc_agent_send_json(agent, from, reply);
    }
    ucs_debug("orc: node %" PRIu64 ": qp 0x%x paired with node %" PRIu64
              " qp 0x%x", agent->params.node_id, qp->qp_num, from,
              (unsigned)qpn);
    return;

err_release:
    pthread_mutex_lock(&agent->lock);
    agent->rx_budget += credits;
    pthread_mutex_unlock(&agent->lock);
    uct_orc_agent_reject(agent, from, conn_id, "error");
}

static void uct_orc_agent_handle_reply(uct_orc_agent_t *agent, uint64_t from,
                                       json_t *body)
{
    json_int_t conn_id, qpn, psn, mtu, credits;
    uct_orc_agent_pairing_t *pairing;
    uct_orc_agent_link_t *link;
    uct_orc_agent_event_t *ev;
    const char *addr;
    int ret;

    if (json_unpack(body, "{s:I, s:I, s:I, s:I, s:s, s:I}", "conn", &conn_id,
                    "qpn", &qpn, "psn", &psn, "mtu", &mtu, "addr", &addr,
                    "credits", &credits) != 0) {
        ucs_warn("orc: node %" PRIu64 ": malformed pairing reply from node "
                 "%" PRIu64, agent->params.node_id, from);
        return;
    }

    pthread_mutex_lock(&agent->lock);
    pairing = uct_orc_agent_find_locked(agent, conn_id);
    if ((pairing == NULL) || (pairing->peer_node != from)) {
        /* the ep was destroyed or timed out meanwhile */
        pthread_mutex_unlock(&agent->lock);
        return;
    }

    if ((credits <= 0) || (credits > UCT_ORC_MAX_CREDITS)) {
        uct_orc_agent_fail_locked(agent, pairing, UCS_ERR_CONNECTION_RESET,
                                  "invalid credits in the reply");
        goto out;
    }

    ret = uct_orc_agent_qp_connect(agent, pairing->qp, pairing->psn, qpn, psn,
                                   mtu, addr);
    if (ret != 0) {
        uct_orc_agent_fail_locked(agent, pairing,
                                  (ret == EHOSTUNREACH) ?
                                  UCS_ERR_UNREACHABLE :
                                  UCS_ERR_CONNECTION_RESET,
                                  strerror(ret));
        goto out;
    }

    ev = uct_orc_agent_event_new(UCT_ORC_AGENT_EV_EP_CONNECTED, conn_id);
    if (ev == NULL) {
        uct_orc_agent_fail_locked(agent, pairing, UCS_ERR_NO_MEMORY,
                                  "out of memory");
        goto out;
    }
    ev->credits = credits;
    /* the pairing record becomes the peer watch of the connected ep */
    link = ucs_calloc(1, sizeof(*link), "orc agent link");
    if (link != NULL) {
        link->conn_id   = pairing->conn_id;
        link->peer_node = pairing->peer_node;
        ucs_list_add_tail(&agent->connected, &link->list);
        agent->watch_dirty = 1;
        pthread_cond_signal(&agent->watch_cond);
    }
    ucs_list_del(&pairing->list);
    ucs_free(pairing);
    uct_orc_agent_push_locked(agent, ev, 1);

out:
    pthread_mutex_unlock(&agent->lock);
}

static void uct_orc_agent_handle_reject(uct_orc_agent_t *agent, uint64_t from,
                                        json_t *body)
{
    uct_orc_agent_pairing_t *pairing;
    const char *reason = "error";
    json_int_t conn_id;

    if (json_unpack(body, "{s:I, s?s}", "conn", &conn_id, "reason",
                    &reason) != 0) {
        return;
    }

    pthread_mutex_lock(&agent->lock);
    pairing = uct_orc_agent_find_locked(agent, conn_id);
    if ((pairing != NULL) && (pairing->peer_node == from)) {
        uct_orc_agent_fail_locked(agent, pairing,
                                  !strcmp(reason, "unreachable") ?
                                  UCS_ERR_UNREACHABLE :
                                  UCS_ERR_CONNECTION_RESET, reason);
    }
    pthread_mutex_unlock(&agent->lock);
}

/* Called with agent->lock held; unlinks and frees the passive link */
static void uct_orc_agent_close_passive_locked(uct_orc_agent_t *agent,
                                               uct_orc_agent_link_t *link)
{
    uct_orc_agent_event_t *ev;

    ucs_list_del(&link->list);
    /* the peer sends no more on it: its receive budget is free again */
    agent->rx_budget += link->credits;
    ev = uct_orc_agent_event_new(UCT_ORC_AGENT_EV_PASSIVE_CLOSED,
                                 link->conn_id);
    if (ev != NULL) {
        ev->qp_num    = link->qp_num;
        ev->peer_node = link->peer_node;
        uct_orc_agent_push_locked(agent, ev, 0);
    }
    ucs_free(link);
}

static void uct_orc_agent_handle_bye(uct_orc_agent_t *agent, uint64_t from,
                                     json_t *body)
{
    uct_orc_agent_link_t *link;
    json_int_t conn_id;

    if (json_unpack(body, "{s:I}", "conn", &conn_id) != 0) {
        return;
    }

    pthread_mutex_lock(&agent->lock);
    ucs_list_for_each(link, &agent->passives, list) {
        if ((link->peer_node == from) && (link->conn_id == (uint64_t)conn_id)) {
            uct_orc_agent_close_passive_locked(agent, link);
            break;
        }
    }
    pthread_mutex_unlock(&agent->lock);
}

static void uct_orc_agent_handle_msg(uct_orc_agent_t *agent,
                                     const orc_mbox_msg_t *msg)
{
    json_error_t error;
    const char *type;
    json_t *body;

    body = json_loads(msg->body_json, 0, &error);
    if ((body == NULL) || !json_is_object(body)) {
        ucs_warn("orc: node %" PRIu64 ": malformed mailbox message %" PRIu64
                 " from node %" PRIu64, agent->params.node_id, msg->seq,
                 msg->from);
        goto out;
    }

    type = json_string_value(json_object_get(body, "type"));
    if (type == NULL) {
        ucs_warn("orc: node %" PRIu64 ": mailbox message without type",
                 agent->params.node_id);
    } else if (!strcmp(type, "req")) {
        uct_orc_agent_handle_request(agent, msg->from, body);
    } else if (!strcmp(type, "rep")) {
        uct_orc_agent_handle_reply(agent, msg->from, body);
    } else if (!strcmp(type, "rej")) {
        uct_orc_agent_handle_reject(agent, msg->from, body);
    } else if (!strcmp(type, "bye")) {
        uct_orc_agent_handle_bye(agent, msg->from, body);
    } else {
        ucs_debug("orc: node %" PRIu64 ": ignoring mailbox message type '%s'",
                  agent->params.node_id, type);
    }

out:
    if (body != NULL) {
        json_decref(body);
    }
}

static int uct_orc_agent_stopping(uct_orc_agent_t *agent)
{
    int stopping;

    pthread_mutex_lock(&agent->lock);
    stopping = agent->stopping;
    pthread_mutex_unlock(&agent->lock);
    return stopping;
}

static void *uct_orc_agent_rx_main(void *arg)
{
    uct_orc_agent_t *agent = arg;
    orc_cl_status_t cl_status, last_error = ORC_CL_OK;
    orc_mbox_msg_t *msgs;
    uint64_t cursor = 0;
    size_t i, count;

    while (!uct_orc_agent_stopping(agent)) {
        cl_status = orc_client_mbox_recv(agent->params.client,
                                         agent->params.node_id, cursor,
                                         UCT_ORC_AGENT_WAIT_MS, &msgs, &count);
        if (cl_status != ORC_CL_OK) {
            if (uct_orc_agent_stopping(agent)) {
                break;
            }
            if (cl_status != last_error) {
                ucs_debug("orc: node %" PRIu64 ": mailbox: %s",
                          agent->params.node_id,
                          orc_cl_status_str(cl_status));
                last_error = cl_status;
            }
            usleep(UCT_ORC_AGENT_TICK_MS * 1000);
            continue;
        }

        last_error = ORC_CL_OK;
        for (i = 0; i < count; ++i) {
            if (msgs[i].seq > cursor) {
                cursor = msgs[i].seq;
            }
            uct_orc_agent_handle_msg(agent, &msgs[i]);
        }
        orc_client_mbox_free(msgs, count);
    }
    return NULL;
}

/* ------------------------------------------------------------- tx thread */

/* Called with agent->lock held; drops it while talking to orcd. Sends the
 * queued goodbyes. */
static void uct_orc_agent_send_byes_locked(uct_orc_agent_t *agent)
{
    uct_orc_agent_link_t *link;
    char body[96];

    while (!ucs_list_is_empty(&agent->byes)) {
        link = ucs_list_extract_head(&agent->byes, uct_orc_agent_link_t,
                                     list);
        pthread_mutex_unlock(&agent->lock);
        snprintf(body, sizeof(body), "{\"type\":\"bye\",\"conn\":%" PRIu64 "}",
                 link->conn_id);
        /* a peer that is gone does not need it: ignore the status */
        orc_client_mbox_send(agent->params.client, link->peer_node,
                             agent->params.node_id, body, NULL);
        ucs_free(link);
        pthread_mutex_lock(&agent->lock);
    }
}

static int uct_orc_agent_node_listed(const orc_node_info_t *nodes,
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

/*
 * Called with agent->lock held; drops it while probing. A peer whose node is
 * not in the job's node list any more either left cleanly (deregistered:
 * orcd answers 404 for its mailbox) or died (its lease expired: 410). Only
 * a dead peer fails the eps to it, with UCS_ERR_CONNECTION_RESET; after a
 * clean leave an idle ep stays quiet (like a closed TCP connection) and
 * traffic on it fails through the QP. Passive QPs serving a peer that is
 * gone either way are closed. orcd being restarted (every node unknown)
 * fails nothing.
 */
static void uct_orc_agent_check_peers_locked(uct_orc_agent_t *agent,
                                             const orc_node_info_t *nodes,
                                             size_t count)
{
    static const char probe[] = "{\"type\":\"probe\"}";
    uct_orc_agent_link_t *link, *tmp;
    uct_orc_agent_event_t *ev;
    orc_cl_status_t cl_status;
    ucs_list_link_t gone;

    ucs_list_head_init(&gone);
    ucs_list_for_each_safe(link, tmp, &agent->connected, list) {
        if (!uct_orc_agent_node_listed(nodes, count, link->peer_node)) {
            ucs_list_del(&link->list);
            ucs_list_add_tail(&gone, &link->list);
        }
    }

    ucs_list_for_each_safe(link, tmp, &gone, list) {
        pthread_mutex_unlock(&agent->lock);
        cl_status = orc_client_mbox_send(agent->params.client,
                                         link->peer_node,
                                         agent->params.node_id, probe, NULL);
        pthread_mutex_lock(&agent->lock);
        ucs_list_del(&link->list);
        if (cl_status == ORC_CL_ERR_GONE) {
            ucs_debug("orc: node %" PRIu64 ": the lease of peer node %"
                      PRIu64 " expired", agent->params.node_id,
                      link->peer_node);
            ev = uct_orc_agent_event_new(UCT_ORC_AGENT_EV_EP_FAILED,
                                         link->conn_id);
            if (ev != NULL) {
                ev->status = UCS_ERR_CONNECTION_RESET;
                uct_orc_agent_push_locked(agent, ev, 1);
            }
        } else {
            ucs_debug("orc: node %" PRIu64 ": peer node %" PRIu64 " left "
                      "(%s)", agent->params.node_id, link->peer_node,
                      orc_cl_status_str(cl_status));
        }
        ucs_free(link);
    }

    ucs_list_for_each_safe(link, tmp, &agent->passives, list) {
        if (!uct_orc_agent_node_listed(nodes, count, link->peer_node)) {
            uct_orc_agent_close_passive_locked(agent, link);
        }
    }
}

/* Sleep on cond (agent->lock held) for at most ms milliseconds. */
static void uct_orc_agent_cond_wait_ms(uct_orc_agent_t *agent,
                                       pthread_cond_t *cond, long ms)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec  += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_nsec -= 1000000000L;
        ++ts.tv_sec;
    }
    pthread_cond_timedwait(cond, &agent->lock, &ts);
}

/*
 * The watch thread: while there are peers to watch, long-polls the job's
 * node list (it returns when the membership revision moves) and checks the
 * peers against it. A new link forces an immediate check (watch_dirty).
 * orcd being unreachable is not a peer failure: nothing happens then.
 */
static void *uct_orc_agent_watch_main(void *arg)
{
    uct_orc_agent_t *agent = arg;
    orc_cl_status_t cl_status;
    orc_node_info_t *nodes;
    uint64_t index = 0, new_index;
    size_t count;
    int wait_ms;

    pthread_mutex_lock(&agent->lock);
    while (!agent->stopping) {
        if (ucs_list_is_empty(&agent->connected) &&
            ucs_list_is_empty(&agent->passives)) {
            uct_orc_agent_cond_wait_ms(agent, &agent->watch_cond, 1000);
            continue;
        }

        wait_ms            = agent->watch_dirty ? 0 : UCT_ORC_AGENT_WAIT_MS;
        agent->watch_dirty = 0;
        pthread_mutex_unlock(&agent->lock);
        cl_status = orc_client_nodes_list(agent->params.client, index,
                                          wait_ms, &nodes, &count,
                                          &new_index);
        if (cl_status != ORC_CL_OK) {
            pthread_mutex_lock(&agent->lock);
            if (!agent->stopping) {
                uct_orc_agent_cond_wait_ms(agent, &agent->watch_cond,
                                           UCT_ORC_AGENT_TICK_MS);
            }
            continue;
        }
        pthread_mutex_lock(&agent->lock);
        index = new_index;
        uct_orc_agent_check_peers_locked(agent, nodes, count);
        orc_client_nodes_free(nodes, count);
    }
    pthread_mutex_unlock(&agent->lock);
    return NULL;
}

static void *uct_orc_agent_tx_main(void *arg)
{
    uct_orc_agent_t *agent = arg;
    uct_orc_agent_pairing_t *pairing, *tmp;
    orc_cl_status_t cl_status;
    uint64_t conn_id, peer;
    ucs_time_t now;
    char *text;

    pthread_mutex_lock(&agent->lock);
    while (!agent->stopping) {
        uct_orc_agent_send_byes_locked(agent);

        now = ucs_get_time();
        ucs_list_for_each_safe(pairing, tmp, &agent->pairings, list) {
            if (now >= pairing->deadline) {
                uct_orc_agent_fail_locked(agent, pairing,
                                          UCS_ERR_ENDPOINT_TIMEOUT,
                                          pairing->sent ? "no reply" :
                                          "orcd unreachable");
            }
        }

        /* post one unsent request, without the lock */
        text = NULL;
        ucs_list_for_each(pairing, &agent->pairings, list) {
            if (!pairing->sent) {
                json_t *body = json_pack("{s:s, s:I, s:I, s:I, s:I, s:s}",
                                         "type", "req",
                                         "conn", (json_int_t)pairing->conn_id,
                                         "qpn",
                                         (json_int_t)pairing->qp->qp_num,
                                         "psn", (json_int_t)pairing->psn,
                                         "mtu",
                                         (json_int_t)agent->params.mtu,
                                         "addr", agent->dev_addr_hex);
                if (body != NULL) {
                    text = json_dumps(body, JSON_COMPACT);
                    json_decref(body);
                }
                conn_id = pairing->conn_id;
                peer    = pairing->peer_node;
                break;
            }
        }

        if (text != NULL) {
            pthread_mutex_unlock(&agent->lock);
            cl_status = orc_client_mbox_send(agent->params.client, peer,
                                             agent->params.node_id, text,
                                             NULL);
            free(text);
            pthread_mutex_lock(&agent->lock);

            pairing = uct_orc_agent_find_locked(agent, conn_id);
            if (pairing == NULL) {
                continue;
            }
            switch (cl_status) {
            case ORC_CL_OK:
                pairing->sent = 1;
                continue;
            case ORC_CL_ERR_NOT_FOUND:
            case ORC_CL_ERR_GONE:
                uct_orc_agent_fail_locked(agent, pairing,
                                          UCS_ERR_CONNECTION_RESET,
                                          "peer node unknown or its lease "
                                          "expired");
                continue;
            case ORC_CL_ERR_UNREACHABLE:
            case ORC_CL_ERR_TIMEOUT:
            case ORC_CL_ERR_BUSY:
                break; /* retry on the next tick, until the deadline */
            default:
                uct_orc_agent_fail_locked(agent, pairing,
                                          UCS_ERR_CONNECTION_RESET,
                                          orc_cl_status_str(cl_status));
                continue;
            }
        }

        uct_orc_agent_cond_wait_ms(agent, &agent->tx_cond,
                                   UCT_ORC_AGENT_TICK_MS);
    }
    /* goodbyes of eps destroyed right before the iface closes */
    uct_orc_agent_send_byes_locked(agent);
    pthread_mutex_unlock(&agent->lock);
    return NULL;
}

/* ------------------------------------------------------------------- API */

int uct_orc_agent_rx_reserve(uct_orc_agent_t *agent, unsigned count)
{
    int ok;

    pthread_mutex_lock(&agent->lock);
    ok = agent->rx_budget >= count;
    if (ok) {
        agent->rx_budget -= count;
    }
    pthread_mutex_unlock(&agent->lock);
    return ok;
}

void uct_orc_agent_rx_release(uct_orc_agent_t *agent, unsigned count)
{
    pthread_mutex_lock(&agent->lock);
    agent->rx_budget += count;
    pthread_mutex_unlock(&agent->lock);
}

ucs_status_t uct_orc_agent_pair(uct_orc_agent_t *agent, uint64_t conn_id,
                                uint64_t peer_node, orc_qp_t *qp,
                                uint32_t psn)
{
    uct_orc_agent_pairing_t *pairing;

    pairing = ucs_calloc(1, sizeof(*pairing), "orc pairing");
    if (pairing == NULL) {
        return UCS_ERR_NO_MEMORY;
    }

    pairing->conn_id   = conn_id;
    pairing->peer_node = peer_node;
    pairing->qp        = qp;
    pairing->psn       = psn;
    pairing->deadline  = ucs_get_time() + agent->params.pair_timeout;

    pthread_mutex_lock(&agent->lock);
    ucs_list_add_tail(&agent->pairings, &pairing->list);
    pthread_cond_signal(&agent->tx_cond);
    pthread_mutex_unlock(&agent->lock);
    return UCS_OK;
}

void uct_orc_agent_cancel(uct_orc_agent_t *agent, uint64_t conn_id,
                          uint64_t peer_node)
{
    uct_orc_agent_pairing_t *pairing;
    uct_orc_agent_link_t *link, *tmp;
    int need_bye = 1;

    pthread_mutex_lock(&agent->lock);
    pairing = uct_orc_agent_find_locked(agent, conn_id);
    if (pairing != NULL) {
        /* a request that never left needs no goodbye */
        need_bye = pairing->sent;
        ucs_list_del(&pairing->list);
        ucs_free(pairing);
    }
    ucs_list_for_each_safe(link, tmp, &agent->connected, list) {
        if (link->conn_id == conn_id) {
            ucs_list_del(&link->list);
            ucs_free(link);
        }
    }
    if (need_bye && !agent->stopping) {
        link = ucs_calloc(1, sizeof(*link), "orc agent bye");
        if (link != NULL) {
            link->conn_id   = conn_id;
            link->peer_node = peer_node;
            ucs_list_add_tail(&agent->byes, &link->list);
            pthread_cond_signal(&agent->tx_cond);
        }
    }
    pthread_mutex_unlock(&agent->lock);
}

int uct_orc_agent_has_events(uct_orc_agent_t *agent)
{
    /* A lock-free peek is enough: a push also signals the event fd */
    return __atomic_load_n(&agent->nevents, __ATOMIC_ACQUIRE) != 0;
}

int uct_orc_agent_poll(uct_orc_agent_t *agent, ucs_queue_head_t *queue)
{
    int count;

    pthread_mutex_lock(&agent->lock);
    count = agent->nevents; /* the length of events, under the lock */
    ucs_queue_splice(queue, &agent->events);
    __atomic_store_n(&agent->nevents, 0, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&agent->lock);
    return count;
}

ucs_status_t uct_orc_agent_start(uct_orc_agent_t *agent,
                                 const uct_orc_agent_params_t *params)
{
    int ret;

    agent->params          = *params;
    agent->rx_budget       = params->rx_budget;
    agent->stopping        = 0;
    agent->threads_started = 0;
    ucs_list_head_init(&agent->pairings);
    ucs_list_head_init(&agent->connected);
    ucs_list_head_init(&agent->passives);
    ucs_list_head_init(&agent->byes);
    ucs_queue_head_init(&agent->events);
    agent->nevents         = 0;
    agent->watch_dirty     = 0;

    agent->event_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (agent->event_fd < 0) {
        ucs_error("orc: eventfd() failed: %m");
        return UCS_ERR_IO_ERROR;
    }

    pthread_mutex_init(&agent->lock, NULL);
    pthread_cond_init(&agent->tx_cond, NULL);
    pthread_cond_init(&agent->watch_cond, NULL);

    ret = pthread_create(&agent->rx_thread, NULL, uct_orc_agent_rx_main,
                         agent);
    if (ret != 0) {
        ucs_error("orc: failed to start the pairing agent: %s",
                  strerror(ret));
        goto err_destroy;
    }

    ret = pthread_create(&agent->tx_thread, NULL, uct_orc_agent_tx_main,
                         agent);
    if (ret != 0) {
        ucs_error("orc: failed to start the pairing agent: %s",
                  strerror(ret));
        goto err_stop_rx;
    }

    ret = pthread_create(&agent->watch_thread, NULL, uct_orc_agent_watch_main,
                         agent);
    if (ret != 0) {
        ucs_error("orc: failed to start the pairing agent: %s",
                  strerror(ret));
        goto err_stop_tx;
    }

    agent->threads_started = 1;
    return UCS_OK;

err_stop_tx:
    pthread_mutex_lock(&agent->lock);
    agent->stopping = 1;
    pthread_cond_broadcast(&agent->tx_cond);
    pthread_mutex_unlock(&agent->lock);
    pthread_join(agent->tx_thread, NULL);
err_stop_rx:
    pthread_mutex_lock(&agent->lock);
    agent->stopping = 1;
    pthread_mutex_unlock(&agent->lock);
    pthread_join(agent->rx_thread, NULL);
err_destroy:
    pthread_cond_destroy(&agent->watch_cond);
    pthread_cond_destroy(&agent->tx_cond);
    pthread_mutex_destroy(&agent->lock);
    close(agent->event_fd);
    return UCS_ERR_IO_ERROR;
}

static void uct_orc_agent_free_links(ucs_list_link_t *head)
{
    uct_orc_agent_link_t *link;

    while (!ucs_list_is_empty(head)) {
        link = ucs_list_extract_head(head, uct_orc_agent_link_t, list);
        ucs_free(link);
    }
}

void uct_orc_agent_stop(uct_orc_agent_t *agent)
{
    uct_orc_agent_pairing_t *pairing, *tmp;

    if (!agent->threads_started) {
        return;
    }

    pthread_mutex_lock(&agent->lock);
    agent->stopping = 1;
    pthread_cond_broadcast(&agent->tx_cond);
    pthread_cond_broadcast(&agent->watch_cond);
    pthread_mutex_unlock(&agent->lock);

    pthread_join(agent->tx_thread, NULL);
    pthread_join(agent->rx_thread, NULL);
    pthread_join(agent->watch_thread, NULL);
    agent->threads_started = 0;

    /* pairings of eps still open: the eps own their QPs; passive QPs are
     * the iface's */
    ucs_list_for_each_safe(pairing, tmp, &agent->pairings, list) {
        ucs_list_del(&pairing->list);
        ucs_free(pairing);
    }
    uct_orc_agent_free_links(&agent->connected);
    uct_orc_agent_free_links(&agent->passives);
    uct_orc_agent_free_links(&agent->byes);
    close(agent->event_fd);
    agent->event_fd = -1;
}

void uct_orc_agent_destroy_sync(uct_orc_agent_t *agent)
{
    pthread_cond_destroy(&agent->watch_cond);
    pthread_cond_destroy(&agent->tx_cond);
    pthread_mutex_destroy(&agent->lock);
}
