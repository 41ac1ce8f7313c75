/**
 * \file dsv2_route_stats.c
 * \brief `dsv2 route-stats`: where the router sends a prompt's tokens, and what that costs (see
 * dsv2_route_stats.h); --plot draws tokens per expert and layer with gnuplot.
 */
#include "dsv2_route_stats.h"

#include "balance.h"
#include "error.h"
#include "fast_ep.h"
#include "model.h"
#include "route_log.h"
#include "router.h"

#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/** What one routing of T tokens costs over b->D devices of E/D contiguous experts each. */
typedef struct {
    long long pairs;    /* (token, device) pairs: devices each token's experts lie on, summed */
    int devices_max;    /* most devices one token reached */
    BalanceLosses loss; /* L_ExpBal, L_DevBal, L_CommBal with b's α's and M */
} RouteCost;

static RouteCost route_cost(const float *scores, const int *idx, int T, const BalanceSpec *b)
{
    RouteCost c = { 0, 0, balance_losses(scores, idx, T, b, NULL) };
    const int per = b->E / b->D;
    for (int t = 0; t < T; t++) {
        bool on[ROUTER_MAX_EXPERTS] = { false };
        int n = 0;
        for (int k = 0; k < b->K; k++) {
            const int d = idx[t * b->K + k] / per;
            n += !on[d];
            on[d] = true;
        }
        c.pairs += n;
        c.devices_max = n > c.devices_max ? n : c.devices_max;
    }
    return c;
}

/* The default device count: the config's expert groups when it has several, else 8; lowered until
 * it divides the routed experts. */
static int default_devices(const ModelConfig *c)
{
    int D = c->n_group > 1 ? c->n_group : 8;
    if (D > c->n_routed_experts) D = c->n_routed_experts;
    while (c->n_routed_experts % D) D--;
    return D;
}

/* True when an executable named name is in one of $PATH's directories. */
static bool on_path(const char *name)
{
    const char *path = getenv("PATH");
    char file[4096];
    while (path && *path) {
        const size_t len = strcspn(path, ":");
        snprintf(file, sizeof file, "%.*s/%s", (int)len, path, name);
        if (len && access(file, X_OK) == 0) return true;
        path += len + (path[len] == ':');
    }
    return false;
}

/* Writes s as a gnuplot single-quoted string (a quote inside is doubled). */
static void gnuplot_string(FILE *f, const char *s)
{
    fputc('\'', f);
    for (; *s; s++) {
        if (*s == '\'') fputc('\'', f);
        fputc(*s, f);
    }
    fputc('\'', f);
}

/* The plot's working files: data, script and gnuplot's messages in a temporary directory. */
typedef struct {
    char dir[4096], data[4160], script[4160], log[4160];
} PlotFiles;

/* Runs gnuplot on the script, its output to the log. Returns 0, or −1 after printing one line. */
static int run_gnuplot(const char *png, const PlotFiles *p)
{
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, p->log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    char *argv[] = { "gnuplot", (char *)p->script, NULL };
    pid_t pid;
    const int err = posix_spawnp(&pid, "gnuplot", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (err) {
        fprintf(stderr, "dsv2: --plot %s: cannot run gnuplot: %s\n", png, strerror(err));
        return -1;
    }
    int status;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        char first[512] = "";
        FILE *f = fopen(p->log, "r");
        if (f && fgets(first, sizeof first, f)) first[strcspn(first, "\n")] = '\0';
        if (f) fclose(f);
        fprintf(stderr, "dsv2: --plot %s: gnuplot failed%s%s\n", png, *first ? ": " : "", first);
        return -1;
    }
    return 0;
}

/* --plot: tokens per expert of every MoE layer as a heat map (expert across, layer up). The data and
 * the script go to a temporary directory; gnuplot draws into a temporary file beside png, which is
 * renamed into place only when complete. counts: [n_moe, E]; layer: [n_moe] the layer numbers.
 * Returns 0, or −1 after printing one line (no file left behind). */
