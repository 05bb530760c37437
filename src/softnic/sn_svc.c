/*
 * softnic's service loop: the service thread and its epoll set (the
 * listener, the command eventfd, the connections), the commands other
 * threads post to it (connect a QP, drop a connection, forget a QP), the
 * timers (QP transport and RNR timers, same-host rings of targets that do
 * not poll, connect retries), and the non-blocking step a polling thread
 * may run (sn_svc_poll). Wire protocol: sn_wire.h.
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "sn_wire.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

typedef enum {
    SN_CMD_CONNECT,
    SN_CMD_DROP,
    SN_CMD_FORGET
} sn_cmd_type_t;

/*
 * A command for the service loop. Any thread posts one (sn_svc_post) by
 * appending it to inst->cmd_head/cmd_tail under inst->cmd_lock and writing
 * the eventfd; the svc_lock holder takes the whole list under cmd_lock,
 * runs the commands without it, then advances inst->cmd_done (under
 * cmd_lock, cmd_cond broadcast). Between post and run only the list links
 * change; the fields are written before the post and read after the take.
 */
struct sn_cmd {
    struct sn_cmd *next;
    sn_cmd_type_t type;
    sn_qp_t *qp;
    uint64_t stream_id;
    int on_stack; /* FORGET: owned by the waiting caller */
};

static char sn_listen_tag, sn_cmd_tag, sn_ud_tag;

/* ---- commands ----------------------------------------------------------- */

static void sn_svc_post(sn_inst_t *inst, struct sn_cmd *cmd, uint64_t *ticket_p)
{
    uint64_t one = 1;
    ssize_t ret;

    cmd->next = NULL;
    pthread_mutex_lock(&inst->cmd_lock);
    if (inst->cmd_tail == NULL) {
        inst->cmd_head = cmd;
    } else {
        inst->cmd_tail->next = cmd;
    }
    inst->cmd_tail = cmd;
    if (ticket_p != NULL) {
        *ticket_p = ++inst->cmd_posted;
    } else {
        ++inst->cmd_posted;
    }
    pthread_mutex_unlock(&inst->cmd_lock);
    ret = write(inst->cmd_fd, &one, sizeof(one));
    (void)ret; /* an eventfd write fails only when the counter saturates */
}

void sn_svc_wake(sn_inst_t *inst)
{
    uint64_t one = 1;
    ssize_t ret;

    ret = write(inst->cmd_fd, &one, sizeof(one));
    (void)ret;
}

void sn_svc_armed(sn_inst_t *inst)
{
    __atomic_add_fetch(&inst->arm_gen, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&inst->svc_standby, __ATOMIC_SEQ_CST) ||
        __atomic_load_n(&inst->ring_standby, __ATOMIC_SEQ_CST)) {
        sn_svc_wake(inst);
    }
}

int sn_svc_connect(sn_inst_t *inst, sn_qp_t *qp)
{
    struct sn_cmd *cmd = calloc(1, sizeof(*cmd));

    if (cmd == NULL) {
        return ENOMEM;
    }
    cmd->type = SN_CMD_CONNECT;
    cmd->qp   = qp;
    sn_svc_post(inst, cmd, NULL);
    return 0;
}

void sn_svc_drop_stream(sn_inst_t *inst, uint64_t stream_id)
{
    struct sn_cmd *cmd = calloc(1, sizeof(*cmd));

    /* without memory the connection lingers until the service thread
     * notices that its QP no longer lists it */
    if (cmd != NULL) {
        cmd->type      = SN_CMD_DROP;
        cmd->stream_id = stream_id;
        sn_svc_post(inst, cmd, NULL);
    }
}

void sn_svc_forget_qp(sn_inst_t *inst, sn_qp_t *qp)
{
    struct sn_cmd cmd;
    uint64_t ticket;

    memset(&cmd, 0, sizeof(cmd));
    cmd.type     = SN_CMD_FORGET;
    cmd.qp       = qp;
    cmd.on_stack = 1;
    sn_svc_post(inst, &cmd, &ticket);
    pthread_mutex_lock(&inst->cmd_lock);
    while (inst->cmd_done < ticket) {
        pthread_cond_wait(&inst->cmd_cond, &inst->cmd_lock);
    }
    pthread_mutex_unlock(&inst->cmd_lock);
}

