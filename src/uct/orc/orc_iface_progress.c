/*
 * orc interface, data path: the receive buffers and the SRQ, credit grants
 * of passive QPs, completion handling and CQ polling, the agent's hand-offs
 * (passive QPs added and closed, eps' pairing results), pending requests,
 * failed eps' reports, and the interface's progress call. Its life cycle
 * (open, query, addresses, flush, events, close) is in orc_iface.c.
 */
#include "orc.h"

#include <ucs/debug/log.h>
#include <ucs/type/class.h>

#include <string.h>

/* -------------------------------------------------------------- receive */

/* desc is the payload minus the user's rx headroom */
void uct_orc_iface_release_desc(uct_recv_desc_t *self, void *desc)
{
    uct_orc_iface_t *iface =
        ucs_container_of(self, uct_orc_iface_t, release_desc);

    ucs_mpool_put(
        UCS_PTR_BYTE_OFFSET(desc, -(ptrdiff_t)iface->config.rx_desc_offset));
}

/* Where a SEND lands in a receive buffer: its header, then the payload */
static UCS_F_ALWAYS_INLINE void *uct_orc_iface_rx_hdr(uct_orc_iface_t *iface,
                                                      uct_orc_rx_desc_t *desc)
{
    return UCS_PTR_BYTE_OFFSET(desc, iface->config.rx_desc_offset +
                                         iface->config.rx_headroom -
                                         sizeof(uct_orc_hdr_t));
}

/* Post the receive buffers held in iface->rx_batch to the SRQ, in one list */
ucs_status_t uct_orc_iface_post_recv_batch(uct_orc_iface_t *iface)
{
    struct ibv_recv_wr wr[UCT_ORC_IFACE_POLL_BATCH], *bad_wr;
    struct ibv_sge sge[UCT_ORC_IFACE_POLL_BATCH];
    unsigned i, n = iface->rx_batch_len;
    uct_orc_rx_desc_t *desc;
    int ret;

    if (n == 0) {
        return UCS_OK;
    }
    for (i = 0; i < n; ++i) {
        desc          = iface->rx_batch[i];
        sge[i].addr   = (uintptr_t)uct_orc_iface_rx_hdr(iface, desc);
        sge[i].length = iface->config.seg_size;
        sge[i].lkey   = desc->lkey;
        wr[i].wr_id   = (uintptr_t)desc;
        wr[i].next    = (i + 1 < n) ? &wr[i + 1] : NULL;
        wr[i].sg_list = &sge[i];
        wr[i].num_sge = 1;
    }
    iface->rx_batch_len = 0;

    ret = orc_post_srq_recv(iface->srq, wr, &bad_wr);
    if (ret == 0) {
        iface->rx_posted += n;
        return UCS_OK;
    }
    ucs_error("orc: failed to post a receive buffer: %s", strerror(ret));
    for (i = 0; i < n; ++i) {
        if (&wr[i] == bad_wr) {
            break;
        }
        ++iface->rx_posted;
    }
    for (; i < n; ++i) {
        ucs_mpool_put((void *)(uintptr_t)wr[i].wr_id);
    }
    return UCS_ERR_IO_ERROR;
}

/* uct_orc_iface_post_recv(), inline for the receive path */
static UCS_F_ALWAYS_INLINE ucs_status_t
uct_orc_iface_repost(uct_orc_iface_t *iface, uct_orc_rx_desc_t *desc)
{
    if (desc == NULL) {
        desc = ucs_mpool_get(&iface->rx_mp);
        if (desc == NULL) {
            ucs_error("orc: out of receive buffers");
            return UCS_ERR_NO_MEMORY;
        }
    }

    iface->rx_batch[iface->rx_batch_len++] = desc;
    if (iface->rx_batch_len == iface->config.rx_hold) {
        return uct_orc_iface_post_recv_batch(iface);
    }
    return UCS_OK;
}

/* A receive buffer (NULL: a fresh one) goes back to the SRQ once
 * config.rx_hold are held (uct_orc_iface_post_recv_batch), across polls.
 * A grant comes after its message's buffer went here, so it finds fewer
 * than rx_hold held: the credit window leaves out that many
 * (uct_orc_credit_window), no credit stands for a held buffer. */