static int write_plot(const char *png, const char *title, const int *counts, const int *layer, int n_moe, int E)
{
    const char *tmp = getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    PlotFiles p;
    char out[4200];
    snprintf(p.dir, sizeof p.dir, "%s/dsv2-plot-XXXXXX", tmp);
    snprintf(out, sizeof out, "%s.XXXXXX", png);
    if (!mkdtemp(p.dir)) {
        fprintf(stderr, "dsv2: --plot: %s: %s\n", p.dir, strerror(errno));
        return -1;
    }
    snprintf(p.data, sizeof p.data, "%s/load.dat", p.dir);
    snprintf(p.script, sizeof p.script, "%s/load.gp", p.dir);
    snprintf(p.log, sizeof p.log, "%s/gnuplot.log", p.dir);
    int rc = -1, fd = mkstemp(out);
    if (fd < 0) {
        fprintf(stderr, "dsv2: --plot %s: %s\n", png, strerror(errno));
        goto out;
    }
    const mode_t mask = umask(0); /* the picture gets the usual 0666 & ~umask */
    umask(mask);
    const int chmod_failed = fchmod(fd, 0666 & ~mask);
    close(fd);
    if (chmod_failed) {
        fprintf(stderr, "dsv2: --plot %s: %s\n", png, strerror(errno));
        goto out;
    }
    FILE *f = fopen(p.data, "w");
    if (!f) {
        fprintf(stderr, "dsv2: --plot: %s: %s\n", p.data, strerror(errno));
        goto out;
    }
    for (int r = 0; r < n_moe; r++) /* one line per cell: expert, row, tokens */
        for (int e = 0; e < E; e++) fprintf(f, "%d %d %d\n", e, r, counts[(size_t)r * E + e]);
    int ok = fclose(f) == 0;
    if (!ok || !(f = fopen(p.script, "w"))) { /* name the file that failed: the data, or the script */
        fprintf(stderr, "dsv2: --plot: %s: %s\n", ok ? p.script : p.data, strerror(errno));
        goto out;
    }
    fprintf(f, "set terminal pngcairo size 1000,%d\nset output ", 200 + 24 * (n_moe < 40 ? n_moe : 40));
    gnuplot_string(f, out);
    fprintf(f, "\nset title ");
    gnuplot_string(f, title);
    fprintf(f,
            " noenhanced\nset xlabel 'routed expert'\nset ylabel 'layer'\nset cblabel 'tokens'\n"
            "set palette defined (0 '#f7fbff', 0.5 '#6baed6', 1 '#08306b')\nset cbrange [0:*]\nset xrange "
            "[-0.5:%g]\nset yrange [-0.5:%g]\n"
            "set ytics (",
            E - 0.5, n_moe - 0.5);
    const int step = n_moe <= 32 ? 1 : (n_moe + 15) / 16; /* at most about 16 layer labels */
    for (int r = 0; r < n_moe; r += step) fprintf(f, "%s\"%d\" %d", r ? ", " : "", layer[r], r);
    fprintf(f, ")\nplot ");
    gnuplot_string(f, p.data);
    fprintf(f, " using 1:2:(0.5):(0.5):3 with boxxyerror fillcolor palette fillstyle solid noborder notitle\n");
    ok = fclose(f) == 0;
    if (!ok) {
        fprintf(stderr, "dsv2: --plot: %s: %s\n", p.script, strerror(errno));
        goto out;
    }
    if (run_gnuplot(png, &p)) goto out;
    if (rename(out, png) != 0) {
        fprintf(stderr, "dsv2: --plot %s: %s\n", png, strerror(errno));
        goto out;
    }
    rc = 0;
out:
    if (rc) remove(out);
    remove(p.data);
    remove(p.script);
    remove(p.log);
    rmdir(p.dir);
    return rc;
}

static const char *topk_method_name(TopkMethod t)
{
    return t == TOPK_GREEDY ? "greedy" : t == TOPK_GROUP_LIMITED_GREEDY ? "group_limited_greedy" : "noaux_tc";
}

/** What every layer's report shares. */
typedef struct {
    const ModelConfig *cfg;
    int T;               /* tokens */
    int D;               /* devices */
    int M;               /* the device limit of the "limited" routing */
    int M_model;         /* most devices the model's own routing can reach over D devices */
    const double *alpha; /* [3] α₁, α₂, α₃ */
} RouteSetup;

/* Prints the values of v[0..n) after a label, space-separated. */
static void print_row(const char *label, const long long *v, int n)
{
    printf("  %-22s", label);
    for (int i = 0; i < n; i++) printf(" %lld", v[i]);
    printf("\n");
}

/* Prints "max X, mean Y, max/mean Z" of v[0..n). */
static void print_load(const char *label, const long long *v, int n, const char *unit)
{
    long long max = 0, sum = 0;
    for (int i = 0; i < n; i++) {
        sum += v[i];
        max = v[i] > max ? v[i] : max;
    }
    const double mean = (double)sum / n;
    printf("  %-22s max %lld, mean %.2f, max/mean %.3f (%s)\n", label, max, mean, mean > 0 ? max / mean : 0, unit);
}

