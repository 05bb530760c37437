/*
 * orcd snapshots of the memory store: the location checked at start,
 * leftovers of an interrupted write removed, the file restored and its
 * content validated against orcd's layout; periodic and final writes.
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "orcd_api.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The directory of path (malloc'ed) */
static char *orcd_snapshot_dir(const char *path)
{
    char *copy = strdup(path), *dir;

    if (copy == NULL) {
        return NULL;
    }
    dir = strdup(dirname(copy));
    free(copy);
    return dir;
}

/* Remove "<base>.tmp.<digits>" files left in dir by a write cut short */
static void orcd_snapshot_remove_temps(const char *dir, const char *path)
{
    char *copy = strdup(path), *base, name[4096];
    struct dirent *de;
    size_t blen;
    DIR *d;

    if (copy == NULL) {
        return;
    }
    base = basename(copy);
    blen = strlen(base);
    d    = opendir(dir);
    while ((d != NULL) && ((de = readdir(d)) != NULL)) {
        if (strncmp(de->d_name, base, blen) ||
            strncmp(de->d_name + blen, ".tmp.", 5) ||
            (de->d_name[blen + 5] == '\0') ||
            (strspn(de->d_name + blen + 5, "0123456789") !=
             strlen(de->d_name + blen + 5))) {
            continue;
        }
        snprintf(name, sizeof(name), "%s/%s", dir, de->d_name);
        if (unlink(name) == 0) {
            orcd_info("removed %s, left by an interrupted snapshot write",
                      name);
        } else {
            orcd_warn("cannot remove %s: %m", name);
        }
    }
    if (d != NULL) {
        closedir(d);
    }
    free(copy);
}

/* Can orcd write the snapshot's directory? (creates and removes a file) */
static int orcd_snapshot_dir_ok(const char *path, const char *dir)
{
    char probe[4096];
    struct stat st;
    int fd;

    if (stat(dir, &st) != 0) {
        orcd_error("snapshot %s: directory %s: %m (create it, or choose "
                   "another snapshot.path)",
                   path, dir);
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        orcd_error("snapshot %s: %s is not a directory", path, dir);
        return -1;
    }
    snprintf(probe, sizeof(probe), "%s.tmp.%d", path, (int)getpid());
    fd = open(probe, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        orcd_error("snapshot %s: cannot write in %s: %m", path, dir);
        return -1;
    }
    close(fd);
    unlink(probe);
    return 0;
}

int orcd_snapshot_restore(orc_store_t *store, const char *path)
{
    char err[512], *dir = orcd_snapshot_dir(path);
    struct stat st;
    int status;

    if (dir == NULL) {
        orcd_error("out of memory");
        return -1;
    }
    status = orcd_snapshot_dir_ok(path, dir);
    if (status == 0) {
        orcd_snapshot_remove_temps(dir, path);
    }
    free(dir);
    if (status != 0) {
        return -1;
    }
    if (stat(path, &st) != 0) {
        if (errno == ENOENT) {
            orcd_info("no snapshot at %s yet: starting empty", path);
            return 0;
        }
        /* anything else (a symlink loop, no permission) is not "empty" */
        orcd_error("snapshot %s: %m (fix or move it away to start empty)",
                   path);
        return -1;
    }
    status = store->ops->snapshot_load(store, path);
    if (status != ORC_STORE_OK) {
        orcd_error("cannot restore the snapshot %s: %s (move it away to "
                   "start empty)",
                   path, orc_store_status_str(status));
        return -1;
    }
    if (orcd_api_check_store(store, err, sizeof(err)) != 0) {
        orcd_error("cannot restore the snapshot %s: %s (move it away to "
                   "start empty)",
                   path, err);
        return -1;
    }
    orcd_info("restored %s (revision %llu); nodes have one TTL to send their "
              "next keep-alive",
              path, (unsigned long long)store->ops->revision(store));
    return 0;
}

int orcd_snapshot_write(orc_store_t *store, const char *path)
{
    int status = store->ops->snapshot_save(store, path);

    if (status != ORC_STORE_OK) {
        orcd_error("snapshot to %s failed: %s", path,
                   orc_store_status_str(status));
        return -1;
    }
    orcd_debug("snapshot written to %s", path);
    return 0;
}
