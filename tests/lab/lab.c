/**
 * \file lab.c
 * \brief The kernel lab's harness: main, shape bookkeeping, comparison, verdict, errors named by argument.
 */
#include "lab.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef LAB_GPU
#include "sim.h"
#endif

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

#define LAB_MAX_ARGS   16
#define LAB_MAX_ALLOCS 32
#define LAB_MAX_SHAPES 64
#define LAB_MAX_SEEDS  16

/*
 * The seeds a run draws its inputs from unless --seeds names others: fixed, so
 * that a kernel's verdict is the same on every run and every machine.
 */
static const unsigned long long lab_fixed_seeds[] = { 1, 2, 3 };

TestRng lab_rng;
LabOptions lab_options;

/** One registered launcher argument. */
typedef struct {
    const char *name;
    const char *base;
    size_t bytes, elem;
    char dim_names[64];
    int rank, dims[4];
} LabArg;

/** The shape being run and the run's totals. */
static struct {
    char name[96];
    char trimmed[96]; /* the name without its padding, for sentences */
    LabArg args[LAB_MAX_ARGS];
    int n_args;
    void *allocs[LAB_MAX_ALLOCS];
    int n_allocs;
    char figures[512];                 /* the comparisons' figures, printed on the shape's line */
    char diagnosis[1024];              /* the first failure of the shape, empty when it passes */
    char category[32];                 /* its kind: numerical mismatch, race, ... */
    unsigned long long seed;           /* the seed being run */
    int shape, failed_here;            /* the shape's index within the suite; failures at this seed */
    bool shape_failed[LAB_MAX_SHAPES]; /* by index: failed at some seed */
    int shapes, failed;                /* shapes in the suite; shapes failed at some seed */
    char first_failure[1200];
    char categories[256]; /* distinct kinds seen, comma-separated */
} lab;

/* ---- arguments ------------------------------------------------------------------------------ */

void lab_shape_begin(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(lab.name, sizeof lab.name, fmt, ap);
    va_end(ap);
    snprintf(lab.trimmed, sizeof lab.trimmed, "%s", lab.name);
    for (size_t n = strlen(lab.trimmed); n > 0 && lab.trimmed[n - 1] == ' '; n--) lab.trimmed[n - 1] = '\0';
    lab.n_args = 0;
    lab.figures[0] = lab.diagnosis[0] = lab.category[0] = '\0';
}

void lab_arg(const char *name, const void *ptr, size_t bytes, size_t elem, const char *dim_names, int rank,
             const int *dims)
{
    if (lab.n_args == LAB_MAX_ARGS) return;
    LabArg *a = &lab.args[lab.n_args++];
    a->name = name;
    a->base = ptr;
    a->bytes = bytes;
    a->elem = elem;
    snprintf(a->dim_names, sizeof a->dim_names, "%s", dim_names);
    a->rank = rank;
    for (int i = 0; i < rank && i < 4; i++) a->dims[i] = dims[i];
}

#if defined(__SANITIZE_ADDRESS__)
/* "[T, n] = [3, 37]" for an argument. */
static void layout(const LabArg *a, char *out, size_t size)
{
    int n = snprintf(out, size, "[%s] = [", a->dim_names);
    for (int i = 0; i < a->rank && n < (int)size; i++)
        n += snprintf(out + n, size - (size_t)n, i ? ", %d" : "%d", a->dims[i]);
    if (n < (int)size) snprintf(out + n, size - (size_t)n, "]");
}
#endif

/* Element index → "y[t=2, i=17]" with the argument's dimension names. */
static void element(const LabArg *a, size_t index, char *out, size_t size)
{
    char names[64];
    snprintf(names, sizeof names, "%s", a->dim_names);
    const char *dim[4] = { "", "", "", "" };
    char *save = NULL, *tok = strtok_r(names, ",", &save);
    for (int i = 0; tok && i < 4; i++, tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ') tok++;
        dim[i] = tok;
    }
    size_t coord[4] = { 0, 0, 0, 0 }, rest = index;
    for (int i = a->rank - 1; i >= 0; i--) {
        coord[i] = rest % (size_t)a->dims[i];
        rest /= (size_t)a->dims[i];
    }
    int n = snprintf(out, size, "%s[", a->name);
    for (int i = 0; i < a->rank && n < (int)size; i++)
        n += snprintf(out + n, size - (size_t)n, "%s%s=%zu", i ? ", " : "", dim[i], coord[i]);
    if (n < (int)size) snprintf(out + n, size - (size_t)n, "]");
}

