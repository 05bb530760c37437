/*
 * orcd HTTP server: libmicrohttpd in front of the router (orcd_api.h).
 *
 * A pool of poll(2) threads serves all connections; blocking queries do not
 * hold a thread: their connection is suspended (MHD_suspend_connection) and
 * resumed by a store watch or, at the deadline, by the server's timer thread.
 */
#ifndef ORCD_HTTP_H_
#define ORCD_HTTP_H_

#include "orcd_api.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct orcd_server orcd_server_t;

/* Listen and serve (address, port, TLS and connection limits are taken from
 * cfg now; a reload does not change them). */
int orcd_server_start(orcd_api_t *api, const orcd_config_t *cfg,
                      orcd_server_t **srv_p);
/* Apply the reloadable server limits of cfg (max_long_polls). */
void orcd_server_reload(orcd_server_t *srv, const orcd_config_t *cfg);
/* The bound port (useful with port 0). */
unsigned orcd_server_port(orcd_server_t *srv);
/* Graceful stop: close the listening socket, answer every waiting blocking
 * query now, let in-flight requests finish (up to timeout seconds), then stop
 * all threads. Safe to call once; orcd_server_destroy() calls it if needed. */
void orcd_server_shutdown(orcd_server_t *srv, double timeout);
void orcd_server_destroy(orcd_server_t *srv);

#ifdef __cplusplus
}
#endif

#endif
