/*
 * softnic protection domains and memory regions. The MR table lives in
 * shared memory (/dev/shm/orc_soft.<pidns>.<pid>.<instance>) so that
 * same-host initiators check rkeys themselves before a CMA copy, and see a
 * deregistration at once. Entry layout and seqlock: see softnic.h.
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "sn_int.h"

#include <dirent.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define SN_MR_TABLE_SIZE \
    (SN_MAX_MR * sizeof(sn_mr_entry_t) + SN_MAX_QP * sizeof(uint64_t))
#define SN_SHM_PREFIX "orc_soft."

static void sn_shm_name(char *buf, size_t size, uint64_t pid_ns, pid_t pid,
                        uint32_t id)
{
    snprintf(buf, size, "/" SN_SHM_PREFIX "%llu.%d.%u",
             (unsigned long long)pid_ns, (int)pid, id);
}

/* Remove tables (and rings) left behind by killed processes of our pid
 * namespace: at every open and close of an instance, so that a process
 * killed after the last open on its host leaves nothing once a peer that
 * outlived it closes (a test run's last peer it kills, a job's crashed
 * rank). */
static void sn_shm_reap(uint64_t pid_ns)
{
    unsigned long long ns;
    char name[300];
    struct dirent *de;
    unsigned id;
    DIR *dir;
    int pid;

    dir = opendir("/dev/shm");
    if (dir == NULL) {
        return;
    }
    while ((de = readdir(dir)) != NULL) {
        if ((sscanf(de->d_name, SN_SHM_PREFIX "%llu.%d.%u", &ns, &pid, &id) !=
             3) ||
            (ns != pid_ns) || (pid <= 0)) {
            continue;
        }
        if ((kill(pid, 0) < 0) && (errno == ESRCH)) {
            snprintf(name, sizeof(name), "/%s", de->d_name);
            shm_unlink(name);
        }
    }
    closedir(dir);
}

