/*
 * orc UCT transport: RC queue pairs over the orc device layer (verbs or
 * softnic), paired through the coordinator orcd instead of an address swap.
 *
 * Objects:
 *   uct_orc_md_t     one per device: the device, a PD, the registration cache
 *   uct_orc_iface_t  one per device port: CQs, SRQ, receive buffers, agent
 *   uct_orc_ep_t     one initiator RC QP to a peer iface (connect-to-iface)
 *   uct_orc_agent_t  an iface's pairing agent (orc_agent.c): answers and
 *                    completes pairings; never touches UCT objects
 *   uct_orc_session_t the process's coordinator session (orc_session.c):
 *                    one orcd node and the threads that talk to orcd for
 *                    every agent of the process
 *
 * Wire format of a SEND (every SEND lands in the receiver's SRQ):
 *   uct_orc_hdr_t, then the AM payload (am_short: the 64-bit header first).
 * A credit grant is a SEND with UCT_ORC_HDR_FLAG_CREDIT and no payload.
 */
#ifndef UCT_ORC_H_
#define UCT_ORC_H_

#include "orc_compat.h"

#include "orc_client.h"
#include "orc_dev.h"
#include "orc_topo.h"

#include <ucs/datastruct/khash.h>
#include <ucs/datastruct/list.h>
#include <ucs/datastruct/mpool.h>
#include <ucs/datastruct/queue.h>
#include <ucs/sys/math.h>
#include <ucs/memory/rcache.h>
#include <uct/base/uct_md.h>

#include <jansson.h>
#include <pthread.h>

#define UCT_ORC_TL_NAME       "orc"
#define UCT_ORC_CONFIG_PREFIX "ORC_"
#define UCT_ORC_MAX_SGE       8 /* cap on sges per work request */
#define UCT_ORC_MAX_INLINE_WR \
    256                          /* cap on inline data of a WR: short
                                      operations up to it take no op */
#define UCT_ORC_AM_CREDITS_MIN 2 /* smallest AM window of a peer */
#define UCT_ORC_PASSIVE_SQ_LEN \
    16                              /* send queue of a passive QP (credit
                                          grants only) */
#define UCT_ORC_EP_SENDQ_MAX     16 /* ops an ep accepts while pairing */
#define UCT_ORC_MAX_CREDITS      UINT16_MAX
#define UCT_ORC_SWAP_MAX_RETRY   100000 /* CAS attempts of one 64-bit swap */
#define UCT_ORC_IFACE_POLL_BATCH 32 /* completions per CQ poll: a ring run */
#define UCT_ORC_IFACE_RX_SKIP_MAX \
    3 /* progress calls in a row that may leave the receive CQ
         unpolled, having found send completions */
#define UCT_ORC_IFACE_TX_IDLE_POLL \
    64 /* progress calls per send CQ poll with only
          unsignaled WRs in flight */


/* ------------------------------------------------------------------ md */

typedef struct uct_orc_md_config {
    uct_md_config_t super;
    int backend; /* orc_dev_backend_t */
    char *soft_ifaces;
    int soft_no_cma;
    int soft_no_ring;
    int rcache_enable; /* UCS_YES/NO/TRY */
    uct_orc_compat_rcache_config_t rcache;
} uct_orc_md_config_t;

extern ucs_config_field_t uct_orc_md_config_table[];
extern const char *uct_orc_backend_names[];

typedef struct uct_orc_md {
    uct_md_t super;
    orc_dev_t *dev;
    orc_pd_t *pd;
    ucs_rcache_t *rcache;     /* NULL: register every call directly */
    double reg_cost_overhead; /* seconds per registration */
    struct ibv_device_attr dev_attr;
    orc_dev_config_t dev_config;
    char *soft_ifaces;        /* owned copy for dev_config */
    orc_topo_loc_t loc;       /* where the device sits (hwloc) */
    ucs_sys_device_t sys_dev; /* its PCI device as UCX knows it, or
                                       UCS_SYS_DEVICE_ID_UNKNOWN */
} uct_orc_md_t;

/* Memory handle: an rcache region (or a plain region when the cache is off)
 * holding the device MR. */
typedef struct uct_orc_memh {
    ucs_rcache_region_t super;
    orc_mr_t *mr;
} uct_orc_memh_t;

/* Packed remote key */
typedef struct uct_orc_rkey {
    uint32_t rkey;
} UCS_S_PACKED uct_orc_rkey_t;

extern uct_component_t uct_orc_component;

void uct_orc_md_dev_config(const uct_orc_md_config_t *config,
                           orc_dev_config_t *dev_config);

/* Register/deregister a buffer directly (mpool chunks use this). */
orc_mr_t *uct_orc_md_reg_direct(uct_orc_md_t *md, void *addr, size_t length);


/* ---------------------------------------------------------- locality */

/* (orc_locality.c) Where the md's device sits: md->loc from hwloc and
 * md->sys_dev, its PCI device registered with UCX's topology. */
void uct_orc_md_locate(uct_orc_md_t *md);
/* Whether the md's device is remote to the CPUs the calling thread may run
 * on now (orc_topo.h's rule) */