ucs_status_t uct_orc_iface_post_recv(uct_orc_iface_t *iface,
                                     uct_orc_rx_desc_t *desc)
{
    return uct_orc_iface_repost(iface, desc);
}

/* The owner of a QP, NULL if none; the last one found is kept (receives
 * come in runs from the same QP) */
static UCS_F_ALWAYS_INLINE uct_orc_qp_owner_t *
uct_orc_iface_qp_owner(uct_orc_iface_t *iface, uint32_t qp_num)
{
    khiter_t it;

    if (ucs_likely((iface->rx_last_owner != NULL) &&
                   (iface->rx_last_qp_num == qp_num))) {
        return iface->rx_last_owner;
    }
    it = kh_get(uct_orc_qp, &iface->qp_hash, qp_num);
    if (it == kh_end(&iface->qp_hash)) {
        return NULL;
    }
    iface->rx_last_qp_num = qp_num;
    iface->rx_last_owner  = &kh_val(&iface->qp_hash, it);
    return iface->rx_last_owner;
}

static unsigned uct_orc_iface_drain_agent(uct_orc_iface_t *iface);
static void uct_orc_iface_passive_try_destroy(uct_orc_iface_t *iface,
                                              uct_orc_passive_t *passive);

/* The window of a peer now (uct_orc_credit_window()), kept in the iface:
 * every received message asks for it, the peers change seldom */
void uct_orc_iface_set_credit_window(uct_orc_iface_t *iface)
{
    iface->credit_window =
        uct_orc_credit_window(iface->config.rx_queue_len,
                              iface->config.am_credits, iface->npassive);
}

/*
 * Credits a passive QP returns now: the peer's window (its share of the
 * receive buffers, uct_orc_credit_window()) less the credits it still holds,
 * once that is at least half the window; 0 otherwise. A window that shrank
 * because more peers arrived is reached by returning less.
 */
static UCS_F_ALWAYS_INLINE unsigned
uct_orc_iface_grant_size(uct_orc_iface_t *iface, uct_orc_passive_t *passive)
{
    unsigned window = iface->credit_window;

    if ((passive->credits_out >= window) ||
        ((window - passive->credits_out) < ucs_max(1, window / 2))) {
        return 0;
    }
    return ucs_min(window - passive->credits_out, UCT_ORC_MAX_CREDITS);
}

static void uct_orc_iface_send_grant(uct_orc_iface_t *iface,
                                     uct_orc_passive_t *passive)
{
    struct ibv_send_wr wr, *bad_wr;
    struct ibv_sge sge;
    uct_orc_hdr_t *hdr;
    uct_orc_op_t *op;
    unsigned credits;
    int ret;

    if (passive->failed || passive->closing) {
        return;
    }

    credits = uct_orc_iface_grant_size(iface, passive);
    if (credits == 0) {
        return;
    }

    op = NULL;
    if ((passive->sq_avail > 0) && (iface->tx_cq_avail > 0)) {
        op = ucs_mpool_get(&iface->tx_mp);
    }
    if (op == NULL) {
        if (!passive->grant_queued) {
            ucs_list_add_tail(&iface->grant_pending, &passive->grant_list);
            passive->grant_queued = 1;
        }
        return;
    }

    op->type      = UCT_ORC_OP_GRANT;
    op->ep        = NULL;
    op->comp      = NULL;
    op->get.arg   = passive;
    hdr           = (uct_orc_hdr_t *)op->data;
    hdr->am_id    = 0;
    hdr->flags    = UCT_ORC_HDR_FLAG_CREDIT;
    hdr->credits  = credits;
    hdr->reserved = 0;

    sge.addr      = (uintptr_t)hdr;
    sge.length    = sizeof(*hdr);
    sge.lkey      = op->lkey;
    wr.wr_id      = (uintptr_t)op;
    wr.next       = NULL;
    wr.sg_list    = &sge;
    wr.num_sge    = 1;
    wr.opcode     = IBV_WR_SEND;
    wr.send_flags = IBV_SEND_SIGNALED;

    ret = orc_post_send(passive->qp, &wr, &bad_wr);
    if (ret != 0) {
        ucs_debug("orc: qp 0x%x: failed to send a credit grant: %s",
                  passive->qp->qp_num, strerror(ret));
        passive->failed = 1;
        ucs_mpool_put(op);
        return;
    }

    --passive->sq_avail;
    --iface->tx_cq_avail;
    ++iface->tx_signaled;
    passive->credits_out += credits;
}

