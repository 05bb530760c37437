/*
 * The soft backend's ops table.
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "softnic.h"

const orc_dev_ops_t orc_dev_soft_ops = {
    .size                 = sizeof(orc_dev_ops_t),
    .list                 = orc_soft_dev_list,
    .open                 = orc_soft_dev_open,
    .close                = orc_soft_dev_close,
    .query                = orc_soft_dev_query,
    .query_port           = orc_soft_dev_query_port,
    .query_gid            = orc_soft_dev_query_gid,
    .addr_len             = orc_soft_dev_addr_len,
    .addr_pack            = orc_soft_dev_addr_pack,
    .addr_unpack          = orc_soft_dev_addr_unpack,
    .pd_alloc             = orc_soft_pd_alloc,
    .pd_dealloc           = orc_soft_pd_dealloc,
    .mr_reg               = orc_soft_mr_reg,
    .mr_dereg             = orc_soft_mr_dereg,
    .comp_channel_create  = orc_soft_channel_create,
    .comp_channel_destroy = orc_soft_channel_destroy,
    .cq_create            = orc_soft_cq_create,
    .cq_destroy           = orc_soft_cq_destroy,
    .cq_poll              = orc_soft_cq_poll,
    .cq_req_notify        = orc_soft_cq_req_notify,
    .cq_get_event         = orc_soft_cq_get_event,
    .cq_ack_events        = orc_soft_cq_ack_events,
    .srq_create           = orc_soft_srq_create,
    .srq_destroy          = orc_soft_srq_destroy,
    .post_srq_recv        = orc_soft_post_srq_recv,
    .qp_create            = orc_soft_qp_create,
    .qp_modify            = orc_soft_qp_modify,
    .qp_query             = orc_soft_qp_query,
    .qp_destroy           = orc_soft_qp_destroy,
    .post_send            = orc_soft_post_send,
    .post_recv            = orc_soft_post_recv,
};
