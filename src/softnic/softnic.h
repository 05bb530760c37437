/*
 * softnic: a userspace RDMA NIC with verbs semantics. Public API.
 *
 * softnic is a software NIC, not a mock: RC queue pairs with the IB state
 * machine, access checks, completion statuses, RC ordering, RNR and transport
 * retries, error flushing. Peers on one host move bytes with single-copy CMA
 * and shared-memory rings, peers on different hosts over TCP. It needs no
 * kernel support and nothing of UCX; its users are the soft backend of orc's
 * device layer (src/uct/orc/dev/soft) and a libibverbs provider. The model
 * and the contracts every object keeps are described in sn_int.h, the
 * library's private header.
 *
 * Types: softnic has its own object handles; attributes, work requests and
 * completions are libibverbs' own types (struct ibv_send_wr, ibv_recv_wr,
 * ibv_wc, ibv_qp_attr, ibv_port_attr, ibv_device_attr, IBV_ACCESS_*, enum
 * ibv_wc_status, ...), used exactly as verbs documents them, so a provider
 * passes them through unchanged. Only the header of <infiniband/verbs.h> is
 * needed: softnic calls no libibverbs function.
 *
 * Conventions (those of libibverbs):
 *  - creators return NULL and set errno on failure;
 *  - other calls return 0 on success or a positive errno value;
 *  - softnic_cq_poll() returns the number of completions (>= 0) or a negative
 *    errno value.
 *
 * Threads: every call is thread-safe, as with libibverbs; objects may be
 * created, modified and destroyed from any thread. Destroying an object
 * while another thread still uses it is the caller's error, as with verbs.
 * Every opened device runs one service thread of its own, which never calls
 * into the user except through the log callback.
 *
 * Handles: each object starts with the public part declared below; its
 * fields may be read, never written.
 *
 * Devices: one per network interface that is up with an IPv4 address, named
 * "soft_<ifname>", port 1, Ethernet link layer, one GID (::ffff:<ipv4>), one
 * P_Key (0xffff). Opening a device creates a softnic instance in the calling
 * process (service thread, TCP listener on the interface's address).
 *
 * Connecting a QP: the RTR transition's ah_attr must carry is_global = 1,
 * grh.dgid = the peer device's GID, and dlid = the TCP port of the peer's
 * listener; port_num 1. softnic_dev_addr_pack() / softnic_dev_addr_unpack()
 * carry exactly that (plus the host identity that enables the same-host
 * paths) from one device to the other. Or, with the config's qpn_port_base,
 * the GID and the QPN alone, as RoCE addresses a QP (what verbs programs
 * exchange): the QPN names its device's listener, dlid is ignored.
 *
 * Event records. A completion channel's fd is readable while completion
 * events are pending; each event is one 8-byte record holding the
 * cq_context the CQ was created with, the layout of the kernel's struct
 * ib_uverbs_comp_event_desc: a libibverbs provider creates its softnic CQs
 * with cq_context = its struct ibv_cq * and hands the fd to libibverbs,
 * whose ibv_get_cq_event() reads it unchanged.
 *
 * Asynchronous events go to the config's event callback (below): a QP
 * attached to an SRQ that enters the error state, by modify or by a failure,
 * raises IBV_EVENT_QP_LAST_WQE_REACHED once (IB spec 10.3.1); a CQ that
 * overruns (completions lost) raises IBV_EVENT_CQ_ERR once.
 *
 * UD QPs (qp_type IBV_QPT_UD), as RoCE v2 UD works: datagrams of at most
 * the port's MTU (4096 bytes) travel in UDP datagrams between the devices'
 * addresses, each device's UDP port being the number of its TCP listener's
 * port. A UD QP goes RESET -> INIT (pkey_index, port, qkey) -> RTR -> RTS
 * (sq_psn) and sends SEND / SEND_WITH_IMM to wr.ud.{ah, remote_qpn,
 * remote_qkey}, where wr.ud.ah is a softnic_ah_t * (cast to struct ibv_ah *)
 * of the QP's device; a remote_qkey with its top bit set means the QP's own
 * qkey (IB spec 10.2.4). A send completes once the datagram left: UD is
 * unreliable, so a datagram to a QPN that does not exist, to a QP whose
 * qkey differs or that has no receive posted is dropped by the receiver
 * and the sender never knows. A message longer than the MTU fails the post
 * (EINVAL). The receiver places a 40-byte GRH at the start of the receive
 * buffer, then the payload (byte_len = 40 + payload); as RoCE v2 over IPv4,
 * the GRH area holds the IPv4 header of the datagram in its last 20 bytes
 * (source and destination address at bytes 32 and 36), the first 20 bytes
 * are zero, and the completion carries IBV_WC_GRH, src_qp, pkey_index 0 and
 * sl = 2 (the "IPv4 L3 header" packet type that RoCE NICs report in sl and
 * UCX reads). A receive too small for GRH + payload completes with
 * IBV_WC_LOC_LEN_ERR and moves the QP to the error state (a completion
 * error, IB spec 10.8.3).
 *
 * Not here yet, and where it goes:
 *  - Port events (IBV_EVENT_PORT_ACTIVE / PORT_ERR on the interface's link
 *    changes): the port is always ACTIVE today.
 *  - Multicast UD (attach_mcast): no multicast groups.
 */