int uct_orc_md_is_remote(const uct_orc_md_t *md);
/* The estimates of a device that is remote to the opening thread */
void uct_orc_iface_remote_perf(uct_iface_attr_t *attr);
/* Near devices first, for the calling thread (stable otherwise) */
void uct_orc_sort_devices(orc_dev_info_t *list, int count);
/* The topology summary of the devices `config` selects (orc_topo_summary)
 * into buf[ORC_TOPO_SUMMARY_MAX] */
void uct_orc_topo_summary(const orc_dev_config_t *config, char *buf);


/* ------------------------------------------------------------ config */

typedef struct uct_orc_iface_config {
    uct_iface_config_t super;
    char *coordinator;
    char *job;
    char *token;
    char *token_file;
    unsigned tx_queue_len;
    unsigned rx_queue_len;
    unsigned am_credits;
    size_t max_inline;
    size_t seg_size;
    double pair_timeout;
    double coordinator_wait;
    unsigned lease_ttl;
    unsigned qp_timeout; /* IB encoding: 4.096us * 2^n */
    unsigned retry_count;
    unsigned rnr_retry;
    unsigned tx_moderation;
} uct_orc_iface_config_t;

extern ucs_config_field_t uct_orc_iface_config_table[];


/* -------------------------------------------------------------- wire */

enum {
    UCT_ORC_HDR_FLAG_CREDIT = UCS_BIT(0) /* explicit credit grant */
};

typedef struct uct_orc_hdr {
    uint8_t am_id;
    uint8_t flags;
    uint16_t credits; /* credits granted by this message */
    uint32_t reserved;
} UCS_S_PACKED uct_orc_hdr_t;

/* UCT's release descriptor overlays the wire header after it was parsed */
_Static_assert(sizeof(uct_orc_hdr_t) >= sizeof(uct_recv_desc_t *),
               "the release descriptor must fit over the header");

/* An iface: the node of its process in orcd, and its id there */
typedef struct uct_orc_iface_addr {
    uint64_t node_id;
    uint32_t iface_id;
} UCS_S_PACKED uct_orc_iface_addr_t;

/* The device: what a peer must share to be reachable (backend, domain), and
 * where it is (a softnic device belongs to a network interface of one host
 * and network namespace), for UCX's "same device" question. */
typedef struct uct_orc_dev_addr {
    uint8_t backend;  /* orc_dev_backend_t */
    uint32_t domain;  /* hash of coordinator URL and job */
    uint64_t host_id; /* ucs_get_system_id() */
    uint32_t net_ns;  /* network namespace (inode) */
} UCS_S_PACKED uct_orc_dev_addr_t;


/* ------------------------------------------- session and pairing agents */

typedef struct uct_orc_session uct_orc_session_t;

typedef enum uct_orc_agent_event_type {
    UCT_ORC_AGENT_EV_EP_CONNECTED,  /* initiator QP is RTS */
    UCT_ORC_AGENT_EV_EP_FAILED,     /* pairing failed, or the peer's node
                                      died (lease expired): status */
    UCT_ORC_AGENT_EV_EP_PEER_LEFT,  /* the peer closed its iface or left the
                                      job cleanly */
    UCT_ORC_AGENT_EV_PASSIVE_ADDED, /* a passive QP serves a peer's ep */
    UCT_ORC_AGENT_EV_PASSIVE_CLOSED /* the peer destroyed that ep, or its
                                      node left orcd: qp */
} uct_orc_agent_event_type_t;

/* A hand-off from an agent to its iface: pushed under the session lock,
 * moved out by uct_orc_agent_poll(), then owned (and freed) by the iface. */
typedef struct uct_orc_agent_event {
    ucs_queue_elem_t queue;
    uct_orc_agent_event_type_t type;
    uint64_t conn_id;    /* the initiator ep's connection */
    ucs_status_t status; /* EP_FAILED */
    unsigned credits;    /* EP_CONNECTED / PASSIVE_ADDED */
    orc_qp_t *qp;        /* PASSIVE_ADDED */
    uint32_t qp_num;     /* PASSIVE_CLOSED */
    uint64_t peer_node;  /* PASSIVE_* */
} uct_orc_agent_event_t;

/*
 * A pairing in progress of one initiator ep, owned by its agent. Created by
 * uct_orc_agent_pair() on the UCT thread, completed or failed by the session
 * threads, removed by uct_orc_agent_cancel() (ep destroyed). The QP is
 * modified only with the session lock held.
 */
typedef struct uct_orc_agent_pairing {
    ucs_list_link_t list;
    uint64_t conn_id;
    uint64_t peer_node;
    uint32_t peer_iface;
    orc_qp_t *qp;
    uint32_t psn;
    ucs_time_t deadline; /* UINT64_MAX until the request is
                                             first tried */
    int sent;            /* the request reached the mailbox */
} uct_orc_agent_pairing_t;

/*
 * What an agent remembers after pairing, to notice peers that leave:
 * connected initiator eps (conn_id, peer) and passive QPs it created (peer,
 * the peer ep's conn_id, qp).
 */
typedef struct uct_orc_agent_link {
    ucs_list_link_t list;
    uint64_t conn_id;
    uint64_t peer_node;
    uint32_t peer_iface;
    uint32_t qp_num; /* passive links only */
} uct_orc_agent_link_t;