/* One MoE layer's report: tokens per expert and per device under the model's routing, then three
 * routings side by side — top-K with no device limit (router_select's greedy rule), the model's own,
 * and device_limited_route() to M devices — with their bytes and balance losses. counts: [E] output,
 * tokens per expert; work: [2, T, K] for the two recomputed routings. Adds each
 * routing's bytes to bytes[3]. */
static void report_layer(const RouteSetup *r, int l, const float *scores, const int *chosen, long long *counts,
                         int *work, long long bytes[3])
{
    const ModelConfig *c = r->cfg;
    const int E = c->n_routed_experts, K = c->num_experts_per_tok, T = r->T, D = r->D, per = E / D;
    int *unlimited = work, *limited = work + (size_t)T * K;
    float weight[ROUTER_MAX_EXPERTS]; /* router_select's weights, not reported */
    ModelConfig greedy = *c;
    greedy.topk_method = TOPK_GREEDY;
    for (int t = 0; t < T; t++) {
        router_select(unlimited + t * K, weight, scores + (size_t)t * E, NULL, &greedy);
        device_limited_route(limited + t * K, scores + (size_t)t * E, E, K, D, r->M);
    }
    long long tokens[ROUTER_MAX_EXPERTS] = { 0 }, assigned[ROUTER_MAX_EXPERTS] = { 0 };
    memset(counts, 0, sizeof *counts * E);
    for (int t = 0; t < T; t++) {
        bool on[ROUTER_MAX_EXPERTS] = { false };
        for (int k = 0; k < K; k++) {
            const int e = chosen[t * K + k], d = e / per;
            counts[e]++;
            assigned[d]++;
            tokens[d] += !on[d];
            on[d] = true;
        }
    }
    printf("\nlayer %d\n", l);
    print_row("tokens per expert", counts, E);
    print_load("expert load", counts, E, "tokens");
    print_row("tokens per device", tokens, D);
    print_row("assignments per device", assigned, D);
    print_load("device load", assigned, D, "assignments");
    printf("  %-10s %3s %14s %4s %14s %11s %11s %11s\n", "routing", "M", "devices/token", "max", "bytes", "L_ExpBal",
           "L_DevBal", "L_CommBal");
    const char *name[3] = { "unlimited", "model", "limited" };
    const int *idx[3] = { unlimited, chosen, limited }, M[3] = { K < D ? K : D, r->M_model, r->M };
    for (int i = 0; i < 3; i++) {
        const BalanceSpec b = { E, K, D, M[i], r->alpha[0], r->alpha[1], r->alpha[2] };
        const RouteCost cost = route_cost(scores, idx[i], T, &b);
        const long long n = cost.pairs * c->hidden_size * 2; /* bf16 hidden states */
        printf("  %-10s %3d %14.3f %4d %14lld %11.6g %11.6g %11.6g\n", name[i], M[i], (double)cost.pairs / T,
               cost.devices_max, n, cost.loss.expert, cost.loss.device, cost.loss.comm);
        bytes[i] += n;
    }
}

