/**
 * \file test_book.c
 * \brief The book cannot drift from the code: tools/excerpts.sh --check passes on the
 * repository, and fails, naming chapter and line, on each kind of problem it exists to catch.
 *
 * The checker is a shell script, so these tests run it with popen(), from the repository
 * root (where `make test` runs the suites). The failure cases build a tiny book in a
 * temporary directory (book.md, chapters/, a source file) and point the script at it
 * with --root, so that the check itself is shown to fail when it should.
 */
#include "check.h"
#include "attention_std.h"
#include "error.h"
#include "mla.h"
#include "model.h"
#include "scratch_files.h"
#include "tokenizer.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Output and exit status of one run of the checker. */
typedef struct {
    int status;
    char out[8192];
} Run;

static Run run_tool(const char *args)
{
    Run r;
    r.status = shell_capture(r.out, sizeof r.out, "sh tools/excerpts.sh %s 2>&1", args);
    return r;
}

static const char SOURCE[] = "int unshown;\n"
                             "// ANCHOR: add\n"
                             "int add(int a, int b)\n"
                             "{\n"
                             "    // ANCHOR: body\n"
                             "    return a + b;\n"
                             "    // ANCHOR_END: body\n"
                             "}\n"
                             "// ANCHOR_END: add\n";

static const char SCRIPT[] = "# ANCHOR: hello\necho hello\n# ANCHOR_END: hello\n";

static const char BOOK[] = "# A book\n\n1. [One](chapters/01-one.md)\n";

/* A chapter whose blocks equal their sources (the nested anchor's markers are left out). */
static const char GOOD[] = "# One\n"
                           "<!-- include: src/add.c:add -->\n"
                           "```c\n"
                           "int add(int a, int b)\n"
                           "{\n"
                           "    return a + b;\n"
                           "}\n"
                           "```\n"
                           "and in a script:\n"
                           "<!-- include: src/hello.sh:hello -->\n"
                           "```sh\n"
                           "echo hello\n"
                           "```\n";

/* Makes a fresh temporary book: book.md, chapters/01-one.md = chapter, src/add.c, src/hello.sh. */
static char *make_book(const char *chapter, const char *source)
{
    char *dir = scratch_make();
    scratch_write(dir, "book.md", BOOK);
    scratch_write(dir, "chapters/01-one.md", chapter);
    scratch_write(dir, "src/add.c", source);
    scratch_write(dir, "src/hello.sh", SCRIPT);
    return dir;
}

/* Runs --check on dir and expects failure with a line containing both fragments. */
static void expect_problem(const char *dir, const char *where, const char *what)
{
    char args[4200];
    snprintf(args, sizeof args, "--check --root '%s'", dir);
    Run r = run_tool(args);
    if (r.status == 0) fail_msg("the check passed, expected \"%s\" at %s", what, where);
    const char *line = strstr(r.out, where);
    if (!line || !strstr(line, what)) fail_msg("expected a line with \"%s\" and \"%s\", got:\n%s", where, what, r.out);
}

/* ---- the repository's own book ------------------------------------------------------------ */

static void repository_book_has_no_drift(void **state)
{
    (void)state;
    Run r = run_tool("--check");
    if (r.status != 0) fail_msg("tools/excerpts.sh --check found problems:\n%s", r.out);
}

/* ---- the notebooks ------------------------------------------------------------------------ */

/* Runs build/notebooks/<name> and returns its stdout (static buffer); fails if it is missing
 * (make test builds it) or exits non-zero. */
static const char *run_notebook(const char *name, const char *args)
{
    static char out[65536];
    char path[256];
    snprintf(path, sizeof path, "build/notebooks/%s", name);
    if (access(path, X_OK) != 0) fail_msg("%s is missing: run make notebooks (make test builds it)", path);
    const int status = shell_capture(out, sizeof out, "%s %s", path, args);
    if (status != 0) fail_msg("%s %s exited with status %d:\n%s", path, args, status, out);
    return out;
}

/* run_notebook(name, "") after checking that its output is notebooks-c/expected/<name>.txt, the
 * file a chapter includes. */
static const char *notebook_output_as_included(const char *name)
{
    const char *got = run_notebook(name, "");
    char expected[256];
    snprintf(expected, sizeof expected, "notebooks-c/expected/%s.txt", name);
    char *want = scratch_read(".", expected);
    const int same = strcmp(got, want) == 0;
    free(want);
    if (!same) fail_msg("build/notebooks/%s output differs from %s:\n%s", name, expected, got);
    return got;
}

