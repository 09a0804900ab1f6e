/* The Winograd chunk kernel (winograd_body.h) built for AVX-512, AVX2 and the baseline, and
 * the choice between them by what the CPU running it supports.
 *
 * The build passes no -march flag, so that the package runs on any x86-64 (and any other)
 * CPU; GCC's target pragmas compile the faster copies beside the baseline one, and
 * wg_select() picks one at import. Other compilers and CPUs build the baseline only.
 */
#ifndef DETECTOR_WINOGRAD_H
#define DETECTOR_WINOGRAD_H

#include <Python.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define WG_MULTIVERSION 1
#else
#define WG_MULTIVERSION 0
#endif

/* the register blocks of every copy fit in this many filters, the padding of U */
#define WG_KB_MAX 8
/* every tile reads a 6 x 6 input patch: F(2x2, 5x5) and F(4x4, 3x3) */
#define WG_N 6
/* outputs per tile side, at most */
#define WG_MMAX 4

#if WG_MULTIVERSION
#pragma GCC push_options
#pragma GCC target("arch=x86-64-v4")
#define WG(name) wg_avx512_##name
#define WG_VW 16
#define WG_KB 8
#include "winograd_body.h"
#undef WG
#undef WG_VW
#undef WG_KB
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("arch=x86-64-v3")
#define WG(name) wg_avx2_##name
#define WG_VW 8
#define WG_KB 4
#include "winograd_body.h"
#undef WG
#undef WG_VW
#undef WG_KB
#pragma GCC pop_options
#endif

#define WG(name) wg_base_##name
#define WG_VW 4
#define WG_KB 4
#include "winograd_body.h"
#undef WG
#undef WG_VW
#undef WG_KB

typedef void (*wg_chunk_fn)(const float *, Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                            Py_ssize_t, const float *, Py_ssize_t, Py_ssize_t, const float *,
                            int, int, int, const float *, const float *, const float *,
                            Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t, float *,
                            Py_ssize_t, Py_ssize_t, float *);

static wg_chunk_fn wg_chunk = wg_base_chunk;
static const char *wg_isa = "baseline";

/* Picks the fastest copy this CPU runs; called once, at import. */
static void wg_select(void)
{
#if WG_MULTIVERSION
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")
        && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq")
        && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        wg_chunk = wg_avx512_chunk;
        wg_isa = "avx512";
        return;
    }
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")
        && __builtin_cpu_supports("bmi2")) {
        wg_chunk = wg_avx2_chunk;
        wg_isa = "avx2";
        return;
    }
#endif
}

/* floats of scratch one thread needs for chunks of tb tiles, with a projection (Kp filters
 * padded to the block) or without one */
static Py_ssize_t wg_scratch_floats(Py_ssize_t C, Py_ssize_t Kp, int projects, int m, Py_ssize_t tb)
{
    return WG_N * WG_N * (C + WG_KB_MAX) * tb + (projects ? Kp : 1) * m * m * tb
           + WG_N * m * (tb + (WG_N - 1) / m + 1);
}

/* B^T as the kernel applies it: its input transform of each unit vector */
static void wg_input_matrix(float *bt)
{
    for (int s = 0; s < WG_N; s++) {
        wg_base_vf d[WG_N] = {{0}}, o[WG_N];
        d[s] = (wg_base_vf){1, 1, 1, 1};
        wg_base_bt6(d[0], d[1], d[2], d[3], d[4], d[5], o);
        for (int nu = 0; nu < WG_N; nu++)
            bt[nu * WG_N + s] = o[nu][0];
    }
}

#endif
