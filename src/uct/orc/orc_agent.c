/*
 * orc pairing agent: pairs an iface's RC queue pairs through orcd mailboxes.
 *
 * Protocol (JSON bodies of mailbox messages between the nodes of two
 * processes; "dst"/"src" = destination/sender iface id in its node):
 *   request  {"type":"req","dst":D,"src":S,"conn":C,"qpn":Q,"psn":P,"mtu":M,
 *             "addr":"<hex>"}
 *   reply    {"type":"rep","dst":S,"src":D,"conn":C,"qpn":Q,"psn":P,"mtu":M,
 *             "addr":"<hex>","credits":N}
 *   refusal  {"type":"rej","dst":S,"src":D,"conn":C,
 *             "reason":"unreachable"|"error"}
 *   goodbye  {"type":"bye","dst":D,"src":S,"conn":C}  (the initiator
 *             destroyed its ep)
 *   farewell {"type":"fin","dst":S,"src":D,"conn":C}  (the passive side
 *             closed its iface)
 * C is the initiator's connection id (unique per initiator iface), addr the
 * device address packed by orc_dev_addr_pack(), N the number of AM credits
 * the passive side granted.
 *
 * The agent never touches UCT objects: it works on device-layer objects
 * (thread-safe) and hands results to the iface through its event queue. Its
 * functions run on the session's threads or on the iface's thread, always
 * with the session lock held.
 */
#include "orc.h"

#include <ucs/debug/log.h>
#include <ucs/debug/memtrack_int.h>
#include <ucs/sys/string.h>
#include <ucs/sys/sys.h>
#include <ucs/time/time.h>

#include <errno.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define UCT_ORC_AGENT_ADDR_MAX 256

static uint32_t uct_orc_agent_psn(void)
{
    return ucs_generate_uuid((uintptr_t)&uct_orc_agent_psn) & 0xffffff;
}

/* ------------------------------------------------------------- events */

/* An event for the iface; `wake` also signals the event fd (events the
 * application waits for: an ep connected, failed or lost its peer) */