/* The KV-cache table that chapter 2 includes is what the notebook prints, and it carries the
 * figures docs/semantics.md §5.3 derives by hand: 576 per layer, 69,120 bytes/token for V2 in bf16,
 * 31,104 for V2-Lite, 82.2% without and 93.3% with the ~6-bit cache against DeepSeek 67B. */
static void kv_cache_budget_prints_the_included_table(void **state)
{
    (void)state;
    const char *got = notebook_output_as_included("kv_cache_budget");
    const char *figures[] = { "MLA                   576          34560            69120",
                              "mla_cache_bytes_per_token(cfg, 2) = 31104 bytes", "reduction 82.2% (bf16 against bf16)",
                              "reduction 93.3% (the paper's number, under the two assumptions)" };
    for (size_t i = 0; i < sizeof figures / sizeof *figures; i++)
        if (!strstr(got, figures[i])) fail_msg("notebook output lacks \"%s\"", figures[i]);
}

/* Chapter 0 includes the token-journey notebook's output. The notebook drives the per-layer
 * functions itself and exits 1 unless its logits equal model_forward()'s bit for bit; the test
 * asks for the included text exactly and for that equality line. */
static void token_journey_prints_the_included_walkthrough(void **state)
{
    (void)state;
    const char *got = notebook_output_as_included("token_journey");
    if (!strstr(got, "max |logits - model_forward's logits| = 0 (0 of 4096 differ)"))
        fail_msg("the journey's logits differ from model_forward's:\n%s", got);
}

/* The absorption notebook fails itself when the two MLA forms differ by more than 1e-5. */
static void absorption_notebook_forms_agree(void **state)
{
    (void)state;
    const char *got = run_notebook("absorption", "256");
    if (!strstr(got, "both forms agree to within 1e-5 relative at every context"))
        fail_msg("unexpected absorption output:\n%s", got);
}

/* The routing notebook fails itself unless every token reaches at most M devices and M = G
 * reproduces greedy routing, on random logits and on the bundled model's router. */
static void routing_explorer_invariants_hold(void **state)
{
    (void)state;
    const char *got = run_notebook("routing_explorer", "2000");
    if (!strstr(got, "checks passed: devices <= M for every token, and M = G equals greedy"))
        fail_msg("unexpected routing_explorer output:\n%s", got);
}

/* The expert-load notebook runs the bundled model; chapter 6 includes its output. The test
 * asks for that output exactly, then re-reads the invariants from the printed numbers: each
 * MoE layer's 16 loads sum to 1 (to the 4 printed decimals, within 16 half-units), and the
 * three losses are finite and >= 0. The notebook also checks these itself, with more. */
static void expert_load_notebook_invariants_hold(void **state)
{
    (void)state;
    const char *got = notebook_output_as_included("expert_load");
    if (!strstr(got, "checks passed: every token logged, loads sum to 1 per layer"))
        fail_msg("unexpected expert_load output:\n%s", got);
    int loads_seen = 0, losses_seen = 0;
    for (const char *line = got; line && *line; line = strchr(line, '\n'), line = line ? line + 1 : NULL) {
        char one[512]; /* the line alone: %lf would read on past its newline */
        const size_t len = strcspn(line, "\n");
        if (len >= sizeof one) continue;
        memcpy(one, line, len);
        one[len] = '\0';
        int layer, used;
        if (sscanf(one, "%d%n", &layer, &used) != 1 || layer < 1 || layer > 3) continue;
        double v[19];
        const char *p = one + used;
        int n = 0;
        while (n < 19) {
            int k;
            if (sscanf(p, "%lf%n", &v[n], &k) != 1) break;
            p += k;
            n++;
        }
        if (n == 19) { /* 16 loads, min, max, sum */
            double sum = 0;
            for (int e = 0; e < 16; e++) sum += v[e];
            if (fabs(sum - 1) > 16 * 0.00005) fail_msg("layer %d loads sum to %.6f", layer, sum);
            loads_seen++;
        } else if (n == 6) { /* three losses, then each over its alpha */
            for (int i = 0; i < 3; i++)
                if (!isfinite(v[i]) || v[i] < 0) fail_msg("layer %d loss %d is %g", layer, i, v[i]);
            losses_seen++;
        }
    }
    assert_int_equal(loads_seen, 3);
    assert_int_equal(losses_seen, 3);
}

/* ---- the balance-loss ablation notebook --------------------------------------------------- */

enum { AB_VARIANTS = 5, AB_LAYERS = 2, AB_E = 16, AB_K = 4, AB_DEV = 4, AB_M = 2 };

static const char *const AB_NAMES[AB_VARIANTS] = { "all", "no-expbal", "no-devbal", "no-commbal", "none" };

