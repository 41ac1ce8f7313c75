/**
 * \file test_lab.c
 * \brief The kernel lab's verdicts, asserted by running `make check-kernel` as a user would.
 *
 * kernels/examples/: the MLA decode whose splits overlap by one key must fail
 * as a numerical mismatch exactly at the shapes whose context spans more than
 * one 64-key split; the RMSNorm with a missing barrier must fail as wrong
 * values without race check and as a race with RACECHECK=1; the one-warp-per-
 * row RMSNorm must pass, race check on. The project's own kernels, through
 * kernels/lab/project_*.cu, must pass their contracts. RoPE on the
 * half-split pairs (x_i, x_{i+d/2}) must fail as a numerical mismatch at every
 * shape with more than one pair. A router whose top-k lets the higher index
 * win must fail as a discrete mismatch exactly at the shape built of exact
 * ties. A permutation that fills each expert's rows last token first must
 * fail as a discrete mismatch in slot_row with counts and offsets right. A
 * causal softmax that masks the token's own key must fail as a numerical
 * mismatch at every shape, and so must an expert FFN that applies SiLU to
 * the up projection instead of the gate. Routing statistics that count a
 * device once per assignment instead of once per token must fail as a
 * discrete mismatch in dev_tokens at every shape with K > 1, count and
 * score_sum right. RMSNorm with ε outside the root must fail at the shapes
 * where ε is not negligible (tiny rows, a large ε), at every seed of the
 * fixed set; so must a router that scales weights it has renormalised, at
 * the renormalised V2-style shapes with a factor other than 1. A load past
 * the end of x whose value is discarded must be reported by
 * AddressSanitizer at every seed. The seeds are the fixed set unless SEEDS
 * names others or asks for a random one. Two faulty kernels in
 * tests/lab/faults/ show contract violations named in the contract's terms:
 * a write past the end of y (AddressSanitizer) and a block over 1024 threads.
 *
 * Runs from the repository root (where `make test` runs the suites); the
 * first check builds the lab's AddressSanitizer tree (build/lab/sim/).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

/** Output and exit status of one `make check-kernel`. */
typedef struct {
    char out[65536];
    int status;
} Run;

static Run run;

/* Runs make check-kernel with the given arguments; leaves stdout + stderr and the exit status in run. */
static void check_kernel(const char *args)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd,
             "env -u MAKEFLAGS -u MAKELEVEL -u MFLAGS -u SEEDS make --no-print-directory -s check-kernel %s 2>&1",
             args);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    const size_t n = fread(run.out, 1, sizeof run.out - 1, p);
    run.out[n] = '\0';
    const int st = pclose(p);
    run.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Fails, showing the output, unless the check passed (passed true) or failed (false). make exits 2 when
 * its recipe fails, whatever the harness's own status (1 FAIL, 2 could not run). */
static void expect_verdict(bool passed)
{
    if ((run.status == 0) != passed)
        fail_msg("make check-kernel exited with %d, expected %s:\n%s", run.status, passed ? "0" : "non-zero", run.out);
}

/* Fails, showing the output, unless it contains text. */
static void expect(const char *text)
{
    if (!strstr(run.out, text)) fail_msg("make check-kernel output lacks \"%s\":\n%s", text, run.out);
}

/* Fails unless the output names path's source line that holds marker, as "name.cu:N"
 * (AddressSanitizer's frame for the faulting access). */
static void expect_source_line(const char *path, const char *marker)
{
    FILE *f = fopen(path, "r");
    if (!f) fail_msg("cannot read %s", path);
    char line[1024], want[256];
    int n = 0, found = 0;
    while (!found && fgets(line, sizeof line, f)) {
        n++;
        found = strstr(line, marker) != NULL;
    }
    fclose(f);
    if (!found) fail_msg("%s has no line with \"%s\"", path, marker);
    const char *name = strrchr(path, '/');
    snprintf(want, sizeof want, "%s:%d", name ? name + 1 : path, n);
    expect(want);
}

/* The line of the shape whose text contains key (static buffer), or fails. */
static const char *shape_line(const char *key)
{
    static char line[1024];
    const char *at = strstr(run.out, key);
    if (!at) fail_msg("no shape line with \"%s\":\n%s", key, run.out);
    const char *start = at, *end = strchr(at, '\n');
    while (start > run.out && start[-1] != '\n') start--;
    const size_t n = end ? (size_t)(end - start) : strlen(start);
    snprintf(line, sizeof line, "%.*s", (int)n, start);
    return line;
}