static void uct_orc_agent_push_locked(uct_orc_agent_t *agent,
                                      uct_orc_agent_event_t *ev, int wake)
{
    uint64_t one = 1;
    ssize_t ret;

    ucs_queue_push(&agent->events, &ev->queue);
    __atomic_store_n(&agent->nevents, agent->nevents + 1, __ATOMIC_RELEASE);
    if (wake) {
        ret = write(agent->event_fd, &one, sizeof(one));
        (void)ret; /* a saturated eventfd is readable anyway */
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

static void uct_orc_agent_push_ep_locked(uct_orc_agent_t *agent,
                                         uct_orc_agent_event_type_t type,
                                         uint64_t conn_id, ucs_status_t status)
{
    uct_orc_agent_event_t *ev = uct_orc_agent_event_new(type, conn_id);

    if (ev != NULL) {
        ev->status = status;
        uct_orc_agent_push_locked(agent, ev, 1);
    }
}

/* Unlinks and frees the pairing */
static void uct_orc_agent_fail_locked(uct_orc_agent_t *agent,
                                      uct_orc_agent_pairing_t *pairing,
                                      ucs_status_t status, const char *why)
{
    ucs_debug("orc: iface %u: pairing %" PRIu64 " with node %" PRIu64
              " iface %u failed: %s",
              agent->iface_id, pairing->conn_id, pairing->peer_node,
              pairing->peer_iface, why);
    ucs_list_del(&pairing->list);
    uct_orc_agent_push_ep_locked(agent, UCT_ORC_AGENT_EV_EP_FAILED,
                                 pairing->conn_id, status);
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

static uct_orc_agent_link_t *uct_orc_agent_find_link(ucs_list_link_t *links,
                                                     uint64_t conn_id,
                                                     uint64_t peer_node,
                                                     uint32_t peer_iface)
{
    uct_orc_agent_link_t *link;

    ucs_list_for_each(link, links, list) {
        if ((link->conn_id == conn_id) && (link->peer_node == peer_node) &&
            (link->peer_iface == peer_iface)) {
            return link;
        }
    }
    return NULL;
}

static uct_orc_agent_link_t *uct_orc_agent_link_new(uint64_t conn_id,
                                                    uint64_t peer_node,
                                                    uint32_t peer_iface,
                                                    uint32_t qp_num)
{
    uct_orc_agent_link_t *link = ucs_calloc(1, sizeof(*link), "orc agent link");

    if (link != NULL) {
        link->conn_id    = conn_id;
        link->peer_node  = peer_node;
        link->peer_iface = peer_iface;
        link->qp_num     = qp_num;
    }
    return link;
}

/* A message from this iface to (peer_node, peer_iface) about conn_id;
 * replies and refusals go before requests (they complete a pairing) */
static void uct_orc_agent_post_locked(uct_orc_agent_t *agent, const char *type,
                                      uint64_t peer_node, uint32_t peer_iface,
                                      uint64_t conn_id, json_t *extra)
{
    int urgent = !strcmp(type, "rep") || !strcmp(type, "rej");
    json_t *body =
        json_pack("{s:s, s:I, s:I, s:I}", "type", type, "dst",
                  (json_int_t)peer_iface, "src", (json_int_t)agent->iface_id,
                  "conn", (json_int_t)conn_id);

    if ((body != NULL) && (extra != NULL)) {
        json_object_update(body, extra);
    }
    json_decref(extra);
    uct_orc_session_post_locked(agent->session, agent->iface_id, peer_node, 0,
                                urgent, uct_orc_json_dump(body));
}

/* ------------------------------------------------------------ QP helpers */

/* An RC QP in state INIT: an initiator's, or a passive one (credit grants
 * only: a short send queue on its own CQ) */
static orc_qp_t *uct_orc_agent_qp_new(uct_orc_agent_t *agent, int passive,
                                      uint32_t *psn_p)
{
    orc_qp_init_attr_t init_attr;
    struct ibv_qp_attr attr;
    orc_qp_t *qp;
    int ret;

    memset(&init_attr, 0, sizeof(init_attr));
    init_attr.send_cq =
        passive ? agent->params.passive_send_cq : agent->params.send_cq;
    init_attr.recv_cq = agent->params.recv_cq;
    init_attr.srq     = agent->params.srq;
    init_attr.cap     = agent->params.qp_cap;
    init_attr.qp_type = IBV_QPT_RC;
    if (passive) {
        init_attr.cap.max_send_wr  = UCT_ORC_PASSIVE_SQ_LEN;
        init_attr.cap.max_send_sge = 1;
    }
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
    ret = orc_qp_modify(qp, &attr,
                        IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT |
                            IBV_QP_ACCESS_FLAGS);
    if (ret != 0) {
        ucs_error("orc: qp 0x%x: RESET->INIT failed: %s", qp->qp_num,
                  strerror(ret));
        orc_qp_destroy(qp);
        return NULL;
    }

    *psn_p = uct_orc_agent_psn();
    return qp;
}

orc_qp_t *uct_orc_agent_qp_create(uct_orc_agent_t *agent, uint32_t *psn_p)
{
    return uct_orc_agent_qp_new(agent, 0, psn_p);
}

static int uct_orc_agent_hex_decode(const char *hex, uint8_t *buf, size_t max,
                                    size_t *len_p)
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

    attr.qp_state    = IBV_QPS_RTR;
    attr.path_mtu    = (enum ibv_mtu)ucs_min((int)agent->params.mtu, peer_mtu);
    attr.dest_qp_num = peer_qpn;
    attr.rq_psn      = peer_psn;
    attr.max_dest_rd_atomic = agent->params.max_rd_atomic;
    attr.min_rnr_timer      = 12;
    attr.ah_attr.port_num   = agent->params.port;
    ret                     = orc_qp_modify(qp, &attr,
                                            IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU |
                                                IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
                                                IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER);
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
    ret                = orc_qp_modify(qp, &attr,
                                       IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT |
                                           IBV_QP_RNR_RETRY | IBV_QP_SQ_PSN |
                                           IBV_QP_MAX_QP_RD_ATOMIC);
    if (ret != 0) {
        ucs_debug("orc: qp 0x%x: RTR->RTS failed: %s", qp->qp_num,
                  strerror(ret));
    }
    return ret;
}

/* ------------------------------------------------------------ messages */

static void uct_orc_agent_reject_locked(uct_orc_agent_t *agent,
                                        uint64_t peer_node, uint32_t peer_iface,
                                        uint64_t conn_id, const char *reason)
{
    uct_orc_agent_post_locked(agent, "rej", peer_node, peer_iface, conn_id,
                              json_pack("{s:s}", "reason", reason));
}

/*
 * A peer's ep wants a passive QP: create it bound to our SRQ and CQs,
 * connect it, hand it to the iface and reply. Every peer gets a share of
 * the receive buffers (uct_orc_credit_window()): none is refused.
 */
static void uct_orc_agent_handle_request_locked(uct_orc_agent_t *agent,
                                                uint64_t from,
                                                uint32_t from_iface,
                                                json_t *body)
{
    json_int_t conn_id, qpn, psn, mtu;
    uct_orc_agent_link_t *link;
    uct_orc_agent_event_t *ev;
    const char *addr;
    unsigned credits;
    uint32_t my_psn;
    orc_qp_t *qp;
    int ret;

    if (json_unpack(body, "{s:I, s:I, s:I, s:I, s:s}", "conn", &conn_id, "qpn",
                    &qpn, "psn", &psn, "mtu", &mtu, "addr", &addr) != 0) {
        ucs_warn("orc: iface %u: malformed pairing request from node %" PRIu64,
                 agent->iface_id, from);
        return;
    }

    qp = uct_orc_agent_qp_new(agent, 1, &my_psn);
    if (qp == NULL) {
        uct_orc_agent_reject_locked(agent, from, from_iface, conn_id, "error");
        return;
    }

    ret = uct_orc_agent_qp_connect(agent, qp, my_psn, qpn, psn, mtu, addr);
    if (ret != 0) {
        ucs_debug("orc: iface %u: cannot connect to node %" PRIu64 ": %s",
                  agent->iface_id, from, strerror(ret));
        orc_qp_destroy(qp);
        uct_orc_agent_reject_locked(agent, from, from_iface, conn_id,
                                    (ret == EHOSTUNREACH) ? "unreachable"
                                                          : "error");
        return;
    }

    ev   = uct_orc_agent_event_new(UCT_ORC_AGENT_EV_PASSIVE_ADDED, conn_id);
    link = uct_orc_agent_link_new(conn_id, from, from_iface, qp->qp_num);
    if ((ev == NULL) || (link == NULL)) {
        ucs_free(link);
        ucs_free(ev);
        orc_qp_destroy(qp);
        uct_orc_agent_reject_locked(agent, from, from_iface, conn_id, "error");
        return;
    }

    credits =
        uct_orc_credit_window(agent->params.rx_queue_len,
                              agent->params.am_credits, agent->npassive + 1);
    ucs_list_add_tail(&agent->passives, &link->list);
    ++agent->npassive;
    uct_orc_session_links_changed_locked(agent->session);

    /* Hand the QP to the iface before the peer can send on it; a new
     * passive QP needs no wakeup: its first message brings one */
    ev->qp        = qp;
    ev->credits   = credits;
    ev->peer_node = from;
    uct_orc_agent_push_locked(agent, ev, 0);

    uct_orc_agent_post_locked(agent, "rep", from, from_iface, conn_id,
                              json_pack("{s:I, s:I, s:I, s:s, s:I}", "qpn",
                                        (json_int_t)qp->qp_num, "psn",
                                        (json_int_t)my_psn, "mtu",
                                        (json_int_t)agent->params.mtu, "addr",
                                        agent->dev_addr_hex, "credits",
                                        (json_int_t)credits));
    ucs_debug("orc: iface %u: qp 0x%x serves node %" PRIu64 " iface %u "
              "(qp 0x%x) with %u credits",
              agent->iface_id, qp->qp_num, from, from_iface, (unsigned)qpn,
              credits);
}

static void uct_orc_agent_handle_reply_locked(uct_orc_agent_t *agent,
                                              uint64_t from,
                                              uint32_t from_iface, json_t *body)
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
        ucs_warn("orc: iface %u: malformed pairing reply from node %" PRIu64,
                 agent->iface_id, from);
        return;
    }

    pairing = uct_orc_agent_find_locked(agent, conn_id);
    if ((pairing == NULL) || (pairing->peer_node != from) ||
        (pairing->peer_iface != from_iface)) {
        return; /* the ep was destroyed or timed out meanwhile */
    }

    if ((credits <= 0) || (credits > UCT_ORC_MAX_CREDITS)) {
        uct_orc_agent_fail_locked(agent, pairing, UCS_ERR_CONNECTION_RESET,
                                  "invalid credits in the reply");
        return;
    }

    ret = uct_orc_agent_qp_connect(agent, pairing->qp, pairing->psn, qpn, psn,
                                   mtu, addr);
    if (ret != 0) {
        uct_orc_agent_fail_locked(agent, pairing,
                                  (ret == EHOSTUNREACH)
                                      ? UCS_ERR_UNREACHABLE
                                      : UCS_ERR_CONNECTION_RESET,
                                  strerror(ret));
        return;
    }

    ev   = uct_orc_agent_event_new(UCT_ORC_AGENT_EV_EP_CONNECTED, conn_id);
    link = uct_orc_agent_link_new(conn_id, from, from_iface, 0);
    if ((ev == NULL) || (link == NULL)) {
        ucs_free(link);
        ucs_free(ev);
        uct_orc_agent_fail_locked(agent, pairing, UCS_ERR_NO_MEMORY,
                                  "out of memory");
        return;
    }

    /* the pairing record becomes the peer watch of the connected ep */
    ucs_list_add_tail(&agent->connected, &link->list);
    ucs_list_del(&pairing->list);
    ucs_free(pairing);
    ev->credits = credits;
    uct_orc_agent_push_locked(agent, ev, 1);
}

