/*
 * softnic's UD queue pairs and address handles (semantics: softnic.h).
 *
 * Carrier: one UDP socket per instance (inst->ud_fd), bound to the
 * device's IPv4 address and to the port number of its TCP listener, so that
 * the address that names a device for RC (GID + listener port, or GID + QPN
 * with qpn_port_base) names it for UD too. One UD message is one UDP
 * datagram: an sn_ud_hdr_t, then the payload. The receiving instance
 * demultiplexes by destination QPN.
 *
 * Threads and locks:
 *  - Sending: the posting thread, under the QP lock, gathers the message
 *    and sends it with one sendto() (the socket is shared by every thread;
 *    one datagram per call, so sends never interleave) and completes the WR
 *    at once: UD has nothing to wait for.
 *  - Receiving: the svc_lock holder only (the service thread when the
 *    socket is readable, or a thread whose CQ poll found nothing, by
 *    trylock), into inst->ud_rxbuf. A datagram is delivered under the
 *    instance lock (QPN lookup) then the QP lock (the instance lock is
 *    released once the QP lock is held: a destroy that unlinked the QP
 *    waits for the QP lock, so it never frees a QP being delivered to),
 *    then the receive queue's lock (sn_qp_pop_recv) and the CQ lock: the
 *    order of sn_int.h. Writes into receive buffers announce their MR
 *    (busy_mr) as the service thread's other writes do, so a
 *    deregistration never races with them.
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "sn_int.h"

#include <endian.h>
#include <errno.h>
#include <netinet/ip.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define SN_UD_MAGIC       0x44554e53u /* "SNUD" */
#define SN_UD_VERSION     1
#define SN_UD_F_IMM       1u
#define SN_UD_F_SOLICITED 2u
#define SN_UD_BATCH       16 /* datagrams per recvmmsg */
#define SN_UD_RX_ROUNDS   4  /* recvmmsg calls per sn_ud_rx */
#define SN_UD_PKEY        0xffff
#define SN_UD_RCVBUF      (4 << 20)
#define SN_UD_WC_SL_IPV4  2 /* RoCE packet type "IPv4" in ibv_wc.sl */

/*
 * UD's rule switches. As with sn_int.h's, only a scratch build of
 * contrib/softnic-mutate defines SN_MUTATE_NO_<RULE>, to show that a test
 * fails without the rule; a shipped build keeps every rule (and, the
 * switches being #ifdef blocks, is the code it would be without them):
 *  UD_QKEY     a datagram whose qkey is not the QP's is dropped
 *  UD_DROP     a datagram no receive is posted for is dropped, not kept
 *  UD_MTU      a send longer than the MTU fails the post
 *  UD_LEN_ERR  a receive too small for GRH + payload completes LOC_LEN_ERR
 *  UD_GRH_LEN  a receive's byte_len counts the 40-byte GRH
 *  UD_LOSS     a lost datagram is no error: the send succeeds, QP in RTS
 */
#ifndef SN_MUTATE_NO_UD_MTU
#define SN_UD_MSG_MAX SOFTNIC_UD_MTU
#else /* a frame still has a bound: twice the MTU */
#define SN_UD_MSG_MAX (2 * SOFTNIC_UD_MTU)
#endif

/* A UD datagram's header, little-endian, followed by length payload bytes */
typedef struct sn_ud_hdr {
    uint32_t magic;
    uint8_t version;
    uint8_t flags;
    uint8_t hop_limit;
    uint8_t traffic_class;
    uint32_t dst_qpn;
    uint32_t src_qpn;
    uint32_t qkey;
    uint32_t imm; /* as in the WR (network order), copied unchanged */
    uint16_t pkey;
    uint16_t reserved;
    uint32_t length;
} __attribute__((packed)) sn_ud_hdr_t;

#define SN_UD_FRAME_MAX (sizeof(sn_ud_hdr_t) + SN_UD_MSG_MAX)

typedef struct sn_ah {
    softnic_ah_t super;
    struct in_addr ip;
} sn_ah_t;

/* ---- address handles ---------------------------------------------------- */

int sn_gid_ipv4(const union ibv_gid *gid, struct in_addr *ip)
{
    static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0,    0,
                                         0, 0, 0, 0, 0xff, 0xff};

    if (memcmp(gid->raw, v4mapped, sizeof(v4mapped)) != 0) {
        return 0;
    }
    memcpy(&ip->s_addr, gid->raw + 12, 4);
    return 1;
}