static void uct_orc_iface_handle_rx(uct_orc_iface_t *iface, struct ibv_wc *wc)
{
    uct_orc_rx_desc_t *desc = (uct_orc_rx_desc_t *)(uintptr_t)wc->wr_id;
    uct_orc_passive_t *passive;
    uct_orc_qp_owner_t *owner;
    uct_recv_desc_t *release;
    uct_orc_hdr_t hdr;
    ucs_status_t status;
    void *payload;

    --iface->rx_posted;

    owner = uct_orc_iface_qp_owner(iface, wc->qp_num);
    if (owner == NULL) {
        /* a passive QP whose hand-off we have not drained yet */
        uct_orc_iface_drain_agent(iface);
        owner = uct_orc_iface_qp_owner(iface, wc->qp_num);
    }

    if (wc->status != IBV_WC_SUCCESS) {
        ucs_debug("orc: receive on qp 0x%x failed: %s", wc->qp_num,
                  ibv_wc_status_str(wc->status));
        if ((owner != NULL) && (owner->ep != NULL)) {
            uct_orc_ep_set_failed(owner->ep, uct_orc_wc_status(wc->status));
        } else if ((owner != NULL) && (owner->passive != NULL)) {
            owner->passive->failed = 1;
        }
        uct_orc_iface_post_recv(iface, desc);
        return;
    }

    if (wc->byte_len < sizeof(hdr)) {
        ucs_warn("orc: qp 0x%x: dropping a runt message of %u bytes",
                 wc->qp_num, wc->byte_len);
        uct_orc_iface_post_recv(iface, desc);
        return;
    }

    memcpy(&hdr, uct_orc_iface_rx_hdr(iface, desc), sizeof(hdr));
    if (hdr.flags & UCT_ORC_HDR_FLAG_CREDIT) {
        uct_orc_iface_post_recv(iface, desc);
        if ((owner != NULL) && (owner->ep != NULL)) {
            uct_orc_ep_add_credits(owner->ep, hdr.credits);
        }
        return;
    }

    if ((owner == NULL) || (owner->passive == NULL) ||
        (hdr.am_id >= UCT_AM_ID_MAX)) {
        /* e.g. the last messages of an ep the peer just destroyed */
        ucs_debug("orc: dropping a message of %u bytes on unknown qp 0x%x",
                  wc->byte_len, wc->qp_num);
        uct_orc_iface_post_recv(iface, desc);
        return;
    }

    /* data[]: [pad][release slot][rx headroom ... hdr][payload]; the
     * header (already parsed) may be overwritten by the slot or the user.
     * The slot is written bytewise: with an odd AM alignment offset it is
     * not pointer-aligned. */
    /* the handler may create eps (and rehash qp_hash): keep the object */
    passive = owner->passive;
    payload =
        UCS_PTR_BYTE_OFFSET(uct_orc_iface_rx_hdr(iface, desc), sizeof(hdr));
    release = &iface->release_desc;
    memcpy(UCS_PTR_BYTE_OFFSET(desc,
                               iface->config.rx_desc_offset - sizeof(release)),
           &release, sizeof(release));
    uct_iface_trace_am(&iface->super, UCT_AM_TRACE_TYPE_RECV, hdr.am_id,
                       payload, wc->byte_len - sizeof(hdr), "RX: qp 0x%x",
                       wc->qp_num);
    status =
        uct_iface_invoke_am(&iface->super, hdr.am_id, payload,
                            wc->byte_len - sizeof(hdr), UCT_CB_PARAM_FLAG_DESC);
    /* The handler kept the buffer: post a fresh one, the SRQ stays full */
    uct_orc_iface_repost(iface, (status == UCS_OK) ? desc : NULL);

    if (passive->credits_out > 0) {
        --passive->credits_out;
    }
    /* most messages return no credit yet: no call for them */
    if (uct_orc_iface_grant_size(iface, passive) > 0) {
        uct_orc_iface_send_grant(iface, passive);
    }
}

