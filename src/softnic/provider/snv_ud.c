/*
 * The softnic provider's UD sends: a verbs WR names the provider's address
 * handle (struct ibv_ah inside snv_ah_t), softnic wants its own
 * (softnic_ah_t), so each WR is handed to softnic as a copy that names
 * softnic's AH, one at a time (UD completes every send at post time, so a
 * chain costs nothing but the per-WR call). Everything else of UD (state
 * machine, receives, completions) is softnic's, reached through the QP
 * paths every QP type shares (snv_qp.c).
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "snv.h"

int snv_post_send_ud(snv_qp_t *qp, struct ibv_send_wr *wr,
                     struct ibv_send_wr **bad_wr)
{
    struct ibv_send_wr one, *bad;
    int ret;

    for (; wr != NULL; wr = wr->next) {
        one      = *wr;
        one.next = NULL;
        if (wr->wr.ud.ah != NULL) {
            one.wr.ud.ah =
                (struct ibv_ah *)snv_of(wr->wr.ud.ah, snv_ah_t, ah)->sah;
        }
        ret = softnic_post_send(qp->sqp, &one, &bad);
        if (ret != 0) {
            *bad_wr = wr;
            return ret;
        }
    }
    return 0;
}