/* The paper's weights, with which the notebook reports every model's losses. */
static const double AB_ALPHA1 = 0.003, AB_ALPHA2 = 0.05, AB_ALPHA3 = 0.02;

/* One (model, MoE layer) row of each of the notebook's three tables, as printed. */
typedef struct {
    long count[AB_E];
    double P[AB_E];
    long reach[AB_DEV];
    double max_over_mean, cv, share[AB_DEV], loss[3];
    int seen; /* bit 0: counts, bit 1: affinities, bit 2: summary */
} AblationRow;

/* Reads n numbers after the model name and layer at the start of line; returns the row it
 * belongs to, or NULL when the line is not such a row. */
static AblationRow *ablation_row(AblationRow rows[AB_VARIANTS][AB_LAYERS], const char *line, double *v, int n)
{
    char name[32];
    int layer, used;
    if (sscanf(line, "%31s %d%n", name, &layer, &used) != 2 || layer < 1 || layer > AB_LAYERS) return NULL;
    int variant = -1;
    for (int i = 0; i < AB_VARIANTS; i++)
        if (strcmp(name, AB_NAMES[i]) == 0) variant = i;
    if (variant < 0) return NULL;
    const char *p = line + used;
    for (int i = 0; i < n; i++) {
        int k;
        if (sscanf(p, "%lf%n", &v[i], &k) != 1) fail_msg("short row: %s", line);
        p += k;
    }
    return &rows[variant][layer - 1];
}

/* Parses the notebook's output into rows; returns T, from its first line. */
static long parse_ablation(const char *out, AblationRow rows[AB_VARIANTS][AB_LAYERS])
{
    long T = 0;
    if (sscanf(out, "Balance-loss ablation: models/ablation/* routing %ld tokens", &T) != 1)
        fail_msg("unexpected first line:\n%s", out);
    memset(rows, 0, sizeof(AblationRow) * AB_VARIANTS * AB_LAYERS);
    int table = -1;
    for (const char *line = out; line && *line; line = strchr(line, '\n'), line = line ? line + 1 : NULL) {
        char one[1024]; /* the line alone: %lf would read on past its newline */
        const size_t len = strcspn(line, "\n");
        if (len >= sizeof one) continue;
        memcpy(one, line, len);
        one[len] = '\0';
        if (strncmp(one, "assignments per expert", 22) == 0) table = 0;
        if (strncmp(one, "mean affinity P_i", 17) == 0) table = 1;
        if (strncmp(one, "tokens sent to each device", 26) == 0) table = 2;
        double v[16];
        AblationRow *r;
        if (table == 0 && (r = ablation_row(rows, one, v, AB_E))) {
            for (int e = 0; e < AB_E; e++) r->count[e] = lround(v[e]);
            r->seen |= 1;
        } else if (table == 1 && (r = ablation_row(rows, one, v, AB_E))) {
            memcpy(r->P, v, sizeof r->P);
            r->seen |= 2;
        } else if (table == 2 && (r = ablation_row(rows, one, v, 13))) {
            for (int d = 0; d < AB_DEV; d++) r->reach[d] = lround(v[d]);
            r->max_over_mean = v[4];
            r->cv = v[5];
            memcpy(r->share, v + 6, sizeof r->share);
            memcpy(r->loss, v + 10, sizeof r->loss);
            r->seen |= 4;
        }
    }
    for (int v = 0; v < AB_VARIANTS; v++)
        for (int j = 0; j < AB_LAYERS; j++)
            if (rows[v][j].seen != 7) fail_msg("%s layer %d is missing from a table", AB_NAMES[v], j + 1);
    return T;
}

/* Every derived column recomputed from the printed counts, affinities and device reach with
 * the paper's formulas (chapter 6, eqs. 23–31), written out here independently of
 * ref/balance.c. Counts and reach are exact integers; P_i is printed to 4 decimals, so each
 * loss may differ by α · Σ_g f_g · (half a unit of P, times the experts summed into P_g),
 * plus half a unit of the printed loss; max/mean, CV and shares by half a printed unit. */
