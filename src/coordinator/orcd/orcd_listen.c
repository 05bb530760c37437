/*
 * orcd listener (see orcd_listen.h).
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "orcd_listen.h"
#include "coordinator/common/orc_util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/tcp.h> /* struct tcp_info with tcpi_bytes_received */
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define ORCD_LISTEN_TICK_MS 100
#define ORCD_LISTEN_BACKLOG 1024
/* a connection admitted into the reserve gets this long to send the
 * request it is answered 503 to */
#define ORCD_LISTEN_REFUSE_NS 2000000000ull
/* libmicrohttpd takes an added connection over within this (else it
 * dropped it without telling: forget it) */
#define ORCD_LISTEN_PENDING_NS 10000000000ull

typedef enum orcd_conn_state {
    ORCD_CONN_PENDING, /* accepted, not yet taken over by libmicrohttpd */
    ORCD_CONN_READING, /* waiting for a whole request */
    ORCD_CONN_BUSY,    /* its request arrived; being answered */
} orcd_conn_state_t;

/* A client address, for the per-address limit (the port does not count) */
typedef struct orcd_peer {
    int family;
    unsigned char addr[16];
} orcd_peer_t;

/*
 * One admitted connection. fd and peer are set before the record is linked
 * and never change; every other field is protected by orcd_listen_t::lock.
 * fd stays open while the record is linked: libmicrohttpd reports the close
 * (orcd_listen_conn_closed) before it closes the socket, and a PENDING record
 * is never acted on through its fd.
 */
struct orcd_conn {
    orcd_conn_t *prev;
    orcd_conn_t *next;
    int fd;
    orcd_peer_t peer;
    orcd_conn_state_t state;
    int refused; /* admitted over the limit: 503 */
    int cut;     /* shut down by us, closing */
    struct MHD_Connection *conn;
    uint64_t since_ns;      /* accepted, or last response sent */
    uint64_t ready_bytes;   /* bytes received by then */
    uint64_t first_byte_ns; /* of the current request; 0 */
};

/*
 * lock protects the connection list and counts; the acceptor thread is the
 * only one that accepts and adds, libmicrohttpd's threads update and remove.
 */
struct orcd_listen {
    int fd;
    int wake_fd;
    unsigned port;
    unsigned max_connections;
    unsigned max_per_peer;
    uint64_t request_timeout_ns;
    struct MHD_Daemon *daemon;
    pthread_t thread;
    int running;
    pthread_mutex_t lock;
    orcd_conn_t *conns;
    unsigned nconns;
    int stopping;
};

/* ------------------------------------------------------------ the socket */

static int orcd_listen_addr(const orcd_config_t *cfg,
                            struct sockaddr_storage *ss, socklen_t *len_p)
{
    struct sockaddr_in *sin   = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

    memset(ss, 0, sizeof(*ss));
    if (inet_pton(AF_INET, cfg->address, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port   = htons((uint16_t)cfg->port);
        *len_p          = sizeof(*sin);
        return 0;
    }
    if (inet_pton(AF_INET6, cfg->address, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port   = htons((uint16_t)cfg->port);
        *len_p            = sizeof(*sin6);
        return 0;
    }
    orcd_error("listen.address %s is not an IP address", cfg->address);
    return -1;
}

static int orcd_listen_socket(const orcd_config_t *cfg, unsigned *port_p)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int fd, one = 1;

    if (orcd_listen_addr(cfg, &ss, &len)) {
        return -1;
    }
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        orcd_error("cannot create the listening socket: %m");
        return -1;
    }
    /* SO_REUSEADDR only: rebinding over TIME_WAIT is fine, sharing a port
     * with another live orcd (SO_REUSEPORT) is not */
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (ss.ss_family == AF_INET6) {
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    }
    if (bind(fd, (struct sockaddr *)&ss, len) != 0) {
        orcd_error("cannot listen on %s port %u: %m%s", cfg->address, cfg->port,
                   (errno == EADDRINUSE)
                       ? " (another orcd, or another program, has it)"
                       : "");
        goto err_close;
    }
    if (listen(fd, ORCD_LISTEN_BACKLOG) != 0) {
        orcd_error("cannot listen on %s port %u: %m", cfg->address, cfg->port);
        goto err_close;
    }
    len = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0) {
        orcd_error("getsockname: %m");
        goto err_close;
    }
    *port_p = ntohs((ss.ss_family == AF_INET)
                        ? ((struct sockaddr_in *)&ss)->sin_port
                        : ((struct sockaddr_in6 *)&ss)->sin6_port);
    return fd;

err_close:
    close(fd);
    return -1;
}