static void sn_svc_run_cmd(sn_inst_t *inst, const struct sn_cmd *cmd)
{
    sn_stream_t *stream, *next;

    switch (cmd->type) {
    case SN_CMD_CONNECT:
        sn_chan_connect_qp(inst, cmd->qp);
        break;
    case SN_CMD_DROP:
        for (stream = inst->streams; stream != NULL; stream = stream->next) {
            if (stream->id == cmd->stream_id) {
                sn_stream_close(inst, stream);
                break;
            }
        }
        break;
    case SN_CMD_FORGET:
        for (stream = inst->streams; stream != NULL; stream = next) {
            next = stream->next;
            if (stream->chan->qp == cmd->qp) {
                stream->chan->have_recv = 0; /* the QP is going away */
                sn_stream_close(inst, stream);
            }
        }
        break;
    }
}

static void sn_svc_commands(sn_inst_t *inst)
{
    struct sn_cmd *cmd, *next;
    uint64_t count = 0, value;
    ssize_t ret;

    ret = read(inst->cmd_fd, &value, sizeof(value));
    (void)ret;
    pthread_mutex_lock(&inst->cmd_lock);
    cmd            = inst->cmd_head;
    inst->cmd_head = inst->cmd_tail = NULL;
    pthread_mutex_unlock(&inst->cmd_lock);

    for (; cmd != NULL; cmd = next) {
        next = cmd->next;
        ++count;
        sn_svc_run_cmd(inst, cmd);
        if (!cmd->on_stack) {
            free(cmd);
        }
    }

    pthread_mutex_lock(&inst->cmd_lock);
    inst->cmd_done += count;
    pthread_cond_broadcast(&inst->cmd_cond);
    pthread_mutex_unlock(&inst->cmd_lock);
}

static int sn_svc_stream_alive(sn_inst_t *inst, sn_stream_t *stream)
{
    sn_stream_t *c;

    for (c = inst->streams; c != NULL; c = c->next) {
        if (c == stream) {
            return 1;
        }
    }
    return 0;
}

/* QP lock held, the QP has a same-host ring: did a poller drive it since
 * the last timer pass? An empty poll of one of its CQs ran its ring
 * progress (sn_cq_ring_progress; a QP lock it missed is the next poll's) */
static int sn_svc_qp_driven(sn_qp_t *qp)
{
    uint32_t polls[2];
    int driven;

    polls[0] = __atomic_load_n(&qp->send_cq->empty_polls, __ATOMIC_RELAXED);
    polls[1] = __atomic_load_n(&qp->recv_cq->empty_polls, __ATOMIC_RELAXED);
    driven   = (polls[0] != qp->svc_polls_seen[0]) ||
             (polls[1] != qp->svc_polls_seen[1]);
    qp->svc_polls_seen[0] = polls[0];
    qp->svc_polls_seen[1] = polls[1];
    return driven;
}

/* The timer pass; *driven_p: pollers drove every same-host ring it found
 * since the pass before (a QP whose lock a poster holds counts: its
 * thread is at it, and the QP is looked at again within 5 ms) */
static uint64_t sn_svc_timers(sn_inst_t *inst, int *driven_p)
{
    uint64_t now = sn_now_ns(), next = 0, t;
    sn_qp_t *qp;

    *driven_p = 1;
    pthread_mutex_lock(&inst->lock);
    for (qp = inst->qps; qp != NULL; qp = qp->next) {
        /* never queue behind a posting thread (it would hand the lock over
         * on every post): a busy QP is looked at again in 5 ms */
        if (pthread_mutex_trylock(&qp->lock) != 0) {
            t = now + 5000000ull;
        } else {
            if ((qp->rings != NULL) || (qp->ring != NULL)) {
                *driven_p &= sn_svc_qp_driven(qp);
                sn_ring_progress(qp, 1);
            }
            t = sn_qp_timers(qp, now);
            pthread_mutex_unlock(&qp->lock);
        }
        if ((t != 0) && ((next == 0) || (t < next))) {
            next = t;
        }
    }
    pthread_mutex_unlock(&inst->lock);
    return next;
}