/* The shape line for key ends in verdict ("PASS" or "FAIL"). */
static void expect_shape(const char *key, const char *verdict)
{
    const char *line = shape_line(key);
    const size_t n = strlen(line), v = strlen(verdict);
    if (n < v || strcmp(line + n - v, verdict) != 0) fail_msg("shape \"%s\" should be %s: %s", key, verdict, line);
}

/* The seeds the last run printed ("check-kernel: seeds 1 2 3 (...)") into seeds (at most max); returns how many. */
static int printed_seeds(unsigned long long *seeds, int max)
{
    const char *at = strstr(run.out, "check-kernel: seeds ");
    if (!at) fail_msg("no seed line:\n%s", run.out);
    at += strlen("check-kernel: seeds ");
    int n = 0;
    char *end;
    for (unsigned long long v = strtoull(at, &end, 10); end != at && n < max; v = strtoull(at, &end, 10)) {
        seeds[n++] = v;
        at = end;
    }
    if (n == 0) fail_msg("no seeds on the seed line:\n%s", run.out);
    return n;
}

/* The last run reported a failure at every seed it printed. */
static void expect_every_seed_fails(void)
{
    unsigned long long seeds[16];
    const int n = printed_seeds(seeds, 16);
    for (int i = 0; i < n; i++) {
        char line[64];
        snprintf(line, sizeof line, "seed %llu: ", seeds[i]);
        const char *verdict = shape_line(line);
        if (!strstr(verdict, "shapes fail"))
            fail_msg("seed %llu does not catch the kernel: %s\n%s", seeds[i], verdict, run.out);
    }
}

static void off_by_one_split_fails_beyond_one_split(void **state)
{
    (void)state;
    check_kernel("COMPONENT=mla_decode SRC=kernels/examples/mla_decode_split_off_by_one.cu");
    expect_verdict(false);
    expect("FAIL  lab_mla_decode (kernels/examples/mla_decode_split_off_by_one.cu)");
    expect("(numerical mismatch)");
    /* contexts within one 64-key split are right; every longer one is wrong */
    const char *one_split[] = { "ctx    3 ", "ctx   41 ", "ctx   64 " };
    const char *several[] = { "ctx  100 ", "ctx  132 ", "ctx   66 ", "ctx  300 ", "ctx 1000 (pos0 998", "128 heads" };
    for (size_t i = 0; i < sizeof one_split / sizeof one_split[0]; i++) expect_shape(one_split[i], "PASS");
    for (size_t i = 0; i < sizeof several / sizeof several[0]; i++) expect_shape(several[i], "FAIL");
    expect("numerical mismatch: o_lat differs from the reference");
}

static void missing_barrier_gives_wrong_values(void **state)
{
    (void)state;
    check_kernel("COMPONENT=rmsnorm SRC=kernels/examples/rmsnorm_missing_barrier.cu");
    expect_verdict(false);
    expect("FAIL  lab_rmsnorm (kernels/examples/rmsnorm_missing_barrier.cu)");
    expect("numerical mismatch: y differs from the reference");
    expect_shape("Lite T 4, n 2048", "FAIL");
}

static void missing_barrier_is_a_race(void **state)
{
    (void)state;
    check_kernel("COMPONENT=rmsnorm SRC=kernels/examples/rmsnorm_missing_barrier.cu RACECHECK=1");
    expect_verdict(false);
    expect("on sim/ (the simulated device) with race check");
    expect("shapes fail (race)");
    expect("race: rmsnorm_tree_kernel's result depends on the order of its threads: y[t=");
    expect("a missing __syncthreads()?");
}

static void warp_per_row_passes_under_race_check(void **state)
{
    (void)state;
    check_kernel("COMPONENT=rmsnorm SRC=kernels/examples/rmsnorm_warp_per_row.cu RACECHECK=1");
    expect_verdict(true);
    expect("PASS  lab_rmsnorm (kernels/examples/rmsnorm_warp_per_row.cu): all 10 shapes match the reference");
    expect_shape("V2   T 4, n 5120", "PASS");
}

static void project_kernels_satisfy_their_contracts(void **state)
{
    (void)state;
    check_kernel("COMPONENT=rmsnorm SRC=kernels/lab/project_rmsnorm.cu");
    expect_verdict(true);
    expect("PASS  lab_rmsnorm (kernels/lab/project_rmsnorm.cu)");
    check_kernel("COMPONENT=mla_decode SRC=kernels/lab/project_mla_decode.cu");
    expect_verdict(true);
    expect("PASS  lab_mla_decode (kernels/lab/project_mla_decode.cu): all 9 shapes match the reference");
}

