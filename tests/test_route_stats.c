/**
 * \file test_route_stats.c
 * \brief `dsv2 route-stats` on the bundled model against a recomputation through ref/.
 *
 * The suite runs the built program ($DSV2_BIN when set, else build/dsv2) on models/tiny-kjv
 * and reads its report back. Independently of dsv2.c it runs the model's layers by hand with
 * the public pieces (RMSNorm, MLA, the router, the MoE FFN; the hand-run logits must equal
 * model_forward's exactly, the same float operations in the same order), routes each MoE
 * layer's FFN input itself (linear + router_scores + router_select for the model's routing,
 * a plain top-K for the unlimited one, device_limited_route for the limited one), counts
 * tokens per expert and per device and the (token, device) pairs, and takes the three losses
 * from balance_losses. Counts and bytes must be equal; losses, printed to 6 significant
 * digits, within 1e-5 relative (the rounding of the print is at most 5e-6), and devices per
 * token, printed to 3 decimals, within 5e-4. Bad flags must
 * give their exact one-line error and exit status 2; --plot writes a PNG when gnuplot is on
 * PATH (skipped otherwise) and, without gnuplot, fails with one line and leaves no file.
 * The report of the example in chapter 15 must equal tests/expected/route_stats_tiny_kjv.txt.
 */
#include "balance.h"
#include "check.h"
#include "cli_run.h"
#include "dtype.h"
#include "error.h"
#include "model.h"
#include "rmsnorm.h"
#include "router.h"
#include "st_writer.h"
#include "tokenizer.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MODEL  "models/tiny-kjv"
#define PROMPT "In the beginning God created the heaven and the earth."
#define LONG_PROMPT                                                                                         \
    "And the earth was without form, and void; and darkness was upon the face of the deep. And the Spirit " \
    "of God moved upon the face of the waters. And God said, Let there be light: and there was light."

enum { MAX_T = 256, MAX_MOE = 8 };

/* ---- the recomputation ---------------------------------------------------------------------- */

/** Every MoE layer's routing of a prompt, recomputed here. */
typedef struct {
    int T, E, K, hidden, n_moe;
    int layer[MAX_MOE]; /**< layer number of each MoE layer */
    float *scores;      /**< [n_moe, T, E] affinities */
    int *chosen;        /**< [n_moe, T, K] the model's routing */
} Routing;

/* The prompt's ids as the CLI makes them (BOS per the tokenizer files, special tokens parsed). */
static int encode(const char *text, int *ids)
{
    Tokenizer *tok = tokenizer_load(MODEL);
    assert_non_null(tok);
    int32_t buf[MAX_T];
    const long T =
        tokenizer_encode(tok, text, strlen(text), TOKENIZER_ADD_SPECIAL | TOKENIZER_PARSE_SPECIAL, buf, MAX_T);
    tokenizer_free(tok);
    assert_true(T > 0 && T <= MAX_T);
    for (long t = 0; t < T; t++) ids[t] = buf[t];
    return (int)T;
}