static void check_ablation_arithmetic(AblationRow rows[AB_VARIANTS][AB_LAYERS], long T)
{
    const int per_dev = AB_E / AB_DEV;
    for (int v = 0; v < AB_VARIANTS; v++)
        for (int j = 0; j < AB_LAYERS; j++) {
            const AblationRow *r = &rows[v][j];
            long total = 0, top = 0;
            double f[AB_E], mean_f_dev[AB_DEV] = { 0 }, P_dev[AB_DEV] = { 0 }, sum_P = 0;
            for (int e = 0; e < AB_E; e++) {
                total += r->count[e];
                top = r->count[e] > top ? r->count[e] : top;
                f[e] = (double)AB_E / (AB_K * T) * r->count[e];
                mean_f_dev[e / per_dev] += f[e] / per_dev;
                P_dev[e / per_dev] += r->P[e];
                sum_P += r->P[e];
            }
            if (total != T * AB_K)
                fail_msg("%s layer %d: %ld assignments, want %ld", AB_NAMES[v], j + 1, total, T * AB_K);
            if (fabs(sum_P - 1) > AB_E * 0.5e-4) fail_msg("%s layer %d: P sums to %.6f", AB_NAMES[v], j + 1, sum_P);
            long reached = 0;
            for (int d = 0; d < AB_DEV; d++) {
                reached += r->reach[d];
                long on_d = 0;
                for (int e = d * per_dev; e < (d + 1) * per_dev; e++) on_d += r->count[e];
                if (fabs(r->share[d] - (double)on_d / (T * AB_K)) > 0.5e-3 + 1e-9)
                    fail_msg("%s layer %d: device %d share %.3f", AB_NAMES[v], j + 1, d, r->share[d]);
                if (r->reach[d] < (on_d + AB_K - 1) / AB_K || r->reach[d] > on_d || r->reach[d] > T)
                    fail_msg("%s layer %d: device %d reached by %ld tokens with %ld assignments", AB_NAMES[v], j + 1, d,
                             r->reach[d], on_d);
            }
            if (reached < T || reached > T * AB_M)
                fail_msg("%s layer %d: %ld token-device pairs for %ld tokens and M = %d", AB_NAMES[v], j + 1, reached,
                         T, AB_M);
            const double mean = (double)T * AB_K / AB_E;
            double var = 0;
            for (int e = 0; e < AB_E; e++) var += (r->count[e] - mean) * (r->count[e] - mean) / AB_E;
            if (fabs(r->max_over_mean - top / mean) > 0.5e-3 + 1e-9 || fabs(r->cv - sqrt(var) / mean) > 0.5e-3 + 1e-9)
                fail_msg("%s layer %d: max/mean %.3f CV %.3f, want %.4f %.4f", AB_NAMES[v], j + 1, r->max_over_mean,
                         r->cv, top / mean, sqrt(var) / mean);
            double exp_bal = 0, dev_bal = 0, comm_bal = 0, f_sum = 0, f_dev_sum = 0, f_comm_sum = 0;
            for (int e = 0; e < AB_E; e++) {
                exp_bal += f[e] * r->P[e];
                f_sum += f[e];
            }
            for (int d = 0; d < AB_DEV; d++) {
                const double f_comm = (double)AB_DEV / (AB_M * T) * r->reach[d];
                dev_bal += mean_f_dev[d] * P_dev[d];
                comm_bal += f_comm * P_dev[d];
                f_dev_sum += mean_f_dev[d];
                f_comm_sum += f_comm;
            }
            const double want[3] = { AB_ALPHA1 * exp_bal, AB_ALPHA2 * dev_bal, AB_ALPHA3 * comm_bal };
            const double tol[3] = { AB_ALPHA1 * f_sum * 0.5e-4, AB_ALPHA2 * f_dev_sum * per_dev * 0.5e-4,
                                    AB_ALPHA3 * f_comm_sum * per_dev * 0.5e-4 };
            for (int i = 0; i < 3; i++)
                if (!(fabs(r->loss[i] - want[i]) <= tol[i] + 0.5e-6 + 1e-12))
                    fail_msg("%s layer %d: loss %d printed %.6f, recomputed %.6f (tolerance %.2g)", AB_NAMES[v], j + 1,
                             i, r->loss[i], want[i], tol[i] + 0.5e-6);
        }
}

/* The last MoE layer of one model routed here, by model_forward without the notebook's observer:
 * after the call the model's FfnScratch holds that layer's affinities and choices.
 * Counts and device reach must equal the printed ones, P_i within half a printed unit. */
