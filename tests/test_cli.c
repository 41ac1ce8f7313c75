/**
 * \file test_cli.c
 * \brief The command line (dsv2.c, dsv2_generate.c), run as a subprocess: usage errors are one
 * stderr line with status 2 and nothing on stdout; --help goes to stdout with status 0 and every
 * option it lists is in the README; `dsv2 logits` (from ids or text, to a file or /dev/stdout) equals
 * model_forward's logits bit for bit, nothing left behind on failure; `dsv2 generate` equals a greedy
 * loop run here on model_forward (also with --top-k 1 at T > 0 and with --repeat-penalty through
 * sample_repeat_penalty), stops at the end of the context with status 0, a note and the summary,
 * prints nothing for a prompt that cannot run, fails on an unwritable stdout, reads -f and -p -,
 * honours --stop and repeats a run from the seed it printed; `dsv2 chat` on a pipe renders --system
 * as chat_render does, keeps a 9000-byte line as one turn, goes on past a full context and /reset,
 * and handles Ctrl-C during a reply and at the prompt; `dsv2 info` on the golden and released configs.
 *
 * Runs the built program: $DSV2_BIN when set, else build/dsv2 (`make test` builds it first).
 */
#include "check.h"
#include "chat.h"
#include "cli_run.h"
#include "error.h"
#include "model.h"
#include "sample.h"
#include "st_writer.h"
#include "tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Path of a scratch file (each call returns a new malloc'd string). */
static char *scratch(const char *name)
{
    return stw_path(stw_scratch_dir, name);
}

/* Runs args and expects the exit status and the exact stderr text. */
static void expect(const char *const *args, int status, const char *err)
{
    CliRun r = cli_run(args);
    assert_string_equal(r.err, err);
    assert_int_equal(r.status, status);
    cli_run_free(&r);
}

/* Runs args and expects the exit status, the exact stderr text and nothing on stdout. */
static void expect_quiet(const char *const *args, int status, const char *err)
{
    CliRun r = cli_run(args);
    assert_string_equal(r.err, err);
    assert_string_equal(r.out, "");
    assert_int_equal(r.status, status);
    cli_run_free(&r);
}

/* The one-line usage error of command cmd. */
static const char *usage_line(const char *cmd, const char *what)
{
    static char line[8600];
    snprintf(line, sizeof line, "dsv2 %s: %s (see dsv2 %s --help)\n", cmd, what, cmd);
    return line;
}