/* Runs the model's layers by hand on the prompt and routes each MoE layer's FFN input here. */
static Routing recompute(const char *text)
{
    int ids[MAX_T];
    const int T = encode(text, ids);
    Model m;
    const ModelOptions opt = { .max_context = T, .chunk = T };
    if (model_open(&m, MODEL, &opt)) fail_msg("%s", ds_last_error());
    const ModelConfig *c = m.cfg;
    const int D = c->hidden_size, V = c->vocab_size, E = c->n_routed_experts, K = c->num_experts_per_tok;
    Routing r = { .T = T, .E = E, .K = K, .hidden = D };
    r.scores = malloc(sizeof(float) * MAX_MOE * T * E);
    r.chosen = malloc(sizeof(int) * MAX_MOE * T * K);
    float *mine = malloc(sizeof(float) * T * V), *ref = malloc(sizeof(float) * T * V);
    assert_true(r.scores && r.chosen && mine && ref);
    poison(r.scores, (size_t)MAX_MOE * T * E);
    poison(mine, (size_t)T * V);
    poison(ref, (size_t)T * V);
    for (int t = 0; t < T; t++)
        dtype_widen(m.h + (size_t)t * D, m.embed.data, m.embed.dtype, (size_t)ids[t] * D, (size_t)D);
    for (int l = 0; l < c->num_hidden_layers; l++) {
        const LayerWeights *L = &m.layers[l];
        rmsnorm_forward(m.a, m.h, L->attn_norm, T, D, c->rms_norm_eps);
        mla_forward(m.b, m.a, &L->attn, &m.cache[l], c, &m.rope, 0, T, T > 1 ? MLA_EXPANDED : MLA_ABSORBED, &m.mla);
        for (size_t i = 0; i < (size_t)T * D; i++) m.h[i] += m.b[i];
        rmsnorm_forward(m.a, m.h, L->ffn_norm, T, D, c->rms_norm_eps);
        if (L->is_moe) {
            assert_true(r.n_moe < MAX_MOE);
            float *s = r.scores + (size_t)r.n_moe * T * E;
            int *idx = r.chosen + (size_t)r.n_moe * T * K;
            float weight[ROUTER_MAX_EXPERTS];
            linear(s, m.a, &L->moe.router, T); /* z = W_gate b_t, then s = softmax(z) */
            for (int t = 0; t < T; t++) {
                router_scores(s + (size_t)t * E, s + (size_t)t * E, E, c->scoring_func);
                router_select(idx + t * K, weight, s + (size_t)t * E, L->moe.bias, c);
            }
            r.layer[r.n_moe++] = l;
            moe_forward(m.b, m.a, &L->moe, c, T, &m.ffn);
        } else {
            swiglu_forward(m.b, m.a, &L->dense, T, m.ffn.hidden);
        }
        for (size_t i = 0; i < (size_t)T * D; i++) m.h[i] += m.b[i];
    }
    rmsnorm_forward(m.a, m.h, m.final_norm, T, D, c->rms_norm_eps);
    linear(mine, m.a, &m.lm_head, T);
    model_reset(&m);
    if (model_forward(&m, ids, T, ref, true)) fail_msg("%s", ds_last_error());
    for (size_t i = 0; i < (size_t)T * V; i++)
        if (mine[i] != ref[i]) fail_msg("hand-run logit %zu is %g, model_forward's %g", i, mine[i], ref[i]);
    free(mine);
    free(ref);
    model_close(&m);
    return r;
}

static void routing_free(Routing *r)
{
    free(r->scores);
    free(r->chosen);
}

/* The K largest affinities of one token, best first, ties to the lower index. */
static void top_k(int *idx, const float *s, int E, int K)
{
    for (int k = 0; k < K; k++) {
        int best = -1;
        for (int e = 0; e < E; e++) {
            bool taken = false;
            for (int j = 0; j < k; j++) taken |= idx[j] == e;
            if (!taken && (best < 0 || s[e] > s[best])) best = e;
        }
        idx[k] = best;
    }
}

/* Most devices tiny-kjv's group-limited routing can reach over D devices: its 8 groups of 2 experts
 * lie whole on one device when D divides 8 (then topk_group = 3 groups reach at most 3 devices), and
 * each spans D/8 devices when 8 divides D; never more than K = 4 or D. */
static int model_device_bound(int D)
{
    const int groups = 8, topk_group = 3, K = 4;
    int m = D <= groups ? topk_group : topk_group * (D / groups);
    m = m < K ? m : K;
    return m < D ? m : D;
}

/* ---- reading the report back ---------------------------------------------------------------- */

/* What follows prefix on the first line of block that begins with it; NULL when the next "layer"
 * block or the end comes first. */
static const char *find_line(const char *block, const char *prefix)
{
    for (const char *p = block; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (p != block && !strncmp(p, "layer ", 6)) return NULL;
        if (!strncmp(p, prefix, strlen(prefix))) return p + strlen(prefix);
    }
    return NULL;
}

