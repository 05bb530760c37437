/*
 * orcd listener: the listening socket, admission of new connections and the
 * request deadline, in front of libmicrohttpd (which then owns each admitted
 * socket and speaks HTTP on it).
 *
 *  - The socket is bound without SO_REUSEPORT: a second orcd on a taken
 *    address fails to start instead of sharing the port.
 *  - Admission: below limits.max_connections (and max_connections_per_ip
 *    for its address) a connection is handed to libmicrohttpd. At a limit,
 *    the connection that has waited longest for a whole request (idle, or
 *    trickling bytes; of that address, for its limit) is cut to make room;
 *    when every such connection is busy with a request, the newcomer is
 *    admitted into a small reserve where it is answered 503 + Retry-After;
 *    past the reserve it is reset at once. Nothing waits in the kernel's
 *    accept queue.
 *  - Deadline: from the first byte of a request, its head and body must
 *    arrive within limits.request_timeout, else the connection is cut; a
 *    connection that only trickles bytes cannot hold its slot forever. Bytes
 *    are counted by the kernel (TCP_INFO), so no read is taken from
 *    libmicrohttpd. A connection whose request is complete (being handled,
 *    or a blocking query) has no deadline here.
 *
 * Threads: one acceptor thread (accepts, and checks deadlines every
 * ORCD_LISTEN_TICK_MS); the libmicrohttpd threads report connection and
 * request events through the calls below.
 */
#ifndef ORCD_LISTEN_H_
#define ORCD_LISTEN_H_

#include "orcd.h"

#include <microhttpd.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct orcd_listen orcd_listen_t;
typedef struct orcd_conn orcd_conn_t;

/* Admitted connections beyond the limits that get a 503 */
#define ORCD_LISTEN_RESERVE 64
/* Sockets open at most (the limit, the reserve, and connections cut but not
 * closed yet): libmicrohttpd's connection limit */
#define ORCD_LISTEN_MAX(_max_connections) \
    (2 * (_max_connections) + ORCD_LISTEN_RESERVE)

/*
 * Bind and listen on cfg's address and port (errors logged, with the
 * reason). Connections are accepted only once orcd_listen_run() is called.
 */
int orcd_listen_open(const orcd_config_t *cfg, orcd_listen_t **lst_p);
unsigned orcd_listen_port(orcd_listen_t *lst);
/* Hand admitted connections to daemon (started with MHD_USE_NO_LISTEN_SOCKET,
 * a connection limit of ORCD_LISTEN_MAX() and no per-IP limit: the limits
 * are applied here). */
int orcd_listen_run(orcd_listen_t *lst, struct MHD_Daemon *daemon);
/* Stop accepting and close the listening socket (idempotent) */
void orcd_listen_stop(orcd_listen_t *lst);
/* After the daemon stopped */
void orcd_listen_destroy(orcd_listen_t *lst);

/* libmicrohttpd's connection notifications (MHD_OPTION_NOTIFY_CONNECTION);
 * *socket_context holds the orcd_conn_t */
void orcd_listen_conn_started(orcd_listen_t *lst, struct MHD_Connection *conn,
                              void **socket_context);
void orcd_listen_conn_closed(orcd_listen_t *lst, void *socket_context);
/* The connection's request (head and body) arrived whole: no deadline until
 * its response is done */
void orcd_listen_request_received(orcd_listen_t *lst,
                                  struct MHD_Connection *conn);
/* The response was sent: the connection waits for its next request */
void orcd_listen_request_done(orcd_listen_t *lst, struct MHD_Connection *conn);
/* Was the connection admitted over the limit (answer it 503 and close)? */
int orcd_listen_conn_refused(orcd_listen_t *lst, struct MHD_Connection *conn);

#ifdef __cplusplus
}
#endif

#endif