/* The ep of a connection id, NULL if it was destroyed; the last one found
 * is kept (an ep's cleanup forgets it) */
static UCS_F_ALWAYS_INLINE uct_orc_ep_t *
uct_orc_iface_tx_ep(uct_orc_iface_t *iface, uint64_t conn_id)
{
    khiter_t it;

    if (ucs_likely((iface->tx_last_ep != NULL) &&
                   (iface->tx_last_ep->conn_id == conn_id))) {
        return iface->tx_last_ep;
    }
    it = kh_get(uct_orc_conn, &iface->conn_hash, conn_id);
    if (it == kh_end(&iface->conn_hash)) {
        return NULL;
    }
    iface->tx_last_ep = kh_val(&iface->conn_hash, it);
    return iface->tx_last_ep;
}

/* The completion of a credit grant a passive QP sent */
static void uct_orc_iface_grant_sent(uct_orc_iface_t *iface, struct ibv_wc *wc)
{
    uct_orc_op_t *op           = (uct_orc_op_t *)(uintptr_t)wc->wr_id;
    uct_orc_passive_t *passive = op->get.arg;

    ++iface->tx_cq_avail;
    --iface->tx_signaled;
    ++passive->sq_avail;
    if (wc->status != IBV_WC_SUCCESS) {
        ucs_debug("orc: credit grant on qp 0x%x failed: %s",
                  passive->qp->qp_num, ibv_wc_status_str(wc->status));
        passive->failed = 1;
    }
    ucs_mpool_put(op);
    uct_orc_iface_passive_try_destroy(iface, passive);
}

/* A send CQ completion: of an ep's WR (in the poll loop of every get,
 * atomic and flush: inline) or of a credit grant */
static UCS_F_ALWAYS_INLINE void uct_orc_iface_handle_tx(uct_orc_iface_t *iface,
                                                        struct ibv_wc *wc)
{
    uct_orc_ep_t *ep;

    if (ucs_unlikely(!(wc->wr_id & UCT_ORC_WR_ID_EP))) {
        uct_orc_iface_grant_sent(iface, wc);
        return;
    }
    ep = uct_orc_iface_tx_ep(iface, uct_orc_wr_id_conn(wc->wr_id));
    if (ep != NULL) {
        uct_orc_ep_tx_completed(ep, uct_orc_wr_id_sn(wc->wr_id), wc->status);
    }
    /* else of an ep destroyed since: tx_cq_held has its entries */
}

/* Take up to UCT_ORC_IFACE_POLL_BATCH completions of cq into wc; returns
 * how many (0 on an error, which is logged) */
static UCS_F_ALWAYS_INLINE int
uct_orc_iface_poll_one(orc_cq_t *cq, const char *name, struct ibv_wc *wc)
{
    int n = orc_cq_poll(cq, UCT_ORC_IFACE_POLL_BATCH, wc);

    if (ucs_unlikely(n < 0)) {
        ucs_error("orc: failed to poll the %s completion queue: %s", name,
                  strerror(-n));
        return 0;
    }
    return n;
}

/* The receive CQ: messages and credit grants; their buffers go back to the
 * SRQ in lists of config.rx_hold, across polls. A poll takes as many as
 * softnic's same-host ring delivers in one run (SN_RING_SLOTS): one poll
 * and one repost per run; a latency loop reposts once per rx_hold
 * messages. */
static UCS_F_ALWAYS_INLINE unsigned
uct_orc_iface_poll_rx(uct_orc_iface_t *iface)
{
    struct ibv_wc wc[UCT_ORC_IFACE_POLL_BATCH];
    int i, n;

    n = uct_orc_iface_poll_one(iface->recv_cq, "receive", wc);
    for (i = 0; i < n; ++i) {
        uct_orc_iface_handle_rx(iface, &wc[i]);
    }
    return n;
}

/* The send CQ: completions of the eps' signaled (or failed) WRs and of
 * credit grants */
