/* Copying short spans of floats: im2col's inner loop.
 *
 * Its spans are a convolution's output rows, often shorter than a vector loop's main body
 * (10 and 28 floats in the default net), so the loop GCC builds for the baseline runs mostly
 * in its scalar epilogue. On AVX-512 a span is whole vectors and one masked vector.
 * (col2im's additions stay scalar: its taps add into overlapping spans of dx one after the
 * other, and a masked vector store then stalls the next tap's load: 20% slower.)
 */
#ifndef DETECTOR_SPANS_H
#define DETECTOR_SPANS_H

#include <stddef.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>
#define SPANS_X86 1

__attribute__((target("avx512f"))) static void span_copy_f32_avx512(float *d, const float *s, Py_ssize_t n)
{
    for (; n >= 16; n -= 16, d += 16, s += 16)
        _mm512_storeu_ps(d, _mm512_loadu_ps(s));
    if (n > 0) {
        __mmask16 m = (__mmask16)((1u << n) - 1);
        _mm512_mask_storeu_ps(d, m, _mm512_maskz_loadu_ps(m, s));
    }
}

#endif

static int spans_avx512 = 0;

/* Called once when the module loads. */
static void spans_init(void)
{
#ifdef SPANS_X86
    __builtin_cpu_init();
    spans_avx512 = __builtin_cpu_supports("avx512f") != 0;
#endif
}

/* d[t] = s[t] for t < n (d and s do not overlap) */
static inline void span_copy_f32(float *d, const float *s, Py_ssize_t n)
{
    Py_ssize_t t;
#ifdef SPANS_X86
    if (spans_avx512) {
        span_copy_f32_avx512(d, s, n);
        return;
    }
#endif
    for (t = 0; t < n; t++)
        d[t] = s[t];
}

#endif