int orcd_listen_open(const orcd_config_t *cfg, orcd_listen_t **lst_p)
{
    orcd_listen_t *lst = calloc(1, sizeof(*lst));

    if (lst == NULL) {
        orcd_error("out of memory");
        return -1;
    }
    lst->fd      = -1;
    lst->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (lst->wake_fd < 0) {
        orcd_error("eventfd: %m");
        free(lst);
        return -1;
    }
    lst->max_connections    = cfg->max_connections;
    lst->max_per_peer       = cfg->max_connections_per_ip;
    lst->request_timeout_ns = (uint64_t)cfg->request_timeout * 1000000000ull;
    pthread_mutex_init(&lst->lock, NULL);
    lst->fd = orcd_listen_socket(cfg, &lst->port);
    if (lst->fd < 0) {
        orcd_listen_destroy(lst);
        return -1;
    }
    *lst_p = lst;
    return 0;
}

unsigned orcd_listen_port(orcd_listen_t *lst)
{
    return lst->port;
}

/* ---------------------------------------------------------- the registry */

static void orcd_listen_link(orcd_listen_t *lst, orcd_conn_t *c)
{
    c->prev = NULL;
    c->next = lst->conns;
    if (lst->conns != NULL) {
        lst->conns->prev = c;
    }
    lst->conns = c;
    ++lst->nconns;
}

static void orcd_listen_unlink(orcd_listen_t *lst, orcd_conn_t *c)
{
    if (c->prev != NULL) {
        c->prev->next = c->next;
    } else {
        lst->conns = c->next;
    }
    if (c->next != NULL) {
        c->next->prev = c->prev;
    }
    --lst->nconns;
}

/* Cut a connection: libmicrohttpd sees the socket end and closes it. Lock
 * held; never on a PENDING record (its fd may be closed already). */
static void orcd_listen_cut(orcd_conn_t *c)
{
    if (!c->cut && (c->state != ORCD_CONN_PENDING)) {
        c->cut = 1;
        shutdown(c->fd, SHUT_RDWR);
    }
}

/* Bytes the connection received since it opened (kernel count) */
static int orcd_listen_bytes(int fd, uint64_t *bytes_p)
{
    struct tcp_info ti;
    socklen_t len = sizeof(ti);

    memset(&ti, 0, sizeof(ti));
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0) {
        return -1;
    }
    *bytes_p = ti.tcpi_bytes_received;
    return 0;
}

/* Lock held: the connection (of peer, if not NULL) that has waited longest
 * for a whole request, or NULL */
static orcd_conn_t *orcd_listen_victim(orcd_listen_t *lst,
                                       const orcd_peer_t *peer)
{
    orcd_conn_t *c, *victim = NULL;

    for (c = lst->conns; c != NULL; c = c->next) {
        if ((c->state == ORCD_CONN_READING) && !c->cut && !c->refused &&
            ((peer == NULL) || !memcmp(&c->peer, peer, sizeof(*peer))) &&
            ((victim == NULL) || (c->since_ns < victim->since_ns))) {
            victim = c;
        }
    }
    return victim;
}

/* Lock held: every connection past its deadline is cut */
static void orcd_listen_check_deadlines(orcd_listen_t *lst, uint64_t now)
{
    orcd_conn_t *c, *next;
    uint64_t bytes;

    for (c = lst->conns; c != NULL; c = next) {
        next = c->next;
        if (c->state == ORCD_CONN_PENDING) {
            if (now - c->since_ns > ORCD_LISTEN_PENDING_NS) {
                orcd_listen_unlink(lst, c); /* dropped by libmicrohttpd */
                free(c);
            }
            continue;
        }
        if ((c->state != ORCD_CONN_READING) || c->cut) {
            continue;
        }
        if (c->refused) {
            if (now - c->since_ns > ORCD_LISTEN_REFUSE_NS) {
                orcd_listen_cut(c);
            }
            continue;
        }
        if ((c->first_byte_ns == 0) && !orcd_listen_bytes(c->fd, &bytes) &&
            (bytes > c->ready_bytes)) {
            c->first_byte_ns = now;
        }
        if ((c->first_byte_ns != 0) &&
            (now - c->first_byte_ns > lst->request_timeout_ns)) {
            orcd_debug("connection cut: no whole request within %llu s",
                       (unsigned long long)(lst->request_timeout_ns /
                                            1000000000ull));
            orcd_listen_cut(c);
        }
    }
}

/* ------------------------------------------------------------- admission */