static UCS_F_ALWAYS_INLINE unsigned
uct_orc_iface_poll_tx(uct_orc_iface_t *iface)
{
    /* held before the poll: a completion callback may destroy an ep */
    unsigned held = iface->tx_cq_held;
    struct ibv_wc wc[UCT_ORC_IFACE_POLL_BATCH];
    int i, n;

    n = uct_orc_iface_poll_one(iface->send_cq, "send", wc);
    for (i = 0; i < n; ++i) {
        uct_orc_iface_handle_tx(iface, &wc[i]);
    }

    /* the CQ was empty: no completion of a WR of an ep destroyed before the
     * poll is left in it */
    if ((n < UCT_ORC_IFACE_POLL_BATCH) && (held > 0)) {
        iface->tx_cq_avail += held;
        iface->tx_cq_held -= held;
    }
    return n;
}

/* ------------------------------------------------------- agent hand-off */

static void uct_orc_iface_add_passive(uct_orc_iface_t *iface,
                                      uct_orc_agent_event_t *ev)
{
    uct_orc_passive_t *passive;
    uct_orc_qp_owner_t *owner;
    khiter_t it;
    int ret;

    passive = ucs_calloc(1, sizeof(*passive), "orc passive");
    if (passive == NULL) {
        ucs_error("orc: no memory for a passive connection");
        goto err;
    }

    passive->qp           = ev->qp;
    passive->peer_node    = ev->peer_node;
    passive->peer_conn_id = ev->conn_id;
    passive->credits_out  = ev->credits;
    passive->sq_avail     = UCT_ORC_PASSIVE_SQ_LEN;

    uct_orc_iface_qp_hash_changed(iface);
    it = kh_put(uct_orc_qp, &iface->qp_hash, ev->qp->qp_num, &ret);
    if (ret < 0) {
        ucs_error("orc: no memory for the qp table");
        goto err_free;
    }
    owner          = &kh_val(&iface->qp_hash, it);
    owner->ep      = NULL;
    owner->passive = passive;
    ucs_list_add_tail(&iface->passive_list, &passive->list);
    ++iface->npassive;
    uct_orc_iface_set_credit_window(iface);
    ucs_debug("orc: qp 0x%x serves node %" PRIu64 " with %u credits",
              ev->qp->qp_num, ev->peer_node, ev->credits);
    return;

err_free:
    ucs_free(passive);
err:
    /* the peer's ep fails on its first operation */
    orc_qp_destroy(ev->qp);
}

/* Destroy a passive QP once no credit grant of it is in flight */
static void uct_orc_iface_passive_try_destroy(uct_orc_iface_t *iface,
                                              uct_orc_passive_t *passive)
{
    khiter_t it;
    int ret;

    if (!passive->closing || (passive->sq_avail < UCT_ORC_PASSIVE_SQ_LEN)) {
        return;
    }

    it = kh_get(uct_orc_qp, &iface->qp_hash, passive->qp->qp_num);
    if (it != kh_end(&iface->qp_hash)) {
        uct_orc_iface_qp_hash_changed(iface);
        kh_del(uct_orc_qp, &iface->qp_hash, it);
    }
    ucs_list_del(&passive->list);
    --iface->npassive;
    uct_orc_iface_set_credit_window(iface);
    if (passive->grant_queued) {
        ucs_list_del(&passive->grant_list);
    }
    ucs_debug("orc: qp 0x%x no longer serves node %" PRIu64,
              passive->qp->qp_num, passive->peer_node);
    ret = orc_qp_destroy(passive->qp);
    if (ret != 0) {
        ucs_warn("orc: failed to destroy qp 0x%x: %s", passive->qp->qp_num,
                 strerror(ret));
    }
    ucs_free(passive);
}

static void uct_orc_iface_close_passive(uct_orc_iface_t *iface,
                                        uct_orc_agent_event_t *ev)
{
    uct_orc_qp_owner_t *owner;

    owner = uct_orc_iface_qp_owner(iface, ev->qp_num);
    if ((owner == NULL) || (owner->passive == NULL) ||
        (owner->passive->peer_node != ev->peer_node) ||
        (owner->passive->peer_conn_id != ev->conn_id)) {
        return;
    }
    owner->passive->closing = 1;
    uct_orc_iface_passive_try_destroy(iface, owner->passive);
}

