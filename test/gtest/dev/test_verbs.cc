/*
 * Verbs backend tests that need no RDMA hardware: device listing where the
 * kernel has no RDMA support, open of unknown devices, and the packed port
 * address (encode/decode are tested directly, without a device).
 */
#include <gtest/gtest.h>

#include "orc_dev.h"
#include "verbs/orc_verbs_addr.h"

#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <string.h>

#include <set>
#include <string>

/*
 * ibv_get_device_list() failure injection: this definition interposes on
 * libibverbs' for the whole test binary (liborcdev is linked statically).
 * With ibv_fail_errno == 0 it forwards to the real function.
 */
static int ibv_fail_errno = 0;

struct ibv_device **ibv_get_device_list(int *num_devices)
{
    typedef struct ibv_device **(*list_fn_t)(int *);
    static list_fn_t real_fn = NULL;

    if (ibv_fail_errno != 0) {
        if (num_devices != NULL) {
            *num_devices = 0;
        }
        errno = (ibv_fail_errno < 0) ? 0 : ibv_fail_errno;
        return NULL;
    }

    if (real_fn == NULL) {
        real_fn = (list_fn_t)dlsym(RTLD_NEXT, "ibv_get_device_list");
        if (real_fn == NULL) {
            ADD_FAILURE() << "dlsym(ibv_get_device_list): " << dlerror();
            errno = ENOSYS;
            return NULL;
        }
    }
    return real_fn(num_devices);
}

namespace
{

/* Makes ibv_get_device_list() fail with @err (-1: errno left 0) */
class ibv_list_failure
{
  public:
    explicit ibv_list_failure(int err)
    {
        ibv_fail_errno = err;
    }
    ~ibv_list_failure()
    {
        ibv_fail_errno = 0;
    }
};

/* Names of the verbs devices libibverbs reports, or why there are none */
struct ibv_names {
    std::set<std::string> names;
    int err; /* errno of a failed ibv_get_device_list */
};

ibv_names ibv_device_names()
{
    ibv_names result;
    struct ibv_device **list;
    int i, num = 0;

    errno      = 0;
    list       = ibv_get_device_list(&num);
    result.err = (list == NULL) ? errno : 0;
    if (list != NULL) {
        for (i = 0; i < num; ++i) {
            result.names.insert(ibv_get_device_name(list[i]));
        }
        ibv_free_device_list(list);
    }
    return result;
}

union ibv_gid make_gid(uint64_t prefix, uint64_t iid)
{
    union ibv_gid gid;
    int i;

    for (i = 0; i < 8; ++i) {
        gid.raw[i]     = (uint8_t)(prefix >> (56 - 8 * i));
        gid.raw[8 + i] = (uint8_t)(iid >> (56 - 8 * i));
    }
    return gid;
}

/* RoCEv2 GID of 198.18.0.1: ::ffff:198.18.0.1 */
orc_verbs_port_addr_t roce_addr()
{
    orc_verbs_port_addr_t addr;

    memset(&addr, 0, sizeof(addr));
    addr.gid        = make_gid(0, 0x0000ffffc6120001ull);
    addr.lid        = 0;
    addr.link_layer = IBV_LINK_LAYER_ETHERNET;
    return addr;
}

orc_verbs_port_addr_t ib_addr(uint16_t lid)
{
    orc_verbs_port_addr_t addr;

    memset(&addr, 0, sizeof(addr));
    addr.gid        = make_gid(0xfe80000000000000ull, 0x0002c90300a1b2c3ull);
    addr.lid        = lid;
    addr.link_layer = IBV_LINK_LAYER_INFINIBAND;
    return addr;
}

/* An ah_attr filled with a pattern, to see that failures leave it alone */
struct ibv_ah_attr poisoned_ah()
{
    struct ibv_ah_attr ah;

    memset(&ah, 0xa5, sizeof(ah));
    return ah;
}

bool ah_is_poisoned(const struct ibv_ah_attr &ah)
{
    struct ibv_ah_attr ref = poisoned_ah();

    return memcmp(&ah, &ref, sizeof(ah)) == 0;
}

int decode(const uint8_t *buf, size_t len, uint8_t local_link_layer,
           struct ibv_ah_attr *ah)
{
    return orc_verbs_addr_decode(buf, len, local_link_layer, 1, 0, ah);
}

} // namespace