/* What an agent needs of its iface to create and connect QPs */
typedef struct uct_orc_agent_params {
    orc_dev_t *dev;
    uint8_t port;
    orc_pd_t *pd;
    orc_cq_t *send_cq;         /* of initiator QPs */
    orc_cq_t *passive_send_cq; /* of passive QPs (grants) */
    orc_cq_t *recv_cq;
    orc_srq_t *srq;
    struct ibv_qp_cap qp_cap; /* of initiator QPs */
    enum ibv_mtu mtu;
    uint8_t max_rd_atomic;
    unsigned qp_timeout;
    unsigned retry_count;
    unsigned rnr_retry;
    unsigned am_credits;   /* largest AM window */
    unsigned rx_queue_len; /* receive buffers of the SRQ */
    ucs_time_t pair_timeout;
    const char *dev_name; /* copied by the agent */
} uct_orc_agent_params_t;

/*
 * The pairing agent of one iface: the iface's part of the process's
 * coordinator session (orc_session.c). It has no thread of its own: the
 * session's threads long-poll the process's mailbox and hand each message
 * to the agent it is addressed to, post the agents' requests, and watch the
 * peers of every agent. Results reach the iface only through the event
 * queue, drained by uct_orc_agent_poll() from the iface's progress; events
 * the application waits for (an ep connected or failed) also signal
 * event_fd, which is part of the iface's wakeup fd.
 *
 * Locking: every mutable field is protected by the session lock
 * (session->lock), except nevents, which is also written only under it, with
 * release stores, so progress can peek at it with an acquire load and no
 * lock (a stale zero is caught by the next progress). `params`, iface_id,
 * dev_name, dev_addr_hex and event_fd are read-only while attached. Device-layer calls
 * are thread-safe; QPs of pairings are modified only with the session lock
 * held, so uct_orc_agent_cancel() can destroy them safely after unlinking.
 */
typedef struct uct_orc_agent {
    uct_orc_agent_params_t params;
    uct_orc_session_t *session; /* NULL until attached */
    uint32_t iface_id;          /* in the session's node */
    char dev_name[UCT_DEVICE_NAME_MAX];
    char *dev_addr_hex;        /* our packed device address */
    ucs_list_link_t list;      /* in session->agents */
    ucs_list_link_t pairings;  /* uct_orc_agent_pairing_t */
    ucs_list_link_t connected; /* uct_orc_agent_link_t */
    ucs_list_link_t passives;  /* uct_orc_agent_link_t */
    unsigned npassive;         /* length of passives */
    ucs_queue_head_t events;   /* uct_orc_agent_event_t */
    unsigned nevents;          /* length of events: written
                                                 under the lock (atomic
                                                 store), peeked without it */
    int event_fd;              /* eventfd, -1 if none */
} uct_orc_agent_t;

/* Open the agent's event fd and pack its device address; then attach it to
 * the session with uct_orc_session_attach() */
ucs_status_t uct_orc_agent_init(uct_orc_agent_t *agent,
                                const uct_orc_agent_params_t *params);
/* After detaching and a last poll */
void uct_orc_agent_cleanup(uct_orc_agent_t *agent);
/* Queue a pairing request of an initiator QP (state INIT) */
ucs_status_t uct_orc_agent_pair(uct_orc_agent_t *agent, uint64_t conn_id,
                                uint64_t peer_node, uint32_t peer_iface,
                                orc_qp_t *qp, uint32_t psn);
/* Create an RC QP bound to the iface's CQs and SRQ, in state INIT; *psn_p
 * is its initial send PSN. Thread-safe. */
orc_qp_t *uct_orc_agent_qp_create(uct_orc_agent_t *agent, uint32_t *psn_p);
/* Forget an ep (destroyed): its pairing, if any, and its peer watch; tells
 * the peer (mailbox "bye") so it frees the passive QP. Returns after the
 * agent stopped using the QP. */
void uct_orc_agent_cancel(uct_orc_agent_t *agent, uint64_t conn_id,
                          uint64_t peer_node, uint32_t peer_iface);
/* Move all queued events to *queue (the caller frees them with ucs_free) */
int uct_orc_agent_poll(uct_orc_agent_t *agent, ucs_queue_head_t *queue);
/* Whether events are waiting: a lock-free peek (a stale zero is seen by the
 * next progress), inline because every progress call asks */
static inline int uct_orc_agent_has_events(uct_orc_agent_t *agent)
{
    return __atomic_load_n(&agent->nevents, __ATOMIC_ACQUIRE) != 0;
}

/* Called by the session threads, with the session lock held */
void uct_orc_agent_handle_msg_locked(uct_orc_agent_t *agent, uint64_t from,
                                     uint32_t from_iface, const char *type,
                                     json_t *body);
/* Fail the pairings past their deadline; returns the earliest deadline of
 * the others, or UINT64_MAX; *unsent_p set if one was never sent */
ucs_time_t uct_orc_agent_expire_locked(uct_orc_agent_t *agent, ucs_time_t now,
                                       int *unsent_p);
/* Fail the pairings whose request was not sent (orcd out of reach) */
void uct_orc_agent_fail_unsent_locked(uct_orc_agent_t *agent);
/* The request of conn_id is about to be sent: whether its pairing still
 * waits for it. Its first attempt starts the pairing's deadline (the wait
 * in the process's own outbox does not count). */