#if !defined(LAB_GPU) || defined(__SANITIZE_ADDRESS__)
/* The registered argument at or next to address p (within 4 KiB past its end), or NULL. */
static const LabArg *arg_near(const void *p, long long *offset)
{
    const char *c = p;
    const LabArg *best = NULL;
    for (int i = 0; i < lab.n_args; i++) {
        const LabArg *a = &lab.args[i];
        if (c >= a->base && c < a->base + a->bytes + 4096 && (!best || a->base > best->base)) best = a;
    }
    if (best) *offset = (long long)(c - best->base);
    return best;
}
#endif

/* The argument names of the shape, "y, x, w". */
static void arg_list(char *out, size_t size)
{
    int n = 0;
    out[0] = '\0';
    for (int i = 0; i < lab.n_args && n < (int)size; i++)
        n += snprintf(out + n, size - (size_t)n, i ? ", %s" : "%s", lab.args[i].name);
}

/* ---- device memory -------------------------------------------------------------------------- */

void *lab_device(const void *host, size_t bytes)
{
    void *d = NULL;
    if (cudaMalloc(&d, bytes) != cudaSuccess) {
        fprintf(stderr, "lab: cudaMalloc(%zu) failed: %s\n", bytes, cudaGetErrorString(cudaGetLastError()));
        exit(2);
    }
    const cudaError_t e = host ? cudaMemcpy(d, host, bytes, cudaMemcpyHostToDevice) : cudaMemset(d, 0xff, bytes);
    if (e != cudaSuccess) {
        fprintf(stderr, "lab: filling %zu device bytes failed: %s\n", bytes, cudaGetErrorString(e));
        exit(2);
    }
    if (lab.n_allocs < LAB_MAX_ALLOCS) lab.allocs[lab.n_allocs++] = d;
    return d;
}

void lab_host(void *host, const void *dev, size_t bytes)
{
    if (cudaMemcpy(host, dev, bytes, cudaMemcpyDeviceToHost) != cudaSuccess)
        memset(host, 0xff, bytes); /* a failed copy reads as NaN: the diagnosis is already recorded */
}

void lab_free_all(void)
{
    for (int i = 0; i < lab.n_allocs; i++) cudaFree(lab.allocs[i]);
    lab.n_allocs = 0;
}

/* ---- failures ------------------------------------------------------------------------------- */

/* Records the shape's first failure, of kind category. */
static void record(const char *category, const char *fmt, va_list ap)
{
    if (lab.diagnosis[0]) return;
    snprintf(lab.category, sizeof lab.category, "%s", category);
    vsnprintf(lab.diagnosis, sizeof lab.diagnosis, fmt, ap);
}

static void fail_as(const char *category, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail_as(const char *category, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    record(category, fmt, ap);
    va_end(ap);
}

void lab_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    record("wrong result", fmt, ap);
    va_end(ap);
}

/* Turns the runtime's error (and, on sim/, its detail sentence) into a diagnosis in the contract's terms. */
static void diagnose_error(cudaError_t err, const char *when)
{
    char args[256];
    arg_list(args, sizeof args);
#ifdef LAB_GPU
    fail_as("cuda error", "%s: %s (%s)", when, cudaGetErrorName(err), cudaGetErrorString(err));
#else
    const char *detail = sim_last_detail();
    const char *at;
    void *p = NULL;
    size_t byte = 0, size = 0;
    long long off = 0;
    int index = -1;
    char kernel[128] = "?";
    sscanf(detail, "kernel %127[^:]", kernel);
    if ((at = strstr(detail, "race-check: kernel ")) != NULL) {
        char order[16] = "another";
        sscanf(at, "race-check: kernel %127[^:]", kernel);
        const char *b = strstr(at, "result depends on thread order: byte ");
        const char *o = strstr(at, "between forward and ");
        if (o) sscanf(o, "between forward and %15s", order);
        if (b && sscanf(b, "result depends on thread order: byte %zu of the %zu-byte allocation at %p", &byte, &size,
                        &p) == 3) {
            const LabArg *a = arg_near((const char *)p + byte, &off);
            char where[160];
            if (a && off < (long long)a->bytes)
                element(a, (size_t)off / a->elem, where, sizeof where);
            else
                snprintf(where, sizeof where, "byte %zu of a %zu-byte allocation that is not a contract argument", byte,
                         size);
            fail_as("race",
                    "%s's result depends on the order of its threads: %s differs between forward and %s "
                    "thread order (a shared-memory value read before another thread wrote it: a missing "
                    "__syncthreads()?)",
                    kernel, where, order);
            return;
        }
    }
    if ((at = strstr(detail, ": argument ")) != NULL && sscanf(at, ": argument %d (%p)", &index, &p) == 2 &&
        strstr(detail, "is host memory")) {
        fail_as("host pointer",
                "kernel %s: its argument %d (%p) is host memory; every pointer a kernel receives "
                "must be device memory (the contract's pointers %s are)",
                kernel, index, p, args);
        return;
    }
    if (strstr(detail, "limits are block") || strstr(detail, "dynamic shared memory")) {
        const char *what = strstr(detail, ": ") ? strstr(detail, ": ") + 2 : detail;
        fail_as("launch limits", "the launch of kernel %s breaks a launch limit: %s", kernel, what);
        return;
    }
    if (strstr(detail, "exited while") || strstr(detail, "barrier") || strstr(detail, "warp")) {
        fail_as("fault", "%s: %s", when, detail);
        return;
    }
    fail_as("cuda error", "%s: %s: %s", when, cudaGetErrorName(err), detail[0] ? detail : cudaGetErrorString(err));
#endif
}

