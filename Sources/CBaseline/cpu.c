// CBaseline: CPU placement for `uds bench` (see include/CBaseline.h).
#define _GNU_SOURCE
#include "CBaseline.h"

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#ifdef __linux__
#include <dirent.h>
#include <sched.h>

/// The calling thread's affinity mask, sized for however many CPUs the kernel knows.
/// On success *set is CPU_ALLOC'ed (CPU_FREE it) and *setsize/*ncpus describe it.
static int get_affinity(cpu_set_t **set, size_t *setsize, int *ncpus) {
    long conf = sysconf(_SC_NPROCESSORS_CONF);
    int n = conf > 1024 ? (int)conf : 1024;
    for (;;) {
        cpu_set_t *s = CPU_ALLOC(n);
        if (s == NULL) return -ENOMEM;
        size_t size = CPU_ALLOC_SIZE(n);
        CPU_ZERO_S(size, s);
        if (sched_getaffinity(0, size, s) == 0) {
            *set = s;
            *setsize = size;
            *ncpus = n;
            return 0;
        }
        int err = errno;
        CPU_FREE(s);
        // EINVAL: the kernel's mask is bigger than ours; retry with a bigger one.
        if (err != EINVAL || n >= (1 << 22)) return err > 0 ? -err : -EIO;
        n *= 2;
    }
}

int cb_cpu_count(void) {
    cpu_set_t *set;
    size_t size;
    int n;
    int rc = get_affinity(&set, &size, &n);
    if (rc) return rc;
    int count = CPU_COUNT_S(size, set);
    CPU_FREE(set);
    return count > 0 ? count : -EINVAL;
}

int cb_allowed_cpu(int index) {
    if (index < 0) return -EINVAL;
    cpu_set_t *set;
    size_t size;
    int n;
    int rc = get_affinity(&set, &size, &n);
    if (rc) return rc;
    int result = -EINVAL;
    for (int cpu = 0; cpu < n; cpu++) {
        if (CPU_ISSET_S(cpu, size, set) && index-- == 0) {
            result = cpu;
            break;
        }
    }
    CPU_FREE(set);
    return result;
}

int cb_pin_to_cpu(int cpu) {
    if (cpu < 0 || cpu >= (1 << 22)) return -EINVAL;
    cpu_set_t *set = CPU_ALLOC(cpu + 1);
    if (set == NULL) return -ENOMEM;
    size_t size = CPU_ALLOC_SIZE(cpu + 1);
    CPU_ZERO_S(size, set);
    CPU_SET_S(cpu, size, set);
    int rc = sched_setaffinity(0, size, set) == 0 ? 0 : (errno > 0 ? -errno : -EIO);
    CPU_FREE(set);
    return rc;
}

int cb_pin_process_to_cpu(int cpu) {
    int rc = cb_pin_to_cpu(cpu);  // the calling thread first: threads it creates inherit the mask
    if (rc) return rc;
    cpu_set_t *set = CPU_ALLOC(cpu + 1);
    if (set == NULL) return -ENOMEM;
    size_t size = CPU_ALLOC_SIZE(cpu + 1);
    CPU_ZERO_S(size, set);
    CPU_SET_S(cpu, size, set);
    DIR *tasks = opendir("/proc/self/task");
    if (tasks == NULL) {
        rc = errno > 0 ? -errno : -EIO;
        CPU_FREE(set);
        return rc;
    }
    struct dirent *entry;
    while ((entry = readdir(tasks)) != NULL) {
        if (entry->d_name[0] < '0' || entry->d_name[0] > '9') continue;
        pid_t tid = (pid_t)strtol(entry->d_name, NULL, 10);
        // A thread that exited meanwhile (ESRCH) needs no pinning.
        if (sched_setaffinity(tid, size, set) != 0 && errno != ESRCH) {
            rc = errno > 0 ? -errno : -EIO;
            break;
        }
    }
    closedir(tasks);
    CPU_FREE(set);
    return rc;
}

#else // !__linux__

int cb_pin_process_to_cpu(int cpu) {
    (void)cpu;
    return -ENOSYS;
}

int cb_cpu_count(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) return n < 0 && errno > 0 ? -errno : 1;
    return n > 1 << 22 ? 1 << 22 : (int)n;
}

int cb_allowed_cpu(int index) {
    int count = cb_cpu_count();
    if (count < 0) return count;
    return index >= 0 && index < count ? index : -EINVAL;
}

int cb_pin_to_cpu(int cpu) {
    (void)cpu;
    return -ENOSYS;
}

#endif