/* svc_lock held: the ACKs owed go when due (sn_int.h, "ACK coalescing"):
 * all of them at the end of the service thread's pass, and of a poller's
 * while the service thread serves the sockets too (pollers step rarely);
 * those due at the end of a step of pollers it left the sockets to (a
 * step that moved bytes is a busy one) */
static void sn_svc_acks(sn_inst_t *inst, int poller)
{
    sn_stream_acks(inst,
                   !poller ||
                       !__atomic_load_n(&inst->svc_standby, __ATOMIC_RELAXED),
                   poller && sn_io_moved);
}

void sn_svc_hot(sn_inst_t *inst, sn_stream_t *stream)
{
    if (inst->polling && stream->tcp_data) {
        inst->hot_stream = stream;
    }
}

/* svc_lock held: handle a batch of epoll events (poller: on a polling
 * thread) */
static void sn_svc_dispatch(sn_inst_t *inst, const struct epoll_event *events,
                            int n, int poller)
{
    sn_stream_t *stream;
    int i;

    inst->polling = poller;
    for (i = 0; i < n; ++i) {
        if (events[i].data.ptr == &sn_listen_tag) {
            sn_stream_accept(inst);
        } else if (events[i].data.ptr == &sn_cmd_tag) {
            sn_svc_commands(inst);
        } else if (events[i].data.ptr == &sn_ud_tag) {
            sn_ud_rx(inst);
        } else {
            stream = events[i].data.ptr;
            /* an earlier event of this batch may have closed it */
            if (sn_svc_stream_alive(inst, stream)) {
                if ((stream->chan->role == SN_ROLE_TGT) &&
                    (events[i].events & EPOLLIN)) {
                    sn_svc_hot(inst, stream);
                }
                sn_stream_event(inst, stream, events[i].events);
            }
        }
    }
    /* answers read above may let held requests through */
    sn_stream_resume(inst);
    sn_svc_acks(inst, poller);
    inst->polling = 0;
}

/* svc_lock held, a poller's step: its events. The hot connection's
 * (sn_int.h, "Polling"), read without asking epoll, but at every
 * SN_HOT_EPOLL-th step, which asks epoll for all of them */
static int sn_svc_poll_events(sn_inst_t *inst, struct epoll_event *events,
                              int max)
{
    if ((inst->hot_stream != NULL) && (inst->poll_steps % SN_HOT_EPOLL != 0)) {
        events[0].events   = EPOLLIN;
        events[0].data.ptr = inst->hot_stream;
        return 1;
    }
    return epoll_wait(inst->epoll_fd, events, max, 0);
}

SN_TLS_IE int sn_io_moved;

int sn_svc_poll_step(sn_inst_t *inst)
{
    struct epoll_event events[16];
    int n;

    if (__atomic_load_n(&inst->svc_want, __ATOMIC_RELAXED) ||
        (pthread_mutex_trylock(&inst->svc_lock) != 0)) {
        return 0;
    }
    sn_io_moved = 0;
    if (!__atomic_load_n(&inst->stopping, __ATOMIC_ACQUIRE)) {
        __atomic_store_n(&inst->poll_steps, inst->poll_steps + 1,
                         __ATOMIC_RELAXED);
        n = sn_svc_poll_events(inst, events, 16);
        if (n > 0) {
            inst->ack_hold =
                __atomic_load_n(&inst->svc_standby, __ATOMIC_RELAXED);
            sn_svc_dispatch(inst, events, n, 1);
            inst->ack_hold = 0;
            /* after the step: events the service thread is holding may
             * name connections closed here */
            __atomic_store_n(&inst->svc_gen, inst->svc_gen + 1,
                             __ATOMIC_RELEASE);
        } else {
            sn_svc_acks(inst, 1);
        }
    }
    pthread_mutex_unlock(&inst->svc_lock);
    return sn_io_moved;
}