int uct_orc_agent_request_start_locked(uct_orc_agent_t *agent,
                                       uint64_t conn_id);
/* The request of a pairing was posted, with cl_status; returns whether it
 * is to be sent again (a transient failure before the deadline) */
int uct_orc_agent_request_sent_locked(uct_orc_agent_t *agent, uint64_t conn_id,
                                      orc_cl_status_t cl_status);
/* Our own node's lease expired: every ep and passive QP goes */
void uct_orc_agent_node_lost_locked(uct_orc_agent_t *agent);
/* The peer node left the job: cleanly (expired = 0) or its lease expired */
void uct_orc_agent_peer_gone_locked(uct_orc_agent_t *agent, uint64_t peer_node,
                                    int expired);
/* Whether the agent has peers (pairing or paired) to watch */
int uct_orc_agent_has_links_locked(uct_orc_agent_t *agent);
/* cb(arg, peer node) for every peer of the agent (repeats possible) */
void uct_orc_agent_foreach_peer_locked(uct_orc_agent_t *agent,
                                       void (*cb)(void *arg, uint64_t peer),
                                       void *arg);
/* The iface closes: tell the peers it served (mailbox "fin") */
void uct_orc_agent_farewell_locked(uct_orc_agent_t *agent);

/*
 * Receive buffers the iface may hold back from its SRQ: the buffers AM
 * handlers released go back in lists of this many (a poll's batch, at most
 * a quarter of the queue), so a latency loop takes the SRQ's lock once per
 * that many messages, not once per message. Fewer are held between two
 * receive completions, and no credit stands for them.
 */
static inline unsigned uct_orc_rx_hold(unsigned rx_queue_len)
{
    return ucs_min(UCT_ORC_IFACE_POLL_BATCH, rx_queue_len / 4);
}

/*
 * AM credits a passive QP grants its peer: the receive buffers of the SRQ
 * less those the iface may hold back (uct_orc_rx_hold(): a grant never
 * promises a buffer that is not posted), shared out among the peers, at
 * most am_credits and at least UCT_ORC_AM_CREDITS_MIN (or am_credits if
 * smaller): with more peers than buffers the receiver-not-ready retry
 * absorbs bursts; a peer is never refused.
 */
static inline unsigned uct_orc_credit_window(unsigned rx_queue_len,
                                             unsigned am_credits,
                                             unsigned npeers)
{
    unsigned share =
        (rx_queue_len - uct_orc_rx_hold(rx_queue_len)) / ucs_max(1, npeers);

    return ucs_max(ucs_min(UCT_ORC_AM_CREDITS_MIN, am_credits),
                   ucs_min(am_credits, share));
}


/* ------------------------------------------------------------- session */

/*
 * The coordinator session of the process (orc_session.c): one orcd client,
 * one registered node (its lease kept alive by the client's keep-alive
 * thread), one mailbox long-poll, one outbox and one membership watch, shared
 * by every iface of the process that uses the same coordinator URL, job and
 * token. An iface is addressed by (node id, iface id).
 */
ucs_status_t uct_orc_session_attach(uct_orc_agent_t *agent,
                                    const uct_orc_iface_config_t *config,
                                    const orc_dev_config_t *dev_config,
                                    uint64_t *node_id_p, uint32_t *domain_p);
/* After this no session thread touches the agent */
void uct_orc_session_detach(uct_orc_agent_t *agent);
/* Queue a mailbox message for a peer node (takes text, a malloc'ed JSON
 * object) from iface iface_id. conn_id != 0: a pairing request of that ep
 * of the iface, sent only while the pairing exists. Urgent messages
 * (replies) go before the others. Called with the session lock held. */
void uct_orc_session_post_locked(uct_orc_session_t *session, uint32_t iface_id,
                                 uint64_t dst, uint64_t conn_id, int urgent,
                                 char *text);
/* JSON text of object (compact, malloc'ed; NULL if object is NULL or on no
 * memory); releases object */
char *uct_orc_json_dump(json_t *object);
/* The session's links changed: the watch wakes to check them */
void uct_orc_session_links_changed_locked(uct_orc_session_t *session);
/* The lock that protects the agents (see uct_orc_agent_t) */
pthread_mutex_t *uct_orc_session_lock(uct_orc_session_t *session);
/* The node id of the session */
uint64_t uct_orc_session_node_id(const uct_orc_session_t *session);


/* -------------------------------------------------------------- iface */

typedef struct uct_orc_ep uct_orc_ep_t;

typedef enum uct_orc_op_type {
    UCT_ORC_OP_PUT,       /* no local completion work */
    UCT_ORC_OP_GET_BCOPY, /* unpack from the bounce buffer */
    UCT_ORC_OP_GET_ZCOPY,
    UCT_ORC_OP_AM,
    UCT_ORC_OP_ATOMIC_POST,  /* result discarded */
    UCT_ORC_OP_ATOMIC_FETCH, /* 64-bit result copied out */
    UCT_ORC_OP_SWAP,         /* compare-swap loop until it swapped */
    UCT_ORC_OP_CHECK,        /* ep_check probe */
    UCT_ORC_OP_FLUSH,        /* marker in the ep's tx queue */
    UCT_ORC_OP_GRANT         /* credit grant on a passive QP */
} uct_orc_op_type_t;

