/*
 * The contract between the softnic provider (libsoftnic-rdmav34.so, loaded by
 * libibverbs) and the completion-channel interposer (libsoftnic-preload.so,
 * preloaded into the program).
 *
 * libibverbs creates a completion channel by a write() command to the
 * kernel's uverbs device, with no provider hook, and ibv_get_cq_event()
 * reads the kernel's event record from the channel fd. There is no kernel
 * behind a softnic device, so the interposer defines ibv_create_comp_channel,
 * ibv_destroy_comp_channel and ibv_get_cq_event: for a channel of a softnic
 * context it calls the provider's functions below, for any other it calls
 * libibverbs' own (dlvsym(RTLD_NEXT)). ibv_get_async_event, which reads the
 * kernel's async event record from the context's async fd, goes the same
 * way, so that the provider can drop the events of a destroyed object as the
 * kernel does.
 *
 * The provider finds the interposer when libibverbs loads it: its
 * constructor looks up snv_preload_register() in the global scope (where
 * preloaded libraries are) and passes its hooks. The interposer never links
 * against libibverbs or the provider.
 */
#ifndef SNV_PRELOAD_H_
#define SNV_PRELOAD_H_

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

struct ibv_context;
struct ibv_comp_channel;
struct ibv_cq;
struct ibv_async_event;

#define SNV_PRELOAD_VERSION 1

typedef struct snv_preload_hooks {
    unsigned version; /* SNV_PRELOAD_VERSION */
    /* is this context one of the provider's? */
    int (*owns_context)(struct ibv_context *context);
    /* the interposed functions, with libibverbs' contracts */
    struct ibv_comp_channel *(*create_comp_channel)(
        struct ibv_context *context);
    int (*destroy_comp_channel)(struct ibv_comp_channel *channel);
    int (*get_cq_event)(struct ibv_comp_channel *channel, struct ibv_cq **cq,
                        void **cq_context);
    int (*get_async_event)(struct ibv_context *context,
                           struct ibv_async_event *event);
} snv_preload_hooks_t;

/* Exported by the interposer. The hooks must stay valid until the provider
 * is unloaded, when it registers NULL. */
typedef void (*snv_preload_register_fn_t)(const snv_preload_hooks_t *hooks);
#define SNV_PRELOAD_REGISTER_SYM "snv_preload_register"

#ifdef __cplusplus
}
#endif

#endif /* SNV_PRELOAD_H_ */