static void orcd_listen_peer(const struct sockaddr_storage *ss,
                             orcd_peer_t *peer)
{
    memset(peer, 0, sizeof(*peer));
    peer->family = ss->ss_family;
    if (ss->ss_family == AF_INET) {
        memcpy(peer->addr, &((const struct sockaddr_in *)ss)->sin_addr, 4);
    } else if (ss->ss_family == AF_INET6) {
        memcpy(peer->addr, &((const struct sockaddr_in6 *)ss)->sin6_addr, 16);
    }
}

/*
 * Lock held: room for a connection from peer? 1 yes; 0 after cutting the
 * connection that waited longest for a request (of the peer, if it is the
 * peer's limit that is reached); -1 if every connection is busy.
 */
static int orcd_listen_room(orcd_listen_t *lst, const orcd_peer_t *peer)
{
    unsigned live = 0, live_peer = 0;
    orcd_conn_t *c, *victim;

    for (c = lst->conns; c != NULL; c = c->next) {
        if (!c->cut && !c->refused) {
            ++live;
            live_peer += !memcmp(&c->peer, peer, sizeof(*peer));
        }
    }
    if (live_peer >= lst->max_per_peer) {
        victim = orcd_listen_victim(lst, peer);
    } else if (live >= lst->max_connections) {
        victim = orcd_listen_victim(lst, NULL);
    } else {
        return 1;
    }
    if (victim == NULL) {
        return -1;
    }
    orcd_debug("connection limit reached: cutting the connection that "
               "waited longest for a request");
    orcd_listen_cut(victim);
    return 0;
}

/* Lock held: the record for a new socket (NULL: reset it) */
static orcd_conn_t *orcd_listen_admit(orcd_listen_t *lst, int fd,
                                      const orcd_peer_t *peer, uint64_t now)
{
    unsigned refused_count = 0;
    orcd_conn_t *c;
    int room;

    /* a PENDING record with this fd is stale: the kernel reused the number,
     * so libmicrohttpd closed that socket without taking it over */
    for (c = lst->conns; c != NULL; c = c->next) {
        if ((c->fd == fd) && (c->state == ORCD_CONN_PENDING)) {
            orcd_listen_unlink(lst, c);
            free(c);
            break;
        }
    }
    if (lst->nconns >= ORCD_LISTEN_MAX(lst->max_connections)) {
        return NULL;
    }
    for (c = lst->conns; c != NULL; c = c->next) {
        refused_count += c->refused;
    }
    room = orcd_listen_room(lst, peer);
    if ((room < 0) && (refused_count >= ORCD_LISTEN_RESERVE)) {
        return NULL;
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return NULL;
    }
    c->fd       = fd;
    c->peer     = *peer;
    c->state    = ORCD_CONN_PENDING;
    c->refused  = (room < 0);
    c->since_ns = now;
    orcd_listen_link(lst, c);
    return c;
}

/* Close a socket with a reset: the client learns at once */
static void orcd_listen_reset(int fd)
{
    struct linger lg = {1, 0};

    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(fd);
}

static void orcd_listen_accept(orcd_listen_t *lst)
{
    struct sockaddr_storage ss;
    orcd_peer_t peer;
    socklen_t len;
    orcd_conn_t *c;
    int fd;

    for (;;) {
        len = sizeof(ss);
        fd  = accept4(lst->fd, (struct sockaddr *)&ss, &len,
                      SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) {
            if ((errno != EAGAIN) && (errno != EINTR) &&
                (errno != ECONNABORTED)) {
                orcd_warn("accept: %m");
            }
            return;
        }
        orcd_listen_peer(&ss, &peer);
        pthread_mutex_lock(&lst->lock);
        c = orcd_listen_admit(lst, fd, &peer, orc_util_now_ns());
        pthread_mutex_unlock(&lst->lock);
        if (c == NULL) {
            orcd_debug("connection reset: limits.max_connections (%u) and "
                       "the reserve are full",
                       lst->max_connections);
            orcd_listen_reset(fd);
            continue;
        }
        if (MHD_add_connection(lst->daemon, fd, (struct sockaddr *)&ss, len) !=
            MHD_YES) {
            /* failed (no memory): libmicrohttpd closed it */
            pthread_mutex_lock(&lst->lock);
            orcd_listen_unlink(lst, c);
            pthread_mutex_unlock(&lst->lock);
            free(c);
        }
    }
}

