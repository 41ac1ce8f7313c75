/**
 * \file profile_cases.h
 * \brief The kernels `make bench-fast` times, at its shapes, counted on the simulated device and priced by
 *        the H100 time model: the estimates `make gpu-report` sets beside bench-fast's measurements.
 */
#ifndef DSV2_PROFILE_CASES_H
#define DSV2_PROFILE_CASES_H

#include <stdio.h>

/**
 * Runs each of bench-fast's kernel cases once, counted, and writes the JSON member
 * `"bench_fast_kernels": [{"label", "launches", "kernels", "estimated_us", "estimated_bytes_us"}, ...],`
 * (labels as bench_fast.c prints them), then the two decode steps as cases "decode batch  1" and
 * "decode batch 16" with the estimated seconds given. \return 0, or −1 with one error line.
 */
int profile_cases_json(FILE *f, double decode_b1_s, double decode_b16_s);

#endif
