/*
 * Send work requests of one SGE, the shape almost every softnic and
 * provider test posts: the fields a builder does not name are zero (no
 * immediate, no next WR). Used with softnic_post_send() and with
 * ibv_post_send() alike, so it needs only libibverbs' types.
 */
#ifndef ORC_TEST_SOFTNIC_SEND_WR_H_
#define ORC_TEST_SOFTNIC_SEND_WR_H_

#include <infiniband/verbs.h>

#include <stdint.h>

namespace softnic_test
{

/* A SEND (or any opcode without a remote part) of sge */
static inline ibv_send_wr one_sge_wr(ibv_sge *sge, ibv_wr_opcode opcode,
                                     uint64_t wr_id, unsigned send_flags)
{
    ibv_send_wr wr = {};
    wr.wr_id       = wr_id;
    wr.sg_list     = sge;
    wr.num_sge     = 1;
    wr.opcode      = opcode;
    wr.send_flags  = send_flags;
    return wr;
}

/* An RDMA WRITE or READ of sge to/from remote_addr under rkey */
static inline ibv_send_wr rdma_wr(ibv_sge *sge, ibv_wr_opcode opcode,
                                  uint64_t wr_id, unsigned send_flags,
                                  uint64_t remote_addr, uint32_t rkey)
{
    ibv_send_wr wr         = one_sge_wr(sge, opcode, wr_id, send_flags);
    wr.wr.rdma.remote_addr = remote_addr;
    wr.wr.rdma.rkey        = rkey;
    return wr;
}

/* A UD SEND of sge to remote_qpn through ah, under remote_qkey */
static inline ibv_send_wr ud_wr(ibv_sge *sge, ibv_wr_opcode opcode,
                                uint64_t wr_id, unsigned send_flags, ibv_ah *ah,
                                uint32_t remote_qpn, uint32_t remote_qkey)
{
    ibv_send_wr wr       = one_sge_wr(sge, opcode, wr_id, send_flags);
    wr.wr.ud.ah          = ah;
    wr.wr.ud.remote_qpn  = remote_qpn;
    wr.wr.ud.remote_qkey = remote_qkey;
    return wr;
}

} /* namespace softnic_test */

#endif