/*
 * What one work request (or a flush marker) needs when it completes. An
 * ep's WRs are numbered (uct_orc_ep_t::tx_pi); an op posted for WR number sn
 * is found in ep->tx_ops[sn & tx_ops_mask]. Short operations that need
 * nothing at completion post their WR inline and take no op; a zero-copy
 * WRITE or READ that the device finished within its post (softnic on one
 * host, posted while ep->txq was empty) returns UCS_OK and leaves no op
 * and no WR number behind (uct_orc_ep_post_rdma_now). Posted ops of
 * an ep sit in ep->txq in issue order; they and their completion callbacks
 * leave it in that order, and a flush marker leaves it once every WR
 * posted before it (up to its sn) completed. Ops accepted before they can be
 * posted (ep pairing) wait in ep->sendq with their WR. When the ep is
 * destroyed, its QP goes first, then its ops (nothing touches their buffers
 * any more); completions still in the CQ then find no ep and are dropped.
 */
typedef struct uct_orc_op {
    ucs_queue_elem_t queue;
    uint8_t type;
    uint8_t done;
    uint8_t queued; /* goes to ep->sendq, not posted yet */
    uint8_t fence;  /* post with IBV_SEND_FENCE */
    uint8_t signal; /* post signaled (a flush marker follows it) */
    int8_t status;  /* ucs_status_t it completed with (done ops, markers) */
    uint16_t sn;    /* number of its WR; a marker's: the WR before it */
    uint32_t lkey;  /* of data[], bounce buffers only */
    uct_orc_ep_t *ep;
    uct_completion_t *comp;
    union {
        struct {
            uct_unpack_callback_t cb;
            void *arg;
            size_t length;
        } get;
        struct {
            uint64_t *result;
            uint64_t compare;
            uint64_t swap;
            uint64_t remote_addr;
            uint32_t rkey;
            unsigned retries;
        } atomic;
    };
    /* queued ops only: the work request to post, and its sges */
    struct ibv_send_wr wr;
    struct ibv_sge sge[UCT_ORC_MAX_SGE];
    /* bounce buffers only: aligned, registered data */
    char data[] UCS_V_ALIGNED(64);
} uct_orc_op_t;

/* uct_orc_op_t::status holds a ucs_status_t */
_Static_assert(UCS_ERR_LAST >= INT8_MIN, "a status fits in int8_t");

/*
 * Receive descriptor posted to the SRQ. data[] holds
 *   [pad][uct_recv_desc_t* slot][rx_headroom bytes][payload]
 * and the SEND lands sizeof(hdr) before the payload (the header occupies
 * the end of the headroom, or the slot when there is no headroom). The pad
 * (iface->config.rx_pad, 0..7 bytes) keeps the descriptor 8-byte aligned
 * when the payload is placed at a requested AM alignment and offset. Packed:
 * with such an alignment, the descriptor itself may sit anywhere.
 */
typedef struct uct_orc_rx_desc {
    uint32_t lkey;
    uint32_t reserved;
    char data[];
} UCS_S_PACKED uct_orc_rx_desc_t;

/*
 * A passive QP: serves one initiator ep of a peer. The peer sends AMs on it;
 * this side returns credits on it. Owned by the iface (after the agent
 * handed it over).
 */
typedef struct uct_orc_passive {
    ucs_list_link_t list;
    orc_qp_t *qp;
    uint64_t peer_node;
    uint64_t peer_conn_id; /* the peer ep's connection id */
    unsigned credits_out;  /* AM credits the peer holds:
                                            granted, not yet received */
    unsigned sq_avail;
    int failed;
    int closing;                /* destroy once no grant in flight */
    ucs_list_link_t grant_list; /* in iface->grant_pending */
    int grant_queued;
} uct_orc_passive_t;

/* qp number -> owner (ep or passive) */
typedef struct uct_orc_qp_owner {
    uct_orc_ep_t *ep;           /* initiator QP */
    uct_orc_passive_t *passive; /* passive QP */
} uct_orc_qp_owner_t;

KHASH_MAP_INIT_INT(uct_orc_qp, uct_orc_qp_owner_t);
KHASH_MAP_INIT_INT64(uct_orc_conn, uct_orc_ep_t *);

/*
 * Threading: like every UCT iface, used by one thread at a time (the one
 * that progresses its worker). The session threads never touch it; they
 * share only the device-layer objects (thread-safe) and the agent's state.
 */