softnic_ah_t *softnic_ah_create(softnic_pd_t *pd,
                                const struct ibv_ah_attr *attr)
{
    sn_inst_t *inst = sn_inst(pd->dev);
    struct in_addr ip;
    sn_ah_t *ah;

    if (!attr->is_global || (attr->port_num != 1) ||
        (attr->grh.sgid_index != 0) || !sn_gid_ipv4(&attr->grh.dgid, &ip) ||
        ((attr->dlid == 0) && (inst->config.qpn_port_base == 0))) {
        errno = EINVAL;
        return NULL;
    }
    ah = calloc(1, sizeof(*ah));
    if (ah == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    ah->super.pd   = pd;
    ah->super.attr = *attr;
    ah->ip         = ip;
    return &ah->super;
}

int softnic_ah_destroy(softnic_ah_t *ah)
{
    free(ah);
    return 0;
}

/* ---- the socket --------------------------------------------------------- */

int sn_ud_open(sn_inst_t *inst, int tcp_fd)
{
    struct sockaddr_in addr;
    socklen_t len = sizeof(addr);
    int fd, size = SN_UD_RCVBUF;

    if (getsockname(tcp_fd, (struct sockaddr *)&addr, &len) < 0) {
        return -1;
    }
    fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -1;
    }
    /* a burst of datagrams waits here until the receiver gets to them;
     * RCVBUFFORCE passes rmem_max when privileged, RCVBUF otherwise */
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size)) < 0) {
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
    }
#ifdef SN_MUTATE_NO_UD_LOSS /* ICMP errors reach the socket */
    setsockopt(fd, IPPROTO_IP, IP_RECVERR, &(int){1}, sizeof(int));
#endif
    if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
        int err = errno;
        close(fd);
        errno = err;
        return -1;
    }
    inst->ud_fd = fd;
    return 0;
}

void sn_ud_close(sn_inst_t *inst)
{
    if (inst->ud_fd >= 0) {
        close(inst->ud_fd);
        inst->ud_fd = -1;
    }
    free(inst->ud_rxbuf);
    inst->ud_rxbuf = NULL;
}

/* ---- modify -------------------------------------------------------------- */

int sn_ud_trans(enum ibv_qp_state cur, enum ibv_qp_state next, int *req_p,
                int *opt_p)
{
    *req_p = IBV_QP_STATE;
    *opt_p = 0;
    if ((next == IBV_QPS_RESET) || (next == IBV_QPS_ERR)) {
        return 0;
    }
    switch (cur) {
    case IBV_QPS_RESET:
        if (next != IBV_QPS_INIT) {
            return -1;
        }
        *req_p |= IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_QKEY;
        return 0;
    case IBV_QPS_INIT:
        if (next == IBV_QPS_INIT) {
            *req_p = 0;
            *opt_p =
                IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_QKEY;
            return 0;
        }
        *opt_p = IBV_QP_PKEY_INDEX | IBV_QP_QKEY;
        return (next == IBV_QPS_RTR) ? 0 : -1;
    case IBV_QPS_RTR:
        *req_p |= IBV_QP_SQ_PSN;
        *opt_p = IBV_QP_CUR_STATE | IBV_QP_QKEY;
        return (next == IBV_QPS_RTS) ? 0 : -1;
    case IBV_QPS_RTS:
        *req_p = 0;
        *opt_p = IBV_QP_STATE | IBV_QP_CUR_STATE | IBV_QP_QKEY;
        return (next == IBV_QPS_RTS) ? 0 : -1;
    default:
        return -1;
    }
}

/* ---- send ---------------------------------------------------------------- */

static void sn_ud_send_wc(sn_qp_t *qp, const struct ibv_send_wr *wr,
                          enum ibv_wc_status status, uint32_t len)
{
    struct ibv_wc wc;

    if ((status == IBV_WC_SUCCESS) && !qp->init_attr.sq_sig_all &&
        !(wr->send_flags & IBV_SEND_SIGNALED)) {
        return;
    }
    memset(&wc, 0, sizeof(wc));
    wc.wr_id    = wr->wr_id;
    wc.status   = status;
    wc.opcode   = IBV_WC_SEND;
    wc.byte_len = len;
    wc.qp_num   = qp->super.qp_num;
    sn_cq_push(qp->send_cq, &wc, 0);
}

