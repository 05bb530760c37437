/*
 * libsoftnic-preload.so: the completion-channel interposer of the softnic
 * provider (contract in snv_preload.h). Preloaded (LD_PRELOAD) by
 * contrib/softnic-run; it links against neither libibverbs nor the provider,
 * so it is harmless in programs that never use verbs.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "snv_preload.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

/* libibverbs' symbol versions of the interposed functions */
#define SNV_IBVERBS_1_0 "IBVERBS_1.0"
#define SNV_IBVERBS_1_1 "IBVERBS_1.1"

/* Written by the provider's constructor/destructor (once each), read by any
 * thread: atomic pointer. */
static const snv_preload_hooks_t *snv_hooks;

void snv_preload_register(const snv_preload_hooks_t *hooks)
{
    if ((hooks != NULL) && (hooks->version != SNV_PRELOAD_VERSION)) {
        fprintf(stderr,
                "libsoftnic-preload: provider hooks version %u, "
                "expected %u: softnic completion channels disabled\n",
                hooks->version, SNV_PRELOAD_VERSION);
        hooks = NULL;
    }
    __atomic_store_n(&snv_hooks, hooks, __ATOMIC_RELEASE);
}

static const snv_preload_hooks_t *snv_hooks_for(struct ibv_context *context)
{
    const snv_preload_hooks_t *hooks =
        __atomic_load_n(&snv_hooks, __ATOMIC_ACQUIRE);

    return ((hooks != NULL) && (context != NULL) &&
            hooks->owns_context(context))
               ? hooks
               : NULL;
}

/* libibverbs' own function (the next definition after this library) */
static void *snv_real(const char *name, const char *version)
{
    void *fn = dlvsym(RTLD_NEXT, name, version);

    if (fn == NULL) {
        fn = dlsym(RTLD_NEXT, name);
    }
    return fn;
}

/* The first member of struct ibv_comp_channel is its context (libibverbs'
 * public layout, stable across ABI versions). */
static struct ibv_context *snv_channel_context(struct ibv_comp_channel *ch)
{
    return *(struct ibv_context **)ch;
}

struct ibv_comp_channel *ibv_create_comp_channel(struct ibv_context *context)
{
    const snv_preload_hooks_t *hooks = snv_hooks_for(context);
    struct ibv_comp_channel *(*real)(struct ibv_context *);

    if (hooks != NULL) {
        return hooks->create_comp_channel(context);
    }
    real = (struct ibv_comp_channel * (*)(struct ibv_context *))
        snv_real("ibv_create_comp_channel", SNV_IBVERBS_1_0);
    if (real == NULL) {
        errno = ENOSYS;
        return NULL;
    }
    return real(context);
}

int ibv_destroy_comp_channel(struct ibv_comp_channel *channel)
{
    const snv_preload_hooks_t *hooks =
        snv_hooks_for(snv_channel_context(channel));
    int (*real)(struct ibv_comp_channel *);

    if (hooks != NULL) {
        return hooks->destroy_comp_channel(channel);
    }
    real =
        (int (*)(struct ibv_comp_channel *))snv_real("ibv_destroy_comp_channel",
                                                     SNV_IBVERBS_1_0);
    return (real != NULL) ? real(channel) : ENOSYS;
}

int ibv_get_cq_event(struct ibv_comp_channel *channel, struct ibv_cq **cq,
                     void **cq_context)
{
    const snv_preload_hooks_t *hooks =
        snv_hooks_for(snv_channel_context(channel));
    int (*real)(struct ibv_comp_channel *, struct ibv_cq **, void **);

    if (hooks != NULL) {
        return hooks->get_cq_event(channel, cq, cq_context);
    }
    real = (int (*)(struct ibv_comp_channel *, struct ibv_cq **,
                    void **))snv_real("ibv_get_cq_event", SNV_IBVERBS_1_1);
    if (real == NULL) {
        errno = ENOSYS;
        return -1;
    }
    return real(channel, cq, cq_context);
}

int ibv_get_async_event(struct ibv_context *context,
                        struct ibv_async_event *event)
{
    const snv_preload_hooks_t *hooks = snv_hooks_for(context);
    int (*real)(struct ibv_context *, struct ibv_async_event *);

    if (hooks != NULL) {
        return hooks->get_async_event(context, event);
    }
    real = (int (*)(struct ibv_context *,
                    struct ibv_async_event *))snv_real("ibv_get_async_event",
                                                       SNV_IBVERBS_1_1);
    if (real == NULL) {
        errno = ENOSYS;
        return -1;
    }
    return real(context, event);
}