#ifndef SOFTNIC_H_
#define SOFTNIC_H_

#include <infiniband/verbs.h>
#include <net/if.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SOFTNIC_NAME_MAX 64
/* QPN = port offset (10 bits) | generation (2) | slot (12) when QPs are
 * addressed by QPN (softnic_config_t.qpn_port_base) */
#define SOFTNIC_QPN_PORT_BITS  10
#define SOFTNIC_QPN_PORT_SHIFT (24 - SOFTNIC_QPN_PORT_BITS)
#define SOFTNIC_DEV_PREFIX     "soft_"
/* UD: the GRH area at the start of every UD receive buffer, and the
 * largest UD message (the port's active MTU) */
#define SOFTNIC_GRH_LEN 40
#define SOFTNIC_UD_MTU  4096

/* ---- configuration and log ------------------------------------------ */

/* Severity of a log message; a device delivers the messages whose level is
 * <= its config's log_level. Zero (the default) is ERROR. */
typedef enum softnic_log_level {
    SOFTNIC_LOG_NONE  = -1, /* as log_level: deliver nothing */
    SOFTNIC_LOG_ERROR = 0,  /* softnic could not do what was asked (a system
                               call failed, a CQ overran) */
    SOFTNIC_LOG_WARN  = 1,  /* a peer broke the wire protocol */
    SOFTNIC_LOG_INFO  = 2,  /* connection and QP error events (peer lost,
                               retries exhausted, CMA refused -> TCP) */
    SOFTNIC_LOG_DEBUG = 3
} softnic_log_level_t;

/*
 * Log callback: one complete message (no trailing newline) of a device
 * (dev_name "-" before a device exists). Called from any thread, the
 * device's service thread included, possibly with softnic locks held: it
 * must return promptly and must not call into softnic.
 */
typedef void (*softnic_log_fn_t)(void *arg, softnic_log_level_t level,
                                 const char *dev_name, const char *message);

/*
 * Event callback: an asynchronous event of a device's object (see above);
 * context is the qp_context or cq_context the object was created with.
 * Called from any thread, possibly with softnic locks held: it must return
 * promptly and must not call into softnic.
 */
typedef void (*softnic_event_fn_t)(void *arg, enum ibv_event_type type,
                                   void *context);

/*
 * Device configuration, given to softnic_dev_list() and softnic_dev_open().
 * Zero-initialised (or a NULL config) means: every interface, CMA and rings
 * on, errors to stderr. An open device keeps a copy (ifaces is not kept).
 */