/* A WR the QP can post (EINVAL otherwise); its length in *len_p */
static int sn_ud_check_wr(sn_qp_t *qp, const struct ibv_send_wr *wr,
                          uint32_t *len_p)
{
    const softnic_ah_t *ah = (const softnic_ah_t *)wr->wr.ud.ah;
    uint64_t len           = 0;
    int i;

    if (((wr->opcode != IBV_WR_SEND) && (wr->opcode != IBV_WR_SEND_WITH_IMM)) ||
        (wr->num_sge < 0) ||
        ((uint32_t)wr->num_sge > qp->init_attr.cap.max_send_sge) ||
        ((wr->num_sge > 0) && (wr->sg_list == NULL)) || (ah == NULL) ||
        (ah->pd->dev != qp->super.pd->dev) ||
        (wr->wr.ud.remote_qpn > 0xffffff)) {
        return EINVAL;
    }
    for (i = 0; i < wr->num_sge; ++i) {
        len += wr->sg_list[i].length;
    }
    if ((len > SN_UD_MSG_MAX) || ((wr->send_flags & IBV_SEND_INLINE) &&
                                  (len > qp->init_attr.cap.max_inline_data))) {
        return EINVAL;
    }
    *len_p = (uint32_t)len;
    return 0;
}

/* Gather the payload behind the header; LOC_PROT_ERR for a bad lkey */
static enum ibv_wc_status
sn_ud_gather(sn_qp_t *qp, const struct ibv_send_wr *wr, uint8_t *data)
{
    sn_inst_t *inst = sn_qp_inst(qp);
    sn_mr_snap_t snap;
    const struct ibv_sge *sge;
    uint32_t off = 0;
    int i;

    for (i = 0; i < wr->num_sge; ++i) {
        sge = &wr->sg_list[i];
        if (sge->length == 0) {
            continue; /* its address may be anything, even NULL */
        }
        if (!(wr->send_flags & IBV_SEND_INLINE) &&
            (sn_mr_check(inst->mrs, sge->lkey, qp->pdn, sge->addr, sge->length,
                         0, &snap) != 0)) {
            return IBV_WC_LOC_PROT_ERR;
        }
        memcpy(data + off, (void *)(uintptr_t)sge->addr, sge->length);
        off += sge->length;
    }
    return IBV_WC_SUCCESS;
}

static uint16_t sn_ud_dest_port(const sn_inst_t *inst, const softnic_ah_t *ah,
                                uint32_t qpn)
{
    if (inst->config.qpn_port_base == 0) {
        return ah->attr.dlid;
    }
    return (uint16_t)(inst->config.qpn_port_base +
                      (qpn >> SOFTNIC_QPN_PORT_SHIFT));
}

#ifdef SN_MUTATE_NO_UD_LOSS
/* Has the network reported a datagram of this socket undeliverable (an
 * ICMP error, IP_RECVERR)? Consumes the reports. */
static int sn_ud_reported_lost(int fd)
{
    char control[512];
    struct msghdr msg;
    int lost = 0;

    for (;;) {
        memset(&msg, 0, sizeof(msg));
        msg.msg_control    = control;
        msg.msg_controllen = sizeof(control);
        if (recvmsg(fd, &msg, MSG_ERRQUEUE | MSG_DONTWAIT) < 0) {
            return lost;
        }
        lost = 1;
    }
}
#endif

/* QP lock held: build and send the datagram of a checked WR. A datagram
 * the network does not take is lost, as on a wire: still a success. */