typedef struct uct_orc_iface {
    uct_base_iface_t super;
    uct_orc_md_t *md;
    uint8_t port;
    struct ibv_port_attr port_attr;
    orc_comp_channel_t *channel;
    orc_cq_t *send_cq;
    orc_cq_t *recv_cq;
    orc_srq_t *srq;
    ucs_mpool_t tx_mp;  /* bounce buffers (registered) */
    ucs_mpool_t op_mp;  /* ops without data */
    ucs_mpool_t rx_mp;  /* receive buffers (registered) */
    unsigned rx_posted; /* receive buffers in the SRQ */
    /* receive buffers released, not yet posted again: held back, across
     * polls, until config.rx_hold are, then posted in one list; fewer than
     * config.rx_hold between two receive completions */
    uct_orc_rx_desc_t *rx_batch[UCT_ORC_IFACE_POLL_BATCH];
    unsigned rx_batch_len;
    unsigned tx_cq_avail;   /* send CQ entries not in use: every posted
                                          WR takes one (an unsignaled WR
                                          that fails still completes) until a
                                          completion covers it */
    unsigned tx_cq_len;     /* tx_cq_avail with nothing in
                                          flight */
    unsigned tx_signaled;   /* eps with a signaled WR in flight, and
                                          credit grants in flight: the send
                                          CQ is polled while there are any */
    unsigned tx_idle_polls; /* progress calls, for the occasional poll
                                          that finds failed unsignaled WRs */
    unsigned rx_skipped;    /* progress calls in a row that did not
                                          poll the receive CQ (their send CQ
                                          poll found completions) */
    unsigned tx_cq_held;    /* entries of WRs of destroyed eps: their
                                          completions may still be in the CQ;
                                          given back once a poll finds it
                                          empty */
    int event_fd;           /* epoll: channel fd + agent fd */
    uint64_t node_id;       /* our process's node in orcd */
    uint32_t domain;        /* hash of coordinator URL and job */
    uct_orc_agent_t agent;
    unsigned npassive;      /* length of passive_list */
    unsigned credit_window; /* uct_orc_credit_window() of npassive
                                          peers */
    uint64_t next_conn_id;
    khash_t(uct_orc_qp) qp_hash;
    khash_t(uct_orc_conn) conn_hash;
    ucs_list_link_t ep_list;
    ucs_list_link_t passive_list;
    ucs_list_link_t grant_pending; /* passives owing a grant */
    ucs_list_link_t pending_eps;   /* eps with pending requests */
    ucs_list_link_t failed_eps;    /* eps whose error is not yet
                                             reported */
    uct_orc_ep_t *reporting_ep;    /* whose error handler runs now
                                             (NULL if it destroyed it) */
    /* the owner (in qp_hash) of rx_last_qp_num, the QP of the last receive;
     * NULL: none, or qp_hash changed since */
    uct_orc_qp_owner_t *rx_last_owner;
    uint32_t rx_last_qp_num;
    /* the ep of the last send completion (NULL: none, or destroyed): the
     * next one is most often its */
    uct_orc_ep_t *tx_last_ep;
    unsigned fence_beat;
    struct {
        unsigned tx_queue_len;
        unsigned rx_queue_len;
        unsigned rx_hold; /* uct_orc_rx_hold() of rx_queue_len */
        unsigned am_credits;
        size_t seg_size;
        size_t rx_headroom;    /* user bytes before an AM payload */
        size_t rx_pad;         /* see uct_orc_rx_desc_t */
        size_t rx_desc_offset; /* from an rx descriptor to the
                                              AM descriptor of its payload
                                              (payload - rx_headroom) */
        size_t max_inline;
        size_t max_inline_wr;   /* inline data a WR of our QPs may
                                              carry (0: none) */
        unsigned tx_moderation; /* a WR in this many is signaled */
        size_t max_iov;
        unsigned max_rd_atomic;
        int has_stash;
    } config;
    uct_recv_desc_t release_desc; /* of AM descriptors kept by the
                                            application */
    struct ibv_wc stash_wc;       /* CQE consumed by event_arm */
    int stash_is_send;
    int remote; /* the device is remote to the CPUs
                                          of the thread that opened us */
} uct_orc_iface_t;

/* Call before any change of iface->qp_hash: a kh_put may move its values,
 * a kh_del frees one */
static inline void uct_orc_iface_qp_hash_changed(uct_orc_iface_t *iface)
{
    iface->rx_last_owner = NULL;
}

/* Why a peer is not reachable, NULL if it is: it must be on the same
 * backend (a softnic QP cannot talk to an HCA) in the same coordinator
 * domain (node ids mean something only there); iface_addr may be NULL when
 * only the device is asked about. */
static inline const char *
uct_orc_iface_addr_unreachable(const uct_orc_iface_t *iface,
                               const uct_orc_dev_addr_t *dev_addr,
                               const uct_orc_iface_addr_t *iface_addr)
{
    if (dev_addr->backend != iface->md->dev->backend) {
        return "orc: other device backend";
    }
    if (dev_addr->domain != iface->domain) {
        return "orc: other coordinator or job";
    }
    if ((iface_addr != NULL) && (iface_addr->node_id == 0)) {
        return "orc: no node id";
    }
    return NULL;
}

UCS_CLASS_DECLARE(uct_orc_iface_t, uct_md_h, uct_worker_h,
                  const uct_iface_params_t *, const uct_iface_config_t *);
UCS_CLASS_DECLARE_NEW_FUNC(uct_orc_iface_t, uct_iface_t, uct_md_h, uct_worker_h,
                           const uct_iface_params_t *,
                           const uct_iface_config_t *);

/* Reachability for UCX (see UCT_ORC_COMPAT_INTERNAL_OPS): NULL if a peer
 * with these addresses is reachable; same_device: and on this device. */
const char *uct_orc_iface_unreachable(uct_iface_h tl_iface,
                                      const uct_device_addr_t *dev_addr,
                                      const uct_iface_addr_t *iface_addr,
                                      int same_device);

ucs_status_t uct_orc_query_devices(uct_md_h md,
                                   uct_tl_device_resource_t **devices_p,
                                   unsigned *num_devices_p);

