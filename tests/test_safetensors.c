/**
 * \file test_safetensors.c
 * \brief The safetensors reader on well-formed and malformed files (ecosystem.md §3.2).
 *
 * Every malformed file is written byte for byte by the test (st_writer.h),
 * st_open() must refuse it with the exact error line, and nothing may stay
 * open afterwards. The well-formed cases check what the format allows:
 * empty and 0-rank tensors, whitespace around the header, `__metadata__`.
 */
#include "check.h"
#include "error.h"
#include "safetensors.h"
#include "st_writer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Path of a file in the scratch directory (valid until the next call). */
static const char *scratch(const char *name)
{
    static char buf[4096];
    snprintf(buf, sizeof buf, "%s/%s", stw_scratch_dir, name);
    return buf;
}

/* st_open(path) must fail with exactly "<path>: <want>" and leave nothing open. */
static void expect_error(const char *path, const char *want)
{
    char line[8192];
    snprintf(line, sizeof line, "%s: %s", path, want);
    StFile f;
    ds_error_clear();
    assert_int_equal(st_open(path, &f), -1);
    assert_string_equal(ds_last_error(), line);
    assert_null(f.map);
    assert_null(f.tensors);
    assert_null(f.path);
    assert_int_equal(f.n_tensors, 0);
}

/* The header padded with trailing spaces to a multiple of 8 bytes, so data starts 8-aligned
 * (valid until the next call). */
static const char *pad8(const char *header)
{
    static char buf[4096];
    snprintf(buf, sizeof buf, "%-*s", (int)((strlen(header) + 7) / 8 * 8), header);
    return buf;
}

/* Writes header + data_len zero bytes (length field = strlen(header)) and expects want. */
static void expect_header_error(const char *name, const char *header, size_t data_len, const char *want)
{
    const char *path = scratch(name);
    assert_int_equal(stw_write_raw(path, strlen(header), header, NULL, data_len), 0);
    expect_error(path, want);
}

static void missing_file(void **state)
{
    (void)state;
    expect_error(scratch("absent.safetensors"), "cannot open: No such file or directory");
}

static void file_shorter_than_length_field(void **state)
{
    (void)state;
    const char *path = scratch("short.safetensors");
    assert_int_equal(stw_write_text(path, "\x02\0\0\0\0"), 0); /* 1 byte: fputs stops at NUL */
    expect_error(path, "file is 1 bytes, too small for the 8-byte header length");
    assert_int_equal(stw_write_text(path, ""), 0);
    expect_error(path, "file is 0 bytes, too small for the 8-byte header length");
}

static void header_length_beyond_file(void **state)
{
    (void)state;
    const char *path = scratch("hlen.safetensors");
    assert_int_equal(stw_write_raw(path, 64, "{}", NULL, 0), 0); /* 10-byte file claims 64 */
    expect_error(path, "header length 64 at byte offset 0 runs past the end of the file (10 bytes)");
    /* a length whose 8 + N wraps around 2^64 */
    assert_int_equal(stw_write_raw(path, UINT64_MAX - 3, "{}", NULL, 0), 0);
    expect_error(path, "header length 18446744073709551612 at byte offset 0 exceeds the "
                       "100000000-byte limit");
}

static void header_too_large(void **state)
{
    (void)state;
    const char *path = scratch("huge.safetensors");
    assert_int_equal(stw_write_raw(path, 100000001, "{}", NULL, 0), 0);
    expect_error(path, "header length 100000001 at byte offset 0 exceeds the 100000000-byte limit");
    /* exactly the limit is allowed by the size rule, so this one fails on the file size */
    assert_int_equal(stw_write_raw(path, 100000000, "{}", NULL, 0), 0);
    expect_error(path, "header length 100000000 at byte offset 0 runs past the end of the file "
                       "(10 bytes)");
}

static void header_not_json(void **state)
{
    (void)state;
    expect_header_error("nojson.safetensors", "{not json}", 0,
                        "header is not valid JSON at byte offset 12: string or '}' expected "
                        "near 'not'");
    expect_header_error("utf8.safetensors", "{\"a\":\xff}", 0,
                        "header is not valid JSON at byte offset 13: unable to decode byte 0xff");
    expect_header_error("array.safetensors", "[]", 0, "header is not a JSON object");
    expect_header_error("entry.safetensors", "{\"a\":1}", 0, "tensor 'a': entry is not an object");
}

