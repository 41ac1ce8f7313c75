/**
 * \file counters.c
 * \brief The device counters (sim_counters.h): per-launch records of global bytes by access width,
 *        distinct bytes, and the totals of a counted interval.
 *
 * **Distinct bytes** are tracked per allocation in 64-byte lines: each line keeps a 64-bit mask
 * of the bytes touched by the current record and one of the bytes read in the current interval,
 * each tagged with the epoch (record number, interval number) it belongs to, so starting a new
 * record or interval clears nothing: a line whose epoch is old counts as empty. The line tables
 * are allocated with calloc when an allocation is first touched while counting, so only the
 * pages of lines actually touched are committed.
 */
#include "sim_internal.h"
#include "sim_counters.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/** Distinct-byte state of one 64-byte line of an allocation. */
typedef struct {
    uint32_t record_epoch; /**< record whose bytes record_mask holds */
    uint32_t step_epoch;   /**< interval whose reads step_mask holds */
    uint64_t record_mask;  /**< bytes touched by that record */
    uint64_t step_mask;    /**< bytes read in that interval */
} Line;

/** Counting state of one device allocation. */
typedef struct Tracker {
    const char *base;                               /**< allocation start */
    size_t size;                                    /**< its bytes */
    Line *lines;                                    /**< ceil(size / 64) lines */
    uint32_t step_seen;                             /**< interval the step_* fields belong to */
    int written;                                    /**< written in that interval */
    unsigned long long step_read, step_distinct;    /**< bytes read, distinct bytes read in it */
    unsigned long long step_read_width[SIM_WIDTHS]; /**< step_read by width class */
} Tracker;

/** Distinct stage counters remembered per kernel (more are counted without telling them apart). */
#define SIM_MAX_STAGES 16

static struct {
    int active; /**< between start and stop */
    uint32_t step_epoch, record_epoch;
    SimLaunchRecord *records;
    size_t nrecords, cap;
    SimLaunchRecord *cur; /**< record being filled (NULL outside one) */
    Tracker **table;      /**< open addressing by base */
    size_t table_cap, ntrackers;
    Tracker *last;   /**< tracker of the most recent access */
    int graph_depth; /**< > 0 while a graph replays */
    SimStepCounters totals;
    uint64_t seq_start;                /**< operations queued (sim_machine.next_seq) when the interval began */
    uint64_t sync_seq;                 /**< operations queued at the latest synchronisation */
    unsigned long long after;          /**< synchronisations with an operation of the interval queued before them */
    unsigned long long run;            /**< synchronisations in a row at sync_seq */
    const void *stage[SIM_MAX_STAGES]; /**< stage counters the current kernel has waited on */
    int nstage;
} C;

/* ---- trackers --------------------------------------------------------------------------- */

static size_t slot_of(const void *base, size_t cap)
{
    return ((uintptr_t)base >> 8) * 0x9E3779B97F4A7C15ull % cap;
}

static void table_grow(void)
{
    size_t cap = C.table_cap ? 2 * C.table_cap : 1024;
    Tracker **t = calloc(cap, sizeof *t);
    if (!t) {
        fprintf(stderr, "sim: out of host memory for the counters\n");
        abort();
    }
    for (size_t i = 0; i < C.table_cap; i++) {
        if (!C.table[i]) continue;
        size_t s = slot_of(C.table[i]->base, cap);
        while (t[s]) s = (s + 1) % cap;
        t[s] = C.table[i];
    }
    free(C.table);
    C.table = t;
    C.table_cap = cap;
}

/** The tracker of allocation a, made (or remade, when a freed allocation's base was reused) on demand. */
static Tracker *tracker_for(const SimAlloc *a)
{
    if (2 * (C.ntrackers + 1) > C.table_cap) table_grow();
    size_t s = slot_of(a->base, C.table_cap);
    while (C.table[s] && C.table[s]->base != a->base) s = (s + 1) % C.table_cap;
    Tracker *t = C.table[s];
    if (!t || t->size != a->size) { /* new, or its base now holds another allocation: start afresh in place */
        if (!t && (t = C.table[s] = calloc(1, sizeof *t)) != NULL) C.ntrackers++;
        if (t) {
            free(t->lines);
            memset(t, 0, sizeof *t);
        }
        if (!t || !(t->lines = calloc(a->size / 64 + 1, sizeof *t->lines))) {
            fprintf(stderr, "sim: out of host memory for the counters of a %zu-byte allocation\n", a->size);
            abort();
        }
        t->base = a->base;
        t->size = a->size;
    }
    if (t->step_seen != C.step_epoch) {
        t->step_seen = C.step_epoch;
        t->written = 0;
        t->step_read = t->step_distinct = 0;
        memset(t->step_read_width, 0, sizeof t->step_read_width);
    }
    return t;
}