/* The service thread takes svc_lock: pollers that spin on trylock would
 * otherwise keep taking it back before the woken waiter gets to it */
static void sn_svc_lock(sn_inst_t *inst)
{
    __atomic_store_n(&inst->svc_want, 1, __ATOMIC_RELAXED);
    pthread_mutex_lock(&inst->svc_lock);
    __atomic_store_n(&inst->svc_want, 0, __ATOMIC_RELAXED);
}

/* The service thread's own work under svc_lock while it stands back from
 * the sockets (sn_int.h, "Polling"): a poller mid-step holds the lock, and
 * waiting for it would keep the pollers off (svc_want) until the kernel
 * runs the woken service thread again, on a CPU a poller spins on as much
 * as a time slice later; so it only tries, unless the work is late (the
 * timer pass: SN_PASS_LATE_NS since the last one). 1: svc_lock taken */
static int sn_svc_lock_own(sn_inst_t *inst, int standby, int late)
{
    if (standby && !late) {
        return pthread_mutex_trylock(&inst->svc_lock) == 0;
    }
    sn_svc_lock(inst);
    return 1;
}

/* What the service thread watches while a thread polls (sn_int.h,
 * "Polling"): at each look, or at once after an arm */
typedef struct sn_svc_look {
    uint64_t at_ns;
    uint64_t steps;
    uint64_t posts;
    uint64_t arms;
    int standby;
} sn_svc_look_t;

/* Within the look that ends: did a thread keep polling? It stepped, and
 * its steps and posts came to SN_STANDBY_STEPS (sn_int.h, "Polling") */
static int sn_svc_kept_polling(const sn_svc_look_t *look, uint64_t steps,
                               uint64_t posts)
{
    return (steps != look->steps) &&
           ((steps - look->steps) + (posts - look->posts) >= SN_STANDBY_STEPS);
}

/* Stand back from the sockets, or serve them again; returns the epoll set
 * to wait on */
static int sn_svc_standby(sn_inst_t *inst, sn_svc_look_t *look, uint64_t now)
{
    uint64_t steps = __atomic_load_n(&inst->poll_steps, __ATOMIC_RELAXED);
    uint64_t posts = __atomic_load_n(&inst->posts, __ATOMIC_RELAXED);
    uint64_t arms  = __atomic_load_n(&inst->arm_gen, __ATOMIC_SEQ_CST);

    if ((arms == look->arms) && (now - look->at_ns < SN_LOOK_NS)) {
        return look->standby ? inst->idle_epfd : inst->epoll_fd;
    }
    look->standby =
        (!SN_RULE_STANDBY_ENDS && look->standby) ||
        ((arms == look->arms) && sn_svc_kept_polling(look, steps, posts));
    look->at_ns = now;
    look->steps = steps;
    look->posts = posts;
    __atomic_store_n(&inst->svc_standby, look->standby, __ATOMIC_SEQ_CST);
    look->arms = __atomic_load_n(&inst->arm_gen, __ATOMIC_SEQ_CST);
    if (look->standby && (look->arms != arms)) {
        /* armed meanwhile: the armer may have missed the flag */
        look->standby = 0;
        __atomic_store_n(&inst->svc_standby, 0, __ATOMIC_SEQ_CST);
    }
    return look->standby ? inst->idle_epfd : inst->epoll_fd;
}

/* The timer pass's pace (sn_int.h, "Polling"): every millisecond, or
 * every SN_RING_LOOK_NS (ring_standby) while pollers drive every ring
 * (driven), no CQ was armed since the pass before and no QP holds a WRITE
 * batch or request frames back (the pass is their backstop); returns the
 * time to the next pass */