static void malformed_command_lines(void **state)
{
    (void)state;
    expect_quiet((const char *[]){ NULL }, 2, "dsv2: no command (see dsv2 --help)\n");
    expect_quiet((const char *[]){ "frobnicate", NULL }, 2, "dsv2: unknown command 'frobnicate' (see dsv2 --help)\n");
    expect_quiet((const char *[]){ "generate", "--foo", "1", NULL }, 2, usage_line("generate", "unknown option --foo"));
    expect_quiet((const char *[]){ "info", "-m", NULL }, 2, usage_line("info", "-m needs a value"));
    expect_quiet((const char *[]){ "info", NULL }, 2, usage_line("info", "-m DIR (a model directory) is missing"));
    static const struct {
        const char *flag, *value, *what;
    } bad[] = {
        { "-n", "ten", "-n: 'ten' is not an integer in [0, 2147483647]" },
        { "-n", "-1", "-n: '-1' is not an integer in [0, 2147483647]" },
        { "-n", "5x", "-n: '5x' is not an integer in [0, 2147483647]" },
        { "-t", "hot", "-t: 'hot' is not a number in [0, 100]" },
        { "--top-p", "1.5", "--top-p: '1.5' is not a number in [0, 1]" },
        { "--top-p", "", "--top-p: '' is not a number in [0, 1]" },
        { "--top-k", "-3", "--top-k: '-3' is not an integer in [0, 2147483647]" },
        { "--repeat-penalty", "0", "--repeat-penalty: '0' is not a number in [0.01, 100]" },
        { "--ctx", "0", "--ctx: '0' is not an integer in [1, 2147483647]" },
        { "--stop", "", "--stop: the string is empty" },
        { "--backend", "gpu", "--backend gpu: expected ref or fast" },
        { "--dtype", "f16", "--dtype f16: expected f32 or bf16" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        expect_quiet((const char *[]){ "generate", "-m", "x", "--ids", "1", bad[i].flag, bad[i].value, NULL }, 2,
                     usage_line("generate", bad[i].what));
}

/* Options a command does not take, missing or doubled prompts and empty ones: one line, status 2. */
static void options_a_command_does_not_take(void **state)
{
    (void)state;
    expect_quiet((const char *[]){ "chat", "-m", "models/tiny-kjv", "-p", "hi", NULL }, 2,
                 usage_line("chat", "chat does not take -p"));
    expect_quiet((const char *[]){ "info", "-m", "models/tiny-kjv", "-p", "hi", NULL }, 2,
                 usage_line("info", "info does not take -p"));
    expect_quiet((const char *[]){ "tokenize", "-m", "models/tiny-kjv", "-p", "hi", "-n", "3", NULL }, 2,
                 usage_line("tokenize", "tokenize does not take -n"));
    expect_quiet((const char *[]){ "route-stats", "-m", "models/tiny-kjv", "-p", "hi", "--backend", "fast", NULL }, 2,
                 usage_line("route-stats", "route-stats does not take --backend"));
    expect_quiet((const char *[]){ "generate", "-m", "models/tiny-kjv", NULL }, 2,
                 usage_line("generate", "no prompt: give -p TEXT, -f FILE or --ids 1,2,3"));
    expect_quiet((const char *[]){ "tokenize", "-m", "models/tiny-kjv", NULL }, 2,
                 usage_line("tokenize", "no text: give -p TEXT or -f FILE"));
    expect_quiet((const char *[]){ "detokenize", "-m", "models/tiny-kjv", NULL }, 2,
                 usage_line("detokenize", "--ids is missing"));
    expect_quiet((const char *[]){ "generate", "-m", "models/tiny-kjv", "-p", "a", "--ids", "1", NULL }, 2,
                 usage_line("generate", "give only one of -p, -f and --ids"));
    expect_quiet((const char *[]){ "generate", "-m", "models/tiny-kjv", "-p", "", NULL }, 2,
                 usage_line("generate", "-p: the prompt is empty"));
    expect_quiet(
        (const char *[]){ "generate", "-m", "tests/golden/lite", "--ids", "", NULL }, 2,
        usage_line("generate", "--ids: '' is not a comma-separated list of token ids (problem at character 1)"));
    expect_quiet((const char *[]){ "generate", "-m", "tests/golden/lite", "--ids", "1", "--dtype", "bf16", NULL }, 2,
                 usage_line("generate", "--dtype bf16 needs --backend fast (the reference computes in float32)"));
    expect_quiet((const char *[]){ "generate", "-m", "tests/golden/lite", "--ids", "1", "--stop", "x", NULL }, 2,
                 usage_line("generate", "--stop needs a text prompt (-p or -f): with --ids the output is ids"));
    expect_quiet((const char *[]){ "generate", "-m", "tests/golden/longctx", "--ids", "1", "--ctx", "129", NULL }, 2,
                 usage_line("generate", "--ctx 129: more than the model's max_position_embeddings (128)"));
    expect_quiet((const char *[]){ "logits", "-m", "tests/golden/lite", "--ids", "1,2", NULL }, 2,
                 usage_line("logits", "-o FILE is missing"));
}

static void malformed_ids(void **state)
{
    (void)state;
    static const char *const bad[] = { "1,,2", "1,-2", "7,x" };
    for (int i = 0; i < 3; i++) {
        char what[256];
        snprintf(what, sizeof what, "--ids: '%s' is not a comma-separated list of token ids (problem at character 3)",
                 bad[i]);
        expect_quiet((const char *[]){ "generate", "-m", "tests/golden/lite", "--ids", bad[i], NULL }, 2,
                     usage_line("generate", what));
    }
}

static void missing_model_directory(void **state)
{
    (void)state;
    expect((const char *[]){ "info", "-m", "tests/golden/none", NULL }, 1,
           "dsv2: tests/golden/none: no such model directory\n");
    expect((const char *[]){ "generate", "-m", "tests/golden/none", "--ids", "1", NULL }, 1,
           "dsv2: tests/golden/none: no such model directory\n");
}

/* model_forward's logits for every position, as `dsv2 logits` opens the model (defaults). */
static float *reference_logits(const char *dir, const int *ids, int T, int *vocab)
{
    Model m;
    if (model_open(&m, dir, NULL)) fail_msg("%s", ds_last_error());
    *vocab = m.cfg->vocab_size;
    float *logits = malloc(sizeof(float) * T * *vocab);
    assert_non_null(logits);
    poison(logits, (size_t)T * *vocab);
    assert_int_equal(model_forward(&m, ids, T, logits, true), 0);
    model_close(&m);
    return logits;
}

static void logits_file_equals_model_forward(void **state)
{
    (void)state;
    char *out = scratch("logits.bin");
    expect((const char *[]){ "logits", "-m", "tests/golden/lite", "--ids", "5,17,300,2", "-o", out, NULL }, 0, "");
    const int ids[4] = { 5, 17, 300, 2 };
    int V;
    float *want = reference_logits("tests/golden/lite", ids, 4, &V);
    size_t len;
    char *got = slurp(out, &len);
    assert_int_equal(len, 4 * (size_t)V * sizeof(float)); /* exactly T · vocab · 4 bytes */
    /* the same library calls on the same inputs: bit-identical */
    check_close("dsv2 logits vs model_forward", (const float *)got, want, 4 * (size_t)V, 0, 0);
    free(got);
    free(want);
    unlink(out);
    free(out);
}

/* logits -p TEXT: the logits of the tokenizer's ids; -o /dev/stdout writes them to stdout. */
static void logits_of_text_and_to_stdout(void **state)
{
    (void)state;
    Tokenizer *tok = tokenizer_load("models/tiny-kjv");
    if (!tok) fail_msg("%s", ds_last_error());
    int32_t ids[16];
    const long T = tokenizer_encode(tok, "In the", 6, TOKENIZER_ADD_SPECIAL | TOKENIZER_PARSE_SPECIAL, ids, 16);
    tokenizer_free(tok);
    assert_true(T > 1);
    int V;
    float *want = reference_logits("models/tiny-kjv", (const int *)ids, (int)T, &V);
    const size_t bytes = (size_t)T * V * sizeof(float);
    char *out = scratch("text-logits.bin");
    CliRun r = cli_run((const char *[]){ "logits", "-m", "models/tiny-kjv", "-p", "In the", "-o", out, NULL });
    assert_int_equal(r.status, 0);
    cli_run_free(&r);
    size_t len;
    char *got = slurp(out, &len);
    assert_int_equal(len, bytes);
    check_close("dsv2 logits -p vs model_forward", (const float *)got, want, (size_t)T * V, 0, 0);
    free(got);
    unlink(out);
    free(out);
    r = cli_run((const char *[]){ "logits", "-m", "models/tiny-kjv", "-p", "In the", "-o", "/dev/stdout", NULL });
    assert_int_equal(r.status, 0);
    assert_string_equal(r.err, "");
    assert_memory_equal(r.out, want, bytes); /* the suite's stdout file is exactly the bytes */
    cli_run_free(&r);
    free(want);
}

/* dsv2 --help and dsv2 CMD --help: usage on stdout, status 0; every option a command's help lists
 * appears in the README. */
static void help_on_stdout(void **state)
{
    (void)state;
    static const char *const top[] = { "--help", "-h", "help" };
    for (int i = 0; i < 3; i++) {
        CliRun r = cli_run((const char *[]){ top[i], NULL });
        assert_int_equal(r.status, 0);
        assert_string_equal(r.err, "");
        assert_int_equal(strncmp(r.out, "usage: dsv2 COMMAND", 19), 0);
        cli_run_free(&r);
    }
    char *readme = slurp("README.md", NULL);
    static const char *const cmds[] = { "generate", "chat", "logits", "tokenize", "detokenize", "info", "route-stats" };
    for (size_t c = 0; c < sizeof cmds / sizeof *cmds; c++) {
        for (int form = 0; form < 2; form++) {
            CliRun r = form ? cli_run((const char *[]){ "help", cmds[c], NULL })
                            : cli_run((const char *[]){ cmds[c], "-m", "x", "--help", NULL });
            char head[64];
            snprintf(head, sizeof head, "usage: dsv2 %s ", cmds[c]);
            assert_int_equal(r.status, 0);
            assert_string_equal(r.err, "");
            if (strncmp(r.out, head, strlen(head))) fail_msg("dsv2 %s --help printed:\n%s", cmds[c], r.out);
            for (const char *p = r.out; (p = strstr(p, "\n  -")); p++) { /* "  -x ..." option lines */
                char flag[32];
                assert_int_equal(sscanf(p + 3, "%31[^ ,\n]", flag), 1);
                if (!strstr(readme, flag)) fail_msg("%s (dsv2 %s --help) is not in README.md", flag, cmds[c]);
            }
            cli_run_free(&r);
        }
    }
    free(readme);
}

/* True when path exists. */
static bool exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

static void failed_logits_leave_no_file(void **state)
{
    (void)state;
    char *out = scratch("bad.bin"), *partial = scratch("bad.bin.partial");
    expect((const char *[]){ "logits", "-m", "tests/golden/lite", "--ids", "1,512", "-o", out, NULL }, 1,
           "dsv2: token id 512 at position 1 is outside the vocabulary [0, 512)\n");
    assert_false(exists(out));
    assert_false(exists(partial));
    /* an existing file is left as it was */
    assert_int_equal(stw_write_text(out, "old"), 0);
    expect((const char *[]){ "logits", "-m", "tests/golden/lite", "--ids", "1,512", "-o", out, NULL }, 1,
           "dsv2: token id 512 at position 1 is outside the vocabulary [0, 512)\n");
    char *kept = slurp(out, NULL);
    assert_string_equal(kept, "old");
    free(kept);
    assert_false(exists(partial));
    unlink(out);
    /* an unwritable destination */
    char *nowhere = scratch("no/such/dir/x.bin"), msg[1024];
    snprintf(msg, sizeof msg, "dsv2: %s.partial: No such file or directory\n", nowhere);
    expect((const char *[]){ "logits", "-m", "tests/golden/lite", "--ids", "1,2", "-o", nowhere, NULL }, 1, msg);
    free(nowhere);
    free(out);
    free(partial);
}

/* The output of `dsv2 generate -m dir --ids ...` made here with model_forward and argmax: the
 * prompt's ids, then up to n_new more (EOS ends it), each chosen after the repetition penalty over
 * the last 64 tokens (penalty 1: none), comma-separated. */
static char *greedy_output(const char *dir, const int *prompt, int T, int n_new, float penalty)
{
    Model m;
    if (model_open(&m, dir, NULL)) fail_msg("%s", ds_last_error());
    const int V = m.cfg->vocab_size;
    float *logits = malloc(sizeof(float) * V);
    int *ids = malloc(sizeof(int) * (size_t)(T + n_new));
    char *want = malloc(16 * (size_t)(T + n_new) + 2);
    assert_non_null(logits);
    assert_non_null(ids);
    assert_non_null(want);
    memcpy(ids, prompt, sizeof(int) * T);
    poison(logits, V);
    assert_int_equal(model_forward(&m, ids, T, logits, false), 0);
    int len = 0;
    for (int i = 0; i < T; i++) len += sprintf(want + len, i ? ",%d" : "%d", ids[i]);
    for (int i = T; i < T + n_new; i++) {
        const int from = i > 64 ? i - 64 : 0;
        sample_repeat_penalty(logits, V, ids + from, i - from, penalty);
        ids[i] = sample_argmax(logits, V);
        if (ids[i] == m.cfg->eos_token_id) break;
        len += sprintf(want + len, ",%d", ids[i]);
        if (i + 1 < T + n_new) assert_int_equal(model_forward(&m, &ids[i], 1, logits, false), 0);
    }
    strcpy(want + len, "\n");
    free(ids);
    free(logits);
    model_close(&m);
    return want;
}

static void generate_greedy_continuation(void **state)
{
    (void)state;
    CliRun r = cli_run((const char *[]){ "generate", "-m", "tests/golden/lite", "--ids", "5,17,300", "-n", "6", NULL });
    assert_int_equal(r.status, 0);
    char *want = greedy_output("tests/golden/lite", (const int[]){ 5, 17, 300 }, 3, 6, 1);
    assert_string_equal(r.out, want);
    free(want);
    cli_run_free(&r);
    /* --top-k 1 at any temperature is greedy */
    r = cli_run((const char *[]){ "generate", "-m", "tests/golden/lite", "--ids", "5,17,300", "-n", "6", "-t", "1.5",
                                  "--top-k", "1", "--seed", "9", NULL });
    want = greedy_output("tests/golden/lite", (const int[]){ 5, 17, 300 }, 3, 6, 1);
    assert_string_equal(r.out, want);
    free(want);
    cli_run_free(&r);
    /* --repeat-penalty: the same greedy rule after sample_repeat_penalty over the last 64 tokens */
    r = cli_run((const char *[]){ "generate", "-m", "tests/golden/lite", "--ids", "5,17,300", "-n", "40",
                                  "--repeat-penalty", "1.3", NULL });
    assert_int_equal(r.status, 0);
    want = greedy_output("tests/golden/lite", (const int[]){ 5, 17, 300 }, 3, 40, 1.3f);
    char *plain = greedy_output("tests/golden/lite", (const int[]){ 5, 17, 300 }, 3, 40, 1);
    assert_string_equal(r.out, want);
    assert_string_not_equal(want, plain); /* the penalty changes this continuation */
    free(want);
    free(plain);
    cli_run_free(&r);
}

/* The end of the context ends a generation: status 0, a note and the summary on stderr. */
static void generate_stops_at_the_context_end(void **state)
{
    (void)state;
    /* longctx holds 128 positions: 3 prompt tokens leave room to sample 126 (the last is not fed) */
    CliRun r =
        cli_run((const char *[]){ "generate", "-m", "tests/golden/longctx", "--ids", "3,14,15", "-n", "1000", NULL });
    assert_int_equal(r.status, 0);
    char *want = greedy_output("tests/golden/longctx", (const int[]){ 3, 14, 15 }, 3, 126, 1);
    assert_string_equal(r.out, want);
    free(want);
    const char *note = "dsv2: stopped after 126 tokens: the context of 128 tokens is full (--ctx)\n"
                       "dsv2: prompt 3 tokens in ";
    if (strncmp(r.err, note, strlen(note)) || !strstr(r.err, " tok/s), generated 126 tokens in "))
        fail_msg("unexpected stderr:\n%s", r.err);
    cli_run_free(&r);
    /* --ctx 20 of the same model: room for 18 */
    r = cli_run((const char *[]){ "generate", "-m", "tests/golden/longctx", "--ids", "3,14,15", "-n", "1000", "--ctx",
                                  "20", NULL });
    assert_int_equal(r.status, 0);
    want = greedy_output("tests/golden/longctx", (const int[]){ 3, 14, 15 }, 3, 18, 1);
    assert_string_equal(r.out, want);
    free(want);
    assert_non_null(strstr(r.err, "dsv2: stopped after 18 tokens: the context of 20 tokens is full (--ctx)\n"));
    cli_run_free(&r);
}

/* A prompt that cannot run prints nothing on stdout: one line on stderr, status 1. */
static void bad_prompts_print_nothing(void **state)
{
    (void)state;
    char ids[1024];
    int len = 0;
    for (int i = 0; i < 129; i++) len += snprintf(ids + len, sizeof ids - (size_t)len, i ? ",%d" : "%d", 2 + i % 50);
    expect_quiet((const char *[]){ "generate", "-m", "tests/golden/longctx", "--ids", ids, NULL }, 1,
                 "dsv2: the prompt of 129 tokens does not fit the context of 128 tokens (--ctx)\n");
    expect_quiet((const char *[]){ "generate", "-m", "tests/golden/lite", "--ids", "1,512", NULL }, 1,
                 "dsv2: token id 512 at position 1 is outside the vocabulary [0, 512)\n");
    expect_quiet(
        (const char *[]){ "generate", "-m", "models/tiny-kjv", "-p", "In the beginning God", "--ctx", "3", NULL }, 1,
        "dsv2: the prompt of 5 tokens does not fit the context of 3 tokens (--ctx)\n");
}

/* Output that cannot be written (stdout on /dev/full) is a failure: status 1, one line. */
static void write_errors_fail(void **state)
{
    (void)state;
    const CliIo full = { .stdout_path = "/dev/full" };
    const char *const *const runs[] = {
        (const char *[]){ "generate", "-m", "tests/golden/lite", "--ids", "5,17", "-n", "3", NULL },
        (const char *[]){ "tokenize", "-m", "models/tiny-kjv", "-p", "In the beginning", NULL },
        (const char *[]){ "info", "-m", "tests/golden/v2", NULL },
        (const char *[]){ "logits", "-m", "tests/golden/lite", "--ids", "5,17", "-o", "/dev/stdout", NULL },
    };
    for (size_t i = 0; i < sizeof runs / sizeof *runs; i++) {
        CliRun r = cli_run_io(runs[i], &full);
        assert_int_equal(r.status, 1);
        const char *line = i == 3 ? "dsv2: /dev/stdout: No space left on device\n"
                                  : "dsv2: writing to standard output: No space left on device\n";
        assert_string_equal(r.err, line);
        cli_run_free(&r);
    }
}

/* -f FILE and -p - (stdin) give what -p TEXT gives; one trailing newline is dropped. */
static void prompt_from_file_and_stdin(void **state)
{
    (void)state;
    CliRun want =
        cli_run((const char *[]){ "generate", "-m", "models/tiny-kjv", "-p", "In the beginning", "-n", "8", NULL });
    assert_int_equal(want.status, 0);
    assert_int_equal(strncmp(want.out, "In the beginning", 16), 0);
    char *file = scratch("prompt.txt");
    assert_int_equal(stw_write_text(file, "In the beginning\n"), 0);
    CliRun r = cli_run((const char *[]){ "generate", "-m", "models/tiny-kjv", "-f", file, "-n", "8", NULL });
    assert_int_equal(r.status, 0);
    assert_string_equal(r.out, want.out);
    cli_run_free(&r);
    const CliIo in = { .input = "In the beginning\n" };
    r = cli_run_io((const char *[]){ "generate", "-m", "models/tiny-kjv", "-p", "-", "-n", "8", NULL }, &in);
    assert_int_equal(r.status, 0);
    assert_string_equal(r.out, want.out);
    cli_run_free(&r);
    r = cli_run_io((const char *[]){ "tokenize", "-m", "models/tiny-kjv", "-p", "-", NULL }, &in);
    CliRun direct = cli_run((const char *[]){ "tokenize", "-m", "models/tiny-kjv", "-p", "In the beginning", NULL });
    assert_string_equal(r.out, direct.out);
    cli_run_free(&r);
    cli_run_free(&direct);
    cli_run_free(&want);
    unlink(file);
    char line[4200];
    snprintf(line, sizeof line, "dsv2: -f %s: No such file or directory\n", file);
    expect_quiet((const char *[]){ "generate", "-m", "models/tiny-kjv", "-f", file, NULL }, 1, line);
    assert_int_equal(stw_write_text(file, "\n"), 0); /* empty once its newline goes */
    snprintf(line, sizeof line, "-f %s: the prompt is empty", file);
    expect_quiet((const char *[]){ "generate", "-m", "models/tiny-kjv", "-f", file, NULL }, 2,
                 usage_line("generate", line));
    r = cli_run((const char *[]){ "generate", "-m", "models/tiny-kjv", "-p", "-", NULL }); /* stdin empty */
    assert_string_equal(r.err, usage_line("generate", "-p -: the prompt is empty"));
    assert_int_equal(r.status, 2);
    cli_run_free(&r);
    unlink(file);
    free(file);
}

/* --stop STR ends the text before the first STR; without --seed a sampling run prints the seed it
 * drew, and --seed with it repeats the run. */
static void stop_strings_and_seeds(void **state)
{
    (void)state;
    CliRun full = cli_run((const char *[]){ "generate", "-m", "models/tiny-kjv", "-p", "In the", "-n", "30", NULL });
    assert_int_equal(full.status, 0);
    /* a stop string from the middle of the continuation: 4 bytes starting 5 bytes after the prompt */
    const size_t at = strlen("In the") + 5;
    assert_true(strlen(full.out) > at + 4);
    char stop[5];
    memcpy(stop, full.out + at, 4);
    stop[4] = '\0';
    const size_t cut = (size_t)(strstr(full.out + strlen("In the"), stop) - full.out);
    CliRun r = cli_run((const char *[]){ "generate", "-m", "models/tiny-kjv", "-p", "In the", "-n", "30", "--stop",
                                         "no such text", "--stop", stop, NULL });
    assert_int_equal(r.status, 0);
    assert_int_equal(strlen(r.out), cut + 1);
    assert_memory_equal(r.out, full.out, cut);
    assert_int_equal(r.out[cut], '\n');
    cli_run_free(&r);
    cli_run_free(&full);
    CliRun a =
        cli_run((const char *[]){ "generate", "-m", "models/tiny-kjv", "-p", "In the", "-n", "20", "-t", "1", NULL });
    unsigned long long seed;
    assert_int_equal(sscanf(a.err, "dsv2: --seed %llu (pass it to repeat this run)\n", &seed), 1);
    char text[32];
    snprintf(text, sizeof text, "%llu", seed);
    CliRun b = cli_run((const char *[]){ "generate", "-m", "models/tiny-kjv", "-p", "In the", "-n", "20", "-t", "1",
                                         "--seed", text, NULL });
    assert_int_equal(a.status, 0);
    assert_int_equal(b.status, 0);
    assert_string_equal(a.out, b.out);
    assert_null(strstr(b.err, "--seed")); /* a given seed is not announced */
    cli_run_free(&a);
    cli_run_free(&b);
}

static void info_prints_mla_cache(void **state)
{
    (void)state;
    CliRun r = cli_run((const char *[]){ "info", "-m", "tests/golden/v2", NULL });
    assert_int_equal(r.status, 0);
    assert_string_equal(r.err, "");
    /* golden v2: d_c 32 + d_r 8 = 40 elements × 3 layers = 120 elements, 240 bytes in bf16 */
    const char *line = "  MLA          (d_c + d_r) l =        120 elements = 240 bytes in bf16\n";
    if (!strstr(r.out, line)) fail_msg("no line \"%s\" in:\n%s", line, r.out);
    assert_non_null(strstr(r.out, "layers       3: 1 dense, 2 MoE (8 routed experts, 3 per token, 2 shared)\n"));
    assert_non_null(strstr(r.out, "model        tests/golden/v2 (89 tensors in 2 files)\n"));
    cli_run_free(&r);
}

/* `--backend fast` (float32 mode, on the simulated device here) generates the same greedy
 * continuation as `--backend ref` on every golden fixture. */
static void fast_backend_generates_ref_text(void **state)
{
    (void)state;
    static const char *const fixtures[] = { "tests/golden/lite", "tests/golden/v2", "tests/golden/norope",
                                            "tests/golden/longctx" };
    for (size_t i = 0; i < sizeof fixtures / sizeof *fixtures; i++) {
        CliRun ref =
            cli_run((const char *[]){ "generate", "-m", fixtures[i], "--ids", "3,14,15,92,65", "-n", "16", NULL });
        CliRun fast = cli_run((const char *[]){ "generate", "-m", fixtures[i], "--ids", "3,14,15,92,65", "-n", "16",
                                                "--backend", "fast", NULL });
        assert_int_equal(ref.status, 0);
        assert_int_equal(fast.status, 0);
        assert_string_equal(fast.out, ref.out);
        cli_run_free(&ref);
        cli_run_free(&fast);
    }
}

/* ---- chat, with its input on a pipe ----------------------------------------------------------------- */

/* How many "> " prompts s holds. */
static int prompts(const char *s)
{
    int n = 0;
    for (const char *p = s; (p = strstr(p, "> ")); p += 2) n++;
    return n;
}

/* A line longer than any buffer is one user turn; --system goes first in the template: the reply is
 * the greedy continuation, computed here, of chat_render's text for (system, user). */
static void chat_system_and_long_lines(void **state)
{
    (void)state;
    Tokenizer *tok = tokenizer_load("models/tiny-kjv");
    if (!tok) fail_msg("%s", ds_last_error());
    const ChatMessage msgs[2] = { { "system", "Be brief." }, { "user", "Who made the heaven?" } };
    char text[512];
    chat_render(msgs, 2, 1, tokenizer_bos_text(tok), tokenizer_eos_text(tok), text, sizeof text);
    int32_t ids[256];
    const long T = tokenizer_encode(tok, text, strlen(text), TOKENIZER_PARSE_SPECIAL, ids, 256);
    assert_true(T > 0 && T < 240);
    Model m;
    if (model_open(&m, "models/tiny-kjv", NULL)) fail_msg("%s", ds_last_error());
    float *logits = malloc(sizeof(float) * m.cfg->vocab_size);
    assert_non_null(logits);
    assert_int_equal(model_forward(&m, (const int *)ids, (int)T, logits, false), 0);
    int32_t reply[8];
    size_t n = 0;
    while (n < 8) {
        const int next = sample_argmax(logits, m.cfg->vocab_size);
        if (next == m.cfg->eos_token_id) break;
        reply[n++] = next;
        if (n < 8) assert_int_equal(model_forward(&m, &next, 1, logits, false), 0);
    }
    char want[512];
    const long len = tokenizer_decode(tok, reply, n, TOKENIZER_SKIP_SPECIAL, want, sizeof want - 1);
    assert_true(len >= 0 && len < (long)sizeof want - 1);
    strcpy(want + len, "\n");
    free(logits);
    model_close(&m);
    tokenizer_free(tok);
    const CliIo io = { .input = "Who made the heaven?\n" };
    CliRun r =
        cli_run_io((const char *[]){ "chat", "-m", "models/tiny-kjv", "-n", "8", "--system", "Be brief.", NULL }, &io);
    assert_int_equal(r.status, 0);
    assert_string_equal(r.out, want);
    cli_run_free(&r);
    /* 9000 bytes on one line: one turn (too long for the context, so refused), then the end of input */
    char *line = malloc(9002);
    assert_non_null(line);
    for (int i = 0; i < 9000; i++) line[i] = "abc "[i % 4];
    strcpy(line + 9000, "\n");
    const CliIo big = { .input = line };
    r = cli_run_io((const char *[]){ "chat", "-m", "models/tiny-kjv", "-n", "4", NULL }, &big);
    assert_int_equal(r.status, 0);
    assert_int_equal(prompts(r.err), 2);
    assert_non_null(strstr(r.err, "does not fit the context of 1024 tokens (--ctx); /reset starts a new one\n"));
    cli_run_free(&r);
    free(line);
}

/* A reply that meets the end of the context stops with a note and the chat goes on; a turn that no
 * longer fits is refused and the chat goes on; /reset starts over; -n far beyond the context is fine. */
static void chat_goes_on_when_the_context_is_full(void **state)
{
    (void)state;
    const CliIo io = { .input = "Who made the heaven?\nAnd the earth?\n/reset\nWho made the heaven?\n" };
    CliRun r =
        cli_run_io((const char *[]){ "chat", "-m", "models/tiny-kjv", "--ctx", "48", "-n", "100000", NULL }, &io);
    assert_int_equal(r.status, 0);
    const char *full = "dsv2: reply stopped: the context of 48 tokens is full; /reset starts a new conversation\n";
    const char *first = strstr(r.err, full), *refused = strstr(r.err, "does not fit the context of 48 tokens");
    const char *reset = strstr(r.err, "dsv2: a new conversation\n");
    if (!first || !refused || !reset || !(first < refused && refused < reset) || !strstr(reset, full))
        fail_msg("unexpected stderr:\n%s", r.err);
    assert_int_equal(prompts(r.err), 5); /* four lines, then the end of input */
    /* the same first question gets the same (greedy) reply after /reset: two equal halves */
    const size_t len = strlen(r.out) / 2;
    assert_true(len > 1);
    assert_int_equal(strlen(r.out), 2 * len);
    assert_int_equal(r.out[len - 1], '\n');
    assert_memory_equal(r.out, r.out + len, len);
    cli_run_free(&r);
}

/* Ctrl-C during a reply stops that reply and the chat goes on; Ctrl-C at the prompt quits (status 0). */
static void chat_ctrl_c(void **state)
{
    (void)state;
    /* the greedy reply to this runs to the end of the 1024-token context: Ctrl-C after its first bytes */
    const CliIo during = { .input = "Hello\n", .wait_for = " ", .then_input = "" };
    CliRun r = cli_run_io((const char *[]){ "chat", "-m", "models/tiny-kjv", "-n", "100000", NULL }, &during);
    assert_int_equal(r.status, 0);
    if (!strstr(r.err, "> dsv2: reply stopped (Ctrl-C)\n> \n")) fail_msg("unexpected stderr:\n%s", r.err);
    assert_null(strstr(r.err, "is full"));
    cli_run_free(&r);
    const CliIo at_prompt = { .wait_for_err = "> " };
    r = cli_run_io((const char *[]){ "chat", "-m", "models/tiny-kjv", NULL }, &at_prompt);
    assert_int_equal(r.status, 0);
    assert_string_equal(r.out, "");
    assert_int_equal(prompts(r.err), 1);
    cli_run_free(&r);
}

/* Writes a config.json of the released model (layers, dims and routing as docs/semantics.md §1.1) to dir. */
static char *released_config(const char *name, int D, int L, int heads, int q_lora, int I, int Ie, int E,
                             const char *method, int G, int Gk, double scale)
{
    char *dir = scratch(name), text[2048];
    mkdir(dir, 0755);
    char q[16];
    if (q_lora)
        snprintf(q, sizeof q, "%d", q_lora);
    else
        snprintf(q, sizeof q, "null");
    snprintf(text, sizeof text,
             "{\"vocab_size\": 102400, \"hidden_size\": %d, \"num_hidden_layers\": %d,"
             " \"num_attention_heads\": %d, \"q_lora_rank\": %s, \"kv_lora_rank\": 512,"
             " \"qk_nope_head_dim\": 128, \"qk_rope_head_dim\": 64, \"v_head_dim\": 128,"
             " \"intermediate_size\": %d, \"moe_intermediate_size\": %d, \"n_routed_experts\": %d,"
             " \"n_shared_experts\": 2, \"num_experts_per_tok\": 6, \"first_k_dense_replace\": 1,"
             " \"moe_layer_freq\": 1, \"topk_method\": \"%s\", \"n_group\": %d, \"topk_group\": %d,"
             " \"norm_topk_prob\": false, \"routed_scaling_factor\": %g, \"scoring_func\": \"softmax\","
             " \"rms_norm_eps\": 1e-06, \"rope_theta\": 10000, \"max_position_embeddings\": 163840,"
             " \"rope_scaling\": {\"type\": \"yarn\", \"factor\": 40, \"original_max_position_embeddings\": 4096,"
             " \"beta_fast\": 32, \"beta_slow\": 1, \"mscale\": 0.707, \"mscale_all_dim\": 0.707},"
             " \"bos_token_id\": 100000, \"eos_token_id\": 100001, \"tie_word_embeddings\": false}\n",
             D, L, heads, q, I, Ie, E, method, G, Gk, scale);
    char *path = stw_path(dir, "config.json");
    assert_int_equal(stw_write_text(path, text), 0);
    free(path);
    return dir;
}

/* `dsv2 info` on the released configs reproduces docs/semantics.md §1.3's parameter counts (which match
 * the observed V2-Lite checkpoint) and §5.3's KV cache per token. */
static void info_matches_released_models(void **state)
{
    (void)state;
    char *lite = released_config("v2-lite", 2048, 27, 16, 0, 10944, 1408, 64, "greedy", 1, 1, 1.0);
    char *v2 = released_config("v2", 5120, 60, 128, 1536, 12288, 1536, 160, "group_limited_greedy", 8, 3, 16.0);
    CliRun r = cli_run((const char *[]){ "info", "-m", lite, NULL });
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "parameters   15706484224 total"));
    assert_non_null(strstr(r.out, "(d_c + d_r) l =      15552 elements = 31104 bytes in bf16"));
    cli_run_free(&r);
    r = cli_run((const char *[]){ "info", "-m", v2, NULL });
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "parameters   235741434880 total"));
    assert_non_null(strstr(r.out, "(d_c + d_r) l =      34560 elements = 69120 bytes in bf16"));
    assert_non_null(strstr(r.out, "MHA          2 n_h d_h l  =    1966080 elements")); /* 2·128·128·60 */
    cli_run_free(&r);
    free(lite);
    free(v2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(malformed_command_lines),
        cmocka_unit_test(malformed_ids),
        cmocka_unit_test(options_a_command_does_not_take),
        cmocka_unit_test(missing_model_directory),
        cmocka_unit_test(logits_file_equals_model_forward),
        cmocka_unit_test(logits_of_text_and_to_stdout),
        cmocka_unit_test(help_on_stdout),
        cmocka_unit_test(failed_logits_leave_no_file),
        cmocka_unit_test(generate_greedy_continuation),
        cmocka_unit_test(generate_stops_at_the_context_end),
        cmocka_unit_test(bad_prompts_print_nothing),
        cmocka_unit_test(write_errors_fail),
        cmocka_unit_test(prompt_from_file_and_stdin),
        cmocka_unit_test(stop_strings_and_seeds),
        cmocka_unit_test(info_prints_mla_cache),
        cmocka_unit_test(info_matches_released_models),
        cmocka_unit_test(fast_backend_generates_ref_text),
        cmocka_unit_test(chat_system_and_long_lines),
        cmocka_unit_test(chat_goes_on_when_the_context_is_full),
        cmocka_unit_test(chat_ctrl_c),
    };
    return cmocka_run_group_tests_name("cli", tests, stw_group_setup, stw_group_teardown);
}