int route_stats_run(const RouteStatsArgs *a)
{
    if (a->plot && !on_path("gnuplot")) {
        fprintf(stderr, "dsv2: --plot %s: gnuplot is not on PATH (Debian: apt-get install gnuplot-nox)\n", a->plot);
        return 1;
    }
    Model m;
    const ModelOptions opt = { .max_context = a->ctx };
    if (model_open(&m, a->model_dir, &opt)) {
        fprintf(stderr, "dsv2: %s\n", ds_last_error());
        return 1;
    }
    const ModelConfig *c = m.cfg;
    if (a->ctx > m.max_context) {
        fprintf(stderr,
                "dsv2 route-stats: --ctx %d: more than the model's max_position_embeddings (%d) (see dsv2 "
                "route-stats --help)\n",
                a->ctx, c->max_position_embeddings);
        model_close(&m);
        return 2;
    }
    const int E = c->n_routed_experts, K = c->num_experts_per_tok, L = c->num_hidden_layers;
    int n_moe = 0;
    for (int l = 0; l < L; l++) n_moe += config_layer_is_moe(c, l);
    if (E == 0 || n_moe == 0) {
        fprintf(stderr, "dsv2: %s: no MoE layers to report on\n", a->model_dir);
        model_close(&m);
        return 1;
    }
    const int D = a->devices ? (int)a->devices : default_devices(c);
    const int M_model = fast_ep_device_limit(c, D), M = a->limit ? (int)a->limit : M_model;
    const char *bad = NULL;
    char why[160];
    if (E % D) {
        bad = "--devices";
        snprintf(why, sizeof why, "does not divide the %d routed experts", E);
    } else if (M > D) {
        bad = "--limit";
        snprintf(why, sizeof why, "more than the %d devices", D);
    } else if (M * (E / D) < K) {
        bad = "--limit";
        snprintf(why, sizeof why, "%d device%s hold%s %d expert%s, fewer than the %d a token chooses", M,
                 M == 1 ? "" : "s", M == 1 ? "s" : "", M * (E / D), M * (E / D) == 1 ? "" : "s", K);
    }
    if (bad) {
        fprintf(stderr, "dsv2 route-stats: %s %ld: %s (see dsv2 route-stats --help)\n", bad,
                !strcmp(bad, "--devices") ? (long)D : (long)M, why);
        model_close(&m);
        return 2;
    }
    const int *ids = a->ids, T = a->T;
    int rc = 1;
    RouteLog g = { 0 };
    long long *counts = NULL;
    int *work = NULL, *plot_counts = NULL;
    if (T > m.max_context) {
        fprintf(stderr, "dsv2: the prompt of %d tokens does not fit the context of %d tokens (--ctx)\n", T,
                m.max_context);
        goto out;
    }
    counts = malloc(sizeof *counts * E);
    work = malloc(sizeof(int) * 2 * (size_t)T * K);
    plot_counts = malloc(sizeof(int) * n_moe * (size_t)E);
    if (!counts || !work || !plot_counts) {
        fprintf(stderr, "dsv2: out of memory for the routing of %d tokens\n", T);
        goto out;
    }
    if (route_log_attach(&g, &m, T)) {
        fprintf(stderr, "dsv2: %s\n", ds_last_error());
        goto out;
    }
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    double shown = 0;
    for (int done = 0, n; done < T; done += n) { /* chunk by chunk, for the progress line */
        n = m.chunk < T - done ? m.chunk : T - done;
        if (model_forward(&m, ids + done, n, NULL, false)) {
            fprintf(stderr, "dsv2: %s\n", ds_last_error());
            goto out;
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        const double secs = (double)(now.tv_sec - t0.tv_sec) + 1e-9 * (double)(now.tv_nsec - t0.tv_nsec);
        if (secs - shown >= 2) { /* progress only when it is slow */
            fprintf(stderr, "dsv2 route-stats: %d of %d tokens through the model (%.0f s)\n", done + n, T, secs);
            shown = secs;
        }
    }
    const RouteSetup setup = { c, T, D, M, M_model, a->alpha };
    printf("route-stats  %s: %d tokens, %d MoE layer%s of %d\n", a->model_dir, T, n_moe, n_moe == 1 ? "" : "s", L);
    printf("routing      %s: K = %d of E = %d routed experts", topk_method_name(c->topk_method), K, E);
    if (c->topk_method != TOPK_GREEDY && c->n_group > 1) printf(", best %d of %d groups", c->topk_group, c->n_group);
    printf("\ndevices      D = %d of %d experts each (device d: [%dd, %dd + %d)); the model's routing reaches at "
           "most %d\n",
           D, E / D, E / D, E / D, E / D, M_model);
    printf("bytes        %d x 2 (bf16) per (token, device) pair, for each device holding one of the token's "
           "experts\n",
           c->hidden_size);
    printf("routings     unlimited: top-%d of all experts; model: as the model ran; limited: device-limited "
           "routing, M = %d\n",
           K, M);
    const bool paper = a->alpha[0] == 0.003 && a->alpha[1] == 0.05 && a->alpha[2] == 0.02;
    printf("losses       alpha1 %g, alpha2 %g, alpha3 %g (%s); L_CommBal with each routing's M\n", a->alpha[0],
           a->alpha[1], a->alpha[2], paper ? "paper §2.2.3" : "--alpha");
    long long bytes[3] = { 0, 0, 0 };
    for (int i = 0; i < n_moe; i++) {
        report_layer(&setup, g.layer[i], g.scores + (size_t)i * T * E, g.chosen + (size_t)i * T * K, counts, work,
                     bytes);
        for (int e = 0; e < E; e++) plot_counts[(size_t)i * E + e] = (int)counts[e];
    }
    printf("\nall layers   bytes: unlimited %lld, model %lld, limited %lld\n", bytes[0], bytes[1], bytes[2]);
    fflush(stdout);
    char title[4200];
    snprintf(title, sizeof title, "%s: tokens per routed expert, %d tokens", a->model_dir, T);
    rc = a->plot && write_plot(a->plot, title, plot_counts, g.layer, n_moe, E) ? 1 : 0;
out:
    route_log_free(&g, &m);
    free(counts);
    free(work);
    free(plot_counts);
    model_close(&m);
    return rc;
}