static void uct_orc_agent_handle_reject_locked(uct_orc_agent_t *agent,
                                               uint64_t from,
                                               uint32_t from_iface,
                                               json_t *body)
{
    uct_orc_agent_pairing_t *pairing;
    const char *reason = "error";
    json_int_t conn_id;

    if (json_unpack(body, "{s:I, s?s}", "conn", &conn_id, "reason", &reason) !=
        0) {
        return;
    }

    pairing = uct_orc_agent_find_locked(agent, conn_id);
    if ((pairing != NULL) && (pairing->peer_node == from) &&
        (pairing->peer_iface == from_iface)) {
        uct_orc_agent_fail_locked(agent, pairing,
                                  !strcmp(reason, "unreachable")
                                      ? UCS_ERR_UNREACHABLE
                                      : UCS_ERR_CONNECTION_RESET,
                                  reason);
    }
}

/* Unlinks and frees a passive link: the iface destroys its QP */
static void uct_orc_agent_close_passive_locked(uct_orc_agent_t *agent,
                                               uct_orc_agent_link_t *link)
{
    uct_orc_agent_event_t *ev;

    ucs_list_del(&link->list);
    --agent->npassive;
    ev =
        uct_orc_agent_event_new(UCT_ORC_AGENT_EV_PASSIVE_CLOSED, link->conn_id);
    if (ev != NULL) {
        ev->qp_num    = link->qp_num;
        ev->peer_node = link->peer_node;
        uct_orc_agent_push_locked(agent, ev, 0);
    }
    ucs_free(link);
}