static void duplicate_key(void **state)
{
    (void)state;
    expect_header_error("dup.safetensors",
                        "{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},"
                        "\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}",
                        4,
                        "header is not valid JSON at byte offset 64: duplicate object key near "
                        "'\"a\"'");
}

static void bad_entry_fields(void **state)
{
    (void)state;
    expect_header_error("nodtype.safetensors", "{\"a\":{\"shape\":[],\"data_offsets\":[0,4]}}", 4,
                        "tensor 'a': 'dtype' is missing");
    expect_header_error("dtypenum.safetensors", "{\"a\":{\"dtype\":7,\"shape\":[],\"data_offsets\":[0,4]}}", 4,
                        "tensor 'a': 'dtype' is not a string");
    expect_header_error("noshape.safetensors", "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4,
                        "tensor 'a': 'shape' is not an array");
    expect_header_error("negshape.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,-1],\"data_offsets\":[0,4]}}",
                        4, "tensor 'a': shape[1] is not a non-negative integer");
    expect_header_error("realshape.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1e3],\"data_offsets\":[0,4]}}",
                        4, "tensor 'a': shape[0] is not a non-negative integer");
    expect_header_error("rank.safetensors",
                        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],"
                        "\"data_offsets\":[0,4]}}",
                        4, "tensor 'a': rank 9 exceeds 8");
    expect_header_error("offs.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0]}}", 4,
                        "tensor 'a': 'data_offsets' is not a [begin, end] pair");
    expect_header_error("negoffs.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[-4,0]}}", 4,
                        "tensor 'a': data_offsets[0] is not a non-negative integer");
    expect_header_error("meta.safetensors", "{\"__metadata__\":{\"format\":1}}", 0,
                        "'__metadata__' value 'format' is not a string");
}

static void unknown_dtype(void **state)
{
    (void)state;
    expect_header_error("i64.safetensors", "{\"a\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8,
                        "tensor 'a': dtype I64 is not supported (BF16, F16, F32)");
    expect_header_error("fp8.safetensors", "{\"a\":{\"dtype\":\"F8_E4M3\",\"shape\":[8],\"data_offsets\":[0,8]}}", 8,
                        "tensor 'a': dtype F8_E4M3 is not supported (BF16, F16, F32)");
}

static void shape_overflow(void **state)
{
    (void)state;
    /* 2^32 · 2^32 elements: the element count alone overflows 64 bits */
    expect_header_error("ovf.safetensors",
                        "{\"a\":{\"dtype\":\"BF16\",\"shape\":[4294967296,4294967296],"
                        "\"data_offsets\":[0,0]}}",
                        0, "tensor 'a': shape overflows the size of a tensor");
    /* 2^62 elements fit, 2^63 bytes of BF16 fit, 2^64 bytes of F32 do not */
    expect_header_error("ovf2.safetensors",
                        "{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904],"
                        "\"data_offsets\":[0,0]}}",
                        0, "tensor 'a': shape overflows the size of a tensor");
}

static void offsets_not_matching_shape(void **state)
{
    (void)state;
    expect_header_error("size.safetensors", "{\"a\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[0,16]}}", 16,
                        "tensor 'a': data_offsets [0, 16) hold 16 bytes, but BF16 x shape needs 12");
    expect_header_error("backwards.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 8,
                        "tensor 'a': data_offsets [8, 4) end before they begin");
}

static void offsets_overlap(void **state)
{
    (void)state;
    const char *h = pad8("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}");
    const size_t start = 8 + strlen(h); /* first byte of the data section */
    char want[256];
    snprintf(want, sizeof want,
             "tensor 'b': data begins at byte offset %zu, expected %zu "
             "(overlaps the previous tensor)",
             start + 4, start + 8);
    expect_header_error("overlap.safetensors", h, 12, want);
    /* two tensors on the same bytes */
    h = pad8("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
             "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}");
    snprintf(want, sizeof want,
             "tensor 'b': data begins at byte offset %zu, expected %zu "
             "(overlaps the previous tensor)",
             start, start + 8);
    expect_header_error("alias.safetensors", h, 8, want);
}

