/**
 * \file gpu_report.h
 * \brief `make gpu-report`: measured kernel times on a real GPU beside the H100 time model's estimates.
 *
 * bench-fast prints one line per timed case, "<label> <milliseconds> ms [<GB/s> GB/s] ...";
 * profile-fast's JSON holds, under "bench_fast_kernels", the time model's estimate for each of
 * those cases at the same shapes ({"label", "kernels", "estimated_us", "estimated_bytes_us"}).
 * gpu_report_write() joins the two on the label (a bench line matches a case whose label it equals,
 * or begins with followed by ':', as the decode lines "decode batch  1: ... tok/s ..." do), and
 * writes, per case, measured µs, estimated µs and their ratio (measured / estimated), then the
 * ratio over all kernel cases (sums of times) and the geometric mean of their ratios, and the same
 * for the decode steps. A ratio above 1 means the GPU was slower than the model says.
 */
#ifndef DSV2_GPU_REPORT_H
#define DSV2_GPU_REPORT_H

/**
 * Reads bench (bench-fast's output), profile (profile-fast's JSON) and, when not NULL, suites (one
 * "<suite> pass|FAIL" line per GPU test binary), and writes out_prefix.md and out_prefix.json.
 * \return 0, or −1 with one error line naming the file (and key or line) at fault; nothing is written then.
 */
int gpu_report_write(const char *bench, const char *profile, const char *suites, const char *out_prefix);

#endif
