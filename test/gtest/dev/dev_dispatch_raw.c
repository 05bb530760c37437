/*
 * Out-of-range backend values for test_dev_dispatch. They are made here, in
 * C, because in C++ an enum value outside the enumerators' range is undefined
 * behaviour (UBSan's -fsanitize=enum flags it), while in C it is a plain int.
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "orc_dev.h"

const char *orc_test_dev_backend_name_raw(int value);
void orc_test_dev_config_set_backend_raw(orc_dev_config_t *config, int value);

const char *orc_test_dev_backend_name_raw(int value)
{
    return orc_dev_backend_name((orc_dev_backend_t)value);
}

void orc_test_dev_config_set_backend_raw(orc_dev_config_t *config, int value)
{
    config->backend = (orc_dev_backend_t)value;
}
