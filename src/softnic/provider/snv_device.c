/*
 * The softnic provider's driver, devices and contexts: registration with
 * libibverbs (and with the completion-channel interposer), device matching,
 * context open/close, device and port queries.
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "snv.h"
#include "snv_preload.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- devices ------------------------------------------------------------ */

static const struct verbs_match_ent snv_match_table[] =
    {VERBS_NAME_MATCH(SNV_NAME_PREFIX, NULL), {}};

static struct verbs_device *snv_alloc_device(struct verbs_sysfs_dev *sysfs)
{
    const char *ifname = sysfs->ibdev_name + strlen(SNV_NAME_PREFIX);
    snv_device_t *dev;

    if ((ifname[0] == '\0') || (strlen(ifname) >= IF_NAMESIZE)) {
        errno = EINVAL;
        return NULL;
    }
    dev = calloc(1, sizeof(*dev));
    if (dev == NULL) {
        return NULL;
    }
    strcpy(dev->ifname, ifname);
    return &dev->vdev;
}

static void snv_uninit_device(struct verbs_device *vdev)
{
    free(snv_of(vdev, snv_device_t, vdev));
}

/* ---- contexts ----------------------------------------------------------- */

static snv_preload_register_fn_t snv_preload_register_fn(void);

static int snv_query_device_ex(struct ibv_context *context,
                               const struct ibv_query_device_ex_input *input,
                               struct ibv_device_attr_ex *attr,
                               size_t attr_size)
{
    struct ibv_device_attr orig;
    __be64 guid;
    int ret;

    if ((input != NULL) && (input->comp_mask != 0)) {
        return EINVAL;
    }
    if (attr_size < sizeof(orig)) {
        return EINVAL;
    }
    ret = softnic_dev_query(snv_ctx(context)->dev, &orig);
    if (ret != 0) {
        return ret;
    }
    /* the device's identity is what its sysfs entry says (libibverbs'
     * ibv_get_device_guid and ibv_devices read it there) */
    guid = ibv_get_device_guid(context->device);
    if (guid != 0) {
        orig.node_guid      = guid;
        orig.sys_image_guid = guid;
    }
    /* address handles are the provider's own, bounded by memory only */
    orig.max_ah = SNV_MAX_AH;
    /* nothing of the extended part is supported: zero, as the kernel
     * reports for absent capabilities */
    memset(attr, 0, attr_size);
    attr->orig_attr = orig;
    return 0;
}

static int snv_query_port(struct ibv_context *context, uint8_t port_num,
                          struct ibv_port_attr *attr)
{
    return softnic_dev_query_port(snv_ctx(context)->dev, port_num, attr);
}

static void snv_free_context(struct ibv_context *context);

static const struct verbs_context_ops snv_ctx_ops = {
    .alloc_pd        = snv_alloc_pd,
    .cq_event        = snv_cq_event,
    .create_ah       = snv_create_ah,
    .create_cq       = snv_create_cq,
    .create_qp       = snv_create_qp,
    .create_qp_ex    = snv_create_qp_ex,
    .create_srq      = snv_create_srq,
    .dealloc_pd      = snv_dealloc_pd,
    .dereg_mr        = snv_dereg_mr,
    .destroy_ah      = snv_destroy_ah,
    .destroy_cq      = snv_destroy_cq,
    .destroy_qp      = snv_destroy_qp,
    .destroy_srq     = snv_destroy_srq,
    .free_context    = snv_free_context,
    .modify_qp       = snv_modify_qp,
    .poll_cq         = snv_poll_cq,
    .post_recv       = snv_post_recv,
    .post_send       = snv_post_send,
    .post_srq_recv   = snv_post_srq_recv,
    .query_device_ex = snv_query_device_ex,
    .query_port      = snv_query_port,
    .query_qp        = snv_query_qp,
    .query_srq       = snv_query_srq,
    .reg_mr          = snv_reg_mr,
    .req_notify_cq   = snv_req_notify_cq,
};

/* The device node is a character device with /dev/null's numbers: a kernel
 * command written to it would "succeed" with an unset response. Replace it
 * by the read end of a pipe without writer, where write() fails (EBADF) and
 * ioctl() fails (ENOTTY). */
static int snv_neuter_cmd_fd(struct ibv_context *context)
{
    int fds[2];

    if (pipe2(fds, O_CLOEXEC) < 0) {
        return errno;
    }
    close(fds[1]);
    close(context->cmd_fd);
    context->cmd_fd = fds[0];
    return 0;
}

/* softnic's messages go where libibverbs sends providers' ones
 * (VERBS_LOG_LEVEL, VERBS_LOG_FILE); called from any thread */
static void snv_log(void *arg, softnic_log_level_t level, const char *dev_name,
                    const char *message)
{
    static const uint32_t levels[] = {
        [SOFTNIC_LOG_ERROR] = VERBS_LOG_ERR,
        [SOFTNIC_LOG_WARN]  = VERBS_LOG_WARN,
        [SOFTNIC_LOG_INFO]  = VERBS_LOG_INFO,
        [SOFTNIC_LOG_DEBUG] = VERBS_LOG_DEBUG,
    };

    if ((level >= SOFTNIC_LOG_ERROR) && (level <= SOFTNIC_LOG_DEBUG)) {
        __verbs_log(arg, levels[level], "softnic %s: %s\n", dev_name, message);
    }
}

