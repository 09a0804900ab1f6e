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
POOL2X2_ROW(float, max2x2_argmax_row_f32)
POOL2X2_ROW(double, max2x2_argmax_row_f64)

#endif