bool lab_call(cudaError_t launched)
{
    if (launched == cudaSuccess) return true;
    char what[160];
    snprintf(what, sizeof what, "%s returned", lab_component.launcher);
    diagnose_error(launched, what);
    cudaGetLastError();
    return false;
}

bool lab_sync(void)
{
    const cudaError_t err = cudaDeviceSynchronize();
    if (err == cudaSuccess) return true;
    diagnose_error(err, "at cudaDeviceSynchronize after the launch");
    cudaDeviceReset(); /* the error is sticky: the next shape starts on a fresh device */
    lab.n_allocs = 0;
    return false;
}

/* ---- comparison ----------------------------------------------------------------------------- */

static void add_figures(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void add_figures(const char *fmt, ...)
{
    const size_t n = strlen(lab.figures);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(lab.figures + n, sizeof lab.figures - n, fmt, ap);
    va_end(ap);
}

static const LabArg *find_arg(const char *name)
{
    for (int i = 0; i < lab.n_args; i++)
        if (strcmp(lab.args[i].name, name) == 0) return &lab.args[i];
    return NULL;
}

/* "o_lat[t=0, h=2, c=17]" or "o_lat[17]" when the argument was not registered. */
static void name_element(const char *arg, size_t i, char *out, size_t size)
{
    const LabArg *a = find_arg(arg);
    if (a)
        element(a, i, out, size);
    else
        snprintf(out, size, "%s[%zu]", arg, i);
}

/** One float output's agreement with the reference. */
typedef struct {
    double rel, max_abs, cosine;
    size_t worst; /* index of the largest absolute difference */
} Agreement;

/* Figures for got vs want into the shape's line, then the non-finite pattern: false (recorded) when it differs. */
static bool agree(const char *arg, const float *got, const float *want, size_t n, Agreement *a)
{
    size_t unwritten = 0, first_unwritten = 0, extra_finite = 0;
    double d2 = 0, w2 = 0, g2 = 0, gw = 0;
    a->max_abs = 0;
    a->worst = 0;
    for (size_t i = 0; i < n; i++) {
        const bool gf = isfinite(got[i]), wf = isfinite(want[i]);
        if (!gf && wf && unwritten++ == 0) first_unwritten = i;
        if (gf && !wf) extra_finite++;
        if (!gf || !wf) continue;
        const double d = fabs((double)got[i] - want[i]);
        if (d > a->max_abs) {
            a->max_abs = d;
            a->worst = i;
        }
        d2 += d * d;
        w2 += (double)want[i] * want[i];
        g2 += (double)got[i] * got[i];
        gw += (double)got[i] * want[i];
    }
    a->rel = w2 > 0 ? sqrt(d2 / w2) : sqrt(d2);
    a->cosine = g2 > 0 && w2 > 0 ? gw / sqrt(g2 * w2) : (g2 == w2 ? 1.0 : 0.0);
    add_figures("%s%s: rel-L2 %.2e, max-abs %.2e, cos %.9f, non-finite %zu/%zu", lab.figures[0] ? "; " : "", arg,
                a->rel, a->max_abs, a->cosine, unwritten, n);
    if (unwritten) {
        char where[160];
        name_element(arg, first_unwritten, where, sizeof where);
        fail_as("unwritten output",
                "%zu of %zu elements of %s are NaN or Inf where the reference is finite, the "
                "first %s (the harness fills outputs with NaN: an element never written, or a NaN computed)",
                unwritten, n, arg, where);
        return false;
    }
    if (extra_finite) {
        fail_as("non-finite pattern", "%zu elements of %s are finite where the reference is NaN or Inf", extra_finite,
                arg);
        return false;
    }
    return true;
}

bool lab_compare(const char *arg, const float *got, const float *want, size_t n, double rel_tol)
{
    Agreement a;
    if (!agree(arg, got, want, n, &a)) return false;
    if (a.rel > rel_tol) {
        char where[160];
        name_element(arg, a.worst, where, sizeof where);
        fail_as("numerical mismatch",
                "%s differs from the reference: rel-L2 %.3g > %.0e, cosine %.9f, worst %s = "
                "%.9g, reference %.9g",
                arg, a.rel, rel_tol, a.cosine, where, (double)got[a.worst], (double)want[a.worst]);
        return false;
    }
    return true;
}

bool lab_compare_pointwise(const char *arg, const float *got, const float *want, size_t n, double atol, double rtol)
{
    Agreement a;
    if (!agree(arg, got, want, n, &a)) return false;
    size_t over = 0, first = 0;
    for (size_t i = 0; i < n; i++)
        if (isfinite(want[i]) && fabs((double)got[i] - want[i]) > atol + rtol * fabs((double)want[i]) && over++ == 0)
            first = i;
    if (over) {
        char where[160];
        name_element(arg, first, where, sizeof where);
        fail_as("numerical mismatch",
                "%zu of %zu elements of %s are off by more than %.0e + %.0e·|reference|, the "
                "first %s = %.9g, reference %.9g (rel-L2 %.3g, cosine %.9f)",
                over, n, arg, atol, rtol, where, (double)got[first], (double)want[first], a.rel, a.cosine);
        return false;
    }
    return true;
}

bool lab_compare_ints(const char *arg, const int *got, const int *want, size_t n, const bool *skip)
{
    size_t differ = 0, first = 0, skipped = 0;
    for (size_t i = 0; i < n; i++) {
        if (skip && skip[i]) {
            skipped++;
            continue;
        }
        if (got[i] != want[i] && differ++ == 0) first = i;
    }
    add_figures("%s%s: %zu/%zu equal", lab.figures[0] ? "; " : "", arg, n - skipped - differ, n - skipped);
    if (skipped) add_figures(" (%zu near ties not compared)", skipped);
    if (differ) {
        char where[160];
        name_element(arg, first, where, sizeof where);
        fail_as("discrete mismatch",
                "%zu of %zu entries of %s differ from the reference, the first %s = %d, "
                "reference %d",
                differ, n - skipped, arg, where, got[first], want[first]);
        return false;
    }
    return true;
}

/* "{3, 7, 12}" for k ids. */
static void id_set(const int *v, int k, char *out, size_t size)
{
    int n = snprintf(out, size, "{");
    for (int i = 0; i < k && n < (int)size; i++) n += snprintf(out + n, size - (size_t)n, i ? ", %d" : "%d", v[i]);
    if (n < (int)size) snprintf(out + n, size - (size_t)n, "}");
}

/* Whether v (k ids) holds x. */
static bool holds(const int *v, int k, int x)
{
    for (int i = 0; i < k; i++)
        if (v[i] == x) return true;
    return false;
}

bool lab_compare_sets(const char *arg, const int *got, const int *want, int rows, int k, const bool *skip)
{
    int differ = 0, first = 0, skipped = 0;
    for (int r = 0; r < rows; r++) {
        if (skip && skip[r]) {
            skipped++;
            continue;
        }
        const int *g = got + (size_t)r * k, *w = want + (size_t)r * k;
        bool same = true;
        for (int i = 0; i < k && same; i++) same = holds(w, k, g[i]) && holds(g, k, w[i]);
        if (!same && differ++ == 0) first = r;
    }
    add_figures("%s%s: %d/%d rows the same set", lab.figures[0] ? "; " : "", arg, rows - skipped - differ,
                rows - skipped);
    if (skipped) add_figures(" (%d near ties not compared)", skipped);
    if (differ) {
        char g[400], w[400];
        id_set(got + (size_t)first * k, k, g, sizeof g);
        id_set(want + (size_t)first * k, k, w, sizeof w);
        fail_as("discrete mismatch",
                "%d of %d rows of %s hold other values than the reference's, the first row %d: "
                "%s, reference %s",
                differ, rows - skipped, arg, first, g, w);
        return false;
    }
    return true;
}

/* ---- timing (a real GPU only) --------------------------------------------------------------- */

void lab_time(cudaError_t (*run)(void *ctx, bool project), void *ctx, double bytes, double flops)
{
    if (!lab_options.gpu || lab.diagnosis[0]) return;
    cudaEvent_t start, stop;
    cudaEventCreate(&start);
    cudaEventCreate(&stop);
    float ms[2] = { 0, 0 };
    for (int who = 0; who < 2; who++) {
        run(ctx, who == 1); /* warm-up */
        cudaEventRecord(start, 0);
        for (int r = 0; r < lab_options.reps; r++) run(ctx, who == 1);
        cudaEventRecord(stop, 0);
        cudaEventSynchronize(stop);
        cudaEventElapsedTime(&ms[who], start, stop);
        ms[who] /= (float)lab_options.reps;
    }
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    for (int who = 0; who < 2; who++) {
        const double s = ms[who] * 1e-3;
        add_figures("%s%s %.3f ms, %.1f GB/s", lab.figures[0] ? "; " : "", who ? "project's" : "yours", ms[who],
                    bytes / s * 1e-9);
        if (flops > 0) add_figures(", %.2f TFLOP/s", flops / s * 1e-12);
    }
}

/* ---- shapes and verdict --------------------------------------------------------------------- */

void lab_shape_end(void)
{
    const int index = lab.shape++;
    const bool ok = lab.diagnosis[0] == '\0';
    printf("  %s  %s  %s\n", lab.name, lab.figures[0] ? lab.figures : "(not compared)", ok ? "PASS" : "FAIL");
    if (!ok) {
        printf("      %s: %s\n", lab.category, lab.diagnosis);
        lab.failed_here++;
        if (index < LAB_MAX_SHAPES && !lab.shape_failed[index]) {
            lab.shape_failed[index] = true;
            lab.failed++;
        }
        if (!lab.first_failure[0])
            snprintf(lab.first_failure, sizeof lab.first_failure, "%s at shape %s (seed %llu): %s", lab.category,
                     lab.trimmed, lab.seed, lab.diagnosis);
        if (!strstr(lab.categories, lab.category)) {
            const size_t n = strlen(lab.categories);
            snprintf(lab.categories + n, sizeof lab.categories - n, "%s%s", n ? ", " : "", lab.category);
        }
    }
    fflush(stdout);
    lab_free_all();
}

#if defined(__SANITIZE_ADDRESS__)
/* AddressSanitizer calls this before its report: name the access in the contract's terms first. */
void __asan_on_error(void)
{
    const void *p = __asan_get_report_address();
    const int write = __asan_get_report_access_type();
    const size_t size = __asan_get_report_access_size();
    long long off = 0;
    const LabArg *a = arg_near(p, &off);
    char where[256];
    if (a) {
        char lay[96];
        layout(a, lay, sizeof lay);
        if (off >= (long long)a->bytes)
            snprintf(where, sizeof where, "%lld bytes past the end of argument %s (%s, %zu bytes)",
                     off - (long long)a->bytes, a->name, lay, a->bytes);
        else
            snprintf(where, sizeof where, "inside argument %s at byte %lld (%s)", a->name, off, lay);
    } else {
        snprintf(where, sizeof where, "not next to any contract argument (a local or shared array?)");
    }
    printf("  %s  FAIL\n      out of bounds: %s of %zu bytes at %p, %s\n", lab.name, write ? "write" : "read", size, p,
           where);
    printf("FAIL  %s (%s): out of bounds at shape %s (seed %llu): %s of %zu bytes, %s; AddressSanitizer's report "
           "follows, with the source line\n",
           lab_component.launcher, lab_options.src, lab.trimmed, lab.seed, write ? "write" : "read", size, where);
    fflush(stdout);
}
#endif

/* splitmix64: spreads a small seed (1, 2, 3) over the generator's 64 bits of state, never 0. */
static uint64_t seed_state(unsigned long long seed)
{
    uint64_t z = (uint64_t)seed + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return z ? z : 0x9E3779B97F4A7C15ull;
}

/*
 * The seeds of this run from --seeds: NULL or "" for the fixed set, "random" for one drawn from the clock,
 * else numbers separated by spaces or commas. Returns how many, 0 when the list is not understood.
 */
static int parse_seeds(const char *list, unsigned long long *seeds, bool *random)
{
    *random = list && strcmp(list, "random") == 0;
    if (*random) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        seeds[0] = ((unsigned long long)ts.tv_sec * 1000000007ull ^ (unsigned long long)ts.tv_nsec) % 1000000000ull;
        return 1;
    }
    int n = 0;
    for (const char *p = list ? list : ""; *p;) {
        if (*p == ' ' || *p == ',') {
            p++;
            continue;
        }
        char *end;
        const unsigned long long v = strtoull(p, &end, 10);
        if (end == p || n == LAB_MAX_SEEDS || (*end && *end != ' ' && *end != ',')) return 0;
        seeds[n++] = v;
        p = end;
    }
    if (n == 0)
        for (; n < (int)(sizeof lab_fixed_seeds / sizeof lab_fixed_seeds[0]); n++) seeds[n] = lab_fixed_seeds[n];
    return n;
}