static void offsets_gap(void **state)
{
    (void)state;
    const char *h = pad8("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}");
    size_t start = 8 + strlen(h);
    char want[256];
    snprintf(want, sizeof want,
             "tensor 'b': data begins at byte offset %zu, expected %zu "
             "(leaves a gap)",
             start + 12, start + 8);
    expect_header_error("gap.safetensors", h, 20, want);
    /* the first tensor must begin at 0 */
    h = pad8("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}");
    start = 8 + strlen(h);
    snprintf(want, sizeof want,
             "tensor 'a': data begins at byte offset %zu, expected %zu "
             "(leaves a gap)",
             start + 8, start);
    expect_header_error("late.safetensors", h, 16, want);
}

static void offsets_out_of_range(void **state)
{
    (void)state;
    const char *h = pad8("{\"a\":{\"dtype\":\"BF16\",\"shape\":[549755813888],"
                         "\"data_offsets\":[0,1099511627776]}}");
    const size_t start = 8 + strlen(h);
    char want[256];
    snprintf(want, sizeof want,
             "tensor 'a': data ends at byte offset %zu, past the end of the "
             "file (%zu bytes)",
             start + (size_t)1099511627776ull, start + 16);
    expect_header_error("range.safetensors", h, 16, want);
}

static void truncated_file(void **state)
{
    (void)state;
    const float a[4] = { 1, 2, 3, 4 }, b[2] = { 5, 6 };
    const StwTensor t[2] = { { "a", "F32", 1, { 4 }, a, sizeof a }, { "b", "F32", 1, { 2 }, b, sizeof b } };
    const char *path = scratch("trunc.safetensors");
    assert_int_equal(stw_write(path, t, 2), 0);
    StFile f;
    assert_int_equal(st_open(path, &f), 0);
    const size_t full = f.size;
    st_close(&f);
    /* the same file cut 5 bytes short: the last tensor runs past the end */
    FILE *fp = fopen(path, "r+b");
    assert_non_null(fp);
    assert_int_equal(ftruncate(fileno(fp), (off_t)(full - 5)), 0);
    fclose(fp);
    char want[256];
    snprintf(want, sizeof want,
             "tensor 'b': data ends at byte offset %zu, past the end of the "
             "file (%zu bytes)",
             full, full - 5);
    expect_error(path, want);
    /* cut inside the header */
    fp = fopen(path, "r+b");
    assert_non_null(fp);
    assert_int_equal(ftruncate(fileno(fp), 20), 0);
    fclose(fp);
    snprintf(want, sizeof want,
             "header length %zu at byte offset 0 runs past the end of the file "
             "(20 bytes)",
             full - 8 - sizeof a - sizeof b);
    expect_error(path, want);
}

static void trailing_bytes(void **state)
{
    (void)state;
    const char *h = pad8("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}");
    char want[256];
    snprintf(want, sizeof want, "3 trailing bytes after the last tensor (byte offset %zu)", 8 + strlen(h) + 8);
    expect_header_error("trail.safetensors", h, 11, want);
}

static void misaligned_tensor(void **state)
{
    (void)state;
    /* a 1-element BF16 tensor, then F32 data at a 2 (mod 4) offset; the header is 8-aligned */
    const uint16_t a = 0x3f80;
    const float b = 2;
    const StwTensor t[2] = { { "a", "BF16", 1, { 1 }, &a, 2 }, { "b", "F32", 1, { 1 }, &b, 4 } };
    const char *path = scratch("align.safetensors");
    assert_int_equal(stw_write(path, t, 2), 0);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    const uint64_t at = (uint64_t)sb.st_size - 4; /* b is the last 4 bytes */
    char want[256];
    snprintf(want, sizeof want, "tensor 'b': byte offset %llu is not aligned to its F32 elements",
             (unsigned long long)at);
    assert_int_equal(at % 4, 2);
    expect_error(path, want);
}

