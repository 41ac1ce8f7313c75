/**
 * \file test_excerpts_diff.c
 * \brief tools/excerpts.sh's diff blocks: `<!-- diff: A B -->` followed by a fenced block holding
 *        `diff -u` of regions A and B. Each test builds a small book in a temporary directory
 *        (book.md, one chapter, a "reference" file and a "kernel" file with anchors), runs the
 *        tool on it with --root, and reads its exit status and messages.
 *
 * The expected blocks are written out here by hand, so the check is against a diff worked
 * out independently of the tool, not against the tool's own earlier output.
 */
#include "check.h"
#include "scratch_files.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A reference loop and its one-thread-per-row translation. */
static const char REF[] = "/* rows */\n"
                          "// ANCHOR: scale\n"
                          "void scale(float *x, int n, int rows)\n"
                          "{\n"
                          "    for (int r = 0; r < rows; r++)\n"
                          "        for (int i = 0; i < n; i++) x[r * n + i] *= 2;\n"
                          "}\n"
                          "// ANCHOR_END: scale\n";

static const char KERNEL[] = "// ANCHOR: scale_v1\n"
                             "__global__ void scale(float *x, int n, int rows)\n"
                             "{\n"
                             "    const int r = blockIdx.x * blockDim.x + threadIdx.x;\n"
                             "    if (r < rows)\n"
                             "        for (int i = 0; i < n; i++) x[r * n + i] *= 2;\n"
                             "}\n"
                             "// ANCHOR_END: scale_v1\n";

/* diff -u of the two regions, labelled by their specs, the whole region as context. */
static const char DIFF[] = "--- ref/scale.c:scale\n"
                           "+++ kernels/scale.cu:scale_v1\n"
                           "@@ -1,5 +1,6 @@\n"
                           "-void scale(float *x, int n, int rows)\n"
                           "+__global__ void scale(float *x, int n, int rows)\n"
                           " {\n"
                           "-    for (int r = 0; r < rows; r++)\n"
                           "+    const int r = blockIdx.x * blockDim.x + threadIdx.x;\n"
                           "+    if (r < rows)\n"
                           "         for (int i = 0; i < n; i++) x[r * n + i] *= 2;\n"
                           " }\n";

/* A fresh book whose chapter shows the diff block `block` (its lines, without the fences). */
static char *make_book(const char *block)
{
    char *dir = scratch_make();
    scratch_write(dir, "book.md", "# Book\n\n1. [One](chapters/01-one.md)\n");
    scratch_write(dir, "ref/scale.c", REF);
    scratch_write(dir, "kernels/scale.cu", KERNEL);
    char chapter[4096];
    snprintf(chapter, sizeof chapter,
             "# One\n\nThe kernel against the loop:\n\n"
             "<!-- diff: ref/scale.c:scale kernels/scale.cu:scale_v1 -->\n```diff\n%s```\n\nAfter.\n",
             block);
    scratch_write(dir, "chapters/01-one.md", chapter);
    return dir;
}

/* Runs the tool with mode on dir; returns its exit status, its output (stdout and stderr) in out. */
static int run_tool(const char *mode, const char *dir, char *out, size_t cap)
{
    return shell_capture(out, cap, "sh tools/excerpts.sh %s --root '%s' 2>&1", mode, dir);
}

/* True when chapter 1 holds text; prints the chapter when it does not. */
static bool chapter_holds(const char *dir, const char *text)
{
    char *chapter = scratch_read(dir, "chapters/01-one.md");
    const bool holds = strstr(chapter, text) != NULL;
    if (!holds) print_error("chapters/01-one.md:\n%s", chapter);
    free(chapter);
    return holds;
}

/* The hand-written diff passes --check. */
static void true_diff_passes(void **state)
{
    (void)state;
    char out[8192], *dir = make_book(DIFF);
    if (run_tool("--check", dir, out, sizeof out) != 0) fail_msg("--check failed on a true diff:\n%s", out);
    scratch_remove(dir);
}

/* The kernel changes under the block: --check names the chapter and line of the diff marker. */
static void drifted_diff_is_reported(void **state)
{
    (void)state;
    char out[8192], *dir = make_book(DIFF);
    char kernel[sizeof KERNEL + 8];
    strcpy(kernel, KERNEL);
    memcpy(strstr(kernel, "*= 2"), "*= 3", 4);
    scratch_write(dir, "kernels/scale.cu", kernel);
    assert_int_not_equal(run_tool("--check", dir, out, sizeof out), 0);
    if (!strstr(out,
                "chapters/01-one.md:5: block differs from the diff of ref/scale.c:scale kernels/scale.cu:scale_v1"))
        fail_msg("expected the drift at chapters/01-one.md:5, got:\n%s", out);
    scratch_remove(dir);
}

/* --write fills an empty block with exactly the hand-written diff, which then passes --check. */
static void write_fills_the_diff(void **state)
{
    (void)state;
    char out[8192], *dir = make_book("");
    assert_int_not_equal(run_tool("--check", dir, out, sizeof out), 0);
    if (run_tool("--write", dir, out, sizeof out) != 0) fail_msg("--write failed:\n%s", out);
    if (!chapter_holds(dir, DIFF)) fail_msg("the filled chapter does not hold the expected diff");
    if (run_tool("--check", dir, out, sizeof out) != 0) fail_msg("--check after --write failed:\n%s", out);
    scratch_remove(dir);
}

/* A diff naming an anchor that does not exist is reported, and --write leaves the block alone. */
static void missing_anchor_is_reported(void **state)
{
    (void)state;
    char out[8192], *dir = make_book(DIFF);
    scratch_write(dir, "kernels/scale.cu", "__global__ void scale(void) {}\n");
    assert_int_not_equal(run_tool("--write", dir, out, sizeof out), 0);
    if (!strstr(out, "kernels/scale.cu has no anchor \"scale_v1\"")) fail_msg("got:\n%s", out);
    if (!chapter_holds(dir, DIFF)) fail_msg("--write changed a block it could not fill");
    scratch_remove(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(true_diff_passes),
        cmocka_unit_test(drifted_diff_is_reported),
        cmocka_unit_test(write_fills_the_diff),
        cmocka_unit_test(missing_anchor_is_reported),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