int main(int argc, char **argv)
{
    const char *seed_list = NULL;
    lab_options.src = "?";
    lab_options.reps = 20;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--src") == 0 && i + 1 < argc)
            lab_options.src = argv[++i];
        else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc)
            lab_options.reps = atoi(argv[++i]);
        else if (strcmp(argv[i], "--seeds") == 0 && i + 1 < argc)
            seed_list = argv[++i];
        else {
            fprintf(stderr, "usage: %s [--src FILE] [--reps N] [--seeds 'N N ...' | --seeds random]\n", argv[0]);
            return 2;
        }
    }
    unsigned long long seeds[LAB_MAX_SEEDS];
    bool random = false;
    const int n_seeds = parse_seeds(seed_list, seeds, &random);
    if (n_seeds == 0) {
        fprintf(stderr, "check-kernel: SEEDS='%s': give numbers separated by spaces (at most %d), or random\n",
                seed_list, LAB_MAX_SEEDS);
        return 2;
    }
    const char *rc = getenv("SIM_RACECHECK");
    lab_options.racecheck = rc && *rc && strcmp(rc, "0") != 0;
#ifdef LAB_GPU
    lab_options.gpu = true;
    int count = 0;
    const cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess || count == 0) {
        printf("check-kernel: BACKEND=gpu needs a CUDA device, and this machine has none (cudaGetDeviceCount: %s, "
               "%d devices).\nYour kernel compiled with nvcc for sm_80 and sm_90; check it on the simulated device "
               "with BACKEND=sim.\n",
               cudaGetErrorName(err), count);
        return 2;
    }
