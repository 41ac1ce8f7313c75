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

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char notebooks[PATH_MAX]; /* absolute BUILD/notebooks */

/* Output and exit status of one run of the check. */
typedef struct {
    int status;
    char out[8192];
} Run;

static Run run_check(const char *root)
{
    Run r = {0, ""};
    char cmd[3 * PATH_MAX];
    if (root)
        snprintf(cmd, sizeof cmd, "sh figures/render.sh --check --root '%s' '%s' 2>&1", root, notebooks);
    else
        snprintf(cmd, sizeof cmd, "sh figures/render.sh --check '%s' 2>&1", notebooks);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(r.out, 1, sizeof r.out - 1, p);
    r.out[n] = '\0';
    r.status = pclose(p);
    return r;
}

static void sh(const char *fmt, const char *a, const char *b)
{
    char cmd[3 * PATH_MAX];
    snprintf(cmd, sizeof cmd, fmt, a, b);
    if (system(cmd) != 0) fail_msg("setup command failed: %s", cmd);
}

/* A temporary repository with one Graphviz figure (decoder-block) and one gnuplot figure
 * (yarn-ramp, whose notebook reads no files), copied from this one with their SVGs. */
static char *make_root(void)
{
    static char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/dsv2-figures-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    assert_non_null(mkdtemp(dir));
    sh("mkdir -p '%s/figures' '%s/notebooks-c/plots'", dir, dir);
    sh("cp figures/decoder-block.dot figures/decoder-block.svg figures/yarn-ramp.svg '%s/figures/'%s", dir, "");
    sh("cp notebooks-c/plots/yarn_ramp.gp '%s/notebooks-c/plots/'%s", dir, "");
    return dir;
}

static void remove_root(const char *dir) { sh("rm -rf '%s'%s", dir, ""); }

/* Runs the check on root and expects failure with a line holding both fragments. */
static void expect_problem(const char *root, const char *figure, const char *what)
{
    Run r = run_check(root);
    if (r.status == 0) fail_msg("the check passed, expected \"%s\" for %s:\n%s", what, figure, r.out);
    const char *line = strstr(r.out, figure);
    if (!line || !strstr(line, what))
        fail_msg("expected a line with \"%s\" and \"%s\", got:\n%s", figure, what, r.out);
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
    remove_root(root);
}

static void an_edited_graphviz_source_fails(void **state)
{
    (void)state;
    char *root = make_root();
    sh("sed -i 's/input_layernorm/input_norm/' '%s/figures/decoder-block.dot'%s", root, "");
    expect_problem(root, "figures/decoder-block.svg", "differs from what its source draws");
    remove_root(root);
}

static void an_edited_plot_script_fails(void **state)
{
    (void)state;
    char *root = make_root();
    sh("sed -i 's/frequencies (radians per position)/frequencies/' '%s/notebooks-c/plots/yarn_ramp.gp'%s",
       root, "");
    expect_problem(root, "figures/yarn-ramp.svg", "differs from what its source draws");
    remove_root(root);
}

static void an_uncommitted_figure_fails(void **state)
{
    (void)state;
    char *root = make_root();
    sh("rm '%s/figures/decoder-block.svg'%s", root, "");
    expect_problem(root, "figures/decoder-block.svg", "is not committed");
    remove_root(root);
}

static void a_figure_without_source_fails(void **state)
{
    (void)state;
    char *root = make_root();
    sh("cp '%s/figures/decoder-block.svg' '%s/figures/orphan.svg'", root, root);
    expect_problem(root, "figures/orphan.svg", "has no source");
    remove_root(root);
}

/* The absolute path of build/notebooks; 0 on success. */
static int find_notebooks(void)
{
    if (!realpath("build/notebooks", notebooks)) {
        fprintf(stderr, "test_figures: no build/notebooks here: run from the repository root "
                        "after make notebooks (make test builds them)\n");
        return -1;
    }
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(committed_figures_match_their_sources),
        cmocka_unit_test(an_unchanged_copy_passes),
        cmocka_unit_test(an_edited_graphviz_source_fails),
        cmocka_unit_test(an_edited_plot_script_fails),
        cmocka_unit_test(an_uncommitted_figure_fails),
        cmocka_unit_test(a_figure_without_source_fails),
    };
    if (find_notebooks() != 0) return 1;
    return cmocka_run_group_tests_name("figures", tests, NULL, NULL);
}