typedef struct softnic_config {
    /* Comma-separated network interfaces ("lo,eth0") that are devices;
     * NULL or "" = every interface that is up and has an IPv4 address. A
     * listed interface that does not qualify is an error (ENODEV). */
    const char *ifaces;
    /* Never use the same-host paths (CMA copies, shared-memory rings):
     * everything travels on TCP, as between hosts. */
    int no_cma;
    /* Same-host SENDs and atomics on TCP instead of shared-memory rings
     * (READ and WRITE still use CMA). */
    int no_ring;
    softnic_log_level_t log_level;
    /* Address QPs by GID and QPN alone. 0: off (an RTR ah_attr carries the
     * listener's port in dlid). Otherwise the device's listener takes the
     * first free TCP port of [qpn_port_base, qpn_port_base + 1024), every
     * QPN carries that port's offset in its top SOFTNIC_QPN_PORT_BITS bits,
     * and RTR connects to the port its dest_qp_num names. Every device of a
     * fabric must use the same base. */
    uint16_t qpn_port_base;
    /* NULL: messages go to stderr as "[softnic <pid> <dev>] <message>" */
    softnic_log_fn_t log_fn;
    void *log_arg;
    /* NULL: asynchronous events are dropped */
    softnic_event_fn_t event_fn;
    void *event_arg;
} softnic_config_t;

/*
 * The configuration from strings, for users that take it from the
 * environment or a file (a libibverbs provider). Settings, by name:
 *
 *   IFACES   comma-separated interface names, or "" for all (the string is
 *            kept by the config, not copied: it must outlive its use)
 *   NO_CMA   y|yes|on|1 or n|no|off|0 (any case)
 *   NO_RING  the same
 *   LOG      none|error|warn|info|debug (any case): log_level
 *
 * Parsing is strict: anything else is EINVAL with a message in err (when
 * err is not NULL) saying what was expected; the config is then unchanged.
 */
int softnic_config_set(softnic_config_t *config, const char *name,
                       const char *value, char *err, size_t err_len);
/* Every setting whose variable <prefix><NAME> is set in the environment
 * (prefix "SOFTNIC_": SOFTNIC_NO_CMA, ...), all or nothing: on EINVAL, err
 * names the variable, and the config is unchanged. */
int softnic_config_from_env(softnic_config_t *config, const char *prefix,
                            char *err, size_t err_len);
/* "none", "error", "warn", "info", "debug" */
const char *softnic_log_level_name(softnic_log_level_t level);

/* ---- devices ---------------------------------------------------------- */

typedef struct softnic_dev_info {
    char name[SOFTNIC_NAME_MAX]; /* "soft_lo" */
    char ifname[IF_NAMESIZE];    /* "lo" */
    union ibv_gid gid;           /* GID 0 of port 1 */
} softnic_dev_info_t;

/* The devices the configuration selects. No device is not an error
 * (*count_p = 0). Free the list with softnic_dev_list_free(). */
int softnic_dev_list(const softnic_config_t *config,
                     softnic_dev_info_t **list_p, int *count_p);
void softnic_dev_list_free(softnic_dev_info_t *list);

typedef struct softnic_dev {
    char name[SOFTNIC_NAME_MAX];
} softnic_dev_t;

/* ENODEV: no such device among those the configuration selects. */
softnic_dev_t *softnic_dev_open(const char *name,
                                const softnic_config_t *config);
/* EBUSY while QPs exist */
int softnic_dev_close(softnic_dev_t *dev);
int softnic_dev_query(softnic_dev_t *dev, struct ibv_device_attr *attr);
int softnic_dev_query_port(softnic_dev_t *dev, uint8_t port_num,
                           struct ibv_port_attr *attr);
int softnic_dev_query_gid(softnic_dev_t *dev, uint8_t port_num, int index,
                          union ibv_gid *gid);
int softnic_dev_query_pkey(softnic_dev_t *dev, uint8_t port_num, int index,
                           uint16_t *pkey);

/*
 * The address a peer device needs to connect a QP to this device (see
 * "Connecting a QP" above): SOFTNIC_ADDR_LEN bytes, self-describing,
 * little-endian. Unpack fills the ah_attr of the RTR transition; it fails
 * with EINVAL for malformed input and EHOSTUNREACH for an address this
 * device cannot reach (a loopback address of another host or network
 * namespace, a non-loopback address unpacked on soft_lo).
 */