static void empty_and_scalar_tensors(void **state)
{
    (void)state;
    const float s = 3.5f, w[2] = { -1, 7 };
    /* empty tensors before, between and after data, sharing offsets with their neighbours */
    const StwTensor t[5] = {
        { "empty0", "BF16", 1, { 0 }, NULL, 0 },      { "scalar", "F32", 0, { 0 }, &s, 4 },
        { "empty1", "F32", 3, { 2, 0, 3 }, NULL, 0 }, { "w", "F32", 1, { 2 }, w, 8 },
        { "empty2", "F16", 2, { 0, 5 }, NULL, 0 },
    };
    const char *path = scratch("empty.safetensors");
    assert_int_equal(stw_write(path, t, 5), 0);
    StFile f;
    if (st_open(path, &f)) fail_msg("%s", ds_last_error());
    assert_int_equal(f.n_tensors, 5);
    const StTensor *sc = st_find(&f, "scalar"), *e1 = st_find(&f, "empty1");
    assert_non_null(sc);
    assert_int_equal(sc->ndim, 0);
    assert_int_equal(sc->nbytes, 4);
    assert_memory_equal(sc->data, &s, 4);
    assert_non_null(e1);
    assert_int_equal(e1->ndim, 3);
    assert_int_equal(e1->shape[1], 0);
    assert_int_equal(e1->nbytes, 0);
    assert_int_equal(st_find(&f, "empty2")->dtype, DT_F16);
    assert_memory_equal(st_find(&f, "w")->data, w, 8);
    st_close(&f);
}

/* An empty tensor listed after the tensor it shares its offset with: the tiling
 * check must order by [begin, end), as the format's reference reader does. */
static void empty_tensor_sharing_an_offset(void **state)
{
    (void)state;
    const float w[2] = { 1, 2 };
    const char *h = pad8("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                         "\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]},"
                         "\"v\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,8]}}");
    const char *path = scratch("share.safetensors");
    assert_int_equal(stw_write_raw(path, strlen(h), h, w, sizeof w), 0);
    StFile f;
    if (st_open(path, &f)) fail_msg("%s", ds_last_error());
    assert_int_equal(f.n_tensors, 3);
    assert_int_equal(st_find(&f, "e")->nbytes, 0);
    assert_memory_equal(st_find(&f, "w")->data, w, sizeof w);
    st_close(&f);
}

static void well_formed_file(void **state)
{
    (void)state;
    const float a[6] = { 1, 2, 3, 4, 5, 6 };
    const uint16_t b[3] = { 0x3f80, 0xc000, 0x4049 };
    const StwTensor t[2] = { { "z.weight", "F32", 2, { 2, 3 }, a, sizeof a },
                             { "a.weight", "BF16", 1, { 3 }, b, sizeof b } };
    const char *path = scratch("good.safetensors");
    assert_int_equal(stw_write(path, t, 2), 0);
    StFile f;
    if (st_open(path, &f)) fail_msg("%s", ds_last_error());
    assert_int_equal(f.n_tensors, 2);
    assert_string_equal(f.tensors[0].name, "a.weight"); /* sorted by name */
    const StTensor *z = st_find(&f, "z.weight"), *ab = st_find(&f, "a.weight");
    assert_non_null(z);
    assert_non_null(ab);
    assert_null(st_find(&f, "b.weight"));
    assert_int_equal(z->dtype, DT_F32);
    assert_int_equal(z->ndim, 2);
    assert_int_equal(z->shape[0], 2);
    assert_int_equal(z->shape[1], 3);
    assert_int_equal(z->file_offset, f.size - sizeof a - sizeof b);
    assert_ptr_equal(z->data, (const char *)f.map + z->file_offset);
    assert_memory_equal(z->data, a, sizeof a);
    assert_int_equal(ab->dtype, DT_BF16);
    assert_memory_equal(ab->data, b, sizeof b);
    st_close(&f);
    assert_null(f.map);
    st_close(&f); /* safe on a zeroed StFile */
}

static void whitespace_and_metadata(void **state)
{
    (void)state;
    const char *h = pad8("  {\"__metadata__\":{\"format\":\"pt\"},"
                         "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}} ");
    const char *path = scratch("space.safetensors");
    const float one = 1;
    assert_int_equal(h[strlen(h) - 1], ' '); /* trailing whitespace too */
    assert_int_equal(stw_write_raw(path, strlen(h), h, &one, 4), 0);
    StFile f;
    if (st_open(path, &f)) fail_msg("%s", ds_last_error());
    assert_int_equal(f.n_tensors, 1);
    assert_null(st_find(&f, "__metadata__"));
    assert_memory_equal(st_find(&f, "a")->data, &one, 4);
    st_close(&f);
}