/* Reads n integers after prefix in the block into v. */
static void read_ints(const char *block, const char *prefix, long long *v, int n)
{
    const char *p = find_line(block, prefix);
    if (!p) fail_msg("no line \"%s\" in:\n%s", prefix, block);
    for (int i = 0; i < n; i++) {
        char *end;
        v[i] = strtoll(p, &end, 10);
        if (end == p) fail_msg("line \"%s\": value %d missing", prefix, i);
        p = end;
    }
    while (*p == ' ') p++;
    if (*p != '\n') fail_msg("line \"%s\": more than %d values", prefix, n);
}

/** One routing row of a layer's table. */
typedef struct {
    int M, devices_max;
    double devices_mean;
    long long bytes;
    double loss[3];
} Row;

static Row read_row(const char *block, const char *name)
{
    char prefix[32];
    snprintf(prefix, sizeof prefix, "  %-10s", name);
    const char *p = find_line(block, prefix);
    if (!p) fail_msg("no routing row \"%s\" in:\n%s", name, block);
    Row r;
    if (sscanf(p, "%d %lf %d %lld %lf %lf %lf", &r.M, &r.devices_mean, &r.devices_max, &r.bytes, &r.loss[0], &r.loss[1],
               &r.loss[2]) != 7)
        fail_msg("routing row \"%s\" unreadable: %.120s", name, p);
    return r;
}

static void expect_close(const char *what, int layer, double got, double want)
{
    if (!(fabs(got - want) <= 1e-5 * fabs(want)))
        fail_msg("layer %d %s: printed %.9g, recomputed %.9g", layer, what, got, want);
}

/* Compares a routing row with the recomputation: pairs → bytes, most devices, losses. */
static void check_row(const Routing *r, int i, const char *block, const char *name, const int *idx, int D, int M,
                      const double alpha[3])
{
    const int T = r->T, E = r->E, K = r->K, per = E / D;
    long long pairs = 0;
    int most = 0;
    for (int t = 0; t < T; t++) {
        int n = 0;
        for (int d = 0; d < D; d++) {
            bool hit = false;
            for (int k = 0; k < K; k++) hit |= idx[t * K + k] / per == d;
            n += hit;
        }
        pairs += n;
        most = n > most ? n : most;
    }
    const BalanceSpec b = { E, K, D, M, alpha[0], alpha[1], alpha[2] };
    const BalanceLosses L = balance_losses(r->scores + (size_t)i * T * E, idx, T, &b, NULL);
    const Row row = read_row(block, name);
    assert_int_equal(row.M, M);
    assert_int_equal(row.devices_max, most);
    assert_int_equal(row.bytes, pairs * r->hidden * 2);
    if (!(fabs(row.devices_mean - (double)pairs / T) <= 5e-4)) /* printed to 3 decimals */
        fail_msg("layer %d devices/token: printed %.3f, recomputed %.6f", r->layer[i], row.devices_mean,
                 (double)pairs / T);
    expect_close("L_ExpBal", r->layer[i], row.loss[0], L.expert);
    expect_close("L_DevBal", r->layer[i], row.loss[1], L.device);
    expect_close("L_CommBal", r->layer[i], row.loss[2], L.comm);
    if (!strcmp(name, "limited") && row.bytes > (long long)T * M * r->hidden * 2)
        fail_msg("layer %d: %lld bytes exceed M x hidden x 2 per token", r->layer[i], row.bytes);
}

/* The paper's balance-loss weights, route-stats' default. */
static const double PAPER_ALPHA[3] = { 0.003, 0.05, 0.02 };

/* Runs route-stats with D devices, limit M (0: the default) and, unless alpha is the paper's,
 * --alpha, and checks every printed count, byte figure and loss against the recomputed routing r. */
