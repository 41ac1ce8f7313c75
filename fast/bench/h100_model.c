/**
 * \file h100_model.c
 * \brief The per-launch terms of the H100 time model (h100_model.h) over the simulated device's records.
 */
#include "h100_model.h"

static double width_eff(int w)
{
    static const double eff[SIM_WIDTHS] = { H100_EFF_WIDTH_1, H100_EFF_WIDTH_2,  H100_EFF_WIDTH_4,
                                            H100_EFF_WIDTH_8, H100_EFF_WIDTH_16, H100_EFF_WIDTH_16 };
    return eff[w];
}

double h100_record_seconds(const SimLaunchRecord *r)
{
    if (r->kind != SIM_REC_KERNEL)
        return (double)(sim_counters_sum(r->read) + sim_counters_sum(r->written)) /
               (H100_HBM_BYTES_PER_S * H100_EFF_LIBRARY);
    double weighted = 0, bytes = 0, width = 0;
    for (int w = 0; w < SIM_WIDTHS; w++) {
        const double b = (double)(r->read[w] + r->written[w]);
        bytes += b;
        weighted += b / width_eff(w);
        width += b * (w < 5 ? SIM_WIDTH_BYTES(w) : 16);
    }
    if (bytes == 0) return 0;
    /* f_flight by Little's law: resident threads × mean width × loads in flight against B · t_mem */
    double threads = (double)r->grid.x * r->grid.y * r->grid.z * r->block.x * r->block.y * r->block.z;
    if (threads > H100_RESIDENT_THREADS) threads = H100_RESIDENT_THREADS;
    const double flight = threads * (width / bytes) * H100_LOADS_IN_FLIGHT;
    double f = flight / (H100_HBM_BYTES_PER_S * H100_MEM_LATENCY_S);
    f = f < 1 ? f : 1;
    return weighted / (H100_HBM_BYTES_PER_S * f);
}

double h100_launch_seconds(const SimLaunchRecord *r, int as_graph)
{
    return (r->in_graph || as_graph ? H100_GRAPH_LAUNCH_S : H100_LAUNCH_S) + r->stages * H100_STAGE_S;
}