static void check_ablation_routing(const AblationRow *printed, const char *name, const char *text)
{
    char dir[128];
    snprintf(dir, sizeof dir, "models/ablation/%s", name);
    Tokenizer *tok = tokenizer_load("models/tiny-kjv");
    assert_non_null(tok);
    int32_t ids[512];
    const long T = tokenizer_encode(tok, text, strlen(text), TOKENIZER_ADD_SPECIAL, ids, 512);
    tokenizer_free(tok);
    assert_true(T > 1 && T <= 512);
    int tokens[512];
    for (long t = 0; t < T; t++) tokens[t] = ids[t];
    Model m;
    const ModelOptions opt = { .max_context = (int)T, .chunk = (int)T };
    if (model_open(&m, dir, &opt) != 0) fail_msg("%s", ds_last_error());
    assert_int_equal(m.cfg->n_routed_experts, AB_E);
    assert_true(m.layers[m.cfg->num_hidden_layers - 1].is_moe);
    float *logits = malloc(sizeof *logits * (size_t)m.cfg->vocab_size);
    assert_non_null(logits);
    for (int i = 0; i < m.cfg->vocab_size; i++) logits[i] = NAN;
    assert_int_equal(model_forward(&m, tokens, (int)T, logits, false), 0);
    for (int i = 0; i < m.cfg->vocab_size; i++) assert_true(isfinite(logits[i]));
    long count[AB_E] = { 0 }, reach[AB_DEV] = { 0 };
    double P[AB_E] = { 0 };
    for (long t = 0; t < T; t++) {
        bool on[AB_DEV] = { false };
        for (int k = 0; k < AB_K; k++) {
            const int e = m.ffn.expert[t * AB_K + k];
            count[e]++;
            on[e / (AB_E / AB_DEV)] = true;
        }
        for (int d = 0; d < AB_DEV; d++) reach[d] += on[d];
        for (int e = 0; e < AB_E; e++) P[e] += m.ffn.scores[t * AB_E + e] / (double)T;
    }
    for (int e = 0; e < AB_E; e++) {
        if (count[e] != printed->count[e])
            fail_msg("%s: expert %d has %ld assignments here, %ld printed", name, e, count[e], printed->count[e]);
        if (!(fabs(P[e] - printed->P[e]) <= 0.5e-4 + 1e-7))
            fail_msg("%s: expert %d mean affinity %.6f here, %.4f printed", name, e, P[e], printed->P[e]);
    }
    for (int d = 0; d < AB_DEV; d++)
        if (reach[d] != printed->reach[d])
            fail_msg("%s: device %d reached by %ld tokens here, %ld printed", name, d, reach[d], printed->reach[d]);
    free(logits);
    model_close(&m);
}

/* The ablation notebook's output is the file chapter 6 includes; its derived columns follow
 * from its printed counts and affinities; and, on a text of the test's own, the last MoE
 * layer's counts, affinities and device reach are what model_forward routes. */
static void balance_ablation_notebook_recomputes(void **state)
{
    (void)state;
    AblationRow rows[AB_VARIANTS][AB_LAYERS];
    const char *got = notebook_output_as_included("balance_ablation");
    if (!strstr(got, "checks passed: every token logged, at most M devices per token"))
        fail_msg("unexpected balance_ablation output:\n%s", got);
    check_ablation_arithmetic(rows, parse_ablation(got, rows));

    static const char text[] = "And the LORD spake unto Moses, saying, Speak unto the children "
                               "of Israel, that they bring me an offering.\n";
    got = run_notebook("balance_ablation", "'And the LORD spake unto Moses, saying, Speak unto the "
                                           "children of Israel, that they bring me an offering.\n'");
    const long T = parse_ablation(got, rows);
    check_ablation_arithmetic(rows, T);
    for (int v = 0; v < AB_VARIANTS; v++) check_ablation_routing(&rows[v][AB_LAYERS - 1], AB_NAMES[v], text);
}

/* ---- the training ablations (notebooks-c/train_ablation.c, chapter 9) ---------------------- */

#define TA_DIR "models/train-ablations"
#define TA_OPTIONS                                                                                         \
    "--data " TA_DIR "/genesis.txt --steps 300 --batch 8 --seq 64 --lr 3e-3 --warmup 50 --eval-every 100 " \
    "--seed 1611"
#define TA_COMMON "-c models/train-demo/config.json " TA_OPTIONS

enum { TA_STEPS = 300, TA_LAST = 50, TA_LAYERS = 2, TA_E = 8, TA_DEV = 4, TA_PAIRS = 8 * 64 * 2 };

/* The number after "key": in line, or NAN. */
static double json_number_after(const char *line, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(line, pat);
    return p ? strtod(p + strlen(pat), NULL) : NAN;
}

/* The notebook's six columns for one run, computed here from its log with plain string scans:
 * held-out at step 300, mean training ce, expert and device max/mean, busiest device KiB,
 * dropped share (the last four over steps 251..300). */