static void project_rope_satisfies_its_contract(void **state)
{
    (void)state;
    check_kernel("COMPONENT=rope SRC=kernels/lab/project_rope.cu");
    expect_verdict(true);
    expect("PASS  lab_rope (kernels/lab/project_rope.cu): all 7 shapes match the reference");
}

static void rope_on_half_split_pairs_fails_beyond_one_pair(void **state)
{
    (void)state;
    check_kernel("COMPONENT=rope SRC=kernels/examples/rope_half_split.cu");
    expect_verdict(false);
    expect("FAIL  lab_rope (kernels/examples/rope_half_split.cu): 5 of 7 shapes fail (numerical mismatch)");
    expect_shape("tiny d_r  2", "PASS"); /* one pair: both layouts rotate (x_0, x_1) */
    expect_shape("odd  d_r  2", "PASS");
    expect_shape("odd  d_r  6, T 3", "FAIL");
    expect_shape("V2   d_r 64", "FAIL");
    expect("numerical mismatch: 90 of 279 elements of x are off by more than 1e-05 + 1e-05·|reference|, the first "
           "x[t=0, i=10]");
}

static void project_router_satisfies_its_contract(void **state)
{
    (void)state;
    check_kernel("COMPONENT=router SRC=kernels/lab/project_router.cu");
    expect_verdict(true);
    expect("PASS  lab_router (kernels/lab/project_router.cu): all 8 shapes match the reference");
}

static void router_ties_to_higher_index_fail_on_exact_ties(void **state)
{
    (void)state;
    check_kernel("COMPONENT=router SRC=kernels/examples/router_ties_to_higher_index.cu");
    expect_verdict(false);
    expect(
        "FAIL  lab_router (kernels/examples/router_ties_to_higher_index.cu): 1 of 8 shapes fail (discrete mismatch)");
    expect_shape("exact ties", "FAIL");
    expect_shape("V3   E 256", "PASS");
    expect("discrete mismatch: 8 of 8 rows of idx hold other values than the reference's, the first row 0: {");
}

static void project_moe_permute_satisfies_its_contract(void **state)
{
    (void)state;
    check_kernel("COMPONENT=moe_permute SRC=kernels/lab/project_moe_permute.cu");
    expect_verdict(true);
    expect("PASS  lab_moe_permute (kernels/lab/project_moe_permute.cu): all 5 shapes match the reference");
}

static void permute_in_reverse_token_order_fails_on_rows(void **state)
{
    (void)state;
    check_kernel("COMPONENT=moe_permute SRC=kernels/examples/moe_permute_reverse_order.cu");
    expect_verdict(false);
    expect("FAIL  lab_moe_permute (kernels/examples/moe_permute_reverse_order.cu): 4 of 5 shapes fail (discrete "
           "mismatch)");
    expect_shape("tiny   T   1", "PASS");
    expect_shape("skewed", "FAIL");
    expect("counts: 160/160 equal; offsets: 161/161 equal; slot_row: ");
    expect(" of 111 entries of slot_row differ from the reference, the first slot_row[t=0, k=0]");
}

static void project_mla_softmax_satisfies_its_contract(void **state)
{
    (void)state;
    check_kernel("COMPONENT=mla_softmax SRC=kernels/lab/project_mla_softmax.cu");
    expect_verdict(true);
    expect("PASS  lab_mla_softmax (kernels/lab/project_mla_softmax.cu): all 6 shapes match the reference");
}

static void strict_causal_mask_fails_on_the_diagonal(void **state)
{
    (void)state;
    check_kernel("COMPONENT=mla_softmax SRC=kernels/examples/mla_softmax_strict_mask.cu");
    expect_verdict(false);
    expect("FAIL  lab_mla_softmax (kernels/examples/mla_softmax_strict_mask.cu): 6 of 6 shapes fail (numerical "
           "mismatch)");
    expect("worst p[h=0, t=0, j=0] = 0, reference 1");
    expect_shape("V2   128 heads", "FAIL");
}

static void project_moe_ffn_satisfies_its_contract(void **state)
{
    (void)state;
    check_kernel("COMPONENT=moe_ffn SRC=kernels/lab/project_moe_ffn.cu");
    expect_verdict(true);
    expect("PASS  lab_moe_ffn (kernels/lab/project_moe_ffn.cu): all 5 shapes match the reference");
}