/* ctx's softnic device: the interface of the device, QPs addressed by
 * QPN, messages and async events to libibverbs' ways */
static int snv_ctx_open_softnic(snv_context_t *ctx, snv_device_t *dev)
{
    const char *name = ibv_get_device_name(&dev->vdev.device);
    softnic_config_t config;

    memset(&config, 0, sizeof(config));
    config.ifaces        = dev->ifname;
    config.qpn_port_base = SNV_QPN_PORT_BASE;
    config.log_level     = SOFTNIC_LOG_DEBUG; /* libibverbs filters */
    config.log_fn        = snv_log;
    config.log_arg       = &ctx->vctx;
    config.event_fn      = snv_softnic_event;
    config.event_arg     = ctx;
    ctx->dev             = softnic_dev_open(name, &config);
    if (ctx->dev == NULL) {
        verbs_err(&ctx->vctx, "softnic: cannot open %s (interface %s): %s\n",
                  name, dev->ifname, strerror(errno));
        return errno;
    }
    if (snv_preload_register_fn() == NULL) {
        verbs_warn(&ctx->vctx,
                   "softnic: libsoftnic-preload.so is not "
                   "preloaded: completion channels and async events of %s "
                   "are unavailable (contrib/softnic-run preloads it)\n",
                   name);
    }
    return 0;
}

static struct verbs_context *snv_alloc_context(struct ibv_device *ibdev,
                                               int cmd_fd, void *private_data)
{
    snv_context_t *ctx;
    int ret;

    (void)private_data;
    ctx = verbs_init_and_alloc_context(ibdev, cmd_fd, ctx, vctx,
                                       RDMA_DRIVER_UNKNOWN);
    if (ctx == NULL) {
        return NULL;
    }
    ret = snv_neuter_cmd_fd(&ctx->vctx.context);
    if (ret != 0) {
        goto err_uninit;
    }
    ret = snv_evq_init(&ctx->async);
    if (ret != 0) {
        goto err_uninit;
    }
    pthread_mutex_init(&ctx->cq_lock, NULL);
    ctx->next_cq_id = 1;
    ret             = snv_ctx_open_softnic(ctx, snv_dev(ibdev));
    if (ret != 0) {
        goto err_evq;
    }
    ctx->vctx.context.async_fd         = ctx->async.fd;
    ctx->vctx.context.num_comp_vectors = 1;
    verbs_set_ops(&ctx->vctx, &snv_ctx_ops);
    return &ctx->vctx;

err_evq:
    pthread_mutex_destroy(&ctx->cq_lock);
    snv_evq_cleanup(&ctx->async);
err_uninit:
    verbs_uninit_context(&ctx->vctx);
    free(ctx);
    errno = ret;
    return NULL;
}

static void snv_free_context(struct ibv_context *context)
{
    snv_context_t *ctx = snv_ctx(context);
    int ret;

    ret = softnic_dev_close(ctx->dev);
    if (ret != 0) {
        /* objects left open: libibverbs gives no way to fail a close */
        verbs_err(&ctx->vctx, "softnic: closing %s with objects left: %s\n",
                  ibv_get_device_name(context->device), strerror(ret));
    }
    pthread_mutex_destroy(&ctx->cq_lock);
    /* verbs_uninit_context closes async_fd, the queue's eventfd */
    ctx->async.fd = -1;
    snv_evq_cleanup(&ctx->async);
    verbs_uninit_context(&ctx->vctx);
    free(ctx);
}

int snv_owns_context(struct ibv_context *context)
{
    return verbs_get_device(context->device)->ops == &snv_device_ops;
}

const struct verbs_device_ops snv_device_ops = {
    .name                  = "softnic",
    .match_min_abi_version = SNV_ABI_VERSION,
    .match_max_abi_version = SNV_ABI_VERSION,
    .match_table           = snv_match_table,
    .alloc_device          = snv_alloc_device,
    .uninit_device         = snv_uninit_device,
    .alloc_context         = snv_alloc_context,
};

/* ---- registration ------------------------------------------------------- */

static const snv_preload_hooks_t snv_hooks = {
    .version              = SNV_PRELOAD_VERSION,
    .owns_context         = snv_owns_context,
    .create_comp_channel  = snv_create_comp_channel,
    .destroy_comp_channel = snv_destroy_comp_channel,
    .get_cq_event         = snv_get_cq_event,
    .get_async_event      = snv_get_async_event,
};

static snv_preload_register_fn_t snv_preload_register_fn(void)
{
    return (snv_preload_register_fn_t)dlsym(RTLD_DEFAULT,
                                            SNV_PRELOAD_REGISTER_SYM);
}

static void __attribute__((constructor)) snv_register(void)
{
    snv_preload_register_fn_t reg = snv_preload_register_fn();

    verbs_register_driver(&snv_device_ops);
    if (reg != NULL) {
        reg(&snv_hooks);
    }
}

static void __attribute__((destructor)) snv_unregister(void)
{
    snv_preload_register_fn_t reg = snv_preload_register_fn();

    if (reg != NULL) {
        reg(NULL);
    }
}