TEST(verbs_list, no_kernel_rdma_means_zero_devices)
{
    ibv_names ibv        = ibv_device_names();
    orc_dev_info_t *list = NULL;
    int count            = -1;

    ASSERT_EQ(0, orc_dev_verbs_ops.list(NULL, &list, &count));
    if (ibv.names.empty()) {
        /* this machine: ibv_get_device_list fails with ENOSYS (or finds
         * nothing), which is "no devices", never an error */
        EXPECT_TRUE((ibv.err == ENOSYS) || (ibv.err == 0)) << ibv.err;
        EXPECT_EQ(0, count);
        EXPECT_EQ(NULL, list);
        return;
    }

    /* a machine with HCAs: every listed device is a libibverbs device */
    EXPECT_LE(count, (int)ibv.names.size());
    for (int i = 0; i < count; ++i) {
        EXPECT_EQ(1u, ibv.names.count(list[i].name)) << list[i].name;
        EXPECT_EQ(ORC_DEV_BACKEND_VERBS, list[i].backend);
        EXPECT_GE(list[i].num_ports, 1);
    }
    orc_dev_list_free(list);
}

TEST(verbs_list, forced_verbs_backend_lists_only_verbs_devices)
{
    orc_dev_config_t config;
    orc_dev_info_t *list = NULL;
    int count            = -1;

    memset(&config, 0, sizeof(config));
    config.backend = ORC_DEV_BACKEND_VERBS;
    ASSERT_EQ(0, orc_dev_list(&config, &list, &count));
    if (ibv_device_names().names.empty()) {
        EXPECT_EQ(0, count);
        EXPECT_EQ(NULL, list);
    }
    for (int i = 0; i < count; ++i) {
        EXPECT_EQ(ORC_DEV_BACKEND_VERBS, list[i].backend);
    }
    orc_dev_list_free(list);
}

TEST(verbs_open, unknown_device_is_enodev)
{
    orc_dev_config_t config;

    memset(&config, 0, sizeof(config));
    config.backend = ORC_DEV_BACKEND_VERBS;

    errno = 0;
    EXPECT_EQ(NULL, orc_dev_open(&config, "orc_no_such_hca_0"));
    EXPECT_EQ(ENODEV, errno);

    /* the backend itself, without the dispatcher's list lookup */
    errno = 0;
    EXPECT_EQ(NULL, orc_dev_verbs_ops.open(&config, "orc_no_such_hca_0"));
    EXPECT_EQ(ENODEV, errno);

    errno = 0;
    EXPECT_EQ(NULL, orc_dev_verbs_ops.open(NULL, "orc_no_such_hca_0"));
    EXPECT_EQ(ENODEV, errno);
}

TEST(verbs_open, bad_arguments_are_einval)
{
    orc_dev_config_t config;

    memset(&config, 0, sizeof(config));
    config.backend         = ORC_DEV_BACKEND_VERBS;
    config.verbs_gid_index = 256; /* sgid_index is 8 bits */

    errno = 0;
    EXPECT_EQ(NULL, orc_dev_verbs_ops.open(&config, "mlx5_0"));
    EXPECT_EQ(EINVAL, errno);

    config.verbs_gid_index = 0;
    errno                  = 0;
    EXPECT_EQ(NULL, orc_dev_verbs_ops.open(&config, NULL));
    EXPECT_EQ(EINVAL, errno);
}

TEST(verbs_addr, len_matches_wire_format)
{
    /* tag, link layer, LID, GID */
    EXPECT_EQ(1u + 1u + 2u + sizeof(union ibv_gid), (size_t)ORC_VERBS_ADDR_LEN);
    EXPECT_EQ((size_t)ORC_VERBS_ADDR_LEN, orc_dev_verbs_ops.addr_len(NULL, 1));
}