#define SOFTNIC_ADDR_LEN 63
int softnic_dev_addr_pack(softnic_dev_t *dev, void *buf, size_t len);
int softnic_dev_addr_unpack(softnic_dev_t *dev, const void *buf, size_t len,
                            struct ibv_ah_attr *ah_attr);

/* ---- protection domains and memory regions ---------------------------- */

typedef struct softnic_pd {
    softnic_dev_t *dev;
} softnic_pd_t;

typedef struct softnic_mr {
    softnic_pd_t *pd;
    void *addr;
    size_t length;
    int access; /* IBV_ACCESS_* */
    uint32_t lkey;
    uint32_t rkey;
} softnic_mr_t;

softnic_pd_t *softnic_pd_alloc(softnic_dev_t *dev);
int softnic_pd_dealloc(softnic_pd_t *pd);
/* Once softnic_mr_dereg() returned, nothing touches the region any more. */
softnic_mr_t *softnic_mr_reg(softnic_pd_t *pd, void *addr, size_t length,
                             int access);
int softnic_mr_dereg(softnic_mr_t *mr);

/* ---- completion channels and queues ----------------------------------- */

typedef struct softnic_comp_channel {
    softnic_dev_t *dev;
    int fd; /* readable while events are pending (see above) */
} softnic_comp_channel_t;

typedef struct softnic_cq {
    softnic_dev_t *dev;
    softnic_comp_channel_t *channel; /* may be NULL */
    void *cq_context;                /* also each event's record */
    int cqe;                         /* actual capacity */
} softnic_cq_t;

softnic_comp_channel_t *softnic_comp_channel_create(softnic_dev_t *dev);
/* EBUSY while CQs use it */
int softnic_comp_channel_destroy(softnic_comp_channel_t *channel);
softnic_cq_t *softnic_cq_create(softnic_dev_t *dev, int cqe, void *cq_context,
                                softnic_comp_channel_t *channel);
/* EBUSY while QPs use it */
int softnic_cq_destroy(softnic_cq_t *cq);
/* -EOVERFLOW once completions were lost to a full CQ */
int softnic_cq_poll(softnic_cq_t *cq, int num_entries, struct ibv_wc *wc);
/* Arm the CQ: its next completion (solicited_only: the next solicited or
 * failed one) writes one event record to the channel and disarms it. */
int softnic_cq_req_notify(softnic_cq_t *cq, int solicited_only);
/* Read one event record: *cq_context_p = the cq_context of the CQ that
 * fired. Blocks unless the channel fd was made non-blocking (then EAGAIN). */
int softnic_cq_get_event(softnic_comp_channel_t *channel, void **cq_context_p);
void softnic_cq_ack_events(softnic_cq_t *cq, unsigned int nevents);

/* ---- shared receive queues -------------------------------------------- */

typedef struct softnic_srq {
    softnic_pd_t *pd;
    void *srq_context;
} softnic_srq_t;

/* attr->attr.srq_limit must be 0 (no limit events yet) */
softnic_srq_t *softnic_srq_create(softnic_pd_t *pd,
                                  struct ibv_srq_init_attr *attr);
/* EBUSY while QPs use it */
int softnic_srq_destroy(softnic_srq_t *srq);
int softnic_post_srq_recv(softnic_srq_t *srq, struct ibv_recv_wr *wr,
                          struct ibv_recv_wr **bad_wr);

/* ---- queue pairs ------------------------------------------------------- */

typedef struct softnic_qp {
    softnic_pd_t *pd;
    void *qp_context;
    uint32_t qp_num;
    enum ibv_qp_type qp_type;
} softnic_qp_t;

/* struct ibv_qp_init_attr with softnic handles. qp_type: IBV_QPT_RC or
 * IBV_QPT_UD. */
