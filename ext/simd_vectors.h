/* Vector types and helpers shared by the SIMD kernels, compiled once per instruction set.
 *
 * simd.h includes this file (then the kernel's body) once per instruction set, with V(name)
 * naming that copy, V_VW the floats of a vector and V_KB the filters of a register block.
 */

typedef float V(vf) __attribute__((vector_size(V_VW * 4), aligned(4)));
typedef int V(vi) __attribute__((vector_size(V_VW * 4), aligned(4)));

/* lanes 0, VW, 1, VW + 1, ... of two vectors (lo), and the second half of that (hi) */
#if V_VW == 16
static const V(vi) __attribute__((unused)) V(interleave_lo) = {0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23};
static const V(vi) __attribute__((unused)) V(interleave_hi) = {8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
#elif V_VW == 8
static const V(vi) __attribute__((unused)) V(interleave_lo) = {0, 8, 1, 9, 2, 10, 3, 11};
static const V(vi) __attribute__((unused)) V(interleave_hi) = {4, 12, 5, 13, 6, 14, 7, 15};
#else
static const V(vi) __attribute__((unused)) V(interleave_lo) = {0, 4, 1, 5};
static const V(vi) __attribute__((unused)) V(interleave_hi) = {2, 6, 3, 7};
#endif

/* the even lanes of two vectors one after the other, and the odd ones */
#if V_VW == 16
static const V(vi) __attribute__((unused)) V(even) = {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30};
static const V(vi) __attribute__((unused)) V(odd) = {1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31};
#elif V_VW == 8
static const V(vi) __attribute__((unused)) V(even) = {0, 2, 4, 6, 8, 10, 12, 14};
static const V(vi) __attribute__((unused)) V(odd) = {1, 3, 5, 7, 9, 11, 13, 15};
#else
static const V(vi) __attribute__((unused)) V(even) = {0, 2, 4, 6};
static const V(vi) __attribute__((unused)) V(odd) = {1, 3, 5, 7};
#endif

/* a where the mask is set, else b (a mask lane is all ones or all zeros) */
static inline V(vf) V(select)(V(vi) mask, V(vf) a, V(vf) b)
{
    return (V(vf))(((V(vi))a & mask) | ((V(vi))b & ~mask));
}

/* as windows.pxd's nan_max and relu: a NaN wins the max and passes the ReLU */
static inline V(vf) V(nan_max)(V(vf) best, V(vf) v)
{
    return V(select)((v > best) | (v != v), v, best);
}

static inline V(vf) V(relu)(V(vf) v)
{
    return V(select)((v > 0) | (v != v), v, (V(vf)){0});
}

/* p[i] = v[i] for i < n (0 < n < V_VW): one masked store where the instruction set has it,
 * instead of a store per lane */
static inline void V(store_part)(float *p, V(vf) v, int n)
{
#if V_VW == 16
    _mm512_mask_storeu_ps(p, (__mmask16)((1u << n) - 1), (__m512)v);
#elif V_VW == 8
    const V(vi) lanes = {0, 1, 2, 3, 4, 5, 6, 7};
    _mm256_maskstore_ps(p, (__m256i)(lanes < n), (__m256)v);
#else
    for (int i = 0; i < n; i++)
        p[i] = v[i];
#endif
}

/* p[i] for i < n (0 < n < V_VW), zeros past them, reading no further: a masked load where
 * the instruction set has it */
static inline V(vf) V(load_part)(const float *p, int n)
{
#if V_VW == 16
    return (V(vf))_mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1), p);
#elif V_VW == 8
    const V(vi) lanes = {0, 1, 2, 3, 4, 5, 6, 7};
    return (V(vf))_mm256_maskload_ps(p, (__m256i)(lanes < n));
#else
    V(vf) v = {0};
    for (int i = 0; i < n; i++)
        v[i] = p[i];
    return v;
#endif
}

/* m[kk][t] = sum over c of u[kk * ldu + c] * v[c * ldv + t], for V_KB rows of u and all tb
 * columns of v (a multiple of 2 * V_VW): the register-blocked micro-kernel of both kernels */
static inline void V(gemm_block)(const float *restrict u, Py_ssize_t ldu,
                                  const float *restrict v, Py_ssize_t ldv, Py_ssize_t C,
                                  Py_ssize_t tb, float *restrict m)
{
    for (Py_ssize_t t = 0; t < tb; t += 2 * V_VW) {
        V(vf) acc0[V_KB], acc1[V_KB];
        for (int kk = 0; kk < V_KB; kk++) {
            acc0[kk] = (V(vf)){0};
            acc1[kk] = (V(vf)){0};
        }
        const float *vt = v + t;
        for (Py_ssize_t c = 0; c < C; c++) {
            V(vf) v0 = *(const V(vf) *)(vt + c * ldv);
            V(vf) v1 = *(const V(vf) *)(vt + c * ldv + V_VW);
#pragma GCC unroll 8
            for (int kk = 0; kk < V_KB; kk++) {
                float uk = u[kk * ldu + c];
                acc0[kk] += uk * v0;
                acc1[kk] += uk * v1;
            }
        }
        for (int kk = 0; kk < V_KB; kk++) {
            *(V(vf) *)(m + kk * tb + t) = acc0[kk];
            *(V(vf) *)(m + kk * tb + t + V_VW) = acc1[kk];
        }
    }
}