void sim_count_forget(const void *base)
{
    if (!C.table_cap) return;
    for (size_t s = slot_of(base, C.table_cap); C.table[s]; s = (s + 1) % C.table_cap) {
        Tracker *t = C.table[s];
        if (t->base == base) { /* keeps its interval totals; its line table goes with the memory */
            free(t->lines);
            t->lines = NULL;
            t->size = 0;
            C.last = NULL;
            return;
        }
    }
}

/** Marks [off, off + len) of t as touched by the current record (and read in the interval unless write). */
static void mark(Tracker *t, size_t off, size_t len, int write)
{
    size_t end = off + len;
    while (off < end) {
        size_t line = off / 64, lo = off % 64, hi = end - line * 64 < 64 ? end - line * 64 : 64;
        uint64_t bits = (hi - lo == 64 ? ~0ull : ((1ull << (hi - lo)) - 1)) << lo;
        Line *L = &t->lines[line];
        if (L->record_epoch != C.record_epoch) {
            L->record_epoch = C.record_epoch;
            L->record_mask = 0;
        }
        C.cur->distinct += (unsigned long long)__builtin_popcountll(bits & ~L->record_mask);
        L->record_mask |= bits;
        if (!write) {
            if (L->step_epoch != C.step_epoch) {
                L->step_epoch = C.step_epoch;
                L->step_mask = 0;
            }
            t->step_distinct += (unsigned long long)__builtin_popcountll(bits & ~L->step_mask);
            L->step_mask |= bits;
        }
        off = line * 64 + hi;
    }
}

/** Width class of an access of size bytes. */
static int width_class(size_t size)
{
    switch (size) {
    case 1: return 0;
    case 2: return 1;
    case 4: return 2;
    case 8: return 3;
    case 16: return 4;
    default: return 5;
    }
}

static void count(const void *p, size_t size, int cls, int write)
{
    const char *c = p;
    Tracker *t = C.last;
    if (!t || c < t->base || c >= t->base + t->size) {
        const SimAlloc *a = sim_find_alloc(p);
        if (!a || a->device < 0 || c >= a->base + a->size)
            return; /* not device memory: shared memory, stack, pinned or pageable host memory */
        t = C.last = tracker_for(a);
    }
    size_t off = (size_t)(c - t->base);
    if (size > t->size - off) size = t->size - off;
    if (write) {
        C.cur->written[cls] += size;
        t->written = 1;
    } else {
        C.cur->read[cls] += size;
        t->step_read += size;
        t->step_read_width[cls] += size;
    }
    mark(t, off, size, write);
}

void sim_count_access(const void *p, size_t size, int write)
{
    if (C.cur && C.cur->kind == SIM_REC_KERNEL) count(p, size, width_class(size), write);
}

void sim_count_range(const void *p, size_t bytes, int write)
{
    if (C.cur && bytes) count(p, bytes, 4, write);
}

/* ---- records and totals ----------------------------------------------------------------- */

void sim_count_begin(SimRecordKind kind, const char *name, int device, const void *stream, dim3 grid, dim3 block)
{
    if (!C.active) return;
    if (C.nrecords == C.cap) {
        size_t cap = C.cap ? 2 * C.cap : 256;
        SimLaunchRecord *r = realloc(C.records, cap * sizeof *r);
        if (!r) {
            fprintf(stderr, "sim: out of host memory for the counters\n");
            abort();
        }
        C.records = r;
        C.cap = cap;
    }
    SimLaunchRecord *r = C.cur = &C.records[C.nrecords++];
    memset(r, 0, sizeof *r);
    snprintf(r->name, sizeof r->name, "%s", name);
    r->kind = kind;
    r->device = device;
    r->stream = stream;
    r->grid = grid;
    r->block = block;
    r->in_graph = C.graph_depth > 0;
    C.record_epoch++;
    C.last = NULL; /* allocations may have changed since the last record */
    switch (kind) {
    case SIM_REC_KERNEL: C.totals.kernels++; break;
    case SIM_REC_GEMM: C.totals.gemms++; break;
    case SIM_REC_COPY: C.totals.copies++; break;
    case SIM_REC_FILL: C.totals.fills++; break;
    }
}

void sim_count_end(void)
{
    C.cur = NULL;
    C.nstage = 0;
}

void sim_count_stage(const void *counter)
{
    if (!C.cur) return;
    for (int i = 0; i < C.nstage; i++)
        if (C.stage[i] == counter) return;
    if (C.nstage < SIM_MAX_STAGES) C.stage[C.nstage++] = counter;
    C.cur->stages++;
}

