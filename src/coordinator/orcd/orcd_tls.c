/*
 * orcd TLS: check that a certificate and key load and belong together, with
 * GnuTLS (libmicrohttpd's TLS library), so that a bad pair is reported by
 * --check-config and at start with the TLS library's reason.
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "orcd.h"
#include "coordinator/common/orc_util.h"

#include <gnutls/gnutls.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ORCD_TLS_FILE_MAX (1024 * 1024)

int orcd_tls_check_pair(const char *cert_path, const char *key_path, char *err,
                        size_t errlen)
{
    gnutls_certificate_credentials_t cred;
    gnutls_datum_t cert, key;
    char *cert_pem, *key_pem;
    size_t cert_len, key_len;
    int ret = -1, gret;

    cert_pem = orc_util_read_file(cert_path, ORCD_TLS_FILE_MAX, &cert_len, err,
                                  errlen);
    if (cert_pem == NULL) {
        return -1;
    }
    key_pem =
        orc_util_read_file(key_path, ORCD_TLS_FILE_MAX, &key_len, err, errlen);
    if (key_pem == NULL) {
        goto out_cert;
    }
    gret = gnutls_certificate_allocate_credentials(&cred);
    if (gret < 0) {
        snprintf(err, errlen, "TLS: %s", gnutls_strerror(gret));
        goto out_key;
    }
    cert.data = (unsigned char *)cert_pem;
    cert.size = (unsigned)cert_len;
    key.data  = (unsigned char *)key_pem;
    key.size  = (unsigned)key_len;
    gret      = gnutls_certificate_set_x509_key_mem(cred, &cert, &key,
                                                    GNUTLS_X509_FMT_PEM);
    if (gret < 0) {
        snprintf(err, errlen, "tls.cert %s and tls.key %s: %s", cert_path,
                 key_path, gnutls_strerror(gret));
    } else {
        ret = 0;
    }
    gnutls_certificate_free_credentials(cred);
out_key:
    memset(key_pem, 0, key_len); /* a secret */
    free(key_pem);
out_cert:
    free(cert_pem);
    return ret;
}