void uct_orc_iface_schedule_pending(uct_orc_iface_t *iface, uct_orc_ep_t *ep);
void uct_orc_iface_ep_failed(uct_orc_iface_t *iface, uct_orc_ep_t *ep,
                             ucs_status_t status);

/*
 * (orc_iface_progress.c) The data path, for the interface's life cycle in
 * orc_iface.c. Hidden: not exported by the module, and called directly (no
 * PLT) from the progress call, as when both halves were one file.
 */
#define UCT_ORC_IFACE_HIDDEN __attribute__((visibility("hidden")))
/* Release of an AM descriptor the application kept (iface->release_desc) */
UCT_ORC_IFACE_HIDDEN void uct_orc_iface_release_desc(uct_recv_desc_t *self,
                                                     void *desc);
/* A receive buffer (NULL: a fresh one) to the SRQ, posted in lists of
 * config.rx_hold */
UCT_ORC_IFACE_HIDDEN ucs_status_t
uct_orc_iface_post_recv(uct_orc_iface_t *iface, uct_orc_rx_desc_t *desc);
/* Post what uct_orc_iface_post_recv() holds back, now */
UCT_ORC_IFACE_HIDDEN ucs_status_t
uct_orc_iface_post_recv_batch(uct_orc_iface_t *iface);
/* Recompute iface->credit_window after iface->npassive changed */
UCT_ORC_IFACE_HIDDEN void
uct_orc_iface_set_credit_window(uct_orc_iface_t *iface);
/* The interface's progress call (uct_iface_ops_t.iface_progress) */
UCT_ORC_IFACE_HIDDEN unsigned uct_orc_iface_progress(uct_iface_h tl_iface);


/* ----------------------------------------------------------------- ep */

typedef enum uct_orc_ep_state {
    UCT_ORC_EP_PAIRING,
    UCT_ORC_EP_CONNECTED,
    UCT_ORC_EP_FAILED
} uct_orc_ep_state_t;

struct uct_orc_ep {
    uct_base_ep_t super;
    ucs_list_link_t list;         /* iface->ep_list */
    ucs_list_link_t pending_list; /* iface->pending_eps */
    ucs_list_link_t failed_list;  /* iface->failed_eps */
    int in_pending_list;
    int in_failed_list;
    uct_orc_ep_state_t state;
    ucs_status_t status; /* sticky error once FAILED */
    int err_reported;
    int peer_left; /* the peer iface closed */
    uint64_t conn_id;
    uint64_t peer_node;
    uint32_t peer_iface;
    orc_qp_t *qp;
    unsigned sq_avail;
    uint16_t tx_pi;        /* number of the last WR posted */
    uint16_t tx_ci;        /* ... and of the last one completed: WRs
                                 complete in order, and a completion (of a
                                 signaled WR, or of any WR that failed)
                                 completes every earlier one */
    unsigned unsignaled;   /* WRs posted since the last signaled one */
    uint16_t tx_sig_sn;    /* number of the last signaled WR */
    uint8_t tx_sig_busy;   /* ... which is in flight (counted in
                              iface->tx_signaled) */
    uint16_t tx_ops_mask;  /* tx_ops has tx_ops_mask + 1 entries */
    uct_orc_op_t **tx_ops; /* op of each WR in flight, by its number
                                 (NULL: none; every op found here is in
                                 txq, so with txq empty all are NULL) */
    unsigned credits;      /* AM sends allowed */
    unsigned fence_beat;
    unsigned swaps;         /* swap ops posted, not done */
    int in_dispatch;        /* dispatching its pending queue */
    ucs_queue_head_t txq;   /* uct_orc_op_t posted, in issue
                                             order, and flush markers */
    ucs_queue_head_t sendq; /* uct_orc_op_t accepted but not
                                             posted yet (the ep was pairing)
                                             and flush markers behind them */
    unsigned sendq_len;     /* ops in sendq, markers aside */
    ucs_queue_head_t pending_q;
};

UCS_CLASS_DECLARE(uct_orc_ep_t, const uct_ep_params_t *);
UCS_CLASS_DECLARE_NEW_FUNC(uct_orc_ep_t, uct_ep_t, const uct_ep_params_t *);
UCS_CLASS_DECLARE_DELETE_FUNC(uct_orc_ep_t, uct_ep_t);

ucs_status_t uct_orc_ep_put_short(uct_ep_h tl_ep, const void *buffer,
                                  unsigned length, uint64_t remote_addr,
                                  uct_rkey_t rkey);
ssize_t uct_orc_ep_put_bcopy(uct_ep_h tl_ep, uct_pack_callback_t pack_cb,
                             void *arg, uint64_t remote_addr, uct_rkey_t rkey);
ucs_status_t uct_orc_ep_put_zcopy(uct_ep_h tl_ep, const uct_iov_t *iov,
                                  size_t iovcnt, uint64_t remote_addr,
                                  uct_rkey_t rkey, uct_completion_t *comp);
ucs_status_t uct_orc_ep_get_bcopy(uct_ep_h tl_ep,
                                  uct_unpack_callback_t unpack_cb, void *arg,
                                  size_t length, uint64_t remote_addr,
                                  uct_rkey_t rkey, uct_completion_t *comp);