static uint64_t sn_svc_ring_pace(sn_inst_t *inst, uint64_t *arms_p, int driven)
{
    uint64_t arms = __atomic_load_n(&inst->arm_gen, __ATOMIC_SEQ_CST);
    int standby   = driven && (arms == *arms_p) &&
                  (__atomic_load_n(&inst->num_rings, __ATOMIC_RELAXED) > 0) &&
                  !sn_cq_holds_writes(inst);

    __atomic_store_n(&inst->ring_standby, standby, __ATOMIC_SEQ_CST);
    *arms_p = __atomic_load_n(&inst->arm_gen, __ATOMIC_SEQ_CST);
    if (standby && (*arms_p != arms)) {
        /* armed meanwhile: the armer may have missed the flag */
        standby = 0;
        __atomic_store_n(&inst->ring_standby, 0, __ATOMIC_SEQ_CST);
    }
    return standby ? SN_RING_LOOK_NS : SN_PASS_NS;
}

/* Is the timer pass due? At its pace (every millisecond while a WRITE
 * batch or request frames wait for it), at the timers' next deadline, and
 * at once when a CQ was armed while the rings stood by */
static int sn_svc_pass_due(sn_inst_t *inst, uint64_t now, uint64_t last,
                           uint64_t pace, uint64_t next, uint64_t arms)
{
    if (sn_cq_holds_writes(inst)) {
        pace = SN_PASS_NS;
    }
    return (now - last >= pace) || ((next != 0) && (now >= next)) ||
           ((pace != SN_PASS_NS) &&
            (__atomic_load_n(&inst->arm_gen, __ATOMIC_SEQ_CST) != arms));
}

/* The timer pass, at *last_p (the last one's time) on; 0: pollers had
 * svc_lock (sn_svc_lock_own), the pass is tried again within a look */
static int sn_svc_pass(sn_inst_t *inst, int standby, uint64_t now,
                       uint64_t *last_p, uint64_t *next_p, int *driven_p)
{
    if (!sn_svc_lock_own(inst, standby, now - *last_p >= SN_PASS_LATE_NS)) {
        return 0;
    }
    *next_p = sn_svc_timers(inst, driven_p);
    *last_p = now;
    sn_stream_timers(inst, now);
    sn_stream_resume(inst); /* a QP left RTS, or lost its peer */
    pthread_mutex_unlock(&inst->svc_lock);
    return 1;
}

/* How long the service thread may wait for events (ms); *next_p: the next
 * timer pass (0: none due) */
static int sn_svc_timeout(sn_inst_t *inst, uint64_t now, uint64_t pace,
                          uint64_t *next_p)
{
    uint64_t next  = *next_p;
    int timeout_ms = SN_TICK_NS / SN_NS_PER_MS;

    if (__atomic_load_n(&inst->num_rings, __ATOMIC_RELAXED) > 0) {
        /* consume SEND rings of a target that does not poll */
        timeout_ms = (int)(pace / SN_NS_PER_MS);
        if ((next == 0) || (next > now + pace)) {
            next = now + pace;
        }
    }
    if ((next != 0) && (next - now < SN_TICK_NS)) {
        timeout_ms = 0;
        if (next > now) { /* rounded up: the wait ends at the deadline */
            timeout_ms = (int)((next - now + SN_NS_PER_MS - 1) / SN_NS_PER_MS);
        }
    }
    if ((__atomic_load_n(&inst->num_ack_owed, __ATOMIC_RELAXED) > 0) ||
        sn_cq_holds_writes(inst)) {
        /* owed ACKs, held-back requests and WRITE batches: looked at every
         * ms */
        timeout_ms = (timeout_ms > 1) ? 1 : timeout_ms;
    }
    *next_p = next;
    return timeout_ms;
}

