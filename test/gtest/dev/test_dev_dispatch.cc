/*
 * Device-layer dispatch: backend names, run-time backend choice (auto falls
 * through to softnic where there are no verbs devices), and the completeness
 * of both backends' ops tables.
 */
#include <gtest/gtest.h>

#include "orc_dev.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>

#include <string>
#include <vector>

/* dev_dispatch_raw.c */
extern "C" {
const char *orc_test_dev_backend_name_raw(int value);
void orc_test_dev_config_set_backend_raw(orc_dev_config_t *config, int value);
}

namespace
{

typedef void (*orc_test_fn_t)(void);

/* True where libibverbs reports no devices (here: ENOSYS, no kernel RDMA) */
bool no_verbs_devices()
{
    struct ibv_device **list;
    int num = 0;

    list = ibv_get_device_list(&num);
    if (list == NULL) {
        return true;
    }
    ibv_free_device_list(list);
    return num == 0;
}

orc_dev_config_t make_config(orc_dev_backend_t backend, const char *soft_ifaces)
{
    orc_dev_config_t config;

    memset(&config, 0, sizeof(config));
    config.backend     = backend;
    config.soft.ifaces = soft_ifaces;
    return config;
}

} // namespace

TEST(dev_backend, names)
{
    EXPECT_STREQ("auto", orc_dev_backend_name(ORC_DEV_BACKEND_AUTO));
    EXPECT_STREQ("verbs", orc_dev_backend_name(ORC_DEV_BACKEND_VERBS));
    EXPECT_STREQ("soft", orc_dev_backend_name(ORC_DEV_BACKEND_SOFT));
    EXPECT_STREQ("unknown", orc_test_dev_backend_name_raw(3));
    EXPECT_STREQ("unknown", orc_test_dev_backend_name_raw(-1));
    EXPECT_STREQ("unknown", orc_test_dev_backend_name_raw(1000));
}

TEST(dev_backend, parse_round_trip)
{
    const orc_dev_backend_t all[] = {ORC_DEV_BACKEND_AUTO,
                                     ORC_DEV_BACKEND_VERBS,
                                     ORC_DEV_BACKEND_SOFT};

    for (orc_dev_backend_t backend : all) {
        orc_dev_backend_t parsed = (backend == ORC_DEV_BACKEND_SOFT)
                                       ? ORC_DEV_BACKEND_AUTO
                                       : ORC_DEV_BACKEND_SOFT;
        ASSERT_EQ(0, orc_dev_backend_parse(orc_dev_backend_name(backend),
                                           &parsed));
        EXPECT_EQ(backend, parsed);
    }
}

TEST(dev_backend, parse_invalid)
{
    const char *bad[] = {"",        "Verbs", "SOFT",    "soft ", " auto",
                         "softnic", "verb",  "unknown", "rxe",   NULL};

    for (const char *str : bad) {
        for (orc_dev_backend_t before :
             {ORC_DEV_BACKEND_AUTO, ORC_DEV_BACKEND_SOFT}) {
            orc_dev_backend_t parsed = before;
            EXPECT_EQ(EINVAL, orc_dev_backend_parse(str, &parsed))
                << (str ? str : "(null)");
            EXPECT_EQ(before, parsed) << "changed on error";
        }
    }
}

class dev_ops_table : public ::testing::TestWithParam<orc_dev_backend_t>
{
  protected:
    const orc_dev_ops_t *ops() const
    {
        return (GetParam() == ORC_DEV_BACKEND_VERBS) ? &orc_dev_verbs_ops
                                                     : &orc_dev_soft_ops;
    }
};

