/**
 * \file test_figures.c
 * \brief The book's figures cannot drift from their sources: figures/render.sh --check redraws
 * every figure (Graphviz sources in figures/, gnuplot scripts in notebooks-c/plots/ on the data
 * the notebooks write) into a temporary directory and compares it byte for byte with the SVG
 * committed in figures/; and the check is shown to fail, naming the figure, when a source is
 * edited without redrawing, when a drawn figure is not committed, and when a committed SVG has
 * no source.
 *
 * The suite runs from the repository root (as make test runs it) and, like tests/test_book.c,
 * runs the notebook programs of the plain build, build/notebooks (make test builds them): the
 * figures are drawn from their data, and the sanitizer build's copies draw the same figures
 * many times slower. The failure cases copy a few sources into a temporary repository and
 * point the script at it with --root.
 */
#include "check.h"
#include "scratch_files.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

static char notebooks[PATH_MAX]; /* absolute BUILD/notebooks */

/* Output and exit status of one run of the check. */
typedef struct {
    int status;
    char out[8192];
} Run;

static Run run_check(const char *root)
{
    Run r;
    if (root)
        r.status =
            shell_capture(r.out, sizeof r.out, "sh figures/render.sh --check --root '%s' '%s' 2>&1", root, notebooks);
    else
        r.status = shell_capture(r.out, sizeof r.out, "sh figures/render.sh --check '%s' 2>&1", notebooks);
    return r;
}

/* A temporary repository with one Graphviz figure (decoder-block) and one gnuplot figure
 * (yarn-ramp, whose notebook reads no files), copied from this one with their SVGs. */
static char *make_root(void)
{
    char *dir = scratch_make();
    const char *const copied[] = { "figures/decoder-block.dot", "figures/decoder-block.svg", "figures/yarn-ramp.svg",
                                   "notebooks-c/plots/yarn_ramp.gp" };
    for (size_t i = 0; i < sizeof copied / sizeof *copied; i++) scratch_copy(dir, copied[i]);
    return dir;
}

/* Runs the check on root and expects failure with a line holding both fragments. */
static void expect_problem(const char *root, const char *figure, const char *what)
{
    Run r = run_check(root);
    if (r.status == 0) fail_msg("the check passed, expected \"%s\" for %s:\n%s", what, figure, r.out);
    const char *line = strstr(r.out, figure);
    if (!line || !strstr(line, what)) fail_msg("expected a line with \"%s\" and \"%s\", got:\n%s", figure, what, r.out);
}

/* ---- the repository's own figures ---------------------------------------------------------- */

static void committed_figures_match_their_sources(void **state)
{
    (void)state;
    Run r = run_check(NULL);
    if (r.status != 0) fail_msg("figures/render.sh --check (make figures redraws them):\n%s", r.out);
}

/* ---- the check fails when it should -------------------------------------------------------- */

static void an_unchanged_copy_passes(void **state)
{
    (void)state;
    char *root = make_root();
    Run r = run_check(root);
    if (r.status != 0) fail_msg("a faithful copy failed the check:\n%s", r.out);
    scratch_remove(root);
}

static void an_edited_graphviz_source_fails(void **state)
{
    (void)state;
    char *root = make_root();
    shell_ok("sed -i 's/input_layernorm/input_norm/' '%s/figures/decoder-block.dot'", root);
    expect_problem(root, "figures/decoder-block.svg", "differs from what its source draws");
    scratch_remove(root);
}

static void an_edited_plot_script_fails(void **state)
{
    (void)state;
    char *root = make_root();
    shell_ok("sed -i 's/frequencies (radians per position)/frequencies/' '%s/notebooks-c/plots/yarn_ramp.gp'", root);
    expect_problem(root, "figures/yarn-ramp.svg", "differs from what its source draws");
    scratch_remove(root);
}

static void an_uncommitted_figure_fails(void **state)
{
    (void)state;
    char *root = make_root();
    shell_ok("rm '%s/figures/decoder-block.svg'", root);
    expect_problem(root, "figures/decoder-block.svg", "is not committed");
    scratch_remove(root);
}

static void a_figure_without_source_fails(void **state)
{
    (void)state;
    char *root = make_root();
    shell_ok("cp '%s/figures/decoder-block.svg' '%s/figures/orphan.svg'", root, root);
    expect_problem(root, "figures/orphan.svg", "has no source");
    scratch_remove(root);
}

/* The absolute path of build/notebooks; 0 on success. */
static int find_notebooks(void)
{
    if (repo_path("build/notebooks", notebooks) == 0) return 0;
    fprintf(stderr, "test_figures: make notebooks builds them (make test does)\n");
    return -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(committed_figures_match_their_sources), cmocka_unit_test(an_unchanged_copy_passes),
        cmocka_unit_test(an_edited_graphviz_source_fails),       cmocka_unit_test(an_edited_plot_script_fails),
        cmocka_unit_test(an_uncommitted_figure_fails),           cmocka_unit_test(a_figure_without_source_fails),
    };
    if (find_notebooks() != 0) return 1;
    return cmocka_run_group_tests_name("figures", tests, NULL, NULL);
}