/* A header of n empty F32 tensors named with fmt (one %zu), each at offset 0, plus __metadata__ when
 * meta, padded to a multiple of 8 bytes; the caller frees it. */
static char *empty_tensors_header(size_t n, const char *fmt, int meta)
{
    const size_t per = 96;
    char *h = malloc(n * per + 64), *p = h;
    assert_non_null(h);
    p += sprintf(p, "{%s", meta ? "\"__metadata__\":{\"format\":\"pt\"}" : "");
    for (size_t i = 0; i < n; i++) {
        p += sprintf(p, i || meta ? ",\"" : "\"");
        p += sprintf(p, fmt, i);
        p += sprintf(p, "\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}");
    }
    p += sprintf(p, "}");
    while ((p - h) % 8) *p++ = ' '; /* data 8-aligned, as in pad8() */
    *p = 0;
    return h;
}

static double seconds_since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0->tv_nsec);
}

/* A hostile header of a million tiny tensors (55 MB, under the 100 MB header limit) is refused
 * from a count made before parsing: under a second, instead of the 7–9 s and 1.2 GB that
 * building its table took. */
static void million_tensors_refused_quickly(void **state)
{
    (void)state;
    char *h = empty_tensors_header(1000000, "t%zu", 0);
    const char *path = scratch("million.safetensors");
    assert_int_equal(stw_write_raw(path, strlen(h), h, NULL, 0), 0);
    free(h);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    expect_error(path, "header lists more than 65536 entries, the most one file may hold");
    const double s = seconds_since(&t0);
    if (s >= 1.0) fail_msg("refusing a million entries took %.2f s", s);
}

/* The limit counts top-level keys, __metadata__ included; ':' '{' '"' inside names do not count. */
static void entry_limit_edge(void **state)
{
    (void)state;
    const char *path = scratch("limit.safetensors");
    char *h = empty_tensors_header(ST_MAX_TENSORS, "t:{\\\"[%zu", 0);
    assert_int_equal(stw_write_raw(path, strlen(h), h, NULL, 0), 0);
    free(h);
    StFile f;
    if (st_open(path, &f)) fail_msg("%s", ds_last_error());
    assert_int_equal(f.n_tensors, ST_MAX_TENSORS);
    assert_non_null(st_find(&f, "t:{\"[65535")); /* the header's \" decodes to a quote */
    st_close(&f);
    h = empty_tensors_header(ST_MAX_TENSORS, "t:{\\\"[%zu", 1);
    assert_int_equal(stw_write_raw(path, strlen(h), h, NULL, 0), 0);
    free(h);
    expect_error(path, "header lists more than 65536 entries, the most one file may hold");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(missing_file),
        cmocka_unit_test(file_shorter_than_length_field),
        cmocka_unit_test(header_length_beyond_file),
        cmocka_unit_test(header_too_large),
        cmocka_unit_test(header_not_json),
        cmocka_unit_test(duplicate_key),
        cmocka_unit_test(bad_entry_fields),
        cmocka_unit_test(unknown_dtype),
        cmocka_unit_test(shape_overflow),
        cmocka_unit_test(offsets_not_matching_shape),
        cmocka_unit_test(offsets_overlap),
        cmocka_unit_test(offsets_gap),
        cmocka_unit_test(offsets_out_of_range),
        cmocka_unit_test(truncated_file),
        cmocka_unit_test(trailing_bytes),
        cmocka_unit_test(misaligned_tensor),
        cmocka_unit_test(empty_and_scalar_tensors),
        cmocka_unit_test(empty_tensor_sharing_an_offset),
        cmocka_unit_test(well_formed_file),
        cmocka_unit_test(whitespace_and_metadata),
        cmocka_unit_test(million_tensors_refused_quickly),
        cmocka_unit_test(entry_limit_edge),
    };
    return cmocka_run_group_tests_name("safetensors", tests, stw_group_setup, stw_group_teardown);
}