TEST_P(dev_ops_table, every_slot_filled)
{
    const size_t first = offsetof(orc_dev_ops_t, list);
    const size_t nslots =
        (sizeof(orc_dev_ops_t) - first) / sizeof(orc_test_fn_t);
    std::vector<orc_test_fn_t> slots(nslots);

    /* the table is size_t followed only by function pointers, so new slots
     * are covered without editing this test */
    ASSERT_EQ(sizeof(orc_dev_ops_t), first + nslots * sizeof(orc_test_fn_t));
    ASSERT_EQ(sizeof(orc_dev_ops_t), ops()->size);

    memcpy(slots.data(), (const char *)ops() + first,
           nslots * sizeof(orc_test_fn_t));
    for (size_t i = 0; i < nslots; ++i) {
        EXPECT_NE((orc_test_fn_t)NULL, slots[i]) << "slot " << i;
    }

    /* spot-check the slot order against the names */
    EXPECT_EQ((orc_test_fn_t)ops()->list, slots[0]);
    EXPECT_EQ((orc_test_fn_t)ops()->post_recv, slots[nslots - 1]);
}

INSTANTIATE_TEST_SUITE_P(
    backends, dev_ops_table,
    ::testing::Values(ORC_DEV_BACKEND_VERBS, ORC_DEV_BACKEND_SOFT),
    [](const ::testing::TestParamInfo<orc_dev_backend_t> &info) {
    return std::string(orc_dev_backend_name(info.param));
    });

TEST(dev_select, invalid_backend_is_einval)
{
    orc_dev_config_t config = make_config(ORC_DEV_BACKEND_AUTO, "lo");
    orc_dev_info_t *list;
    int count;

    for (int value : {3, 7, -1}) {
        orc_test_dev_config_set_backend_raw(&config, value);
        list  = (orc_dev_info_t *)&config; /* must be reset */
        count = -1;
        EXPECT_EQ(EINVAL, orc_dev_list(&config, &list, &count)) << value;
        EXPECT_EQ(NULL, list);
        EXPECT_EQ(0, count);
    }

    errno = 0;
    EXPECT_EQ(NULL, orc_dev_open(&config, "soft_lo"));
    EXPECT_EQ(EINVAL, errno);

    errno = 0;
    EXPECT_EQ(NULL, orc_dev_open(NULL, NULL));
    EXPECT_EQ(EINVAL, errno);
}

TEST(dev_select, forced_verbs_gives_zero_devices)
{
    orc_dev_config_t config = make_config(ORC_DEV_BACKEND_VERBS, "lo");
    orc_dev_info_t *list    = NULL;
    int count               = -1;

    if (!no_verbs_devices()) {
        GTEST_SKIP() << "this machine has verbs devices";
    }

    ASSERT_EQ(0, orc_dev_list(&config, &list, &count));
    EXPECT_EQ(0, count);
    EXPECT_EQ(NULL, list);

    /* softnic's device is not reachable when verbs is forced */
    errno = 0;
    EXPECT_EQ(NULL, orc_dev_open(&config, "soft_lo"));
    EXPECT_EQ(ENODEV, errno);
}

TEST(dev_select, auto_falls_through_to_soft)
{
    orc_dev_config_t config = make_config(ORC_DEV_BACKEND_AUTO, "lo");
    orc_dev_info_t *list    = NULL;
    int count               = -1;

    if (!no_verbs_devices()) {
        GTEST_SKIP() << "this machine has verbs devices: auto picks verbs";
    }

    ASSERT_EQ(0, orc_dev_list(&config, &list, &count));
    ASSERT_EQ(1, count);
    ASSERT_NE((orc_dev_info_t *)NULL, list);
    EXPECT_STREQ("soft_lo", list[0].name);
    EXPECT_EQ(ORC_DEV_BACKEND_SOFT, list[0].backend);
    EXPECT_EQ(1, list[0].num_ports);
    orc_dev_list_free(list);

    /* zero-initialised config (NULL too) is auto over every interface */
    list  = NULL;
    count = -1;
    ASSERT_EQ(0, orc_dev_list(NULL, &list, &count));
    ASSERT_GE(count, 1);
    bool found_lo = false;
    for (int i = 0; i < count; ++i) {
        EXPECT_EQ(ORC_DEV_BACKEND_SOFT, list[i].backend) << list[i].name;
        found_lo = found_lo || !strcmp(list[i].name, "soft_lo");
    }
    EXPECT_TRUE(found_lo);
    orc_dev_list_free(list);
}