static void check_report(const Routing *r, const char *text, int D, int M, const double alpha[3])
{
    char d_arg[16], m_arg[16], a_arg[96];
    snprintf(d_arg, sizeof d_arg, "%d", D);
    snprintf(m_arg, sizeof m_arg, "%d", M);
    snprintf(a_arg, sizeof a_arg, "%.17g,%.17g,%.17g", alpha[0], alpha[1], alpha[2]);
    const char *args[12] = { "route-stats", "-m", MODEL, "-p", text, "--devices", d_arg };
    int n = 7;
    if (M) {
        args[n++] = "--limit";
        args[n++] = m_arg;
    }
    if (memcmp(alpha, PAPER_ALPHA, sizeof PAPER_ALPHA)) {
        args[n++] = "--alpha";
        args[n++] = a_arg;
    }
    CliRun run_ = cli_run(args);
    if (run_.status != 0) fail_msg("route-stats exited %d: %s", run_.status, run_.err);
    assert_string_equal(run_.err, "");
    const int T = r->T, E = r->E, K = r->K, per = E / D, limit = M ? M : model_device_bound(D);
    long long all[3] = { 0, 0, 0 };
    int *unlimited = malloc(sizeof(int) * T * K), *limited = malloc(sizeof(int) * T * K);
    assert_true(unlimited && limited);
    const char *block = run_.out;
    for (int i = 0; i < r->n_moe; i++) {
        char head[32];
        snprintf(head, sizeof head, "\nlayer %d\n", r->layer[i]);
        block = strstr(block, head);
        if (!block) fail_msg("no \"layer %d\" in the report:\n%s", r->layer[i], run_.out);
        block += 1;
        const float *s = r->scores + (size_t)i * T * E;
        const int *chosen = r->chosen + (size_t)i * T * K;
        long long want_e[ROUTER_MAX_EXPERTS] = { 0 }, want_tok[ROUTER_MAX_EXPERTS] = { 0 };
        long long want_as[ROUTER_MAX_EXPERTS] = { 0 }, got[ROUTER_MAX_EXPERTS];
        for (int t = 0; t < T; t++) {
            for (int k = 0; k < K; k++) {
                want_e[chosen[t * K + k]]++;
                want_as[chosen[t * K + k] / per]++;
            }
            for (int d = 0; d < D; d++) {
                bool hit = false;
                for (int k = 0; k < K; k++) hit |= chosen[t * K + k] / per == d;
                want_tok[d] += hit;
            }
        }
        read_ints(block, "  tokens per expert", got, E);
        for (int e = 0; e < E; e++) assert_int_equal(got[e], want_e[e]);
        read_ints(block, "  tokens per device", got, D);
        for (int d = 0; d < D; d++) assert_int_equal(got[d], want_tok[d]);
        read_ints(block, "  assignments per device", got, D);
        for (int d = 0; d < D; d++) assert_int_equal(got[d], want_as[d]);
        for (int t = 0; t < T; t++) {
            top_k(unlimited + t * K, s + (size_t)t * E, E, K);
            device_limited_route(limited + t * K, s + (size_t)t * E, E, K, D, limit);
        }
        check_row(r, i, block, "unlimited", unlimited, D, K < D ? K : D, alpha);
        check_row(r, i, block, "model", chosen, D, model_device_bound(D), alpha);
        check_row(r, i, block, "limited", limited, D, limit, alpha);
        all[0] += read_row(block, "unlimited").bytes;
        all[1] += read_row(block, "model").bytes;
        all[2] += read_row(block, "limited").bytes;
    }
    char want[160];
    snprintf(want, sizeof want, "\nall layers   bytes: unlimited %lld, model %lld, limited %lld\n", all[0], all[1],
             all[2]);
    if (!strstr(run_.out, want)) fail_msg("no \"%s\" in:\n%s", want + 1, run_.out);
    printf("D %2d, M %d: bytes over %d MoE layers: unlimited %lld, model %lld, limited %lld\n", D, limit, r->n_moe,
           all[0], all[1], all[2]);
    free(unlimited);
    free(limited);
    cli_run_free(&run_);
}

/* ---- tests ------------------------------------------------------------------------------------ */

/* The defaults (D = n_group = 8, M = topk_group = 3) and other device counts and limits: every count,
 * byte figure and loss equals the recomputation; with D = n_group and M = topk_group the limited
 * routing is the model's own, so their rows agree. */