static void *orcd_listen_thread(void *arg)
{
    orcd_listen_t *lst = arg;
    struct pollfd pfd[2];
    uint64_t v;

    pfd[0].fd     = lst->fd;
    pfd[0].events = POLLIN;
    pfd[1].fd     = lst->wake_fd;
    pfd[1].events = POLLIN;
    for (;;) {
        pthread_mutex_lock(&lst->lock);
        if (lst->stopping) {
            pthread_mutex_unlock(&lst->lock);
            break;
        }
        orcd_listen_check_deadlines(lst, orc_util_now_ns());
        pthread_mutex_unlock(&lst->lock);
        if (poll(pfd, 2, ORCD_LISTEN_TICK_MS) < 0) {
            continue;
        }
        if (pfd[1].revents & POLLIN) {
            (void)!read(lst->wake_fd, &v, sizeof(v));
        }
        if (pfd[0].revents & POLLIN) {
            orcd_listen_accept(lst);
        }
    }
    return NULL;
}

int orcd_listen_run(orcd_listen_t *lst, struct MHD_Daemon *daemon)
{
    int ret;

    lst->daemon = daemon;
    ret         = pthread_create(&lst->thread, NULL, orcd_listen_thread, lst);
    if (ret != 0) {
        errno = ret;
        orcd_error("cannot start the acceptor thread: %m");
        return -1;
    }
    lst->running = 1;
    return 0;
}

void orcd_listen_stop(orcd_listen_t *lst)
{
    uint64_t one = 1;

    if ((lst == NULL) || (lst->fd < 0)) {
        return;
    }
    pthread_mutex_lock(&lst->lock);
    lst->stopping = 1;
    pthread_mutex_unlock(&lst->lock);
    (void)!write(lst->wake_fd, &one, sizeof(one));
    if (lst->running) {
        pthread_join(lst->thread, NULL);
        lst->running = 0;
    }
    close(lst->fd);
    lst->fd = -1;
}

void orcd_listen_destroy(orcd_listen_t *lst)
{
    orcd_conn_t *c;

    if (lst == NULL) {
        return;
    }
    orcd_listen_stop(lst);
    while ((c = lst->conns) != NULL) {
        orcd_listen_unlink(lst, c);
        free(c);
    }
    close(lst->wake_fd);
    pthread_mutex_destroy(&lst->lock);
    free(lst);
}

/* ------------------------------------------------- libmicrohttpd's events */

void orcd_listen_conn_started(orcd_listen_t *lst, struct MHD_Connection *conn,
                              void **socket_context)
{
    const union MHD_ConnectionInfo *info;
    orcd_conn_t *c;
    int fd;

    info = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (info == NULL) {
        return;
    }
    fd = info->connect_fd;
    pthread_mutex_lock(&lst->lock);
    for (c = lst->conns; c != NULL; c = c->next) {
        if ((c->fd == fd) && (c->state == ORCD_CONN_PENDING)) {
            c->state        = ORCD_CONN_READING;
            c->conn         = conn;
            *socket_context = c;
            break;
        }
    }
    pthread_mutex_unlock(&lst->lock);
}

void orcd_listen_conn_closed(orcd_listen_t *lst, void *socket_context)
{
    orcd_conn_t *c = socket_context;

    if (c == NULL) {
        return;
    }
    pthread_mutex_lock(&lst->lock);
    orcd_listen_unlink(lst, c);
    pthread_mutex_unlock(&lst->lock);
    free(c);
}

static orcd_conn_t *orcd_listen_record(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *info;

    info = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return (info != NULL) ? (orcd_conn_t *)info->socket_context : NULL;
}

void orcd_listen_request_received(orcd_listen_t *lst,
                                  struct MHD_Connection *conn)
{
    orcd_conn_t *c = orcd_listen_record(conn);

    if (c != NULL) {
        pthread_mutex_lock(&lst->lock);
        c->state = ORCD_CONN_BUSY;
        pthread_mutex_unlock(&lst->lock);
    }
}

void orcd_listen_request_done(orcd_listen_t *lst, struct MHD_Connection *conn)
{
    orcd_conn_t *c = orcd_listen_record(conn);
    uint64_t bytes = 0;

    if (c == NULL) {
        return;
    }
    orcd_listen_bytes(c->fd, &bytes);
    pthread_mutex_lock(&lst->lock);
    c->state         = ORCD_CONN_READING;
    c->since_ns      = orc_util_now_ns();
    c->ready_bytes   = bytes;
    c->first_byte_ns = 0;
    pthread_mutex_unlock(&lst->lock);
}

int orcd_listen_conn_refused(orcd_listen_t *lst, struct MHD_Connection *conn)
{
    orcd_conn_t *c = orcd_listen_record(conn);
    int refused;

    if (c == NULL) {
        return 0;
    }
    pthread_mutex_lock(&lst->lock);
    refused = c->refused;
    pthread_mutex_unlock(&lst->lock);
    return refused;
}