/* The initiator destroyed its ep: its passive QP goes */
static void uct_orc_agent_handle_bye_locked(uct_orc_agent_t *agent,
                                            uint64_t from, uint32_t from_iface,
                                            json_t *body)
{
    uct_orc_agent_link_t *link;
    json_int_t conn_id;

    if (json_unpack(body, "{s:I}", "conn", &conn_id) != 0) {
        return;
    }

    link = uct_orc_agent_find_link(&agent->passives, conn_id, from, from_iface);
    if (link != NULL) {
        uct_orc_agent_close_passive_locked(agent, link);
    }
}

/* The passive side closed its iface: the ep lost its peer */
static void uct_orc_agent_handle_fin_locked(uct_orc_agent_t *agent,
                                            uint64_t from, uint32_t from_iface,
                                            json_t *body)
{
    uct_orc_agent_link_t *link;
    json_int_t conn_id;

    if (json_unpack(body, "{s:I}", "conn", &conn_id) != 0) {
        return;
    }

    link =
        uct_orc_agent_find_link(&agent->connected, conn_id, from, from_iface);
    if (link != NULL) {
        ucs_list_del(&link->list);
        ucs_free(link);
        uct_orc_agent_push_ep_locked(agent, UCT_ORC_AGENT_EV_EP_PEER_LEFT,
                                     conn_id, UCS_ERR_CONNECTION_RESET);
    }
}

