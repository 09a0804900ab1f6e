/* Compiles a kernel body for AVX-512, AVX2 and baseline x86-64, and tells which this CPU runs.
 *
 * The build passes no -march flag, so that the package runs on any x86-64 (and any other)
 * CPU. A module defines SIMD_BODY (the file of its kernel) and includes this file: GCC's
 * target pragmas compile simd_vectors.h and the body three times, with V(name) giving
 * name_avx512, name_avx2 and name_base, and simd_level() says which copy to call (2, 1, 0).
 * Other compilers and CPUs build the baseline copy only.
 */
#ifndef DETECTOR_SIMD_H
#define DETECTOR_SIMD_H

#include <Python.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define SIMD_MULTIVERSION 1
#else
#define SIMD_MULTIVERSION 0
#endif

/* the register blocks of every copy fit in this many rows: the padding of filter banks */
#define SIMD_KB_MAX 8

#if SIMD_MULTIVERSION
#include <immintrin.h>  /* masked stores, used by the copies whose target has them */

#pragma GCC push_options
#pragma GCC target("arch=x86-64-v4")
#define V(name) name##_avx512
#define V_VW 16
#define V_KB 8
#include "simd_vectors.h"
#include SIMD_BODY
#undef V
#undef V_VW
#undef V_KB
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("arch=x86-64-v3")
#define V(name) name##_avx2
#define V_VW 8
#define V_KB 4
#include "simd_vectors.h"
#include SIMD_BODY
#undef V
#undef V_VW
#undef V_KB
#pragma GCC pop_options
#endif

#define V(name) name##_base
#define V_VW 4
#define V_KB 4
#include "simd_vectors.h"
#include SIMD_BODY
#undef V
#undef V_VW
#undef V_KB

static const char *simd_names[] = {"baseline", "avx2", "avx512"};

/* 2: AVX-512 (F, VL, BW, DQ), 1: AVX2 with FMA, 0: neither, or not built. The environment
 * variable DETECTOR_SIMD=avx2 or baseline caps it (to test those copies on a newer CPU). */
static int simd_level(void)
{
#if SIMD_MULTIVERSION
    const char *cap = getenv("DETECTOR_SIMD");
    if (cap && strcmp(cap, "baseline") == 0)
        return 0;
    __builtin_cpu_init();
    if (cap && strcmp(cap, "avx2") == 0)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? 1 : 0;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")
        && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq")
        && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return 2;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")
        && __builtin_cpu_supports("bmi2"))
        return 1;
#endif
    return 0;
}

/* the copy of a kernel for this CPU: SIMD_PICK(chunk) is chunk_avx512, _avx2 or _base */
#if SIMD_MULTIVERSION
#define SIMD_PICK(name) (simd_level() == 2 ? name##_avx512 : simd_level() == 1 ? name##_avx2 : name##_base)
#else
#define SIMD_PICK(name) (name##_base)
#endif

#endif