TEST(dev_select, auto_open_gives_soft_device)
{
    orc_dev_config_t config = make_config(ORC_DEV_BACKEND_AUTO, "lo");
    orc_dev_t *dev;

    if (!no_verbs_devices()) {
        GTEST_SKIP() << "this machine has verbs devices: auto picks verbs";
    }

    dev = orc_dev_open(&config, "soft_lo");
    ASSERT_NE((orc_dev_t *)NULL, dev) << strerror(errno);
    EXPECT_EQ(ORC_DEV_BACKEND_SOFT, dev->backend);
    EXPECT_EQ(&orc_dev_soft_ops, dev->ops);
    EXPECT_STREQ("soft_lo", dev->name);
    EXPECT_EQ(0, orc_dev_close(dev));
}

TEST(dev_select, open_unknown_name_is_enodev)
{
    const orc_dev_backend_t all[] = {ORC_DEV_BACKEND_AUTO,
                                     ORC_DEV_BACKEND_VERBS,
                                     ORC_DEV_BACKEND_SOFT};

    for (orc_dev_backend_t backend : all) {
        orc_dev_config_t config = make_config(backend, "lo");

        errno = 0;
        EXPECT_EQ(NULL, orc_dev_open(&config, "orc_no_such_dev"))
            << orc_dev_backend_name(backend);
        EXPECT_EQ(ENODEV, errno) << orc_dev_backend_name(backend);
    }

    /* a soft device of an interface that is not configured */
    orc_dev_config_t config = make_config(ORC_DEV_BACKEND_SOFT, "lo");
    errno                   = 0;
    EXPECT_EQ(NULL, orc_dev_open(&config, "soft_orc_no_such_if"));
    EXPECT_EQ(ENODEV, errno);
}

TEST(dev_select, forced_soft_lists_soft_devices)
{
    orc_dev_config_t config = make_config(ORC_DEV_BACKEND_SOFT, "lo");
    orc_dev_info_t *list    = NULL;
    int count               = -1;

    ASSERT_EQ(0, orc_dev_list(&config, &list, &count));
    ASSERT_EQ(1, count);
    EXPECT_STREQ("soft_lo", list[0].name);
    EXPECT_EQ(ORC_DEV_BACKEND_SOFT, list[0].backend);
    orc_dev_list_free(list);
}

/* The soft backend's packed address: ORC_DEV_BACKEND_SOFT, then softnic's
 * own address; another backend's address is unreachable, garbage invalid. */
TEST(dev_soft, addr_pack_unpack)
{
    orc_dev_config_t config = make_config(ORC_DEV_BACKEND_SOFT, "lo");
    orc_dev_t *dev          = orc_dev_open(&config, "soft_lo");
    ibv_ah_attr ah;

    ASSERT_NE((orc_dev_t *)NULL, dev) << strerror(errno);
    size_t len = orc_dev_addr_len(dev, 1);
    ASSERT_EQ(1u + SOFTNIC_ADDR_LEN, len);
    std::vector<uint8_t> buf(len);
    ASSERT_EQ(0, orc_dev_addr_pack(dev, 1, buf.data(), len));
    EXPECT_EQ(ORC_DEV_BACKEND_SOFT, buf[0]);
    EXPECT_EQ(EINVAL, orc_dev_addr_pack(dev, 1, buf.data(), len - 1));
    EXPECT_EQ(EINVAL, orc_dev_addr_pack(dev, 2, buf.data(), len));

    ASSERT_EQ(0, orc_dev_addr_unpack(dev, 1, buf.data(), len, &ah));
    EXPECT_EQ(1, ah.is_global);
    EXPECT_EQ(127, ah.grh.dgid.raw[12]);
    EXPECT_NE(0, ah.dlid);
    EXPECT_EQ(EINVAL, orc_dev_addr_unpack(dev, 1, buf.data(), len - 1, &ah));

    buf[0] = ORC_DEV_BACKEND_VERBS;
    EXPECT_EQ(EHOSTUNREACH, orc_dev_addr_unpack(dev, 1, buf.data(), len, &ah));
    buf[0] = 7;
    EXPECT_EQ(EINVAL, orc_dev_addr_unpack(dev, 1, buf.data(), len, &ah));
    EXPECT_EQ(0, orc_dev_close(dev));
}