TEST(verbs_addr, roce_round_trip)
{
    orc_verbs_port_addr_t addr = roce_addr();
    uint8_t buf[ORC_VERBS_ADDR_LEN];
    struct ibv_ah_attr ah = poisoned_ah();

    ASSERT_EQ(0, orc_verbs_addr_encode(&addr, buf, sizeof(buf)));
    EXPECT_EQ(ORC_DEV_BACKEND_VERBS, buf[0]);
    EXPECT_NE(ORC_DEV_BACKEND_SOFT, buf[0]);

    ASSERT_EQ(0, orc_verbs_addr_decode(buf, sizeof(buf),
                                       IBV_LINK_LAYER_ETHERNET, 2, 3, &ah));
    EXPECT_EQ(1, ah.is_global);
    EXPECT_EQ(0, memcmp(addr.gid.raw, ah.grh.dgid.raw, sizeof(addr.gid.raw)));
    EXPECT_EQ(3, ah.grh.sgid_index);
    EXPECT_EQ(ORC_VERBS_ADDR_HOP_LIMIT, ah.grh.hop_limit);
    EXPECT_EQ(0u, ah.grh.flow_label);
    EXPECT_EQ(0, ah.grh.traffic_class);
    EXPECT_EQ(0, ah.dlid);
    EXPECT_EQ(0, ah.sl);
    EXPECT_EQ(0, ah.src_path_bits);
    EXPECT_EQ(0, ah.static_rate);
    EXPECT_EQ(2, ah.port_num);
}

TEST(verbs_addr, ib_round_trip_with_gid_is_global)
{
    orc_verbs_port_addr_t addr = ib_addr(0x1234);
    uint8_t buf[ORC_VERBS_ADDR_LEN + 8];
    struct ibv_ah_attr ah = poisoned_ah();

    /* a larger buffer is fine for packing; the address is ADDR_LEN bytes */
    ASSERT_EQ(0, orc_verbs_addr_encode(&addr, buf, sizeof(buf)));
    EXPECT_EQ(IBV_LINK_LAYER_INFINIBAND, buf[1]);
    EXPECT_EQ(0x12, buf[2]); /* big-endian on the wire */
    EXPECT_EQ(0x34, buf[3]);

    ASSERT_EQ(0, orc_verbs_addr_decode(buf, ORC_VERBS_ADDR_LEN,
                                       IBV_LINK_LAYER_INFINIBAND, 1, 0, &ah));
    EXPECT_EQ(0x1234, ah.dlid);
    EXPECT_EQ(1, ah.port_num);
    EXPECT_EQ(1, ah.is_global);
    EXPECT_EQ(0, memcmp(addr.gid.raw, ah.grh.dgid.raw, sizeof(addr.gid.raw)));
    EXPECT_EQ(0, ah.grh.sgid_index);
}

TEST(verbs_addr, ib_round_trip_without_gid_is_local)
{
    orc_verbs_port_addr_t addr = ib_addr(7);
    uint8_t buf[ORC_VERBS_ADDR_LEN];
    struct ibv_ah_attr ah = poisoned_ah();

    memset(&addr.gid, 0, sizeof(addr.gid));
    ASSERT_EQ(0, orc_verbs_addr_encode(&addr, buf, sizeof(buf)));
    /* old drivers report UNSPECIFIED for IB ports */
    ASSERT_EQ(0, decode(buf, sizeof(buf), IBV_LINK_LAYER_UNSPECIFIED, &ah));
    EXPECT_EQ(0, ah.is_global);
    EXPECT_EQ(7, ah.dlid);
    EXPECT_EQ(1, ah.port_num);
}

TEST(verbs_addr, unspecified_link_layer_packs_as_ib)
{
    orc_verbs_port_addr_t addr = ib_addr(9);
    uint8_t buf[ORC_VERBS_ADDR_LEN];
    struct ibv_ah_attr ah = poisoned_ah();

    addr.link_layer = IBV_LINK_LAYER_UNSPECIFIED;
    ASSERT_EQ(0, orc_verbs_addr_encode(&addr, buf, sizeof(buf)));
    EXPECT_EQ(IBV_LINK_LAYER_INFINIBAND, buf[1]);
    ASSERT_EQ(0, decode(buf, sizeof(buf), IBV_LINK_LAYER_INFINIBAND, &ah));
    EXPECT_EQ(9, ah.dlid);
}

