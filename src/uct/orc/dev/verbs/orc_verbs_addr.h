/*
 * Verbs backend: the packed port address (internal to the device layer).
 *
 * The encoding is factored out of the device so it can be tested without an
 * HCA: orc_verbs_addr_encode() takes the port's GID, LID and link layer, and
 * orc_verbs_addr_decode() takes the local port's link layer.
 *
 * Wire format, ORC_VERBS_ADDR_LEN bytes, multi-byte fields big-endian:
 *
 *   offset  size  field
 *   0       1     backend tag, ORC_DEV_BACKEND_VERBS (softnic addresses start
 *                 with ORC_DEV_BACKEND_SOFT)
 *   1       1     link layer: IBV_LINK_LAYER_INFINIBAND or _ETHERNET
 *   2       2     LID (0 on Ethernet)
 *   4       16    GID, raw bytes as in union ibv_gid
 */
#ifndef ORC_VERBS_ADDR_H_
#define ORC_VERBS_ADDR_H_

#include <infiniband/verbs.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ORC_VERBS_ADDR_LEN 20

/* GRH hop limit put into the ah_attr of a global (GRH / RoCE) address. */
#define ORC_VERBS_ADDR_HOP_LIMIT 64

/* What the packed address says about one port. */
typedef struct orc_verbs_port_addr {
    union ibv_gid gid;
    uint16_t lid;
    uint8_t link_layer; /* IBV_LINK_LAYER_*; UNSPECIFIED means IB */
} orc_verbs_port_addr_t;

/*
 * Pack @addr into @buf. Returns 0, ENOSPC if @len < ORC_VERBS_ADDR_LEN, or
 * EINVAL if @addr cannot be reached by anyone (Ethernet without a GID, IB
 * without a unicast LID or a GID, unknown link layer).
 */
int orc_verbs_addr_encode(const orc_verbs_port_addr_t *addr, void *buf,
                          size_t len);

/*
 * Unpack a peer's address into the ah_attr of the RTR transition of a QP on
 * local port @port_num whose link layer is @local_link_layer; the source GID
 * index is @sgid_index. Returns 0; EHOSTUNREACH for a softnic address or a
 * different link layer than the local port's; EINVAL for malformed input
 * (wrong length, unknown tag or link layer, unreachable LID/GID).
 * On error *ah_attr is not modified.
 */
int orc_verbs_addr_decode(const void *buf, size_t len, uint8_t local_link_layer,
                          uint8_t port_num, uint8_t sgid_index,
                          struct ibv_ah_attr *ah_attr);

#ifdef __cplusplus
}
#endif

#endif /* ORC_VERBS_ADDR_H_ */