static void report_equals_recomputation(void **state)
{
    (void)state;
    Routing r = recompute(LONG_PROMPT);
    assert_int_equal(r.n_moe, 3);
    static const int cases[][2] = { { 8, 0 }, { 8, 3 }, { 4, 1 }, { 4, 2 }, { 2, 2 }, { 16, 4 }, { 8, 8 } };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_report(&r, LONG_PROMPT, cases[i][0], cases[i][1], PAPER_ALPHA);
    static const double other[3] = { 1, 0.5, 0.25 }; /* --alpha: each loss with its own weight */
    check_report(&r, LONG_PROMPT, 4, 2, other);
    const char *args[] = { "route-stats", "-m", MODEL, "-p", LONG_PROMPT, NULL };
    CliRun run_ = cli_run(args);
    assert_int_equal(run_.status, 0);
    assert_non_null(strstr(run_.out, "devices      D = 8 of 2 experts each"));
    for (const char *b = strstr(run_.out, "\nlayer "); b; b = strstr(b + 1, "\nlayer ")) {
        const Row model = read_row(b + 1, "model"), limited = read_row(b + 1, "limited");
        assert_int_equal(model.bytes, limited.bytes);
        for (int j = 0; j < 3; j++) assert_true(model.loss[j] == limited.loss[j]);
    }
    cli_run_free(&run_);
    routing_free(&r);
}

/* The example of chapter 15 is this exact report. */
static void chapter_example_is_current(void **state)
{
    (void)state;
    const char *args[] = { "route-stats", "-m", MODEL, "-p", PROMPT, NULL };
    CliRun run_ = cli_run(args);
    assert_int_equal(run_.status, 0);
    char *want = slurp("tests/expected/route_stats_tiny_kjv.txt", NULL);
    if (strcmp(run_.out, want) != 0)
        fail_msg("dsv2 route-stats -m " MODEL " -p \"" PROMPT "\" differs from "
                 "tests/expected/route_stats_tiny_kjv.txt:\n%s",
                 run_.out);
    Routing r = recompute(PROMPT);
    check_report(&r, PROMPT, 8, 0, PAPER_ALPHA);
    routing_free(&r);
    free(want);
    cli_run_free(&run_);
}

/* Runs args and expects exit status and the exact stderr line (nothing on stdout). */
static void expect(const char *const *args, int status, const char *err)
{
    CliRun r = cli_run(args);
    assert_string_equal(r.err, err);
    assert_string_equal(r.out, "");
    assert_int_equal(r.status, status);
    cli_run_free(&r);
}

/* The one-line usage error of route-stats: "dsv2 route-stats: WHAT (see dsv2 route-stats --help)". */
#define USAGE(what) "dsv2 route-stats: " what " (see dsv2 route-stats --help)\n"

static void bad_flags_are_one_line(void **state)
{
    (void)state;
#define RS "route-stats", "-m", MODEL, "-p", PROMPT
    expect((const char *[]){ RS, "--devices", "3", NULL }, 2,
           USAGE("--devices 3: does not divide the 16 routed experts"));
    expect((const char *[]){ RS, "--devices", "0", NULL }, 2, USAGE("--devices: '0' is not an integer in [1, 1024]"));
    expect((const char *[]){ RS, "--devices", "8x", NULL }, 2, USAGE("--devices: '8x' is not an integer in [1, 1024]"));
    expect((const char *[]){ RS, "--limit", "0", NULL }, 2, USAGE("--limit: '0' is not an integer in [1, 1024]"));
    expect((const char *[]){ RS, "--limit", "9", NULL }, 2, USAGE("--limit 9: more than the 8 devices"));
    expect((const char *[]){ RS, "--devices", "4", "--limit", "5", NULL }, 2,
           USAGE("--limit 5: more than the 4 devices"));
    expect((const char *[]){ RS, "--limit", "1", NULL }, 2,
           USAGE("--limit 1: 1 device holds 2 experts, fewer than the 4 a token chooses"));
    expect((const char *[]){ RS, "--devices", "16", "--limit", "1", NULL }, 2,
           USAGE("--limit 1: 1 device holds 1 expert, fewer than the 4 a token chooses"));
    static const char *const bad_alpha[] = { "0.1,0.2", "0.1,0.2,0.3,0.4", "0.1,-0.2,0.3", "0.1,nan,0.3",
                                             "a,b,c",   "0.1,,0.3",        "0.1,0.2,0.3,", "1e7,0,0" };
    for (size_t i = 0; i < sizeof bad_alpha / sizeof bad_alpha[0]; i++) {
        char want[200];
        snprintf(want, sizeof want, USAGE("--alpha: '%s' is not three numbers in [0, 1e6] separated by commas"),
                 bad_alpha[i]);
        expect((const char *[]){ RS, "--alpha", bad_alpha[i], NULL }, 2, want);
    }
    expect((const char *[]){ RS, "--devices", "16", "--limit", "3", NULL }, 2,
           USAGE("--limit 3: 3 devices hold 3 experts, fewer than the 4 a token chooses"));
    expect((const char *[]){ RS, "--backend", "fast", NULL }, 2, USAGE("route-stats does not take --backend"));
    expect((const char *[]){ RS, "--devices", NULL }, 2, USAGE("--devices needs a value"));
    expect((const char *[]){ RS, "--ctx", "1025", NULL }, 2,
           USAGE("--ctx 1025: more than the model's max_position_embeddings (1024)"));
    expect((const char *[]){ "route-stats", "-m", MODEL, "-p", PROMPT, "--ctx", "4", NULL }, 1,
           "dsv2: the prompt of 12 tokens does not fit the context of 4 tokens (--ctx)\n");
#undef RS
}