void uct_orc_agent_handle_msg_locked(uct_orc_agent_t *agent, uint64_t from,
                                     uint32_t from_iface, const char *type,
                                     json_t *body)
{
    if (!strcmp(type, "req")) {
        uct_orc_agent_handle_request_locked(agent, from, from_iface, body);
    } else if (!strcmp(type, "rep")) {
        uct_orc_agent_handle_reply_locked(agent, from, from_iface, body);
    } else if (!strcmp(type, "rej")) {
        uct_orc_agent_handle_reject_locked(agent, from, from_iface, body);
    } else if (!strcmp(type, "bye")) {
        uct_orc_agent_handle_bye_locked(agent, from, from_iface, body);
    } else if (!strcmp(type, "fin")) {
        uct_orc_agent_handle_fin_locked(agent, from, from_iface, body);
    } else {
        ucs_debug("orc: iface %u: ignoring mailbox message type '%s'",
                  agent->iface_id, type);
    }
}

/* --------------------------------------------------- session callbacks */

ucs_time_t uct_orc_agent_expire_locked(uct_orc_agent_t *agent, ucs_time_t now,
                                       int *unsent_p)
{
    uct_orc_agent_pairing_t *pairing, *tmp;
    ucs_time_t next = UINT64_MAX;

    ucs_list_for_each_safe(pairing, tmp, &agent->pairings, list) {
        if (now < pairing->deadline) {
            next = ucs_min(next, pairing->deadline);
            continue;
        }
        *unsent_p |= !pairing->sent;
        uct_orc_agent_fail_locked(agent, pairing, UCS_ERR_ENDPOINT_TIMEOUT,
                                  pairing->sent ? "no reply"
                                                : "orcd unreachable");
    }
    return next;
}

void uct_orc_agent_fail_unsent_locked(uct_orc_agent_t *agent)
{
    uct_orc_agent_pairing_t *pairing, *tmp;

    ucs_list_for_each_safe(pairing, tmp, &agent->pairings, list) {
        if (!pairing->sent) {
            uct_orc_agent_fail_locked(agent, pairing, UCS_ERR_ENDPOINT_TIMEOUT,
                                      "orcd unreachable");
        }
    }
}

int uct_orc_agent_request_start_locked(uct_orc_agent_t *agent, uint64_t conn_id)
{
    uct_orc_agent_pairing_t *pairing =
        uct_orc_agent_find_locked(agent, conn_id);

    if ((pairing == NULL) || pairing->sent) {
        return 0;
    }
    if (pairing->deadline == UINT64_MAX) {
        pairing->deadline = ucs_get_time() + agent->params.pair_timeout;
    }
    return 1;
}

