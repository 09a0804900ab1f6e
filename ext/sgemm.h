/* The float32 GEMM of the training convolutions, on our own vector micro-kernel.
 *
 *   C (m, n) = init + A (m, k) @ B (k, n)
 *   A[i, p] = a[i * ars + p * acs]  (either orientation of a row-major matrix, unpacked)
 *   B[p, j] = b[p * ldb + j]        (rows contiguous)
 *   C[i, j] = c[i * ldc + j]
 *   init: SGEMM_ZERO, SGEMM_ACCUMULATE (C's own values) or SGEMM_BIAS (bias[i] on row i)
 *
 * Why not OpenBLAS: on these shapes (16-32 filters, 25-400 inputs, a few hundred columns)
 * it repacks both operands on every call, and the kernel it picks is set by
 * OPENBLAS_CORETYPE (this machine runs it as Haswell, AVX2, on an AVX-512 CPU). Here B's
 * rows are read in place, A is broadcast from where it lies, and the instruction set is
 * chosen at run time from what the CPU has: AVX-512, AVX2 with FMA, or the build's baseline.
 *
 * Every C entry is its init plus the products over p added in increasing p, one rounding
 * each (a fused multiply-add where the instruction set has it): the result depends on the
 * instruction set, never on the thread count or on where a call's tiles start.
 */
#ifndef DETECTOR_SGEMM_H
#define DETECTOR_SGEMM_H

#include <stddef.h>
#include <string.h>

#define SGEMM_ZERO 0
#define SGEMM_ACCUMULATE 1
#define SGEMM_BIAS 2
/* rows of B in one panel: a panel three vectors wide stays in L1 (48 KiB here) */
#define SGEMM_KC 128

/* GCC specialises the kernels for bias = NULL and then warns about the bias[i] they read
 * only when init == SGEMM_BIAS, which such calls never pass */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Warray-bounds"

/* -- the baseline: GCC's generic vectors, four floats (SSE2 on x86-64) --------------------- */
typedef float sgemm_v4 __attribute__((vector_size(16), aligned(4), may_alias));
static inline sgemm_v4 sgemm_v4_load(const float *p) { sgemm_v4 v; memcpy(&v, p, sizeof v); return v; }
static inline void sgemm_v4_store(float *p, sgemm_v4 v) { memcpy(p, &v, sizeof v); }

#define ISA base
#define TARGET
#define VEC sgemm_v4
#define VL 4
#define LOADU(p) sgemm_v4_load(p)
#define STOREU(p, v) sgemm_v4_store((p), (v))
#define SET1(s) ((sgemm_v4){0, 0, 0, 0} + (s))
#define ZERO() ((sgemm_v4){0, 0, 0, 0})
#define FMA(a, b, c) ((a) * (b) + (c))
#define MR1 8
#define MR2 6
#define MR3 4
#include "sgemm_isa.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define SGEMM_X86 1

#define ISA avx2
#define TARGET __attribute__((target("avx2,fma")))
#define VEC __m256
#define VL 8
#define LOADU(p) _mm256_loadu_ps(p)
#define STOREU(p, v) _mm256_storeu_ps((p), (v))
#define SET1(s) _mm256_set1_ps(s)
#define ZERO() _mm256_setzero_ps()
#define FMA(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#define MR1 8
#define MR2 6
#define MR3 4
#include "sgemm_isa.h"

#define ISA avx512
#define TARGET __attribute__((target("avx512f,avx2,fma")))
#define VEC __m512
#define VL 16
#define LOADU(p) _mm512_loadu_ps(p)
#define STOREU(p, v) _mm512_storeu_ps((p), (v))
#define SET1(s) _mm512_set1_ps(s)
#define ZERO() _mm512_setzero_ps()
#define FMA(a, b, c) _mm512_fmadd_ps((a), (b), (c))
#define MR1 16
#define MR2 12
#define MR3 8
#include "sgemm_isa.h"
#endif
#pragma GCC diagnostic pop

/* Instruction sets, in order: what the CPU has is the default; tests may ask for less. */
#define SGEMM_BASE 0
#define SGEMM_AVX2 1
#define SGEMM_AVX512 2

static int sgemm_best_isa(void)
{
#ifdef SGEMM_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f"))
        return SGEMM_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return SGEMM_AVX2;
#endif
    return SGEMM_BASE;
}

static int sgemm_isa = -1;

/* Use instruction set `isa` (clipped to what the CPU has) from now on; return the one in use. */
static int sgemm_use_isa(int isa)
{
    int best = sgemm_best_isa();
    sgemm_isa = isa < 0 || isa > best ? best : isa;
    return sgemm_isa;
}

static void sgemm(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const float *a, Py_ssize_t ars,
                  Py_ssize_t acs, const float *b, Py_ssize_t ldb, float *c, Py_ssize_t ldc,
                  int init, const float *bias)
{
    if (m <= 0 || n <= 0)
        return;
    if (sgemm_isa < 0)
        sgemm_use_isa(-1);
#ifdef SGEMM_X86
    if (sgemm_isa == SGEMM_AVX512) {
        sgemm_avx512(m, n, k, a, ars, acs, b, ldb, c, ldc, init, bias);
        return;
    }
    if (sgemm_isa == SGEMM_AVX2) {
        sgemm_avx2(m, n, k, a, ars, acs, b, ldb, c, ldc, init, bias);
        return;
    }
#endif
    sgemm_base(m, n, k, a, ars, acs, b, ldb, c, ldc, init, bias);
}

#endif