static void ablation_columns(const char *run, double col[6])
{
    char name[256];
    snprintf(name, sizeof name, "%s/train_log.jsonl", run);
    char *log = scratch_read(TA_DIR, name);
    memset(col, 0, 6 * sizeof *col);
    long kept = 0, dropped = 0;
    int step = 0;
    for (char *line = log; *line; step++) {
        char *end = strchr(line, '\n');
        assert_non_null(end);
        *end = '\0';
        if (step + 1 > TA_STEPS - TA_LAST) {
            col[1] += json_number_after(line, "ce") / TA_LAST;
            dropped += (long)json_number_after(line, "dropped");
            const char *p = strstr(line, "\"load\":{");
            assert_non_null(p);
            for (int l = 0; l < TA_LAYERS; l++) {
                p = strchr(p, '[');
                long n[TA_E], sum = 0, max = 0, dev[TA_DEV] = { 0 }, dmax = 0;
                for (int e = 0; e < TA_E; e++) {
                    char *q;
                    n[e] = strtol(p + 1, &q, 10);
                    p = q;
                    sum += n[e];
                    max = n[e] > max ? n[e] : max;
                    dev[e * TA_DEV / TA_E] += n[e];
                }
                for (int d = 0; d < TA_DEV; d++) dmax = dev[d] > dmax ? dev[d] : dmax;
                kept += sum;
                col[2] += (double)max * TA_E / sum / (TA_LAST * TA_LAYERS);
                col[3] += (double)dmax * TA_DEV / sum / (TA_LAST * TA_LAYERS);
                col[4] += dmax * 96.0 / 1024 / (TA_LAST * TA_LAYERS);
            }
        }
        if (step + 1 == TA_STEPS) col[0] = json_number_after(line, "eval_loss");
        line = end + 1;
    }
    assert_int_equal(step, TA_STEPS);
    col[5] = (double)dropped / (kept + dropped);
    free(log);
}

/* The first 5 lines of a 6-step re-run of `dsv2 train ARGS` against the committed log of run. */
static void rerun_matches(const char *run, const char *args)
{
    char *dir = scratch_make(), out[4096], name[256];
    const int status = shell_capture(out, sizeof out, "build/dsv2 train %s --stop-after 6 -o '%s/run' 2>&1", args, dir);
    if (status != 0) fail_msg("dsv2 train exited with %d:\n%s", status, out);
    char *fresh = scratch_read(dir, "run/train_log.jsonl");
    snprintf(name, sizeof name, "%s/train_log.jsonl", run);
    char *committed = scratch_read(TA_DIR, name);
    const char *p = committed, *q = fresh;
    for (int k = 0; k < 5 && p && q; k++) {
        p = strchr(p, '\n');
        q = strchr(q, '\n');
        p = p ? p + 1 : NULL;
        q = q ? q + 1 : NULL;
    }
    if (!p || !q || p - committed != q - fresh || memcmp(fresh, committed, (size_t)(q - fresh)) != 0)
        fail_msg("%s: dsv2 train's first 5 log lines differ from the committed log's:\n%s", run, fresh);
    free(fresh);
    free(committed);
    scratch_remove(dir);
}

/* The table the notebook prints (and chapter 9 quotes) is what the committed logs say, column
 * by column to the printed digits; and the logs came from this code: two runs, re-run with
 * dsv2 train for 6 steps (the 6th line of a stopped run adds a held-out loss), log the same
 * first 5 lines byte for byte. */
static void train_ablation_notebook_recomputes(void **state)
{
    (void)state;
    const char *got = notebook_output_as_included("train_ablation");
    if (!strstr(got, "checks passed: 300 steps per log")) fail_msg("unexpected train_ablation output:\n%s", got);
    static const char *const rows[][2] = { { "none", "none" },        { "ExpBal", "expbal" }, { "DevBal", "devbal" },
                                           { "CommBal", "commbal" },  { "all three", "all" }, { "M = 1", "m1" },
                                           { "M = 2", "all" },        { "M = 4", "m4" },      { "CF = 1.0", "cf1" },
                                           { "CF = 1.25", "cf1.25" }, { "CF = inf", "all" } };
    static const double half_digit[6] = { 0.5e-4, 0.5e-4, 0.5e-2, 0.5e-2, 0.5e-2, 0.5e-4 };
    for (size_t i = 0; i < sizeof rows / sizeof *rows; i++) {
        char label[32];
        snprintf(label, sizeof label, "\n%-12s ", rows[i][0]);
        const char *p = strstr(got, label);
        if (!p) fail_msg("no row %s in:\n%s", rows[i][0], got);
        p += strlen(label);
        double want[6];
        ablation_columns(rows[i][1], want);
        for (int k = 0; k < 6; k++) {
            char *q;
            const double v = strtod(p, &q);
            p = q;
            if (!(fabs(v - want[k]) <= half_digit[k] * (1 + 1e-9)))
                fail_msg("%s column %d: printed %.6f, the log gives %.6f", rows[i][0], k + 1, v, want[k]);
        }
    }
    rerun_matches("all", TA_COMMON " --alpha 0.003,0.05,0.02");
    rerun_matches("cf1", TA_COMMON " --capacity 1.0");
}