typedef struct softnic_qp_init_attr {
    void *qp_context;
    softnic_cq_t *send_cq;
    softnic_cq_t *recv_cq;
    softnic_srq_t *srq;    /* NULL: the QP has its own receive queue */
    struct ibv_qp_cap cap; /* the actual caps are written back */
    enum ibv_qp_type qp_type;
    int sq_sig_all;
} softnic_qp_init_attr_t;

softnic_qp_t *softnic_qp_create(softnic_pd_t *pd, softnic_qp_init_attr_t *attr);
/* The RC and UD state machines of the IB specification: required and
 * allowed attribute masks per transition; EINVAL changes nothing. */
int softnic_qp_modify(softnic_qp_t *qp, struct ibv_qp_attr *attr,
                      int attr_mask);
/* Every attribute is returned, whatever attr_mask says. */
int softnic_qp_query(softnic_qp_t *qp, struct ibv_qp_attr *attr, int attr_mask,
                     softnic_qp_init_attr_t *init_attr);
int softnic_qp_destroy(softnic_qp_t *qp);
int softnic_post_send(softnic_qp_t *qp, struct ibv_send_wr *wr,
                      struct ibv_send_wr **bad_wr);
/* softnic_post_send() of one WR (wr->next NULL, else EINVAL) for a caller
 * that takes a completion at once: *done_p is 1 when the WR is an RDMA
 * WRITE or READ that finished successfully within this call (same host,
 * nothing outstanding on the QP: one CMA copy), and then it produces no
 * completion entry, signaled or not; the caller has its completion now.
 * Otherwise *done_p is 0 and the WR completes as one softnic_post_send()
 * posted (a failure too: an entry with its status, the QP in ERR). */
int softnic_post_send_now(softnic_qp_t *qp, struct ibv_send_wr *wr,
                          struct ibv_send_wr **bad_wr, int *done_p);
/* One SEND or RDMA WRITE (opcode) whose data, hdr_len bytes at hdr then
 * len bytes at data (either may be empty, its address then anything), is
 * copied into the WQE as with IBV_SEND_INLINE: the caller may reuse both at
 * once. send_flags: IBV_SEND_SIGNALED, _SOLICITED, _FENCE (INLINE is
 * implied); remote_addr and rkey: the WRITE's target (unused by a SEND). */
typedef struct softnic_inline_wr {
    uint64_t wr_id;
    enum ibv_wr_opcode opcode;
    unsigned send_flags;
    uint64_t remote_addr;
    uint32_t rkey;
    uint32_t hdr_len;
    uint32_t len;
    const void *hdr;
    const void *data;
} softnic_inline_wr_t;
/* softnic_post_send() of wr as one inline WR, without building an
 * ibv_send_wr: the same queue, order, completions and errors (a QP in ERR
 * completes it with IBV_WC_WR_FLUSH_ERR). EINVAL (nothing posted) for
 * another opcode, more than the QP's max_inline_data bytes, a QP neither in
 * RTS nor ERR, or a UD QP; ENOMEM when the send queue is full. */
int softnic_post_send_inline(softnic_qp_t *qp, const softnic_inline_wr_t *wr);
int softnic_post_recv(softnic_qp_t *qp, struct ibv_recv_wr *wr,
                      struct ibv_recv_wr **bad_wr);

/* ---- address handles (UD) ---------------------------------------------- */

typedef struct softnic_ah {
    softnic_pd_t *pd;
    struct ibv_ah_attr attr; /* as created */
} softnic_ah_t;

/* attr: is_global = 1, grh.dgid = the peer device's GID (IPv4-mapped),
 * sgid_index 0, port_num 1 and, unless the device addresses QPs by QPN
 * (config qpn_port_base), dlid = the peer device's port (what
 * softnic_dev_addr_unpack() fills); EINVAL otherwise. */
softnic_ah_t *softnic_ah_create(softnic_pd_t *pd,
                                const struct ibv_ah_attr *attr);
int softnic_ah_destroy(softnic_ah_t *ah);

#ifdef __cplusplus
}
#endif

#endif /* SOFTNIC_H_ */
