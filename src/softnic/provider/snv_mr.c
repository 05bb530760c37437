/*
 * The softnic provider's protection domains, memory regions and address
 * handles.
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "snv.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct ibv_pd *snv_alloc_pd(struct ibv_context *context)
{
    snv_pd_t *pd = calloc(1, sizeof(*pd));

    if (pd == NULL) {
        return NULL;
    }
    pd->spd = softnic_pd_alloc(snv_ctx(context)->dev);
    if (pd->spd == NULL) {
        int err = errno;
        free(pd);
        errno = err;
        return NULL;
    }
    return &pd->pd;
}

int snv_dealloc_pd(struct ibv_pd *ibpd)
{
    snv_pd_t *pd = snv_of(ibpd, snv_pd_t, pd);
    int ret;

    ret = softnic_pd_dealloc(pd->spd);
    if (ret == 0) {
        free(pd);
    }
    return ret;
}

/*
 * softnic addresses a region by its virtual address: remote peers name
 * bytes by the address the region was registered at. An I/O virtual address
 * other than the buffer's own (ibv_reg_mr_iova) has no translation there:
 * refused with EOPNOTSUPP rather than silently addressing the wrong bytes.
 */
struct ibv_mr *snv_reg_mr(struct ibv_pd *ibpd, void *addr, size_t length,
                          uint64_t hca_va, int access)
{
    snv_pd_t *pd = snv_of(ibpd, snv_pd_t, pd);
    snv_mr_t *mr;

    if (hca_va != (uintptr_t)addr) {
        errno = EOPNOTSUPP;
        return NULL;
    }
    mr = calloc(1, sizeof(*mr));
    if (mr == NULL) {
        return NULL;
    }
    mr->smr = softnic_mr_reg(pd->spd, addr, length, access);
    if (mr->smr == NULL) {
        int err = errno;
        free(mr);
        errno = err;
        return NULL;
    }
    mr->vmr.ibv_mr.lkey = mr->smr->lkey;
    mr->vmr.ibv_mr.rkey = mr->smr->rkey;
    mr->vmr.mr_type     = IBV_MR_TYPE_MR;
    mr->vmr.access      = access;
    return &mr->vmr.ibv_mr;
}

int snv_dereg_mr(struct verbs_mr *vmr)
{
    snv_mr_t *mr = snv_of(vmr, snv_mr_t, vmr);
    int ret;

    ret = softnic_mr_dereg(mr->smr);
    if (ret == 0) {
        free(mr);
    }
    return ret;
}

/*
 * An address handle names a destination port by GID (RoCE: the GRH is
 * mandatory): a softnic AH, which UD sends name (snv_ud.c), and the
 * attributes as given, for query.
 */
struct ibv_ah *snv_create_ah(struct ibv_pd *ibpd, struct ibv_ah_attr *attr)
{
    struct ibv_port_attr port;
    snv_ah_t *ah;
    int ret;

    ret = softnic_dev_query_port(snv_ctx(ibpd->context)->dev, attr->port_num,
                                 &port);
    if (ret != 0) {
        errno = ret;
        return NULL;
    }
    if (!attr->is_global || (attr->grh.sgid_index >= port.gid_tbl_len)) {
        errno = EINVAL;
        return NULL;
    }
    ah = calloc(1, sizeof(*ah));
    if (ah == NULL) {
        return NULL;
    }
    ah->sah = softnic_ah_create(snv_of(ibpd, snv_pd_t, pd)->spd, attr);
    if (ah->sah == NULL) {
        ret = errno;
        free(ah);
        errno = ret;
        return NULL;
    }
    ah->attr = *attr;
    return &ah->ah;
}

int snv_destroy_ah(struct ibv_ah *ibah)
{
    snv_ah_t *ah = snv_of(ibah, snv_ah_t, ah);

    softnic_ah_destroy(ah->sah);
    free(ah);
    return 0;
}