static void *sn_svc_thread(void *arg)
{
    sn_inst_t *inst = arg;
    struct epoll_event events[64];
    uint64_t next = 0, now, last_timers = 0, gen, pace = SN_PASS_NS, arms = 0;
    sn_svc_look_t look;
    int n, timeout_ms, epfd, driven, missed;

    memset(&look, 0, sizeof(look));
    while (!__atomic_load_n(&inst->stopping, __ATOMIC_ACQUIRE)) {
        now    = sn_now_ns();
        missed = 0;
        if (sn_svc_pass_due(inst, now, last_timers, pace, next, arms)) {
            missed = !sn_svc_pass(inst, look.standby, now, &last_timers, &next,
                                  &driven);
            if (!missed) {
                pace = sn_svc_ring_pace(inst, &arms, driven);
            }
        }
        /* ACKs owed by pollers' steps: each look, those due (all, once the
         * service thread serves the sockets again); a poller mid-step
         * pushes those due at the step's end */
        if ((__atomic_load_n(&inst->num_ack_owed, __ATOMIC_RELAXED) > 0) &&
            sn_svc_lock_own(inst, look.standby, 0)) {
            sn_stream_acks(inst, !look.standby, 0);
            pthread_mutex_unlock(&inst->svc_lock);
        }
        timeout_ms = sn_svc_timeout(inst, now, pace, &next);
        epfd       = sn_svc_standby(inst, &look, now);
        if (missed || ((epfd == inst->idle_epfd) &&
                       ((uint64_t)timeout_ms * SN_NS_PER_MS > SN_LOOK_NS))) {
            timeout_ms = (int)(SN_LOOK_NS / SN_NS_PER_MS);
        }
        gen = __atomic_load_n(&inst->svc_gen, __ATOMIC_ACQUIRE);
        n   = epoll_wait(epfd, events, 64, timeout_ms);
        if (n <= 0) {
            continue;
        }
        sn_svc_lock(inst);
        if (__atomic_load_n(&inst->svc_gen, __ATOMIC_ACQUIRE) != gen) {
            /* a poller ran meanwhile and may have closed connections
             * these events name: take fresh ones */
            n = epoll_wait(epfd, events, 64, 0);
        }
        if (n > 0) {
            sn_svc_dispatch(inst, events, n, 0);
        }
        pthread_mutex_unlock(&inst->svc_lock);
    }
    return NULL;
}

/* A listening socket on addr (its port: 0 = any), and the UD socket on the
 * same port number (EADDRINUSE when UDP has it taken) */
static int sn_svc_listen_on(sn_inst_t *inst, struct sockaddr_in *addr)
{
    int fd, one = 1;

    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if ((bind(fd, (struct sockaddr *)addr, sizeof(*addr)) < 0) ||
        (listen(fd, 128) < 0) || (sn_ud_open(inst, fd) < 0)) {
        int err = errno;
        close(fd);
        errno = err;
        return -1;
    }
    return fd;
}

/* The listener: any port, or the first free one of the QPN range. With
 * SO_REUSEADDR two processes may bind one port and only the first to
 * listen gets it: the other goes on with the next port. */
static int sn_svc_listen(sn_inst_t *inst, struct sockaddr_in *addr)
{
    unsigned base = inst->config.qpn_port_base, off;
    int fd;

    for (off = 0; (base == 0) && (off < 64); ++off) {
        fd = sn_svc_listen_on(inst, addr); /* an ephemeral port */
        if ((fd >= 0) || (errno != EADDRINUSE)) {
            return fd;
        }
    }
    for (off = 0;
         (off < (1u << SOFTNIC_QPN_PORT_BITS)) && (base + off <= 65535);
         ++off) {
        addr->sin_port = htons(base + off);
        fd             = sn_svc_listen_on(inst, addr);
        if ((fd >= 0) || (errno != EADDRINUSE)) {
            return fd;
        }
    }
    errno = EADDRINUSE;
    return -1;
}