/* Table (a): each variant's shape columns follow from its config through config_load (not the
 * notebook's JSON reading), its held-out losses are the last eval_loss of its three logs, and one
 * standard-attention run (GQA) re-runs from this code to the same first log lines. */
static void train_attention_ablation_recomputes(void **state)
{
    (void)state;
    const char *got = notebook_output_as_included("train_ablation");
    static const char *const rows[][5] = {
        { "MHA", TA_DIR "/attention-mha/config.json", "attention-mha", "attention-mha-s2", "attention-mha-s3" },
        { "GQA", TA_DIR "/attention-gqa/config.json", "attention-gqa", "attention-gqa-s2", "attention-gqa-s3" },
        { "MQA", TA_DIR "/attention-mqa/config.json", "attention-mqa", "attention-mqa-s2", "attention-mqa-s3" },
        { "MLA", "models/train-demo/config.json", "all", "attention-mla-s2", "attention-mla-s3" },
    };
    for (size_t i = 0; i < 4; i++) {
        ModelConfig c;
        if (config_load(rows[i][1], &c)) fail_msg("%s", ds_last_error());
        const long D = c.hidden_size, nh = c.num_attention_heads, ng = c.num_key_value_heads;
        const long dq = config_qk_head_dim(&c), dv = c.v_head_dim, dc = c.kv_lora_rank, dcq = c.q_lora_rank;
        const bool mla = c.attention_type == ATTN_MLA;
        const long elems =
            mla ? (long)(mla_cache_bytes_per_token(&c, 1) / (size_t)c.num_hidden_layers) : attn_std_cache_elems(&c);
        const long weights = mla ? dcq * D + dcq + nh * dq * dcq + (dc + c.qk_rope_head_dim) * D + dc +
                                       nh * (c.qk_nope_head_dim + dv) * dc + D * nh * dv
                                 : (nh + ng) * dq * D + ng * dv * D + D * nh * dv;
        double held[3];
        for (int k = 0; k < 3; k++) {
            char name[256];
            snprintf(name, sizeof name, "%s/train_log.jsonl", rows[i][2 + k]);
            char *log = scratch_read(TA_DIR, name);
            const char *last = strstr(log, "\"step\":300,");
            if (!last) fail_msg("%s has no step 300", name);
            held[k] = json_number_after(last, "eval_loss");
            free(log);
        }
        char label[16], ng_text[16] = "-", want[256];
        snprintf(label, sizeof label, "\n%-9s ", rows[i][0]);
        if (!mla) snprintf(ng_text, sizeof ng_text, "%ld", ng);
        const char *p = strstr(got, label);
        if (!p) fail_msg("no row %s in:\n%s", rows[i][0], got);
        snprintf(want, sizeof want, "%-9s %3ld %3s %3ld %8ld %8ld %7ld %9.4f %9.4f %9.4f %9.4f", rows[i][0], nh,
                 ng_text, dq, elems, 2 * elems, weights, held[0], held[1], held[2],
                 held[0] / 3 + held[1] / 3 + held[2] / 3);
        if (strncmp(p + 1, want, strlen(want)))
            fail_msg("row %s: printed\n%.90s\nthe configs and logs give\n%s", rows[i][0], p + 1, want);
        printf("  %s\n", want);
    }
    rerun_matches("attention-gqa", "-c " TA_DIR "/attention-gqa/config.json " TA_OPTIONS);
}

/* ---- the checker on small books ----------------------------------------------------------- */

static void a_correct_book_passes(void **state)
{
    (void)state;
    char *dir = make_book(GOOD, SOURCE);
    char args[4200];
    snprintf(args, sizeof args, "--check --root '%s'", dir);
    Run r = run_tool(args);
    if (r.status != 0) fail_msg("expected a pass, got:\n%s", r.out);
    scratch_remove(dir);
}

static void a_drifted_block_fails(void **state)
{
    (void)state;
    /* the source changed after the chapter was written */
    char source[sizeof SOURCE + 16];
    snprintf(source, sizeof source, "%s", SOURCE);
    char *plus = strstr(source, "a + b");
    plus[2] = '-';
    char *dir = make_book(GOOD, source);
    expect_problem(dir, "chapters/01-one.md:2:", "block differs from src/add.c:add at block line 3");
    scratch_remove(dir);
}

