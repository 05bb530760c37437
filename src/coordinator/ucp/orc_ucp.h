/*
 * orc UCP helper (liborcucp): find peers' UCP workers by name through orcd,
 * with no address exchange of the application's own.
 *
 * A process publishes its worker address under a name in its job's kv space
 * (key "ucp/<name>", value the packed address bytes); a peer creates an
 * endpoint to that name, waiting until it is published.
 *
 * Thread safety: as liborcclient for the client; the UCP worker follows
 * UCP's own rules (the calls use it like ucp_ep_create does).
 */
#ifndef ORC_UCP_H_
#define ORC_UCP_H_

#include "orc_client.h"

#include <ucp/api/ucp.h>

#ifdef __cplusplus
extern "C" {
#endif

/* kv key prefix for published worker addresses */
#define ORC_UCP_KEY_PREFIX "ucp/"

/* The ucs_status_t matching a client status (TIMEOUT -> UCS_ERR_TIMED_OUT,
 * UNREACHABLE -> UCS_ERR_UNREACHABLE, NOT_FOUND -> UCS_ERR_NO_ELEM, ...) */
ucs_status_t orc_ucp_status(orc_cl_status_t status);

/*
 * Publish the address of `worker` under `name` (1..120 characters of
 * [A-Za-z0-9._-/], no "..", no leading '/'), replacing an earlier one.
 */
ucs_status_t orc_ucp_publish_worker(orc_client_t *client, ucp_worker_h worker,
                                    const char *name);

/* Remove a published name (UCS_ERR_NO_ELEM if it was not published) */
ucs_status_t orc_ucp_unpublish_worker(orc_client_t *client, const char *name);

/*
 * Wait up to timeout_ms (0: do not wait) for `name` to be published, then
 * ucp_ep_create() to it. UCS_ERR_TIMED_OUT if the name did not appear in
 * time (UCS_ERR_NO_ELEM with timeout_ms 0), UCS_ERR_UNREACHABLE if orcd
 * cannot be reached, or the status of ucp_ep_create().
 */
ucs_status_t orc_ucp_ep_create_by_name(orc_client_t *client,
                                       ucp_worker_h worker, const char *name,
                                       int timeout_ms, ucp_ep_h *ep_p);

/* As above, with the caller's ucp_ep_params_t (its address field is set
 * here; every other field is passed through, e.g. an error handler) */
ucs_status_t orc_ucp_ep_create_by_name_params(orc_client_t *client,
                                              ucp_worker_h worker,
                                              const char *name, int timeout_ms,
                                              const ucp_ep_params_t *params,
                                              ucp_ep_h *ep_p);

#ifdef __cplusplus
}
#endif

#endif /* ORC_UCP_H_ */