static enum ibv_wc_status
sn_ud_transmit(sn_qp_t *qp, const struct ibv_send_wr *wr, uint32_t len)
{
    sn_inst_t *inst   = sn_qp_inst(qp);
    const sn_ah_t *ah = (const sn_ah_t *)wr->wr.ud.ah;
    uint8_t frame[SN_UD_FRAME_MAX] __attribute__((aligned(8)));
    sn_ud_hdr_t *hdr       = (sn_ud_hdr_t *)frame;
    struct sockaddr_in dst = {.sin_family = AF_INET};
    enum ibv_wc_status status;
    uint32_t qkey = wr->wr.ud.remote_qkey;

    status = sn_ud_gather(qp, wr, frame + sizeof(*hdr));
    if (status != IBV_WC_SUCCESS) {
        return status;
    }
    if (qkey & 0x80000000u) {
        qkey = qp->attr.qkey; /* IB spec 10.2.4: the QP's own qkey */
    }
    memset(hdr, 0, sizeof(*hdr));
    hdr->magic   = htole32(SN_UD_MAGIC);
    hdr->version = SN_UD_VERSION;
    hdr->flags =
        ((wr->opcode == IBV_WR_SEND_WITH_IMM) ? SN_UD_F_IMM : 0) |
        ((wr->send_flags & IBV_SEND_SOLICITED) ? SN_UD_F_SOLICITED : 0);
    hdr->hop_limit     = ah->super.attr.grh.hop_limit;
    hdr->traffic_class = ah->super.attr.grh.traffic_class;
    hdr->dst_qpn       = htole32(wr->wr.ud.remote_qpn);
    hdr->src_qpn       = htole32(qp->super.qp_num);
    hdr->qkey          = htole32(qkey);
    hdr->imm           = wr->imm_data;
    hdr->pkey          = htole16(SN_UD_PKEY);
    hdr->length        = htole32(len);
    dst.sin_addr       = ah->ip;
    dst.sin_port =
        htons(sn_ud_dest_port(inst, &ah->super, wr->wr.ud.remote_qpn));
    if (sendto(inst->ud_fd, frame, sizeof(*hdr) + len, 0,
               (struct sockaddr *)&dst, sizeof(dst)) < 0) {
        sn_log(inst, SOFTNIC_LOG_DEBUG, "UD datagram to %08x:%u lost: %m",
               ntohl(ah->ip.s_addr), ntohs(dst.sin_port));
    }
#ifdef SN_MUTATE_NO_UD_LOSS /* a loss the network reports fails the WR */
    if (sn_ud_reported_lost(inst->ud_fd)) {
        return IBV_WC_RETRY_EXC_ERR;
    }
#endif
    return IBV_WC_SUCCESS;
}

int sn_ud_post_send(sn_qp_t *qp, struct ibv_send_wr *wr,
                    struct ibv_send_wr **bad_wr)
{
    enum ibv_wc_status status;
    uint32_t len;
    int ret = 0;

    pthread_mutex_lock(&qp->lock);
    for (; wr != NULL; wr = wr->next) {
        if ((qp->state != IBV_QPS_RTS) && (qp->state != IBV_QPS_ERR)) {
            ret = EINVAL;
            break;
        }
        ret = sn_ud_check_wr(qp, wr, &len);
        if (ret != 0) {
            break;
        }
        if (qp->state == IBV_QPS_ERR) {
            sn_ud_send_wc(qp, wr, IBV_WC_WR_FLUSH_ERR, len);
            continue;
        }
        status = sn_ud_transmit(qp, wr, len);
        sn_ud_send_wc(qp, wr, status, len);
        if (status != IBV_WC_SUCCESS) {
            sn_qp_to_error(qp);
        }
    }
    if (ret != 0) {
        *bad_wr = wr;
    }
    pthread_mutex_unlock(&qp->lock);
    return ret;
}

/* ---- receive ------------------------------------------------------------- */

/* The GRH area as RoCE v2 over IPv4 fills it: 20 bytes of zeros, then the
 * IPv4 header of the datagram */
static void sn_ud_grh(const sn_inst_t *inst, const sn_ud_hdr_t *hdr,
                      struct in_addr src, uint8_t *grh)
{
    struct iphdr *ip = (struct iphdr *)(grh + SOFTNIC_GRH_LEN - sizeof(*ip));
    const uint16_t *w;
    uint32_t sum = 0;
    size_t i;

    memset(grh, 0, SOFTNIC_GRH_LEN);
    ip->version  = 4;
    ip->ihl      = 5;
    ip->tos      = hdr->traffic_class;
    ip->tot_len  = htons((uint16_t)(sizeof(*ip) + 8 + le32toh(hdr->length)));
    ip->frag_off = htons(IP_DF);
    ip->ttl      = hdr->hop_limit;
    ip->protocol = IPPROTO_UDP;
    ip->saddr    = src.s_addr;
    ip->daddr    = inst->ip.s_addr;
    for (i = 0, w = (const uint16_t *)ip; i < sizeof(*ip) / 2; ++i) {
        sum += w[i];
    }
    sum       = (sum & 0xffff) + (sum >> 16);
    sum       = (sum & 0xffff) + (sum >> 16);
    ip->check = (uint16_t)~sum;
}