int uct_orc_agent_request_sent_locked(uct_orc_agent_t *agent, uint64_t conn_id,
                                      orc_cl_status_t cl_status)
{
    uct_orc_agent_pairing_t *pairing =
        uct_orc_agent_find_locked(agent, conn_id);

    if (pairing == NULL) {
        return 0;
    }

    switch (cl_status) {
    case ORC_CL_OK:
        /* from now on the peer has PAIR_TIMEOUT to reply */
        pairing->sent     = 1;
        pairing->deadline = ucs_get_time() + agent->params.pair_timeout;
        return 0;
    case ORC_CL_ERR_NOT_FOUND:
    case ORC_CL_ERR_GONE:
        uct_orc_agent_fail_locked(agent, pairing, UCS_ERR_CONNECTION_RESET,
                                  "peer node unknown or its lease expired");
        return 0;
    case ORC_CL_ERR_UNREACHABLE:
    case ORC_CL_ERR_TIMEOUT:
    case ORC_CL_ERR_BUSY:
        return 1; /* again, until the deadline */
    default:
        uct_orc_agent_fail_locked(agent, pairing, UCS_ERR_CONNECTION_RESET,
                                  orc_client_last_error());
        return 0;
    }
}

/*
 * The peer node is gone. Its lease expired (it died): eps to it fail with
 * UCS_ERR_CONNECTION_RESET. It left cleanly: the iface decides (an idle ep
 * stays quiet, like a closed TCP connection; one waiting for the peer
 * fails). Pairings with it fail, passive QPs serving it close.
 */
void uct_orc_agent_peer_gone_locked(uct_orc_agent_t *agent, uint64_t peer_node,
                                    int expired)
{
    uct_orc_agent_pairing_t *pairing, *ptmp;
    uct_orc_agent_link_t *link, *tmp;

    ucs_list_for_each_safe(pairing, ptmp, &agent->pairings, list) {
        if (pairing->peer_node == peer_node) {
            uct_orc_agent_fail_locked(agent, pairing, UCS_ERR_CONNECTION_RESET,
                                      "peer node left the job");
        }
    }

    ucs_list_for_each_safe(link, tmp, &agent->connected, list) {
        if (link->peer_node == peer_node) {
            ucs_list_del(&link->list);
            uct_orc_agent_push_ep_locked(agent,
                                         expired
                                             ? UCT_ORC_AGENT_EV_EP_FAILED
                                             : UCT_ORC_AGENT_EV_EP_PEER_LEFT,
                                         link->conn_id,
                                         UCS_ERR_CONNECTION_RESET);
            ucs_free(link);
        }
    }

    ucs_list_for_each_safe(link, tmp, &agent->passives, list) {
        if (link->peer_node == peer_node) {
            uct_orc_agent_close_passive_locked(agent, link);
        }
    }
}

void uct_orc_agent_node_lost_locked(uct_orc_agent_t *agent)
{
    uct_orc_agent_pairing_t *pairing;
    uct_orc_agent_link_t *link;

    while (!ucs_list_is_empty(&agent->pairings)) {
        pairing =
            ucs_list_head(&agent->pairings, uct_orc_agent_pairing_t, list);
        uct_orc_agent_fail_locked(agent, pairing, UCS_ERR_CONNECTION_RESET,
                                  "our node's lease expired");
    }
    while (!ucs_list_is_empty(&agent->connected)) {
        link = ucs_list_extract_head(&agent->connected, uct_orc_agent_link_t,
                                     list);
        uct_orc_agent_push_ep_locked(agent, UCT_ORC_AGENT_EV_EP_FAILED,
                                     link->conn_id, UCS_ERR_CONNECTION_RESET);
        ucs_free(link);
    }
    while (!ucs_list_is_empty(&agent->passives)) {
        link = ucs_list_head(&agent->passives, uct_orc_agent_link_t, list);
        uct_orc_agent_close_passive_locked(agent, link);
    }
}

