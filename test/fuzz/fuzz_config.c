/*
 * libFuzzer harness for orcd's YAML configuration loader: any input either
 * loads or yields an error text naming file:line:column; never a crash,
 * leak or hang.
 */
#include "coordinator/orcd/orcd.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    orcd_config_t cfg;
    char err[1024];

    if (orcd_config_init_defaults(&cfg)) {
        abort();
    }
    if (orcd_config_load_buffer(&cfg, "fuzz.yaml", data, size, err,
                                sizeof(err)) == 0) {
        /* no file access from fuzz inputs */
        free(cfg.token_file);
        cfg.token_file = NULL;
        if ((cfg.tls_cert != NULL) && (cfg.tls_key != NULL)) {
            free(cfg.tls_cert);
            free(cfg.tls_key);
            cfg.tls_cert = NULL;
            cfg.tls_key  = NULL;
        }
        if (orcd_config_finalize(&cfg, err, sizeof(err)) != 0 &&
            err[0] == '\0') {
            abort(); /* an error must say what is wrong */
        }
    } else if (strncmp(err, "fuzz.yaml:", 10) != 0) {
        abort(); /* a load error must name the position */
    }
    orcd_config_cleanup(&cfg);
    return 0;
}