ucs_status_t uct_orc_ep_get_zcopy(uct_ep_h tl_ep, const uct_iov_t *iov,
                                  size_t iovcnt, uint64_t remote_addr,
                                  uct_rkey_t rkey, uct_completion_t *comp);
ucs_status_t uct_orc_ep_am_short(uct_ep_h tl_ep, uint8_t id, uint64_t header,
                                 const void *payload, unsigned length);
ucs_status_t uct_orc_ep_am_short_iov(uct_ep_h tl_ep, uint8_t id,
                                     const uct_iov_t *iov, size_t iovcnt);
ssize_t uct_orc_ep_am_bcopy(uct_ep_h tl_ep, uint8_t id,
                            uct_pack_callback_t pack_cb, void *arg,
                            unsigned flags);
ucs_status_t uct_orc_ep_am_zcopy(uct_ep_h tl_ep, uint8_t id, const void *header,
                                 unsigned header_length, const uct_iov_t *iov,
                                 size_t iovcnt, unsigned flags,
                                 uct_completion_t *comp);
ucs_status_t uct_orc_ep_atomic64_post(uct_ep_h tl_ep, unsigned opcode,
                                      uint64_t value, uint64_t remote_addr,
                                      uct_rkey_t rkey);
ucs_status_t uct_orc_ep_atomic64_fetch(uct_ep_h tl_ep, unsigned opcode,
                                       uint64_t value, uint64_t *result,
                                       uint64_t remote_addr, uct_rkey_t rkey,
                                       uct_completion_t *comp);
ucs_status_t uct_orc_ep_atomic_cswap64(uct_ep_h tl_ep, uint64_t compare,
                                       uint64_t swap, uint64_t remote_addr,
                                       uct_rkey_t rkey, uint64_t *result,
                                       uct_completion_t *comp);
ucs_status_t uct_orc_ep_pending_add(uct_ep_h tl_ep, uct_pending_req_t *req,
                                    unsigned flags);
void uct_orc_ep_pending_purge(uct_ep_h tl_ep, uct_pending_purge_callback_t cb,
                              void *arg);
ucs_status_t uct_orc_ep_flush(uct_ep_h tl_ep, unsigned flags,
                              uct_completion_t *comp);
ucs_status_t uct_orc_ep_fence(uct_ep_h tl_ep, unsigned flags);
ucs_status_t uct_orc_ep_check(uct_ep_h tl_ep, unsigned flags,
                              uct_completion_t *comp);

/* Whether the ep is connected to the iface with these addresses */
int uct_orc_ep_is_peer(uct_ep_h tl_ep, const uct_device_addr_t *dev_addr,
                       const uct_iface_addr_t *iface_addr);

/* Called by the iface */
void uct_orc_ep_connected(uct_orc_ep_t *ep, unsigned credits);
void uct_orc_ep_peer_left(uct_orc_ep_t *ep);
void uct_orc_ep_set_failed(uct_orc_ep_t *ep, ucs_status_t status);
/* wr_id of an ep's WR: its connection id (never reused in an iface) and
 * its number, with bit 0 set (the op pointer of a credit grant has it
 * clear) */
#define UCT_ORC_WR_ID_EP 1
static inline uint64_t uct_orc_wr_id(uint64_t conn_id, uint16_t sn)
{
    return (conn_id << 17) | ((uint64_t)sn << 1) | UCT_ORC_WR_ID_EP;
}
static inline uint64_t uct_orc_wr_id_conn(uint64_t wr_id)
{
    return wr_id >> 17;
}
static inline uint16_t uct_orc_wr_id_sn(uint64_t wr_id)
{
    return (uint16_t)(wr_id >> 1);
}
/* The completion of WR number sn of the ep (and of every WR before it) */
void uct_orc_ep_tx_completed(uct_orc_ep_t *ep, uint16_t sn,
                             enum ibv_wc_status wc_status);
/* Signaled empty WRITEs behind the eps' unsignaled WRs (iface flush) */
int uct_orc_ep_signal_tail(uct_orc_ep_t *ep);
/* Whether the ep has WRs or ops in flight */
static inline int uct_orc_ep_tx_busy(uct_orc_ep_t *ep)
{
    return (ep->tx_pi != ep->tx_ci) || !ucs_queue_is_empty(&ep->txq) ||
           !ucs_queue_is_empty(&ep->sendq);
}
void uct_orc_ep_add_credits(uct_orc_ep_t *ep, unsigned credits);
/* After the error handler of a failed ep: the requests still in its pending
 * queue run once (their operations fail with the ep's status) and leave it,
 * whatever they return: nothing would ever dispatch them */
void uct_orc_ep_pending_fail(uct_orc_ep_t *ep);
/* Post what the send queue holds as resources allow, then dispatch the
 * pending requests; called from the iface's progress */
void uct_orc_ep_dispatch_pending(uct_orc_ep_t *ep);
/* Whether the ep has queued ops or pending requests to dispatch */
static inline int uct_orc_ep_has_work(uct_orc_ep_t *ep)
{
    return !ucs_queue_is_empty(&ep->sendq) ||
           !ucs_queue_is_empty(&ep->pending_q);
}
ucs_status_t uct_orc_wc_status(enum ibv_wc_status status);

#endif /* UCT_ORC_H_ */