#endif
    printf("check-kernel: component %s, %s from %s, on %s%s\n", lab_component.name, lab_component.launcher,
           lab_options.src, lab_options.gpu ? "the GPU" : "sim/ (the simulated device)",
           lab_options.racecheck ? " with race check (SIM_RACECHECK=1)" : "");
    char seed_text[LAB_MAX_SEEDS * 21] = "";
    for (int i = 0, n = 0; i < n_seeds; i++)
        n += snprintf(seed_text + n, sizeof seed_text - (size_t)n, i ? " %llu" : "%llu", seeds[i]);
    printf("check-kernel: seeds %s (%s; SEEDS=\"N ...\" repeats a run, SEEDS=random draws one)\n", seed_text,
           random                    ? "drawn at random"
           : seed_list && *seed_list ? "given"
                                     : "the fixed set");
    for (int i = 0; i < n_seeds; i++) {
        lab.seed = seeds[i];
        lab.shape = lab.failed_here = 0;
        lab_rng.s = seed_state(seeds[i]);
        printf("seed %llu\n", seeds[i]);
        lab_component.run();
        lab.shapes = lab.shape;
        if (lab.failed_here)
            printf("seed %llu: %d of %d shapes fail\n", seeds[i], lab.failed_here, lab.shape);
        else
            printf("seed %llu: all %d shapes pass\n", seeds[i], lab.shape);
    }
    if (lab.failed == 0) {
        printf("PASS  %s (%s): all %d shapes match the reference at seeds %s\n", lab_component.launcher,
               lab_options.src, lab.shapes, seed_text);
        return 0;
    }
    printf("FAIL  %s (%s): %d of %d shapes fail (%s); first: %s\n", lab_component.launcher, lab_options.src, lab.failed,
           lab.shapes, lab.categories, lab.first_failure);
    return 1;
}
