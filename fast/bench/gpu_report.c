/**
 * \file gpu_report.c
 * \brief gpu_report_write(): bench-fast's measured times joined with profile-fast's estimates (gpu_report.h).
 */
#include "gpu_report.h"

#include "error.h"

#include <ctype.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_ROWS = 64, LABEL = 160 };

/** One case: the estimate from the profile and, when bench-fast timed it, the measurement. */
typedef struct {
    char label[LABEL];
    char kernels[256];
    double estimated_us, estimated_bytes_us, measured_us;
    int measured; /**< a bench line matched */
    int decode;   /**< a whole decode step rather than one kernel case */
} Row;

/** One timed bench-fast line. */
typedef struct {
    char label[LABEL];
    double ms;
    int used;
} Timed;

typedef struct {
    Row rows[MAX_ROWS];
    int n_rows;
    Timed timed[MAX_ROWS];
    int n_timed;
    char device[160];
    int pass, fail;
    char failed[1024];
} Report;

/* "<label> <number> ms ..." → label, ms; 0 when the line has no such time. */
static int parse_timed(const char *line, char *label, double *ms)
{
    for (const char *p = strstr(line, " ms"); p; p = strstr(p + 1, " ms")) {
        if (p[3] && !isspace((unsigned char)p[3])) continue;
        const char *b = p;
        while (b > line && (isdigit((unsigned char)b[-1]) || b[-1] == '.')) b--;
        if (b == p || b == line || b[-1] != ' ') continue;
        const char *end = b;
        while (end > line && end[-1] == ' ') end--;
        if (end == line) continue;
        size_t n = (size_t)(end - line) < LABEL - 1 ? (size_t)(end - line) : LABEL - 1;
        memcpy(label, line, n);
        label[n] = '\0';
        *ms = strtod(b, NULL);
        return 1;
    }
    return 0;
}

static int read_bench(Report *r, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) return ds_error("%s: cannot open bench-fast's output", path);
    char line[512];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        if (strncmp(line, "bench-fast on ", 14) == 0) snprintf(r->device, sizeof r->device, "%.150s", line + 14);
        char label[LABEL];
        double ms;
        if (r->n_timed < MAX_ROWS && parse_timed(line, label, &ms)) {
            Timed *t = &r->timed[r->n_timed++];
            memcpy(t->label, label, sizeof t->label);
            t->ms = ms;
            t->used = 0;
        }
    }
    fclose(f);
    if (r->n_timed == 0) return ds_error("%s: no timed line (\"<label> <milliseconds> ms\"): was a GPU found?", path);
    return 0;
}

static int read_profile(Report *r, const char *path)
{
    json_error_t err;
    json_t *root = json_load_file(path, 0, &err);
    if (!root) return ds_error("%s: line %d: %s", path, err.line, err.text);
    const json_t *cases = json_object_get(root, "bench_fast_kernels");
    int rc = json_is_array(cases) ? 0 : ds_error("%s: key bench_fast_kernels: missing or not an array", path);
    for (size_t i = 0; rc == 0 && i < json_array_size(cases) && r->n_rows < MAX_ROWS; i++) {
        const json_t *c = json_array_get(cases, i);
        const json_t *label = json_object_get(c, "label"), *est = json_object_get(c, "estimated_us");
        const json_t *bytes = json_object_get(c, "estimated_bytes_us"), *k = json_object_get(c, "kernels");
        if (!json_is_string(label) || !json_is_number(est) || json_number_value(est) <= 0) {
            rc = ds_error("%s: bench_fast_kernels[%zu]: needs a string label and a positive estimated_us", path, i);
            break;
        }
        Row *row = &r->rows[r->n_rows++];
        memset(row, 0, sizeof *row);
        snprintf(row->label, sizeof row->label, "%s", json_string_value(label));
        snprintf(row->kernels, sizeof row->kernels, "%s", json_is_string(k) ? json_string_value(k) : "");
        row->estimated_us = json_number_value(est);
        row->estimated_bytes_us = json_is_number(bytes) ? json_number_value(bytes) : 0;
        row->decode = strncmp(row->label, "decode batch", 12) == 0;
    }
    json_decref(root);
    return rc;
}

static void read_suites(Report *r, const char *path)
{
    FILE *f = path ? fopen(path, "r") : NULL;
    if (!f) return;
    char line[512], name[400], verdict[16];
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "%399s %15s", name, verdict) == 2) {
            if (strcmp(verdict, "pass") == 0) {
                r->pass++;
            } else {
                r->fail++;
                if (strlen(r->failed) + strlen(name) + 3 < sizeof r->failed)
                    strcat(strcat(r->failed, r->failed[0] ? ", " : ""), name);
            }
        }
    fclose(f);
}

/* Each case takes the first unused bench line equal to its label, or beginning with it and a ':'. */
static void join(Report *r)
{
    for (int i = 0; i < r->n_rows; i++) {
        Row *row = &r->rows[i];
        const size_t n = strlen(row->label);
        for (int j = 0; j < r->n_timed && !row->measured; j++) {
            Timed *t = &r->timed[j];
            if (t->used || strncmp(t->label, row->label, n) != 0 || (t->label[n] && t->label[n] != ':')) continue;
            t->used = row->measured = 1;
            row->measured_us = 1e3 * t->ms;
        }
    }
}