static void a_missing_anchor_fails(void **state)
{
    (void)state;
    char chapter[sizeof GOOD + 16];
    snprintf(chapter, sizeof chapter, "%s", GOOD);
    memcpy(strstr(chapter, "hello.sh:hello"), "hello.sh:hellp", 14);
    char *dir = make_book(chapter, SOURCE);
    expect_problem(dir, "chapters/01-one.md:10:", "src/hello.sh has no anchor \"hellp\"");
    scratch_remove(dir);
}

static void a_missing_file_fails(void **state)
{
    (void)state;
    char chapter[sizeof GOOD + 16];
    snprintf(chapter, sizeof chapter, "%s", GOOD);
    memcpy(strstr(chapter, "src/add.c"), "src/sub.c", 9);
    char *dir = make_book(chapter, SOURCE);
    expect_problem(dir, "chapters/01-one.md:2:", "cannot read src/sub.c (missing file)");
    scratch_remove(dir);
}

static void a_duplicate_anchor_fails(void **state)
{
    (void)state;
    char source[sizeof SOURCE * 2];
    snprintf(source, sizeof source, "%s%s", SOURCE, "// ANCHOR: add\n// ANCHOR_END: add\n");
    char *dir = make_book(GOOD, source);
    expect_problem(dir, "chapters/01-one.md:2:", "anchor \"add\" appears twice (lines 2 and 10)");
    scratch_remove(dir);
}

static void an_unclosed_anchor_fails(void **state)
{
    (void)state;
    char source[sizeof SOURCE];
    snprintf(source, sizeof source, "%s", SOURCE);
    *strstr(source, "// ANCHOR_END: add") = '\0';
    char *dir = make_book(GOOD, source);
    expect_problem(dir, "chapters/01-one.md:2:", "src/add.c:2: ANCHOR \"add\" has no ANCHOR_END");
    scratch_remove(dir);
}

static void an_unlisted_chapter_fails(void **state)
{
    (void)state;
    char *dir = make_book(GOOD, SOURCE);
    scratch_write(dir, "chapters/02-two.md", "# Two, which book.md forgot\n");
    expect_problem(dir, "chapters/02-two.md:1:", "not listed in book.md");
    scratch_remove(dir);
}

static void an_include_without_a_block_fails(void **state)
{
    (void)state;
    char *dir = make_book("# One\n<!-- include: src/add.c:add -->\nprose, no block\n", SOURCE);
    expect_problem(dir, "chapters/01-one.md:2:", "is not followed by a fenced code block");
    scratch_remove(dir);
}

/* --write fills empty blocks with the region (markers dropped), after which --check passes;
 * an include shown as an example inside another fenced block is left alone. */
static void write_fills_blocks_then_check_passes(void **state)
{
    (void)state;
    char *dir = make_book("# One\n<!-- include: src/add.c:body -->\n```c\n```\n"
                          "```md\n<!-- include: src/none.c:none -->\n```\n",
                          SOURCE);
    char args[4200];
    snprintf(args, sizeof args, "--write --root '%s'", dir);
    Run r = run_tool(args);
    if (r.status != 0) fail_msg("--write failed:\n%s", r.out);
    char *chapter = scratch_read(dir, "chapters/01-one.md");
    assert_string_equal(chapter, "# One\n<!-- include: src/add.c:body -->\n```c\n    return a + b;\n```\n"
                                 "```md\n<!-- include: src/none.c:none -->\n```\n");
    free(chapter);
    snprintf(args, sizeof args, "--check --root '%s'", dir);
    r = run_tool(args);
    if (r.status != 0) fail_msg("--check after --write failed:\n%s", r.out);
    scratch_remove(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(repository_book_has_no_drift),
        cmocka_unit_test(kv_cache_budget_prints_the_included_table),
        cmocka_unit_test(token_journey_prints_the_included_walkthrough),
        cmocka_unit_test(absorption_notebook_forms_agree),
        cmocka_unit_test(routing_explorer_invariants_hold),
        cmocka_unit_test(expert_load_notebook_invariants_hold),
        cmocka_unit_test(balance_ablation_notebook_recomputes),
        cmocka_unit_test(train_ablation_notebook_recomputes),
        cmocka_unit_test(train_attention_ablation_recomputes),
        cmocka_unit_test(a_correct_book_passes),
        cmocka_unit_test(a_drifted_block_fails),
        cmocka_unit_test(a_missing_anchor_fails),
        cmocka_unit_test(a_missing_file_fails),
        cmocka_unit_test(a_duplicate_anchor_fails),
        cmocka_unit_test(an_unclosed_anchor_fails),
        cmocka_unit_test(an_unlisted_chapter_fails),
        cmocka_unit_test(an_include_without_a_block_fails),
        cmocka_unit_test(write_fills_blocks_then_check_passes),
    };
    return cmocka_run_group_tests_name("book", tests, NULL, NULL);
}