static void uct_orc_iface_handle_event(uct_orc_iface_t *iface,
                                       uct_orc_agent_event_t *ev)
{
    uct_orc_ep_t *ep;
    khiter_t it;

    if (ev->type == UCT_ORC_AGENT_EV_PASSIVE_ADDED) {
        uct_orc_iface_add_passive(iface, ev);
        return;
    } else if (ev->type == UCT_ORC_AGENT_EV_PASSIVE_CLOSED) {
        uct_orc_iface_close_passive(iface, ev);
        return;
    }

    it = kh_get(uct_orc_conn, &iface->conn_hash, ev->conn_id);
    if (it == kh_end(&iface->conn_hash)) {
        return; /* the ep is gone */
    }

    ep = kh_val(&iface->conn_hash, it);
    if (ev->type == UCT_ORC_AGENT_EV_EP_CONNECTED) {
        uct_orc_ep_connected(ep, ev->credits);
    } else if (ev->type == UCT_ORC_AGENT_EV_EP_PEER_LEFT) {
        uct_orc_ep_peer_left(ep);
    } else {
        uct_orc_ep_set_failed(ep, ev->status);
    }
}

static unsigned uct_orc_iface_drain_agent(uct_orc_iface_t *iface)
{
    ucs_queue_head_t events;
    uct_orc_agent_event_t *ev;
    unsigned count;

    if (!uct_orc_agent_has_events(&iface->agent)) {
        return 0;
    }

    ucs_queue_head_init(&events);
    count = uct_orc_agent_poll(&iface->agent, &events);
    ucs_queue_for_each_extract(ev, &events, queue, 1) {
        uct_orc_iface_handle_event(iface, ev);
        ucs_free(ev);
    }
    return count;
}

/* ------------------------------------------------------------- progress */

void uct_orc_iface_schedule_pending(uct_orc_iface_t *iface, uct_orc_ep_t *ep)
{
    if (!ep->in_pending_list && uct_orc_ep_has_work(ep)) {
        ucs_list_add_tail(&iface->pending_eps, &ep->pending_list);
        ep->in_pending_list = 1;
    }
}

void uct_orc_iface_ep_failed(uct_orc_iface_t *iface, uct_orc_ep_t *ep,
                             ucs_status_t status)
{
    if (!ep->in_failed_list && !ep->err_reported) {
        ucs_list_add_tail(&iface->failed_eps, &ep->failed_list);
        ep->in_failed_list = 1;
    }
}

static unsigned uct_orc_iface_dispatch_pending(uct_orc_iface_t *iface)
{
    uct_orc_passive_t *passive;
    uct_orc_ep_t *ep;
    unsigned count = 0;
    ucs_list_link_t eps;

    while (!ucs_list_is_empty(&iface->grant_pending) &&
           (iface->tx_cq_avail > 0)) {
        passive               = ucs_list_extract_head(&iface->grant_pending,
                                                      uct_orc_passive_t, grant_list);
        passive->grant_queued = 0;
        uct_orc_iface_send_grant(iface, passive);
        if (passive->grant_queued) {
            break;
        }
    }

    if (ucs_list_is_empty(&iface->pending_eps)) {
        return 0;
    }

    /* Detach the list: a request may re-schedule its ep */
    ucs_list_head_init(&eps);
    ucs_list_splice_tail(&eps, &iface->pending_eps);
    ucs_list_head_init(&iface->pending_eps);
    while (!ucs_list_is_empty(&eps)) {
        ep = ucs_list_extract_head(&eps, uct_orc_ep_t, pending_list);
        ep->in_pending_list = 0;
        uct_orc_ep_dispatch_pending(ep);
        ++count;
    }
    return count;
}