/** Ratio of summed times and geometric mean of ratios over the measured rows of one kind. */
static int totals(const Report *r, int decode, double *sum_ratio, double *geo)
{
    double m = 0, e = 0, logs = 0;
    int n = 0;
    for (int i = 0; i < r->n_rows; i++) {
        const Row *row = &r->rows[i];
        if (row->decode != decode || !row->measured) continue;
        m += row->measured_us;
        e += row->estimated_us;
        logs += log(row->measured_us / row->estimated_us);
        n++;
    }
    *sum_ratio = n ? m / e : 0;
    *geo = n ? exp(logs / n) : 0;
    return n;
}

static int write_md(const Report *r, const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f) return ds_error("%s: cannot write", path);
    fprintf(f, "# GPU report: measured times beside the H100 time model's estimates\n\n");
    fprintf(f,
            "Device: %s. Measured: `make bench-fast` (median of its runs). Estimated: `make profile-fast` "
            "(counted on the simulated device, priced by fast/bench/h100_model.h for an H100 SXM).\n\n",
            r->device[0] ? r->device : "(not named)");
    fprintf(f, "GPU suites: %d passed, %d failed%s%s.\n\n", r->pass, r->fail, r->fail ? ": " : "", r->failed);
    fprintf(f, "| case | launches | measured µs | estimated µs | of which memory µs | measured / estimated |\n");
    fprintf(f, "| --- | --- | --- | --- | --- | --- |\n");
    for (int i = 0; i < r->n_rows; i++) {
        const Row *w = &r->rows[i];
        if (w->measured)
            fprintf(f, "| %s | %s | %.3f | %.3f | %.3f | %.3f |\n", w->label, w->kernels, w->measured_us,
                    w->estimated_us, w->estimated_bytes_us, w->measured_us / w->estimated_us);
        else
            fprintf(f, "| %s | %s | not measured | %.3f | %.3f | - |\n", w->label, w->kernels, w->estimated_us,
                    w->estimated_bytes_us);
    }
    static const char *const kind[] = { "kernel cases", "decode steps" };
    for (int d = 0; d < 2; d++) {
        double sum, geo;
        const int n = totals(r, d, &sum, &geo);
        fprintf(f,
                "\nOverall, %s (%d measured): summed measured / summed estimated %.3f, geometric mean of the "
                "ratios %.3f.\n",
                kind[d], n, sum, geo);
    }
    fprintf(f, "\nThe decode steps are the 2-layer checkpoint's, estimated after profile-fast's prompt and measured "
               "after bench-fast's shorter ones; the latent cache is a small part of either step's bytes.\n");
    int extra = 0;
    for (int j = 0; j < r->n_timed; j++)
        if (!r->timed[j].used)
            fprintf(f, "%s%s", extra++ ? "; " : "\nMeasured without an estimate: ", r->timed[j].label);
    if (extra) fprintf(f, ".\n");
    return fclose(f) == 0 ? 0 : ds_error("%s: cannot write", path);
}

static int write_json(const Report *r, const char *path)
{
    json_t *root = json_object(), *rows = json_array();
    for (int i = 0; i < r->n_rows; i++) {
        const Row *w = &r->rows[i];
        json_t *o = json_pack("{s:s, s:s, s:b, s:f, s:f}", "label", w->label, "kernels", w->kernels, "decode",
                              w->decode, "estimated_us", w->estimated_us, "estimated_bytes_us", w->estimated_bytes_us);
        json_object_set_new(o, "measured_us", w->measured ? json_real(w->measured_us) : json_null());
        json_object_set_new(o, "ratio", w->measured ? json_real(w->measured_us / w->estimated_us) : json_null());
        json_array_append_new(rows, o);
    }
    double ks, kg, ds, dg;
    const int kn = totals(r, 0, &ks, &kg), dn = totals(r, 1, &ds, &dg);
    json_object_set_new(root, "device", json_string(r->device));
    json_object_set_new(root, "suites", json_pack("{s:i, s:i}", "pass", r->pass, "fail", r->fail));
    json_object_set_new(root, "cases", rows);
    json_object_set_new(root, "kernel_cases",
                        json_pack("{s:i, s:f, s:f}", "measured", kn, "ratio_of_sums", ks, "geometric_mean_ratio", kg));
    json_object_set_new(root, "decode_steps",
                        json_pack("{s:i, s:f, s:f}", "measured", dn, "ratio_of_sums", ds, "geometric_mean_ratio", dg));
    const int rc = json_dump_file(root, path, JSON_INDENT(2)) ? ds_error("%s: cannot write", path) : 0;
    json_decref(root);
    return rc;
}

int gpu_report_write(const char *bench, const char *profile, const char *suites, const char *out_prefix)
{
    Report *r = calloc(1, sizeof *r);
    if (!r) return ds_error("gpu-report: out of host memory");
    int rc = read_bench(r, bench) || read_profile(r, profile) ? -1 : 0;
    char md[512], js[512];
    snprintf(md, sizeof md, "%s.md", out_prefix);
    snprintf(js, sizeof js, "%s.json", out_prefix);
    if (rc == 0) {
        read_suites(r, suites);
        join(r);
        rc = write_md(r, md) || write_json(r, js) ? -1 : 0;
    }
    free(r);
    return rc;
}