TEST(verbs_addr, encode_rejects_unreachable_port)
{
    uint8_t buf[ORC_VERBS_ADDR_LEN];
    orc_verbs_port_addr_t addr;

    addr = roce_addr();
    EXPECT_EQ(ENOSPC, orc_verbs_addr_encode(&addr, buf, sizeof(buf) - 1));
    EXPECT_EQ(ENOSPC, orc_verbs_addr_encode(&addr, buf, 0));

    memset(&addr.gid, 0, sizeof(addr.gid)); /* RoCE without a GID */
    EXPECT_EQ(EINVAL, orc_verbs_addr_encode(&addr, buf, sizeof(buf)));

    addr = ib_addr(0); /* IB port without a LID (no subnet manager) */
    EXPECT_EQ(EINVAL, orc_verbs_addr_encode(&addr, buf, sizeof(buf)));
    addr = ib_addr(0xc000); /* multicast LID */
    EXPECT_EQ(EINVAL, orc_verbs_addr_encode(&addr, buf, sizeof(buf)));
    addr = ib_addr(0xffff); /* permissive LID */
    EXPECT_EQ(EINVAL, orc_verbs_addr_encode(&addr, buf, sizeof(buf)));
    addr = ib_addr(0xbfff); /* highest unicast LID */
    EXPECT_EQ(0, orc_verbs_addr_encode(&addr, buf, sizeof(buf)));

    addr            = roce_addr();
    addr.link_layer = 7; /* not a link layer */
    EXPECT_EQ(EINVAL, orc_verbs_addr_encode(&addr, buf, sizeof(buf)));
}

TEST(verbs_addr, decode_rejects_softnic_address)
{
    uint8_t buf[64];
    struct ibv_ah_attr ah = poisoned_ah();

    /* whatever follows a softnic tag, and whatever its length */
    memset(buf, 0, sizeof(buf));
    buf[0] = ORC_DEV_BACKEND_SOFT;
    for (size_t len = 1; len <= sizeof(buf); ++len) {
        EXPECT_EQ(EHOSTUNREACH, decode(buf, len, IBV_LINK_LAYER_ETHERNET, &ah))
            << len;
    }
    EXPECT_TRUE(ah_is_poisoned(ah));
}

TEST(verbs_addr, decode_rejects_other_link_layer)
{
    orc_verbs_port_addr_t roce = roce_addr(), ib = ib_addr(0x10);
    uint8_t roce_buf[ORC_VERBS_ADDR_LEN], ib_buf[ORC_VERBS_ADDR_LEN];
    struct ibv_ah_attr ah = poisoned_ah();

    ASSERT_EQ(0, orc_verbs_addr_encode(&roce, roce_buf, sizeof(roce_buf)));
    ASSERT_EQ(0, orc_verbs_addr_encode(&ib, ib_buf, sizeof(ib_buf)));

    EXPECT_EQ(EHOSTUNREACH, decode(roce_buf, sizeof(roce_buf),
                                   IBV_LINK_LAYER_INFINIBAND, &ah));
    EXPECT_EQ(EHOSTUNREACH, decode(roce_buf, sizeof(roce_buf),
                                   IBV_LINK_LAYER_UNSPECIFIED, &ah));
    EXPECT_EQ(EHOSTUNREACH,
              decode(ib_buf, sizeof(ib_buf), IBV_LINK_LAYER_ETHERNET, &ah));
    EXPECT_TRUE(ah_is_poisoned(ah));
}

