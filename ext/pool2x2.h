/* Training's 2x2 max-pool of stride 2: one row of windows, their maxima and the flat index
 * of each winner, with compares and selects only, so that GCC vectorises the loop; cloned
 * for AVX-512, AVX2 and the build's baseline and picked at load time by the CPU.
 *
 * The winner is the first maximum in row-major order, or the first NaN (as pool.pyx's
 * max_plane): the max is taken as windows.pxd's nan_max does, then the first value equal to
 * it, or the first NaN when it is NaN, is the winner.
 */
#ifndef DETECTOR_POOL2X2_H
#define DETECTOR_POOL2X2_H

#include <stddef.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define POOL2X2_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define POOL2X2_CLONES
#endif

#define POOL2X2_IS(v, m) (((v) == (m)) | ((v) != (v)))
#define POOL2X2_ROW(T, NAME)                                                                  \
    static POOL2X2_CLONES void NAME(const T *restrict r, Py_ssize_t W, Py_ssize_t base,       \
                                    Py_ssize_t n, T *restrict out, Py_ssize_t *restrict argmax) \
    {                                                                                         \
        Py_ssize_t t;                                                                         \
        for (t = 0; t < n; t++) {                                                             \
            T a = r[2 * t], b = r[2 * t + 1], c = r[W + 2 * t], d = r[W + 2 * t + 1];         \
            T m = (b > a) | (b != b) ? b : a;                                                 \
            m = (c > m) | (c != c) ? c : m;                                                   \
            m = (d > m) | (d != d) ? d : m;                                                   \
            out[t] = m;                                                                       \
            argmax[t] = base + 2 * t + (POOL2X2_IS(a, m) ? 0 : POOL2X2_IS(b, m) ? 1          \
                                        : POOL2X2_IS(c, m) ? W : W + 1);                      \
        }                                                                                     \
    }

/* r: the window row's first input row (the second is W further); base: r's flat index */
POOL2X2_ROW(float, max2x2_argmax_row_vec_f32)
POOL2X2_ROW(double, max2x2_argmax_row_f64)

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>

/* float32 on AVX-512: rows of windows are short (14 and 5 in the default net), shorter than
 * the vectorised loop's 16 lanes, so it would run its scalar epilogue only; here 16 windows
 * at a time, the last ones masked. The same selects, in the same order. */
__attribute__((target("avx512f"))) static void max2x2_argmax_row_avx512(
    const float *r, Py_ssize_t W, Py_ssize_t base, Py_ssize_t n, float *out, Py_ssize_t *argmax)
{
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    const __m512i lane = _mm512_set_epi64(14, 12, 10, 8, 6, 4, 2, 0);
    Py_ssize_t t;
    for (t = 0; t < n; t += 16) {
        Py_ssize_t left = n - t < 16 ? n - t : 16;
        __mmask32 two = left == 16 ? 0xFFFFFFFFu : (1u << (2 * left)) - 1;
        __mmask16 one = (__mmask16)((1u << left) - 1);
        __m512 top0 = _mm512_maskz_loadu_ps((__mmask16)two, r + 2 * t);
        __m512 top1 = _mm512_maskz_loadu_ps((__mmask16)(two >> 16), r + 2 * t + 16);
        __m512 bot0 = _mm512_maskz_loadu_ps((__mmask16)two, r + W + 2 * t);
        __m512 bot1 = _mm512_maskz_loadu_ps((__mmask16)(two >> 16), r + W + 2 * t + 16);
        __m512 a = _mm512_permutex2var_ps(top0, even, top1), b = _mm512_permutex2var_ps(top0, odd, top1);
        __m512 c = _mm512_permutex2var_ps(bot0, even, bot1), d = _mm512_permutex2var_ps(bot0, odd, bot1);
        __m512 m = a;
        /* m = v where v > m or v is NaN: nan_max */
        m = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(b, m, _CMP_GT_OQ) | _mm512_cmp_ps_mask(b, b, _CMP_UNORD_Q), m, b);
        m = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(c, m, _CMP_GT_OQ) | _mm512_cmp_ps_mask(c, c, _CMP_UNORD_Q), m, c);
        m = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(d, m, _CMP_GT_OQ) | _mm512_cmp_ps_mask(d, d, _CMP_UNORD_Q), m, d);
        /* the first of a, b, c, d equal to m (or NaN): set from the last, so the first wins */
        __m512i at = _mm512_set1_epi32((int)(W + 1));
        at = _mm512_mask_mov_epi32(at, _mm512_cmp_ps_mask(c, m, _CMP_EQ_OQ) | _mm512_cmp_ps_mask(c, c, _CMP_UNORD_Q),
                                   _mm512_set1_epi32((int)W));
        at = _mm512_mask_mov_epi32(at, _mm512_cmp_ps_mask(b, m, _CMP_EQ_OQ) | _mm512_cmp_ps_mask(b, b, _CMP_UNORD_Q),
                                   _mm512_set1_epi32(1));
        at = _mm512_mask_mov_epi32(at, _mm512_cmp_ps_mask(a, m, _CMP_EQ_OQ) | _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q),
                                   _mm512_setzero_si512());
        _mm512_mask_storeu_ps(out + t, one, m);
        __m512i first = _mm512_add_epi64(_mm512_cvtepi32_epi64(_mm512_castsi512_si256(at)),
                                         _mm512_add_epi64(lane, _mm512_set1_epi64(base + 2 * t)));
        __m512i second = _mm512_add_epi64(_mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(at, 1)),
                                          _mm512_add_epi64(lane, _mm512_set1_epi64(base + 2 * t + 16)));
        _mm512_mask_storeu_epi64(argmax + t, (__mmask8)one, first);
        _mm512_mask_storeu_epi64(argmax + t + 8, (__mmask8)(one >> 8), second);
    }
}
#endif

static int pool2x2_avx512 = -1;

static void max2x2_argmax_row_f32(const float *r, Py_ssize_t W, Py_ssize_t base, Py_ssize_t n,
                                  float *out, Py_ssize_t *argmax)
{
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
    if (pool2x2_avx512 < 0) {  /* a benign race: every thread writes the same answer */
        __builtin_cpu_init();
        pool2x2_avx512 = __builtin_cpu_supports("avx512f") != 0;
    }
    if (pool2x2_avx512) {
        max2x2_argmax_row_avx512(r, W, base, n, out, argmax);
        return;
    }
#endif
    max2x2_argmax_row_vec_f32(r, W, base, n, out, argmax);
}

#endif