static void swapped_gate_and_up_fail_everywhere(void **state)
{
    (void)state;
    check_kernel("COMPONENT=moe_ffn SRC=kernels/examples/moe_ffn_gate_up_swapped.cu");
    expect_verdict(false);
    expect("FAIL  lab_moe_ffn (kernels/examples/moe_ffn_gate_up_swapped.cu): 5 of 5 shapes fail (numerical mismatch)");
    expect("numerical mismatch: y differs from the reference: rel-L2 ");
    expect_shape("V2   T 1, D 5120", "FAIL");
}

static void project_ep_stats_satisfies_its_contract(void **state)
{
    (void)state;
    check_kernel("COMPONENT=ep_stats SRC=kernels/lab/project_ep_stats.cu RACECHECK=1");
    expect_verdict(true);
    expect("PASS  lab_ep_stats (kernels/lab/project_ep_stats.cu): all 5 shapes match the reference");
    expect("count: 160/160 equal; score_sum: rel-L2 ");
}

static void device_counted_per_assignment_fails_in_dev_tokens(void **state)
{
    (void)state;
    check_kernel("COMPONENT=ep_stats SRC=kernels/examples/ep_stats_device_per_assignment.cu");
    expect_verdict(false);
    expect("FAIL  lab_ep_stats (kernels/examples/ep_stats_device_per_assignment.cu): 4 of 5 shapes fail (discrete "
           "mismatch)");
    expect_shape("tiny T   1", "PASS"); /* K 1: one assignment is one token */
    expect_shape("V2   T 512", "FAIL");
    /* one device holds every expert: each token is counted K = 6 times */
    expect("1 of 1 entries of dev_tokens differ from the reference, the first dev_tokens[d=0] = 3072, reference 512");
    expect("count: 160/160 equal; score_sum: rel-L2 ");
}

static void seeds_are_fixed_unless_asked(void **state)
{
    (void)state;
    check_kernel("COMPONENT=rmsnorm SRC=kernels/lab/project_rmsnorm.cu");
    expect_verdict(true);
    expect("check-kernel: seeds 1 2 3 (the fixed set;");
    expect("seed 3: all 10 shapes pass");
    expect("PASS  lab_rmsnorm (kernels/lab/project_rmsnorm.cu): all 10 shapes match the reference at seeds 1 2 3");
    check_kernel("COMPONENT=rmsnorm SRC=kernels/lab/project_rmsnorm.cu SEEDS=random");
    expect_verdict(true);
    expect("(drawn at random;");
    check_kernel("COMPONENT=rmsnorm SRC=kernels/lab/project_rmsnorm.cu SEEDS='17 4'");
    expect_verdict(true);
    expect("check-kernel: seeds 17 4 (given;");
    check_kernel("COMPONENT=rmsnorm SRC=kernels/lab/project_rmsnorm.cu SEEDS=seven");
    expect_verdict(false);
    expect("SEEDS='seven': give numbers separated by spaces");
}

static void eps_outside_the_root_fails_where_eps_matters(void **state)
{
    (void)state;
    check_kernel("COMPONENT=rmsnorm SRC=kernels/examples/rmsnorm_eps_outside_root.cu");
    expect_verdict(false);
    expect(
        "FAIL  lab_rmsnorm (kernels/examples/rmsnorm_eps_outside_root.cu): 2 of 10 shapes fail (numerical mismatch)");
    expect_every_seed_fails();
    /* beside a mean square of 3, eps = 1e-6 in the wrong place is a 4e-7 change: inside the tolerance */
    expect_shape("V2   T 4, n 5120", "PASS");
    expect_shape("eps  T 4, n 512, |x| < 0.001, eps 1e-06", "FAIL");
    expect_shape("eps  T 3, n 257, |x| < 3, eps 0.01", "FAIL");
}

static void discarded_load_past_the_end_is_caught(void **state)
{
    (void)state;
    check_kernel("COMPONENT=rmsnorm SRC=kernels/examples/rmsnorm_tail_load_unguarded.cu");
    expect_verdict(false);
    unsigned long long seeds[16];
    const int n = printed_seeds(seeds, 16); /* AddressSanitizer stops the run at the first seed: one run per seed */
    for (int i = 0; i < n; i++) {
        char args[160], text[200];
        snprintf(args, sizeof args, "COMPONENT=rmsnorm SRC=kernels/examples/rmsnorm_tail_load_unguarded.cu SEEDS=%llu",
                 seeds[i]);
        check_kernel(args);
        expect_verdict(false);
        snprintf(text, sizeof text,
                 "out of bounds at shape tiny T 1, n 1 (seed %llu): read of 4 bytes, 0 bytes past "
                 "the end of argument x",
                 seeds[i]);
        expect(text);
        expect_source_line("kernels/examples/rmsnorm_tail_load_unguarded.cu",
                           "the bug: the load comes before the bound");
    }
}