void sim_count_copy(void *dst, const void *src, size_t bytes, int device, const void *stream)
{
    if (!C.active || !bytes) return;
    const SimAlloc *d = sim_find_alloc(dst), *s = sim_find_alloc(src);
    int dd = d && d->device >= 0, sd = s && s->device >= 0;
    if (dd && sd)
        C.totals.d2d_bytes += bytes;
    else if (dd)
        C.totals.h2d_bytes += bytes;
    else if (sd)
        C.totals.d2h_bytes += bytes;
    dim3 one = { 1, 1, 1 };
    sim_count_begin(SIM_REC_COPY, "memcpy", device, stream, one, one);
    sim_count_range(src, bytes, 0);
    sim_count_range(dst, bytes, 1);
    sim_count_end();
}

void sim_count_fill(void *dst, size_t bytes, int device, const void *stream)
{
    dim3 one = { 1, 1, 1 };
    sim_count_begin(SIM_REC_FILL, "memset", device, stream, one, one);
    sim_count_range(dst, bytes, 1);
    sim_count_end();
}

void sim_count_sync(void)
{
    if (!C.active) return;
    C.totals.host_syncs++;
    const uint64_t seq = sim_machine.next_seq;
    C.run = seq == C.sync_seq ? C.run + 1 : 1;
    C.sync_seq = seq;
    if (seq > C.seq_start) C.after++;
}

void sim_count_graph(int delta)
{
    if (C.active && delta > 0) C.totals.graph_launches++;
    C.graph_depth += delta;
}

void sim_count_in_graph(int delta)
{
    C.graph_depth += delta;
}

void sim_count_nccl(int from, int to, size_t bytes)
{
    if (C.active && from >= 0 && from < 8 && to >= 0 && to < 8) C.totals.nccl_bytes[from][to] += bytes;
}

void sim_count_alloc(int device, size_t allocated)
{
    if (C.active && device >= 0 && device < 8 && allocated > C.totals.high_water[device])
        C.totals.high_water[device] = allocated;
}

void sim_counters_start(void)
{
    sim_init();
    memset(&C.totals, 0, sizeof C.totals);
    for (int d = 0; d < sim_machine.count && d < 8; d++) C.totals.high_water[d] = sim_machine.dev[d].allocated;
    C.nrecords = 0;
    C.cur = NULL;
    C.last = NULL;
    C.step_epoch++;
    C.seq_start = C.sync_seq = sim_machine.next_seq;
    C.after = C.run = 0;
    C.active = 1;
}

unsigned long long sim_counters_sum(const unsigned long long v[SIM_WIDTHS])
{
    unsigned long long s = 0;
    for (int w = 0; w < SIM_WIDTHS; w++) s += v[w];
    return s;
}

void sim_counters_stop(SimStepCounters *out)
{
    C.active = 0;
    C.totals.queued = sim_machine.next_seq - C.seq_start;
    /* inside: after the first queued operation and before the last (none queued after them) */
    const int at_end = C.sync_seq == sim_machine.next_seq && C.sync_seq > C.seq_start;
    C.totals.host_syncs_inside = C.after - (at_end ? C.run : 0);
    C.cur = NULL;
    for (size_t i = 0; i < C.nrecords; i++)
        for (int w = 0; w < SIM_WIDTHS; w++) {
            C.totals.read[w] += C.records[i].read[w];
            C.totals.written[w] += C.records[i].written[w];
        }
    for (size_t i = 0; i < C.table_cap; i++) {
        const Tracker *t = C.table[i];
        if (!t || t->step_seen != C.step_epoch) continue;
        C.totals.distinct_read += t->step_distinct;
        if (t->written) continue;
        C.totals.ro_read += t->step_read;
        C.totals.ro_distinct += t->step_distinct;
        for (int w = 0; w < SIM_WIDTHS; w++) C.totals.ro_read_width[w] += t->step_read_width[w];
    }
    *out = C.totals;
}

const SimLaunchRecord *sim_counters_records(size_t *n)
{
    *n = C.nrecords;
    return C.records;
}

void sim_counters_alloc_reads(const void *p, unsigned long long *read, unsigned long long *distinct)
{
    *read = *distinct = 0;
    const SimAlloc *a = sim_find_alloc(p);
    if (!a || !C.table_cap) return;
    for (size_t s = slot_of(a->base, C.table_cap); C.table[s]; s = (s + 1) % C.table_cap) {
        const Tracker *t = C.table[s];
        if (t->base == a->base && t->size == a->size && t->step_seen == C.step_epoch) {
            *read = t->step_read;
            *distinct = t->step_distinct;
        }
        if (t->base == a->base) return;
    }
}