int uct_orc_agent_has_links_locked(uct_orc_agent_t *agent)
{
    return !ucs_list_is_empty(&agent->pairings) ||
           !ucs_list_is_empty(&agent->connected) ||
           !ucs_list_is_empty(&agent->passives);
}

void uct_orc_agent_foreach_peer_locked(uct_orc_agent_t *agent,
                                       void (*cb)(void *arg, uint64_t peer),
                                       void *arg)
{
    uct_orc_agent_pairing_t *pairing;
    uct_orc_agent_link_t *link;

    ucs_list_for_each(pairing, &agent->pairings, list) {
        cb(arg, pairing->peer_node);
    }
    ucs_list_for_each(link, &agent->connected, list) {
        cb(arg, link->peer_node);
    }
    ucs_list_for_each(link, &agent->passives, list) {
        cb(arg, link->peer_node);
    }
}

void uct_orc_agent_farewell_locked(uct_orc_agent_t *agent)
{
    uct_orc_agent_link_t *link;

    ucs_list_for_each(link, &agent->passives, list) {
        uct_orc_agent_post_locked(agent, "fin", link->peer_node,
                                  link->peer_iface, link->conn_id, NULL);
    }
}

/* ------------------------------------------------------------------- API */

ucs_status_t uct_orc_agent_pair(uct_orc_agent_t *agent, uint64_t conn_id,
                                uint64_t peer_node, uint32_t peer_iface,
                                orc_qp_t *qp, uint32_t psn)
{
    uct_orc_session_t *session = agent->session;
    uct_orc_agent_pairing_t *pairing;
    json_t *body;

    pairing = ucs_calloc(1, sizeof(*pairing), "orc pairing");
    if (pairing == NULL) {
        return UCS_ERR_NO_MEMORY;
    }

    pairing->conn_id    = conn_id;
    pairing->peer_node  = peer_node;
    pairing->peer_iface = peer_iface;
    pairing->qp         = qp;
    pairing->psn        = psn;
    pairing->deadline   = UINT64_MAX;

    body =
        json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:s}", "type", "req",
                  "dst", (json_int_t)peer_iface, "src",
                  (json_int_t)agent->iface_id, "conn", (json_int_t)conn_id,
                  "qpn", (json_int_t)qp->qp_num, "psn", (json_int_t)psn, "mtu",
                  (json_int_t)agent->params.mtu, "addr", agent->dev_addr_hex);

    pthread_mutex_lock(uct_orc_session_lock(session));
    ucs_list_add_tail(&agent->pairings, &pairing->list);
    uct_orc_session_post_locked(session, agent->iface_id, peer_node, conn_id, 0,
                                uct_orc_json_dump(body));
    uct_orc_session_links_changed_locked(session);
    pthread_mutex_unlock(uct_orc_session_lock(session));
    return UCS_OK;
}

void uct_orc_agent_cancel(uct_orc_agent_t *agent, uint64_t conn_id,
                          uint64_t peer_node, uint32_t peer_iface)
{
    uct_orc_session_t *session = agent->session;
    uct_orc_agent_pairing_t *pairing;
    uct_orc_agent_link_t *link;
    int need_bye = 1;

    pthread_mutex_lock(uct_orc_session_lock(session));
    pairing = uct_orc_agent_find_locked(agent, conn_id);
    if (pairing != NULL) {
        /* a request that never left needs no goodbye */
        need_bye = pairing->sent;
        ucs_list_del(&pairing->list);
        ucs_free(pairing);
    }

    link = uct_orc_agent_find_link(&agent->connected, conn_id, peer_node,
                                   peer_iface);
    if (link != NULL) {
        ucs_list_del(&link->list);
        ucs_free(link);
    }

    if (need_bye) {
        uct_orc_agent_post_locked(agent, "bye", peer_node, peer_iface, conn_id,
                                  NULL);
    }
    pthread_mutex_unlock(uct_orc_session_lock(session));
}