int sn_mr_table_init(sn_inst_t *inst)
{
    uint64_t pid_ns = le64toh(inst->host.pid_ns);
    int fd, ret;

    sn_shm_reap(pid_ns);
    sn_shm_name(inst->shm_name, sizeof(inst->shm_name), pid_ns, inst->pid,
                inst->id);
    fd = shm_open(inst->shm_name, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0) {
        ret = errno;
        sn_log(inst, SOFTNIC_LOG_ERROR, "shm_open(%s) failed: %m",
               inst->shm_name);
        return ret;
    }
    if (ftruncate(fd, SN_MR_TABLE_SIZE) < 0) {
        ret = errno;
        sn_log(inst, SOFTNIC_LOG_ERROR, "ftruncate(%s) failed: %m",
               inst->shm_name);
        goto err_unlink;
    }
    inst->mrs =
        mmap(NULL, SN_MR_TABLE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (inst->mrs == MAP_FAILED) {
        ret = errno;
        sn_log(inst, SOFTNIC_LOG_ERROR, "mmap(%s) failed: %m", inst->shm_name);
        inst->mrs = NULL;
        goto err_unlink;
    }
    inst->mr_gen   = calloc(SN_MAX_MR, sizeof(*inst->mr_gen));
    inst->qp_slots = calloc(SN_MAX_QP, sizeof(*inst->qp_slots));
    inst->qp_gen   = calloc(SN_MAX_QP, sizeof(*inst->qp_gen));
    if ((inst->mr_gen == NULL) || (inst->qp_slots == NULL) ||
        (inst->qp_gen == NULL)) {
        free(inst->mr_gen);
        free(inst->qp_slots);
        free(inst->qp_gen);
        ret = ENOMEM;
        goto err_unmap;
    }
    close(fd);
    return 0;

err_unmap:
    munmap(inst->mrs, SN_MR_TABLE_SIZE);
    inst->mrs = NULL;
err_unlink:
    shm_unlink(inst->shm_name);
    close(fd);
    return ret;
}

void sn_mr_table_cleanup(sn_inst_t *inst)
{
    free(inst->mr_gen);
    free(inst->qp_slots);
    free(inst->qp_gen);
    munmap(inst->mrs, SN_MR_TABLE_SIZE);
    shm_unlink(inst->shm_name);
    sn_shm_reap(le64toh(inst->host.pid_ns));
}

sn_mr_entry_t *sn_mr_enter(sn_mr_entry_t *table, uint32_t key)
{
    uint32_t index = key & ((1u << SN_KEY_INDEX_BITS) - 1);

    if ((index == 0) || (index >= SN_MAX_MR)) {
        return NULL;
    }
    __atomic_fetch_add(&table[index].users, 1, __ATOMIC_SEQ_CST);
    return &table[index];
}

void sn_mr_leave(sn_mr_entry_t *entry)
{
    __atomic_fetch_sub(&entry->users, 1, __ATOMIC_RELEASE);
}

sn_mr_entry_t *sn_mr_table_map(uint64_t pid_ns, pid_t pid, uint32_t id)
{
    char name[64];
    void *table;
    int fd;

    sn_shm_name(name, sizeof(name), pid_ns, pid, id);
    fd = shm_open(name, O_RDWR | O_CLOEXEC, 0);
    if (fd < 0) {
        return NULL;
    }
    /* writable: initiators count themselves in an entry's `users` */
    table =
        mmap(NULL, SN_MR_TABLE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    return (table == MAP_FAILED) ? NULL : table;
}

void sn_mr_table_unmap(const sn_mr_entry_t *table)
{
    if (table != NULL) {
        munmap((void *)table, SN_MR_TABLE_SIZE);
    }
}

static uint64_t *sn_qp_table(const sn_mr_entry_t *table)
{
    return (uint64_t *)(void *)(table + SN_MAX_MR);
}

void sn_qp_table_set(sn_inst_t *inst, uint32_t qpn, uint32_t access)
{
    uint64_t *slot = &sn_qp_table(inst->mrs)[qpn & (SN_MAX_QP - 1)];

    __atomic_store_n(slot, (qpn == 0) ? 0 : (((uint64_t)qpn << 32) | access),
                     __ATOMIC_SEQ_CST);
}

int sn_qp_table_check(const sn_mr_entry_t *table, uint32_t qpn, int access)
{
    uint64_t word = __atomic_load_n(&sn_qp_table(table)[qpn & (SN_MAX_QP - 1)],
                                    __ATOMIC_ACQUIRE);

    if ((word >> 32) != qpn) {
        return SN_QPT_DENIED;
    }
    if ((uint32_t)word & SN_QPT_ERR) {
        return SN_QPT_SILENT;
    }
    if ((uint32_t)word & SN_QPT_BELOW_RTR) {
        return SN_QPT_NOT_READY;
    }
    return (!SN_RULE_ACCESS || (((uint32_t)word & access) == (uint32_t)access))
               ? SN_QPT_ALLOWED
               : SN_QPT_DENIED;
}

int sn_mr_read(const sn_mr_entry_t *table, uint32_t key, sn_mr_snap_t *snap)
{
    uint32_t index = key & ((1u << SN_KEY_INDEX_BITS) - 1);
    const sn_mr_entry_t *e;
    uint32_t seq;
    int spins;

    if ((key == 0) || (index == 0) || (index >= SN_MAX_MR)) {
        return -1;
    }
    e = &table[index];
    for (spins = 0; spins < 1000000; ++spins) {
        snap->seq = __atomic_load_n(&e->seq, __ATOMIC_ACQUIRE);
        if (snap->seq & 1) {
            sched_yield();
            continue;
        }
        snap->key    = __atomic_load_n(&e->key, __ATOMIC_RELAXED);
        snap->addr   = __atomic_load_n(&e->addr, __ATOMIC_RELAXED);
        snap->length = __atomic_load_n(&e->length, __ATOMIC_RELAXED);
        snap->access = __atomic_load_n(&e->access, __ATOMIC_RELAXED);
        snap->pdn    = __atomic_load_n(&e->pdn, __ATOMIC_RELAXED);
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        seq = __atomic_load_n(&e->seq, __ATOMIC_RELAXED);
        if (seq == snap->seq) {
            return (snap->key == key) ? 0 : -1;
        }
    }
    return -1; /* a writer died in the middle: treat as invalid */
}

int sn_mr_still_valid(const sn_mr_entry_t *table, const sn_mr_snap_t *snap)
{
    uint32_t index = snap->key & ((1u << SN_KEY_INDEX_BITS) - 1);

    return __atomic_load_n(&table[index].seq, __ATOMIC_SEQ_CST) == snap->seq;
}

/* Does the region of snap hold [addr, addr+len) with the rights access? */
static int sn_mr_snap_allows(const sn_mr_snap_t *snap, uint32_t pdn,
                             uint64_t addr, uint64_t len, int access)
{
    return (snap->pdn == pdn) && (addr >= snap->addr) &&
           (len <= snap->length) && (addr - snap->addr <= snap->length - len) &&
           (!SN_RULE_ACCESS || ((snap->access & access) == (uint32_t)access));
}

int sn_mr_check(const sn_mr_entry_t *table, uint32_t key, uint32_t pdn,
                uint64_t addr, uint64_t len, int access, sn_mr_snap_t *snap)
{
    if (sn_mr_read(table, key, snap) != 0) {
        return -1;
    }
    return sn_mr_snap_allows(snap, pdn, addr, len, access) ? 0 : -1;
}

int sn_mr_check_again(const sn_mr_entry_t *table, uint32_t key, uint32_t pdn,
                      uint64_t addr, uint64_t len, int access,
                      sn_mr_snap_t *snap)
{
    if ((snap->key == 0) || (snap->key != key) ||
        !sn_mr_still_valid(table, snap)) {
        if (sn_mr_read(table, key, snap) != 0) {
            snap->key = 0;
            return -1;
        }
    }
    return sn_mr_snap_allows(snap, pdn, addr, len, access) ? 0 : -1;
}

int sn_mr_busy_begin(sn_inst_t *inst, const sn_mr_snap_t *snap)
{
    int index = (int)(snap->key & ((1u << SN_KEY_INDEX_BITS) - 1));

    __atomic_store_n(&inst->busy_mr, index, __ATOMIC_SEQ_CST);
    if (!sn_mr_still_valid(inst->mrs, snap)) {
        __atomic_store_n(&inst->busy_mr, -1, __ATOMIC_RELEASE);
        return -1;
    }
    return 0;
}

void sn_mr_busy_end(sn_inst_t *inst)
{
    __atomic_store_n(&inst->busy_mr, -1, __ATOMIC_RELEASE);
}

softnic_pd_t *softnic_pd_alloc(softnic_dev_t *dev)
{
    sn_inst_t *inst = sn_inst(dev);
    sn_pd_t *pd;

    pd = calloc(1, sizeof(*pd));
    if (pd == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    pd->super.dev = dev;
    pthread_mutex_lock(&inst->lock);
    pd->pdn = inst->next_pdn++;
    pthread_mutex_unlock(&inst->lock);
    return &pd->super;
}

int softnic_pd_dealloc(softnic_pd_t *pd)
{
    free(pd);
    return 0;
}

/* mr_lock held */
static void sn_mr_entry_write(sn_mr_entry_t *e, uint32_t key, uint64_t addr,
                              uint64_t length, uint32_t access, uint32_t pdn)
{
    uint32_t seq = __atomic_load_n(&e->seq, __ATOMIC_RELAXED);

    __atomic_store_n(&e->seq, seq + 1, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    __atomic_store_n(&e->key, key, __ATOMIC_RELAXED);
    __atomic_store_n(&e->addr, addr, __ATOMIC_RELAXED);
    __atomic_store_n(&e->length, length, __ATOMIC_RELAXED);
    __atomic_store_n(&e->access, access, __ATOMIC_RELAXED);
    __atomic_store_n(&e->pdn, pdn, __ATOMIC_RELAXED);
    __atomic_store_n(&e->seq, seq + 2, __ATOMIC_SEQ_CST);
}

softnic_mr_t *softnic_mr_reg(softnic_pd_t *pd, void *addr, size_t length,
                             int access)
{
    static const int supported =
        IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE |
        IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_ATOMIC |
        IBV_ACCESS_RELAXED_ORDERING;
    sn_inst_t *inst = sn_inst(pd->dev);
    sn_mr_t *mr;
    uintptr_t page, start;
    uint32_t index, key;
    uint16_t gen;

    if ((addr == NULL) || (length == 0) || (length > SN_MAX_MSG) ||
        (access & ~supported) ||
        ((access & (IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_ATOMIC)) &&
         !(access & IBV_ACCESS_LOCAL_WRITE))) {
        errno = EINVAL;
        return NULL;
    }

    /* An HCA pins the pages and fails on memory that is not mapped; so does
     * softnic (msync() checks the mapping and, asynchronous, does nothing
     * else). */
    page  = (uintptr_t)sysconf(_SC_PAGESIZE);
    start = (uintptr_t)addr & ~(page - 1);
    if (msync((void *)start, (uintptr_t)addr + length - start, MS_ASYNC) != 0) {
        errno = EFAULT;
        return NULL;
    }

    mr = calloc(1, sizeof(*mr));
    if (mr == NULL) {
        errno = ENOMEM;
        return NULL;
    }

    pthread_mutex_lock(&inst->mr_lock);
    for (index = 1; index < SN_MAX_MR; ++index) {
        if (inst->mrs[index].key == 0) {
            break;
        }
    }
    if (index == SN_MAX_MR) {
        pthread_mutex_unlock(&inst->mr_lock);
        free(mr);
        errno = ENOMEM;
        return NULL;
    }
    gen = ++inst->mr_gen[index];
    if (gen == 0) {
        gen = ++inst->mr_gen[index];
    }
    key = ((uint32_t)gen << SN_KEY_INDEX_BITS) | index;
    __atomic_store_n(&inst->mrs[index].users, 0, __ATOMIC_RELAXED);
    sn_mr_entry_write(&inst->mrs[index], key, (uintptr_t)addr, length, access,
                      ((sn_pd_t *)pd)->pdn);
    pthread_mutex_unlock(&inst->mr_lock);

    mr->super.pd     = pd;
    mr->super.addr   = addr;
    mr->super.length = length;
    mr->super.access = access;
    mr->super.lkey   = key;
    mr->super.rkey   = key;
    mr->index        = (int)index;
    return &mr->super;
}

int softnic_mr_dereg(softnic_mr_t *mr)
{
    sn_inst_t *inst = sn_inst(mr->pd->dev);
    sn_mr_t *smr    = (sn_mr_t *)mr;
    uint64_t start;

    pthread_mutex_lock(&inst->mr_lock);
    if (SN_RULE_RKEY_INVAL) {
        sn_mr_entry_write(&inst->mrs[smr->index], 0, 0, 0, 0, 0);
    }
    pthread_mutex_unlock(&inst->mr_lock);

    /* the service thread may be inside one syscall/memcpy on this region,
     * same-host initiators inside one CMA copy */
    while (__atomic_load_n(&inst->busy_mr, __ATOMIC_SEQ_CST) == smr->index) {
        sched_yield();
    }
    start = sn_now_ns();
    while (__atomic_load_n(&inst->mrs[smr->index].users, __ATOMIC_SEQ_CST)) {
        if (sn_now_ns() - start > 2000000000ull) {
            sn_log(inst, SOFTNIC_LOG_WARN,
                   "mr key 0x%x: a peer left a copy "
                   "unfinished (killed?), deregistering anyway",
                   mr->lkey);
            break;
        }
        sched_yield();
    }
    free(smr);
    return 0;
}
