/**
 * \file h100_model.h
 * \brief The simple H100 time model `make profile-fast` applies to the simulated device's counters.
 *
 * Every constant below is an estimate, not a measurement of this code: the simulator has no
 * notion of time, and these numbers turn counted bytes, launches and synchronisations into a
 * plausible H100 SXM time so that changes to the kernels can be compared. The model, per step:
 *
 *   t = Σ_launches bytes_w / (B_HBM · e_w · f_flight)  +  Σ_launches (t_launch + stages · t_stage)  +  syncs · t_sync
 *
 * where bytes_w are a launch's global bytes at access width w, e_w the efficiency of width w,
 * f_flight = min(1, bytes in flight / B_HBM · t_mem) the share of the bandwidth that the launch's
 * threads can keep busy by Little's law (threads · mean width · loads in flight per thread), and
 * t_launch the launch latency (lower for launches replayed from a CUDA graph), plus t_stage for each
 * dependency between stages inside the launch.
 */
#ifndef DSV2_FAST_BENCH_H100_MODEL_H
#define DSV2_FAST_BENCH_H100_MODEL_H

/** HBM3 bandwidth of the H100 SXM5 80 GB: 3.35 TB/s (NVIDIA H100 Tensor Core GPU datasheet). */
#define H100_HBM_BYTES_PER_S 3.35e12

/*
 * Efficiency by access width (fraction of H100_HBM_BYTES_PER_S a streaming kernel reaches when
 * all its accesses have that width and enough are in flight). Estimates: streaming copies with
 * 16-byte accesses reach about 90% of the datasheet bandwidth on Hopper (STREAM-like
 * microbenchmarks, e.g. Luo et al., "Benchmarking and Dissecting the Nvidia Hopper GPU
 * Architecture", 2024); narrower accesses need more instructions and more load/store-unit
 * transactions per byte, so they fall off — the values below are this project's assumptions.
 */
#define H100_EFF_WIDTH_16 0.90 /**< 16-byte (ld.global.v4.b32, float4 / uint4) accesses */
#define H100_EFF_WIDTH_8  0.80 /**< 8-byte accesses */
#define H100_EFF_WIDTH_4  0.65 /**< 4-byte accesses (float) */
#define H100_EFF_WIDTH_2  0.40 /**< 2-byte accesses (a bf16 at a time) */
#define H100_EFF_WIDTH_1  0.25 /**< 1-byte accesses */
/** cuBLAS GEMMs and copies: their own 16-byte tiles, at the datasheet bandwidth times this (estimate). */
#define H100_EFF_LIBRARY  0.85

/** DRAM latency seen by a load under load, seconds (estimate; ~500–800 ns is typical of HBM GPUs). */
#define H100_MEM_LATENCY_S    650e-9
/** Threads resident at once: 132 SMs × 2048 threads (H100 SXM5 specification). */
#define H100_RESIDENT_THREADS (132.0 * 2048.0)
/** Independent loads each thread keeps in flight (estimate: a modestly unrolled loop). */
#define H100_LOADS_IN_FLIGHT  4.0

/** Latency of one eager, dependent kernel launch, seconds (estimate: 2–3 µs launch to launch). */
#define H100_LAUNCH_S       2.5e-6
/** Latency of one dependent kernel replayed from a CUDA graph, seconds (estimate). */
#define H100_GRAPH_LAUNCH_S 1.0e-6
/**
 * Latency of one dependency between stages inside a launch (kernels/stage.cuh), seconds (estimate: the
 * producer's fence and L2 atomic, then the waiting block's next poll, about half a graph launch's gap).
 */
#define H100_STAGE_S        0.5e-6
/** Cost of one host synchronisation (the host waits, then the device idles until the next launch), seconds (estimate). */
#define H100_HOST_SYNC_S    10e-6

#include "sim_counters.h"

/** Estimated seconds of one record's memory traffic (the first term of the model). */
double h100_record_seconds(const SimLaunchRecord *r);
/**
 * Estimated latency of one record's launch: H100_GRAPH_LAUNCH_S when replayed from a graph (or as_graph),
 * else H100_LAUNCH_S; plus H100_STAGE_S for each stage its blocks waited on.
 */
double h100_launch_seconds(const SimLaunchRecord *r, int as_graph);

#endif