TEST(verbs_addr, decode_rejects_malformed)
{
    orc_verbs_port_addr_t addr = roce_addr();
    uint8_t good[ORC_VERBS_ADDR_LEN], buf[ORC_VERBS_ADDR_LEN + 1];
    struct ibv_ah_attr ah = poisoned_ah();
    size_t len;
    unsigned tag;

    ASSERT_EQ(0, orc_verbs_addr_encode(&addr, good, sizeof(good)));

    EXPECT_EQ(EINVAL, decode(NULL, sizeof(good), IBV_LINK_LAYER_ETHERNET, &ah));

    /* every truncation, and trailing bytes */
    for (len = 0; len < sizeof(good); ++len) {
        EXPECT_EQ(EINVAL, decode(good, len, IBV_LINK_LAYER_ETHERNET, &ah))
            << len;
    }
    memcpy(buf, good, sizeof(good));
    buf[sizeof(good)] = 0;
    EXPECT_EQ(EINVAL,
              decode(buf, sizeof(good) + 1, IBV_LINK_LAYER_ETHERNET, &ah));

    /* every tag byte other than verbs (softnic: unreachable, not malformed) */
    for (tag = 0; tag <= 0xff; ++tag) {
        if (tag == ORC_DEV_BACKEND_VERBS) {
            continue;
        }
        memcpy(buf, good, sizeof(good));
        buf[0] = (uint8_t)tag;
        EXPECT_EQ((tag == ORC_DEV_BACKEND_SOFT) ? EHOSTUNREACH : EINVAL,
                  decode(buf, sizeof(good), IBV_LINK_LAYER_ETHERNET, &ah))
            << tag;
    }

    /* link layer byte: UNSPECIFIED and unknown values */
    memcpy(buf, good, sizeof(good));
    buf[1] = IBV_LINK_LAYER_UNSPECIFIED;
    EXPECT_EQ(EINVAL, decode(buf, sizeof(good), IBV_LINK_LAYER_ETHERNET, &ah));
    buf[1] = 3;
    EXPECT_EQ(EINVAL, decode(buf, sizeof(good), IBV_LINK_LAYER_ETHERNET, &ah));

    /* Ethernet address with a LID, or without a GID */
    memcpy(buf, good, sizeof(good));
    buf[3] = 1;
    EXPECT_EQ(EINVAL, decode(buf, sizeof(good), IBV_LINK_LAYER_ETHERNET, &ah));
    memcpy(buf, good, sizeof(good));
    memset(buf + 4, 0, sizeof(union ibv_gid));
    EXPECT_EQ(EINVAL, decode(buf, sizeof(good), IBV_LINK_LAYER_ETHERNET, &ah));

    /* IB address with LID 0 or a multicast LID */
    addr = ib_addr(0x20);
    ASSERT_EQ(0, orc_verbs_addr_encode(&addr, good, sizeof(good)));
    memcpy(buf, good, sizeof(good));
    buf[2] = buf[3] = 0;
    EXPECT_EQ(EINVAL,
              decode(buf, sizeof(good), IBV_LINK_LAYER_INFINIBAND, &ah));
    buf[2] = 0xc0;
    EXPECT_EQ(EINVAL,
              decode(buf, sizeof(good), IBV_LINK_LAYER_INFINIBAND, &ah));

    EXPECT_TRUE(ah_is_poisoned(ah));

    /* the untouched IB address still decodes */
    EXPECT_EQ(0, decode(good, sizeof(good), IBV_LINK_LAYER_INFINIBAND, &ah));
    EXPECT_EQ(0x20, ah.dlid);
}

TEST(verbs_list, enosys_is_no_devices)
{
    ibv_list_failure failure(ENOSYS);
    orc_dev_config_t config;
    orc_dev_info_t *list = NULL;
    int count            = -1;

    ASSERT_EQ(0, orc_dev_verbs_ops.list(NULL, &list, &count));
    EXPECT_EQ(0, count);
    EXPECT_EQ(NULL, list);

    memset(&config, 0, sizeof(config));
    config.backend = ORC_DEV_BACKEND_VERBS;
    count          = -1;
    ASSERT_EQ(0, orc_dev_list(&config, &list, &count));
    EXPECT_EQ(0, count);

    errno = 0;
    EXPECT_EQ(NULL, orc_dev_verbs_ops.open(&config, "mlx5_0"));
    EXPECT_EQ(ENODEV, errno);
}

TEST(verbs_list, other_errors_are_errors)
{
    orc_dev_config_t config;
    orc_dev_info_t *list;
    int count;

    memset(&config, 0, sizeof(config));
    for (orc_dev_backend_t backend :
         {ORC_DEV_BACKEND_VERBS, ORC_DEV_BACKEND_AUTO}) {
        ibv_list_failure failure(EACCES);

        config.backend = backend;
        list           = (orc_dev_info_t *)&config;
        count          = -1;
        /* a real failure of libibverbs is reported, not taken for "no
         * devices" (auto does not silently fall through to softnic) */
        EXPECT_EQ(EACCES, orc_dev_list(&config, &list, &count))
            << orc_dev_backend_name(backend);
        EXPECT_EQ(NULL, list);
        EXPECT_EQ(0, count);

        errno = 0;
        EXPECT_EQ(NULL, orc_dev_open(&config, "mlx5_0"));
        EXPECT_EQ(EACCES, errno);
    }

    ibv_list_failure failure(ENOMEM);
    errno = 0;
    EXPECT_EQ(NULL, orc_dev_verbs_ops.open(NULL, "mlx5_0"));
    EXPECT_EQ(ENOMEM, errno);
}

TEST(verbs_list, failure_without_errno_is_eio)
{
    ibv_list_failure failure(-1);
    orc_dev_info_t *list = NULL;
    int count            = -1;

    EXPECT_EQ(EIO, orc_dev_verbs_ops.list(NULL, &list, &count));
    EXPECT_EQ(0, count);
    EXPECT_EQ(NULL, list);

    errno = 0;
    EXPECT_EQ(NULL, orc_dev_verbs_ops.open(NULL, "mlx5_0"));
    EXPECT_EQ(EIO, errno);
}