/* Directory entries of stw_scratch_dir other than . and .., counted. */
static int entries(void)
{
    DIR *d = opendir(stw_scratch_dir);
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    return n;
}

/* True when gnuplot is an executable in one of $PATH's directories. */
static bool gnuplot_on_path(void)
{
    const char *path = getenv("PATH");
    char file[4096];
    while (path && *path) {
        const size_t len = strcspn(path, ":");
        snprintf(file, sizeof file, "%.*s/gnuplot", (int)len, path);
        if (len && access(file, X_OK) == 0) return true;
        path += len + (path[len] == ':');
    }
    return false;
}

/* --plot writes a PNG (its 8-byte signature) and nothing else beside it. */
static void plot_writes_png(void **state)
{
    (void)state;
    if (!gnuplot_on_path()) {
        printf("gnuplot is not on PATH: --plot cannot be tested here\n");
        skip();
    }
    char *png = stw_path(stw_scratch_dir, "load.png");
    const char *args[] = { "route-stats", "-m", MODEL, "-p", PROMPT, "--plot", png, NULL };
    CliRun r = cli_run(args);
    if (r.status != 0) fail_msg("route-stats --plot exited %d: %s", r.status, r.err);
    FILE *f = fopen(png, "rb");
    assert_non_null(f);
    unsigned char magic[8] = { 0 };
    assert_int_equal(fread(magic, 1, 8, f), 8);
    fclose(f);
    static const unsigned char PNG[8] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n' };
    assert_memory_equal(magic, PNG, 8);
    assert_int_equal(entries(), 1); /* no temporary file left beside it */
    unlink(png);
    free(png);
    cli_run_free(&r);
}

/* Without gnuplot on PATH, --plot fails before the model runs: one line, status 1, no file. */
static void plot_without_gnuplot_leaves_nothing(void **state)
{
    (void)state;
    char *png = stw_path(stw_scratch_dir, "load.png");
    const char *args[] = { "route-stats", "-m", MODEL, "-p", PROMPT, "--plot", png, NULL };
    char *env[] = { "PATH=/nonexistent", NULL };
    CliRun r = cli_run_env(args, env);
    char want[4200];
    snprintf(want, sizeof want, "dsv2: --plot %s: gnuplot is not on PATH (Debian: apt-get install gnuplot-nox)\n", png);
    assert_string_equal(r.err, want);
    assert_string_equal(r.out, "");
    assert_int_equal(r.status, 1);
    assert_int_equal(entries(), 0);
    free(png);
    cli_run_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(report_equals_recomputation),
        cmocka_unit_test(chapter_example_is_current),
        cmocka_unit_test(bad_flags_are_one_line),
        cmocka_unit_test(plot_writes_png),
        cmocka_unit_test(plot_without_gnuplot_leaves_nothing),
    };
    return cmocka_run_group_tests(tests, stw_group_setup, stw_group_teardown);
}