static void scale_after_renormalising_fails_on_renormalised_v2_gates(void **state)
{
    (void)state;
    check_kernel("COMPONENT=router SRC=kernels/examples/router_scale_after_renorm.cu");
    expect_verdict(false);
    expect("FAIL  lab_router (kernels/examples/router_scale_after_renorm.cu): 2 of 8 shapes fail (numerical mismatch)");
    expect_every_seed_fails();
    expect_shape("odd  E  12", "PASS"); /* renormalised, but ×1 */
    expect_shape("V3   E 256", "PASS"); /* noaux_tc renormalises and scales */
    expect_shape("norm E  64", "FAIL");
    expect_shape("norm E 160", "FAIL");
    expect("numerical mismatch: weight (by expert id) differs from the reference: rel-L2 ");
}

static void write_past_the_end_names_the_argument(void **state)
{
    (void)state;
    check_kernel("COMPONENT=rmsnorm SRC=tests/lab/faults/rmsnorm_past_end.cu");
    expect_verdict(false);
    expect("FAIL  lab_rmsnorm (tests/lab/faults/rmsnorm_past_end.cu): out of bounds at shape tiny T 1, n 1 (seed 1): "
           "write of 4 bytes, 0 bytes past the end of argument y ([t, i] = [1, 1], 4 bytes)");
    expect("AddressSanitizer: heap-buffer-overflow");
    expect_source_line("tests/lab/faults/rmsnorm_past_end.cu", "y[(size_t)T * n] = 0.0f");
}

static void block_over_the_limit_names_kernel_and_shape(void **state)
{
    (void)state;
    check_kernel("COMPONENT=rmsnorm SRC=tests/lab/faults/rmsnorm_block_too_big.cu");
    expect_verdict(false);
    expect_shape("Lite T 6, n 512", "PASS");
    expect_shape("Lite T 4, n 2048", "FAIL");
    expect("launch limits: the launch of kernel rmsnorm_thread_per_element_kernel breaks a launch limit: "
           "grid (4,1,1), block (2048,1,1)");
}

static void usage_errors_are_refused(void **state)
{
    (void)state;
    check_kernel("COMPONENT=softmax SRC=kernels/examples/rmsnorm_warp_per_row.cu");
    expect_verdict(false);
    expect("COMPONENT='softmax' is not one of: rmsnorm mla_decode rope router moe_permute mla_softmax moe_ffn "
           "ep_stats");
    check_kernel("COMPONENT=rmsnorm SRC=no/such/kernel.cu");
    expect_verdict(false);
    expect("SRC='no/such/kernel.cu' is not a file");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(usage_errors_are_refused),
        cmocka_unit_test(off_by_one_split_fails_beyond_one_split),
        cmocka_unit_test(missing_barrier_gives_wrong_values),
        cmocka_unit_test(missing_barrier_is_a_race),
        cmocka_unit_test(warp_per_row_passes_under_race_check),
        cmocka_unit_test(project_kernels_satisfy_their_contracts),
        cmocka_unit_test(project_rope_satisfies_its_contract),
        cmocka_unit_test(rope_on_half_split_pairs_fails_beyond_one_pair),
        cmocka_unit_test(project_router_satisfies_its_contract),
        cmocka_unit_test(router_ties_to_higher_index_fail_on_exact_ties),
        cmocka_unit_test(project_moe_permute_satisfies_its_contract),
        cmocka_unit_test(permute_in_reverse_token_order_fails_on_rows),
        cmocka_unit_test(project_mla_softmax_satisfies_its_contract),
        cmocka_unit_test(strict_causal_mask_fails_on_the_diagonal),
        cmocka_unit_test(project_moe_ffn_satisfies_its_contract),
        cmocka_unit_test(swapped_gate_and_up_fail_everywhere),
        cmocka_unit_test(project_ep_stats_satisfies_its_contract),
        cmocka_unit_test(device_counted_per_assignment_fails_in_dev_tokens),
        cmocka_unit_test(seeds_are_fixed_unless_asked),
        cmocka_unit_test(eps_outside_the_root_fails_where_eps_matters),
        cmocka_unit_test(discarded_load_past_the_end_is_caught),
        cmocka_unit_test(scale_after_renormalising_fails_on_renormalised_v2_gates),
        cmocka_unit_test(write_past_the_end_names_the_argument),
        cmocka_unit_test(block_over_the_limit_names_kernel_and_shape),
    };
    return cmocka_run_group_tests_name("kernel lab", tests, NULL, NULL);
}