static void uct_orc_iface_report_failures(uct_orc_iface_t *iface)
{
    ucs_status_t status, cb_status;
    uint64_t peer_node;
    uct_orc_ep_t *ep;

    while (!ucs_list_is_empty(&iface->failed_eps)) {
        ep = ucs_list_extract_head(&iface->failed_eps, uct_orc_ep_t,
                                   failed_list);
        ep->in_failed_list = 0;
        ep->err_reported   = 1;
        status             = ep->status;
        peer_node          = ep->peer_node;
        /* The handler may destroy the ep (then its cleanup clears
         * reporting_ep): do not touch it afterwards */
        iface->reporting_ep = ep;
        cb_status           = uct_iface_handle_ep_err(&iface->super.super,
                                                      &ep->super.super, status);
        if (iface->reporting_ep == ep) {
            iface->reporting_ep = NULL;
            uct_orc_ep_pending_fail(ep);
        }
        ucs_log(uct_base_iface_failure_log_level(&iface->super, cb_status,
                                                 status),
                "orc: node %" PRIu64 ": endpoint to node %" PRIu64
                " failed: %s",
                iface->node_id, peer_node, ucs_status_string(status));
    }
}

/* The completion event_arm took out of a CQ, handled now */
static void uct_orc_iface_handle_stash(uct_orc_iface_t *iface)
{
    iface->config.has_stash = 0;
    if (iface->stash_is_send) {
        uct_orc_iface_handle_tx(iface, &iface->stash_wc);
    } else {
        uct_orc_iface_handle_rx(iface, &iface->stash_wc);
    }
}

/* What a progress call does after the CQs: queued credit grants, pending
 * requests, failed eps' reports */
static UCS_F_ALWAYS_INLINE unsigned
uct_orc_iface_progress_rest(uct_orc_iface_t *iface)
{
    unsigned count = 0;

    if (ucs_unlikely(!ucs_list_is_empty(&iface->grant_pending) ||
                     !ucs_list_is_empty(&iface->pending_eps))) {
        count += uct_orc_iface_dispatch_pending(iface);
    }
    if (ucs_unlikely(!ucs_list_is_empty(&iface->failed_eps))) {
        uct_orc_iface_report_failures(iface);
        ++count;
    }
    return count;
}

/*
 * One progress call. Its common case, nothing but the CQs to look at, makes
 * no function call besides the polls: it runs once per operation of a
 * latency loop and a great many times while an application waits.
 */
unsigned uct_orc_iface_progress(uct_iface_h tl_iface)
{
    uct_orc_iface_t *iface = ucs_derived_of(tl_iface, uct_orc_iface_t);
    unsigned count         = 0;
    unsigned n;
    int tx_due;

    if (ucs_unlikely(uct_orc_agent_has_events(&iface->agent))) {
        count += uct_orc_iface_drain_agent(iface);
    }
    if (ucs_unlikely(iface->config.has_stash)) {
        uct_orc_iface_handle_stash(iface);
        ++count;
    }
    /* The send CQ while a signaled WR or a credit grant is in flight, or
     * completions of destroyed eps may be in it; with only unsignaled WRs
     * in flight, once in UCT_ORC_IFACE_TX_IDLE_POLL times (for those that
     * failed: a failed WR completes even when unsignaled); never with
     * nothing in flight. An empty poll is not free: softnic progresses its
     * same-host rings in it, and the receive CQ poll did that already. */
    tx_due = (iface->tx_signaled > 0) || (iface->tx_cq_held > 0) ||
             ((iface->tx_cq_avail < iface->tx_cq_len) &&
              ((++iface->tx_idle_polls % UCT_ORC_IFACE_TX_IDLE_POLL) == 0));
    /* A loop that waits for a completion (get, atomic, flush) finds it
     * first: when the send CQ has some, the receive CQ waits, at most
     * UCT_ORC_IFACE_RX_SKIP_MAX calls in a row; the next call polls it
     * first. Not every other call: an operation's system call (CMA) leaves
     * the branch predictor little history, and a path that changes from
     * one operation to the next is mispredicted at each change (get 8 B
     * on the verbs backend: 3 % slower than taking one path 3 times in 4) */
    if (tx_due && (iface->rx_skipped < UCT_ORC_IFACE_RX_SKIP_MAX)) {
        n = uct_orc_iface_poll_tx(iface);
        if (n > 0) {
            ++iface->rx_skipped;
            return count + n + uct_orc_iface_progress_rest(iface);
        }
        tx_due = 0; /* polled, empty */
    }
    iface->rx_skipped = 0;
    count += uct_orc_iface_poll_rx(iface);
    if (tx_due) {
        count += uct_orc_iface_poll_tx(iface);
    }
    return count + uct_orc_iface_progress_rest(iface);
}