#ifdef SN_MUTATE_NO_UD_DROP
/* A datagram no receive waits for is kept: sent back to the device's own
 * socket to come round again. Under the QP lock, so that a receive posted
 * meanwhile is posted after the datagram was put back. Returns 1. */
static int sn_ud_keep(sn_qp_t *qp, const sn_ud_hdr_t *hdr, uint8_t *msg)
{
    int fd         = sn_qp_inst(qp)->ud_fd;
    uint8_t *frame = msg + SOFTNIC_GRH_LEN - sizeof(*hdr);
    struct sockaddr_in self;
    socklen_t len = sizeof(self);

    _Static_assert(sizeof(*hdr) <= SOFTNIC_GRH_LEN, "header fits in GRH");
    memcpy(frame, hdr, sizeof(*hdr));
    if (getsockname(fd, (struct sockaddr *)&self, &len) == 0) {
        sendto(fd, frame, sizeof(*hdr) + le32toh(hdr->length), 0,
               (struct sockaddr *)&self, len);
    }
    return 1;
}
#endif

#ifdef SN_MUTATE_NO_UD_LEN_ERR
/* As much of len as the receive has room for */
static uint32_t sn_ud_fit(const sn_recv_t *recv, uint32_t len)
{
    uint64_t room = 0;
    int i;

    for (i = 0; i < recv->num_sge; ++i) {
        room += recv->sge[i].length;
    }
    return (room < len) ? (uint32_t)room : len;
}
#endif

/* QP lock held: the datagram's receive completion (or its drop) */
static void sn_ud_deliver(sn_qp_t *qp, const sn_ud_hdr_t *hdr, uint8_t *msg,
                          struct in_addr src)
{
    uint32_t len      = SOFTNIC_GRH_LEN + le32toh(hdr->length);
    sn_mr_snap_t snap = {.key = 0};
    struct ibv_wc wc;
    sn_recv_t recv;

    if (((qp->state != IBV_QPS_RTR) && (qp->state != IBV_QPS_RTS)) ||
#ifndef SN_MUTATE_NO_UD_QKEY
        (le32toh(hdr->qkey) != qp->attr.qkey) ||
#endif
        (le16toh(hdr->pkey) != SN_UD_PKEY) ||
#ifndef SN_MUTATE_NO_UD_DROP
        (sn_qp_pop_recv(qp, &recv) != 0)) {
#else
        ((sn_qp_pop_recv(qp, &recv) != 0) && sn_ud_keep(qp, hdr, msg))) {
#endif
        return; /* silently dropped, as UD does */
    }
    sn_ud_grh(sn_qp_inst(qp), hdr, src, msg);
    memset(&wc, 0, sizeof(wc));
    wc.wr_id = recv.wr_id;
#ifndef SN_MUTATE_NO_UD_LEN_ERR
    wc.status = sn_qp_place_recv(qp, &recv, msg, len, 1, &snap);
#else /* a receive too small takes what fits: success */
    wc.status =
        sn_qp_place_recv(qp, &recv, msg, sn_ud_fit(&recv, len), 1, &snap);
#endif
    wc.opcode = IBV_WC_RECV;
#ifndef SN_MUTATE_NO_UD_GRH_LEN
    wc.byte_len = len;
#else /* the GRH left out of the receive's length */
    wc.byte_len = len - SOFTNIC_GRH_LEN;
#endif
    wc.qp_num   = qp->super.qp_num;
    wc.src_qp   = le32toh(hdr->src_qpn);
    wc.wc_flags = IBV_WC_GRH;
    wc.sl       = SN_UD_WC_SL_IPV4;
    if (hdr->flags & SN_UD_F_IMM) {
        wc.wc_flags |= IBV_WC_WITH_IMM;
        wc.imm_data = hdr->imm;
    }
    sn_cq_push(qp->recv_cq, &wc,
               (wc.status == IBV_WC_SUCCESS) &&
                   (hdr->flags & SN_UD_F_SOLICITED));
    if (wc.status != IBV_WC_SUCCESS) {
        sn_qp_to_error(qp);
    }
}

