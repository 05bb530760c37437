/*
 * Replays a checked-in fuzz corpus through a harness's
 * LLVMFuzzerTestOneInput, built with the normal compiler so `make check`
 * runs it everywhere. Corpus: argv[1], else
 * $ORC_TOP_SRCDIR/test/fuzz/corpus/<ORC_FUZZ_CORPUS>.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int orc_fuzz_replay_file(const char *path)
{
    uint8_t *data = NULL;
    size_t len = 0, cap = 0, n;
    FILE *f = fopen(path, "rb");

    if (f == NULL) {
        fprintf(stderr, "cannot open %s\n", path);
        return -1;
    }
    for (;;) {
        if (len == cap) {
            uint8_t *p;
            cap = (cap == 0) ? 4096 : cap * 2;
            p   = realloc(data, cap);
            if (p == NULL) {
                fclose(f);
                free(data);
                return -1;
            }
            data = p;
        }
        n = fread(data + len, 1, cap - len, f);
        len += n;
        if (n == 0) {
            break;
        }
    }
    fclose(f);
    LLVMFuzzerTestOneInput(data, len);
    free(data);
    return 0;
}

int main(int argc, char **argv)
{
    const char *top = getenv("ORC_TOP_SRCDIR");
    char dir[4096], path[8192];
    struct dirent *de;
    unsigned count = 0;
    DIR *d;

    if (argc > 1) {
        snprintf(dir, sizeof(dir), "%s", argv[1]);
    } else {
        snprintf(dir, sizeof(dir), "%s/test/fuzz/corpus/%s",
                 (top != NULL) ? top : ".", ORC_FUZZ_CORPUS);
    }
    d = opendir(dir);
    if (d == NULL) {
        fprintf(stderr, "cannot open the corpus directory %s\n", dir);
        return 1;
    }
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.') {
            continue;
        }
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        if (orc_fuzz_replay_file(path)) {
            closedir(d);
            return 1;
        }
        ++count;
    }
    closedir(d);
    printf("%s: %u inputs replayed\n", dir, count);
    return (count > 0) ? 0 : 1;
}
