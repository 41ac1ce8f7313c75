/**
 * \file memory.c
 * \brief The simulated runtime's memory: the allocation table, cudaMalloc/cudaFree, pinned host memory.
 *
 * Device memory is host memory from posix_memalign recorded in an
 * allocation table (sorted by address), so every pointer can be classified:
 * device memory of device d, pinned host memory (cudaMallocHost), or
 * pageable host memory (anything else). Copies, fills, kernel arguments and
 * library calls are checked against the table. SIM_FAIL_MALLOC=N makes the
 * N-th cudaMalloc fail, for the fault sweeps.
 */
#include "sim_internal.h"
#include "sim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------ */
/* allocation table                                                                            */

/** Index of the first allocation whose base is greater than p. */
static size_t upper_bound(const void *p)
{
    size_t lo = 0, hi = sim_machine.nallocs;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if ((const char *)p < sim_machine.allocs[mid].base)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

const SimAlloc *sim_find_alloc(const void *p)
{
    size_t i = upper_bound(p);
    if (i == 0 || !p) return NULL;
    const SimAlloc *a = &sim_machine.allocs[i - 1];
    return (const char *)p <= a->base + a->size ? a : NULL;
}

static int table_insert(char *base, size_t size, int device)
{
    if (sim_machine.nallocs == sim_machine.cap_allocs) {
        size_t cap = sim_machine.cap_allocs ? 2 * sim_machine.cap_allocs : 64;
        SimAlloc *grown = realloc(sim_machine.allocs, cap * sizeof *grown);
        if (!grown) return -1;
        sim_machine.allocs = grown;
        sim_machine.cap_allocs = cap;
    }
    size_t i = upper_bound(base);
    memmove(&sim_machine.allocs[i + 1], &sim_machine.allocs[i], (sim_machine.nallocs - i) * sizeof *sim_machine.allocs);
    sim_machine.allocs[i] = (SimAlloc){ base, size, device };
    sim_machine.nallocs++;
    return 0;
}

/** Removes the allocation starting exactly at p; returns its device, or -2 when there is none. */
static int table_remove(const void *p, int want_pinned)
{
    size_t i = upper_bound(p);
    if (i == 0 || sim_machine.allocs[i - 1].base != (const char *)p ||
        (sim_machine.allocs[i - 1].device < 0) != want_pinned)
        return -2;
    int dev = sim_machine.allocs[i - 1].device;
    if (dev >= 0) sim_machine.dev[dev].allocated -= sim_machine.allocs[i - 1].size;
    memmove(&sim_machine.allocs[i - 1], &sim_machine.allocs[i], (sim_machine.nallocs - i) * sizeof *sim_machine.allocs);
    sim_machine.nallocs--;
    return dev;
}

void sim_alloc_stats(unsigned long long *calls, unsigned long long *live, unsigned long long *bytes)
{
    *calls = (unsigned long long)sim_machine.malloc_calls;
    *live = *bytes = 0;
    for (size_t i = 0; i < sim_machine.nallocs; i++)
        if (sim_machine.allocs[i].device >= 0) {
            ++*live;
            *bytes += sim_machine.allocs[i].size;
        }
}

const char *sim_describe_pointer(const void *p, char *buf, size_t n)
{
    const SimAlloc *a = sim_find_alloc(p);
    if (!p)
        snprintf(buf, n, "NULL");
    else if (!a)
        snprintf(buf, n, "%p (host memory, not from cudaMalloc)", p);
    else if (a->device < 0)
        snprintf(buf, n, "%p (pinned host memory)", p);
    else
        snprintf(buf, n, "%p (device %d memory)", p, a->device);
    return buf;
}

int sim_device_range_ok(const void *p, size_t bytes, int dev, char *why, size_t n)
{
    char where[128];
    const SimAlloc *a = sim_find_alloc(p);
    if (!a || a->device < 0 || (dev >= 0 && a->device != dev)) {
        char want[32] = "device";
        if (dev >= 0) snprintf(want, sizeof want, "device %d", dev);
        snprintf(why, n, "%s, want %s memory", sim_describe_pointer(p, where, sizeof where), want);
        return 0;
    }
    size_t off = (size_t)((const char *)p - a->base);
    if (bytes > a->size - off) {
        snprintf(why, n, "%zu bytes at offset %zu overrun the %zu-byte allocation at %p", bytes, off, a->size,
                 (void *)a->base);
        return 0;
    }
    return 1;
}

cudaError_t sim_check_device_range(const char *call, const char *what, const void *p, size_t bytes, int dev)
{
    char why[256];
    if (sim_device_range_ok(p, bytes, dev, why, sizeof why)) return cudaSuccess;
    const SimAlloc *a = sim_find_alloc(p);
    return sim_error(a && a->device >= 0 && (dev < 0 || a->device == dev) ? cudaErrorInvalidValue
                                                                          : cudaErrorInvalidDevicePointer,
                     "%s: %s is %s", call, what, why);
}

cudaError_t cudaMalloc(void **ptr, size_t size)
{
    cudaError_t e = sim_need_device("cudaMalloc");
    if (e) return e;
    if (!ptr) return sim_error(cudaErrorInvalidValue, "cudaMalloc: ptr is NULL");
    if ((e = sim_unsafe_in_capture("cudaMalloc"))) return e;
    sim_machine.malloc_calls++;
    if (sim_machine.fail_malloc_at && sim_machine.malloc_calls == sim_machine.fail_malloc_at)
        return sim_error(cudaErrorMemoryAllocation, "cudaMalloc(%zu bytes): call %ld fails (SIM_FAIL_MALLOC)", size,
                         sim_machine.malloc_calls);
    *ptr = NULL;
    if (size == 0) return cudaSuccess;
    SimDevice *d = &sim_machine.dev[sim_current_device()];
    void *p = NULL;
    if (size > SIM_DEVICE_MEMORY - d->allocated || posix_memalign(&p, 256, size) != 0 ||
        table_insert(p, size, sim_current_device()) != 0) {
        free(p);
        return sim_error(cudaErrorMemoryAllocation, "cudaMalloc(%zu bytes) on device %d failed", size,
                         sim_current_device());
    }
    d->allocated += size;
    sim_count_alloc(sim_current_device(), d->allocated);
    *ptr = p;
    return cudaSuccess;
}

/* Shared by cudaFree and cudaFreeHost: finish queued work, then release ptr if the table
 * holds it as the right kind of allocation (pinned host memory or device memory). */
static cudaError_t release(void *ptr, int pinned, const char *call, const char *not_ours)
{
    cudaError_t e = sim_need_device(call);
    if (e || !ptr || (e = sim_unsafe_in_capture(call))) return e;
    sim_count_sync();
    sim_drain_all();
    if (table_remove(ptr, pinned) == -2) {
        char where[128];
        return sim_error(cudaErrorInvalidValue, "%s: %s %s", call, sim_describe_pointer(ptr, where, sizeof where),
                         not_ours);
    }
    sim_count_forget(ptr);
    free(ptr);
    return cudaSuccess;
}

cudaError_t cudaFree(void *ptr)
{
    return release(ptr, 0, "cudaFree", "is not the start of a live device allocation");
}

cudaError_t cudaMallocHost(void **ptr, size_t size)
{
    cudaError_t e = sim_need_device("cudaMallocHost");
    if (e) return e;
    if (!ptr) return sim_error(cudaErrorInvalidValue, "cudaMallocHost: ptr is NULL");
    if ((e = sim_unsafe_in_capture("cudaMallocHost"))) return e;
    void *p = NULL;
    if (posix_memalign(&p, 256, size ? size : 1) != 0 || table_insert(p, size, -1) != 0) {
        free(p);
        return sim_error(cudaErrorMemoryAllocation, "cudaMallocHost(%zu bytes) failed", size);
    }
    *ptr = p;
    return cudaSuccess;
}

cudaError_t cudaFreeHost(void *ptr)
{
    return release(ptr, 1, "cudaFreeHost", "is not from cudaMallocHost");
}

cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes)
{
    cudaError_t e = sim_need_device("cudaMemGetInfo");
    if (e) return e;
    if (!free_bytes || !total_bytes) return sim_error(cudaErrorInvalidValue, "cudaMemGetInfo: NULL argument");
    *total_bytes = SIM_DEVICE_MEMORY;
    *free_bytes = SIM_DEVICE_MEMORY - sim_machine.dev[sim_current_device()].allocated;
    return cudaSuccess;
}

void sim_free_device_allocations(int dev)
{
    for (size_t i = sim_machine.nallocs; i-- > 0;) {
        if (sim_machine.allocs[i].device == dev) {
            char *base = sim_machine.allocs[i].base;
            table_remove(base, 0);
            free(base);
        }
    }
}