int uct_orc_agent_poll(uct_orc_agent_t *agent, ucs_queue_head_t *queue)
{
    pthread_mutex_t *lock =
        (agent->session != NULL) ? uct_orc_session_lock(agent->session) : NULL;
    int count;

    if (lock != NULL) {
        pthread_mutex_lock(lock);
    }
    count = agent->nevents; /* the length of events, under the lock */
    ucs_queue_splice(queue, &agent->events);
    __atomic_store_n(&agent->nevents, 0, __ATOMIC_RELEASE);
    if (lock != NULL) {
        pthread_mutex_unlock(lock);
    }
    return count;
}

/* Our packed device address as hex, for pairing messages */
static ucs_status_t uct_orc_agent_pack_addr(uct_orc_agent_t *agent)
{
    uint8_t addr[UCT_ORC_AGENT_ADDR_MAX];
    size_t addr_len, i;
    int ret;

    addr_len = orc_dev_addr_len(agent->params.dev, agent->params.port);
    if ((addr_len == 0) || (addr_len > sizeof(addr))) {
        ucs_error("orc: %s: unexpected device address length %zu",
                  agent->dev_name, addr_len);
        return UCS_ERR_IO_ERROR;
    }
    ret = orc_dev_addr_pack(agent->params.dev, agent->params.port, addr,
                            addr_len);
    if (ret != 0) {
        ucs_error("orc: %s: failed to pack the device address: %s",
                  agent->dev_name, strerror(ret));
        return UCS_ERR_IO_ERROR;
    }

    agent->dev_addr_hex = ucs_malloc(2 * addr_len + 1, "orc address");
    if (agent->dev_addr_hex == NULL) {
        return UCS_ERR_NO_MEMORY;
    }
    for (i = 0; i < addr_len; ++i) {
        snprintf(agent->dev_addr_hex + 2 * i, 3, "%02x", addr[i]);
    }
    return UCS_OK;
}

ucs_status_t uct_orc_agent_init(uct_orc_agent_t *agent,
                                const uct_orc_agent_params_t *params)
{
    ucs_status_t status;

    memset(agent, 0, sizeof(*agent));
    agent->params = *params;
    ucs_strncpy_zero(agent->dev_name, params->dev_name,
                     sizeof(agent->dev_name));
    agent->params.dev_name = agent->dev_name;
    ucs_list_head_init(&agent->pairings);
    ucs_list_head_init(&agent->connected);
    ucs_list_head_init(&agent->passives);
    ucs_queue_head_init(&agent->events);

    status = uct_orc_agent_pack_addr(agent);
    if (status != UCS_OK) {
        return status;
    }

    agent->event_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (agent->event_fd < 0) {
        ucs_error("orc: eventfd() failed: %m");
        ucs_free(agent->dev_addr_hex);
        return UCS_ERR_IO_ERROR;
    }
    return UCS_OK;
}

static void uct_orc_agent_free_links(ucs_list_link_t *head)
{
    uct_orc_agent_link_t *link;

    while (!ucs_list_is_empty(head)) {
        link = ucs_list_extract_head(head, uct_orc_agent_link_t, list);
        ucs_free(link);
    }
}

void uct_orc_agent_cleanup(uct_orc_agent_t *agent)
{
    uct_orc_agent_pairing_t *pairing;

    /* pairings of eps still open: the eps own their QPs; passive QPs are
     * the iface's */
    while (!ucs_list_is_empty(&agent->pairings)) {
        pairing = ucs_list_extract_head(&agent->pairings,
                                        uct_orc_agent_pairing_t, list);
        ucs_free(pairing);
    }
    uct_orc_agent_free_links(&agent->connected);
    uct_orc_agent_free_links(&agent->passives);
    close(agent->event_fd);
    ucs_free(agent->dev_addr_hex);
}
