/**
 * \file gpu_report_main.c
 * \brief The `gpu_report` program of `make gpu-report`: BENCH_TXT PROFILE_JSON SUITES_TXT OUT_PREFIX.
 */
#include "gpu_report.h"

#include "error.h"

#include <stdio.h>

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: gpu_report BENCH_TXT PROFILE_JSON SUITES_TXT OUT_PREFIX\n");
        return 1;
    }
    if (gpu_report_write(argv[1], argv[2], argv[3], argv[4])) {
        fprintf(stderr, "gpu-report: %s\n", ds_last_error());
        return 1;
    }
    printf("wrote %s.md and %s.json\n", argv[4], argv[4]);
    return 0;
}