/* One received datagram (frame: the GRH area's 40 bytes, then the
 * datagram): validated, then delivered to its QP */
static void sn_ud_dispatch(sn_inst_t *inst, uint8_t *frame, size_t size,
                           const struct sockaddr_in *from)
{
    sn_ud_hdr_t hdr;
    sn_qp_t *qp;

    if (size < sizeof(hdr)) {
        goto bad;
    }
    memcpy(&hdr, frame + SOFTNIC_GRH_LEN, sizeof(hdr));
    if ((le32toh(hdr.magic) != SN_UD_MAGIC) || (hdr.version != SN_UD_VERSION) ||
        (le32toh(hdr.length) != size - sizeof(hdr))) {
        goto bad;
    }
    /* the payload goes right behind the GRH area */
    memmove(frame + SOFTNIC_GRH_LEN, frame + SOFTNIC_GRH_LEN + sizeof(hdr),
            size - sizeof(hdr));
    pthread_mutex_lock(&inst->lock);
    qp = sn_qp_find(inst, le32toh(hdr.dst_qpn));
    if ((qp == NULL) || (qp->super.qp_type != IBV_QPT_UD)) {
        pthread_mutex_unlock(&inst->lock);
        return; /* no such QP: dropped */
    }
    pthread_mutex_lock(&qp->lock);
    pthread_mutex_unlock(&inst->lock);
    sn_ud_deliver(qp, &hdr, frame, from->sin_addr);
    pthread_mutex_unlock(&qp->lock);
    return;

bad:
    sn_log(inst, SOFTNIC_LOG_WARN,
           "dropped a malformed UD datagram from %08x:%u",
           ntohl(from->sin_addr.s_addr), ntohs(from->sin_port));
}

void sn_ud_rx(sn_inst_t *inst)
{
    struct mmsghdr msgs[SN_UD_BATCH];
    struct sockaddr_in from[SN_UD_BATCH];
    struct iovec iov[SN_UD_BATCH];
    uint8_t *frame;
    int round, n, i;

    if (inst->ud_rxbuf == NULL) {
        inst->ud_rxbuf =
            malloc(SN_UD_BATCH * (SOFTNIC_GRH_LEN + SN_UD_FRAME_MAX));
        if (inst->ud_rxbuf == NULL) {
            return;
        }
    }
    for (round = 0; round < SN_UD_RX_ROUNDS; ++round) {
        memset(msgs, 0, sizeof(msgs));
        for (i = 0; i < SN_UD_BATCH; ++i) {
            frame = inst->ud_rxbuf + i * (SOFTNIC_GRH_LEN + SN_UD_FRAME_MAX);
            iov[i].iov_base             = frame + SOFTNIC_GRH_LEN;
            iov[i].iov_len              = SN_UD_FRAME_MAX;
            msgs[i].msg_hdr.msg_iov     = &iov[i];
            msgs[i].msg_hdr.msg_iovlen  = 1;
            msgs[i].msg_hdr.msg_name    = &from[i];
            msgs[i].msg_hdr.msg_namelen = sizeof(from[i]);
        }
        n = recvmmsg(inst->ud_fd, msgs, SN_UD_BATCH, MSG_DONTWAIT, NULL);
        for (i = 0; i < n; ++i) {
            if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) {
                msgs[i].msg_len = 0; /* longer than any UD message: bad */
            }
            sn_ud_dispatch(inst, (uint8_t *)iov[i].iov_base - SOFTNIC_GRH_LEN,
                           msgs[i].msg_len, &from[i]);
        }
        if (n < SN_UD_BATCH) {
            return;
        }
    }
}

void sn_ud_poll(sn_inst_t *inst)
{
    if ((__atomic_load_n(&inst->num_ud_qps, __ATOMIC_RELAXED) == 0) ||
        __atomic_load_n(&inst->svc_want, __ATOMIC_RELAXED) ||
        (pthread_mutex_trylock(&inst->svc_lock) != 0)) {
        return;
    }
    if (!__atomic_load_n(&inst->stopping, __ATOMIC_ACQUIRE)) {
        sn_ud_rx(inst);
    }
    pthread_mutex_unlock(&inst->svc_lock);
}