/* The listener bound to the device's address; inst->listen_port its port */
static int sn_svc_open_listener(sn_inst_t *inst)
{
    struct sockaddr_in addr;
    socklen_t len = sizeof(addr);
    int ret;

    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_addr   = inst->ip;
    inst->listen_fd = sn_svc_listen(inst, &addr);
    if (inst->listen_fd < 0) {
        ret = errno;
        sn_log(inst, SOFTNIC_LOG_ERROR, "cannot listen on %s: %m",
               inet_ntoa(inst->ip));
        return ret;
    }
    if (getsockname(inst->listen_fd, (struct sockaddr *)&addr, &len) < 0) {
        ret = errno;
        close(inst->listen_fd);
        sn_ud_close(inst);
        return ret;
    }
    inst->listen_port = ntohs(addr.sin_port);
    return 0;
}

/* Add the listener, the command eventfd and the UD socket to epoll set
 * epfd; 0 or an errno value */
static int sn_svc_watch_own(sn_inst_t *inst, int epfd)
{
    static char *const tags[] = {&sn_listen_tag, &sn_cmd_tag, &sn_ud_tag};
    const int fds[]           = {inst->listen_fd, inst->cmd_fd, inst->ud_fd};
    struct epoll_event ev;
    unsigned i;

    for (i = 0; i < sizeof(fds) / sizeof(fds[0]); ++i) {
        memset(&ev, 0, sizeof(ev));
        ev.events   = EPOLLIN;
        ev.data.ptr = tags[i];
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, fds[i], &ev) < 0) {
            return errno;
        }
    }
    return 0;
}

/* The epoll sets: epoll_fd watches the listener, the command eventfd, the
 * UD socket and (later) the connections, idle_epfd the same but of the
 * connections only the quiet ones (sn_int.h, "Polling") */
static int sn_svc_open_epoll(sn_inst_t *inst)
{
    int ret;

    inst->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    if (inst->epoll_fd < 0) {
        return errno;
    }
    inst->idle_epfd = epoll_create1(EPOLL_CLOEXEC);
    if (inst->idle_epfd < 0) {
        ret = errno;
        goto err_close_epoll;
    }
    inst->cmd_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (inst->cmd_fd < 0) {
        ret = errno;
        goto err_close_idle;
    }
    ret = sn_svc_watch_own(inst, inst->epoll_fd);
    if (ret == 0) {
        ret = sn_svc_watch_own(inst, inst->idle_epfd);
    }
    if (ret != 0) {
        goto err_close_cmd;
    }
    return 0;

err_close_cmd:
    close(inst->cmd_fd);
err_close_idle:
    close(inst->idle_epfd);
err_close_epoll:
    close(inst->epoll_fd);
    return ret;
}

int sn_svc_start(sn_inst_t *inst)
{
    int ret;

    inst->scratch = malloc(SN_CHUNK);
    if (inst->scratch == NULL) {
        return ENOMEM;
    }
    ret = sn_svc_open_listener(inst);
    if (ret != 0) {
        goto err_free;
    }
    ret = sn_svc_open_epoll(inst);
    if (ret != 0) {
        goto err_close_listen;
    }
    ret = pthread_create(&inst->thread, NULL, sn_svc_thread, inst);
    if (ret != 0) {
        goto err_close_epoll;
    }
    inst->thread_started = 1;
    return 0;

err_close_epoll:
    close(inst->cmd_fd);
    close(inst->idle_epfd);
    close(inst->epoll_fd);
err_close_listen:
    close(inst->listen_fd);
    sn_ud_close(inst);
err_free:
    free(inst->scratch);
    return ret;
}

void sn_svc_stop(sn_inst_t *inst)
{
    if (inst->thread_started) {
        __atomic_store_n(&inst->stopping, 1, __ATOMIC_RELEASE);
        sn_svc_wake(inst);
        pthread_join(inst->thread, NULL);
    }
    pthread_mutex_lock(&inst->svc_lock); /* a late poller has left */
    while (inst->streams != NULL) {
        sn_stream_close(inst, inst->streams);
    }
    pthread_mutex_unlock(&inst->svc_lock);
    close(inst->cmd_fd);
    close(inst->idle_epfd);
    close(inst->epoll_fd);
    close(inst->listen_fd);
    sn_ud_close(inst);
    free(inst->scratch);
}
