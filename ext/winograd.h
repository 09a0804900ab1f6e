/* The Winograd chunk kernel (winograd_body.h), built for each instruction set by simd.h,
 * and the copy this CPU runs, picked at import. */
#ifndef DETECTOR_WINOGRAD_H
#define DETECTOR_WINOGRAD_H

/* the register blocks of every copy fit in this many filters, the padding of U */
#define WG_KB_MAX SIMD_KB_MAX
/* every tile reads a 6 x 6 input patch: F(2x2, 5x5) and F(4x4, 3x3) */
#define WG_N 6
/* outputs per tile side, at most */
#define WG_MMAX 4
/* tiles per chunk, a multiple of 32 (the micro-kernel's width): the chunk's transformed
 * input (n*n x C x WG_TILES floats) stays in L2 for the channel counts of small nets */
#define WG_TILES 32

/* Where a chunk's outputs go when the images ran side by side as one wide image: image i's
 * output column j is the wide output's column i * slot + j, kept when j < ow; images are
 * stride floats apart in out. slot 0: out is the wide output itself. The weight gradient
 * reads its output gradients from the images the same way. */
typedef struct {
    Py_ssize_t slot, n, ow, stride;
} wg_outputs;

/* Images side by side as one wide image, read where they lie: image i's column j is the
 * wide image's column i * slot + pw + j, zeros around; images are w wide and stride floats
 * apart. slot 0: x is one image. */
typedef struct {
    Py_ssize_t slot, n, w, pw, stride;
} wg_inputs;

/* floats of the buffer a chunk assembles one wide row in, for m-wide tiles, at most */
#define WG_ROW_FLOATS (WG_MMAX * (WG_TILES + WG_N) + 16)

#define SIMD_BODY "winograd_body.h"
#include "simd.h"

typedef void (*wg_chunk_fn)(const float *, Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                            Py_ssize_t, const float *, Py_ssize_t, Py_ssize_t, const float *,
                            int, int, int, const float *, const float *, const float *,
                            Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t, float *,
                            Py_ssize_t, Py_ssize_t, const wg_inputs *, const wg_outputs *,
                            float *);

typedef void (*wg_gradient_fn)(const float *, Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                               Py_ssize_t, const float *, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                               Py_ssize_t, int, const float *, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                               Py_ssize_t, Py_ssize_t, const wg_inputs *, const wg_outputs *,
                               float *, double *, float *);

typedef void (*wg_filter_fn)(const float *, Py_ssize_t, int, const double *, int, Py_ssize_t,
                             Py_ssize_t, float *);

static wg_chunk_fn wg_chunk = chunk_base;
static wg_filter_fn wg_transform_filter = transform_filter_base;
static wg_gradient_fn wg_gradient_chunk = gradient_chunk_base;
static const char *wg_isa = "baseline";

/* Picks the fastest copy this CPU runs; called once, at import. */
static void wg_select(void)
{
    wg_chunk = SIMD_PICK(chunk);
    wg_transform_filter = SIMD_PICK(transform_filter);
    wg_gradient_chunk = SIMD_PICK(gradient_chunk);
    wg_isa = simd_names[simd_level()];
}

/* floats of scratch one thread needs for chunks of tb tiles, with a projection (Kp filters
 * padded to the block) or without one */
static Py_ssize_t wg_scratch_floats(Py_ssize_t C, Py_ssize_t Kp, int projects, int m, Py_ssize_t tb)
{
    return WG_N * WG_N * (C + WG_KB_MAX) * tb + (projects ? Kp : 1) * m * m * tb
           + WG_N * m * (tb + (WG_N - 1) / m + 1) + m * m * tb + WG_ROW_FLOATS;
}

/* floats of scratch one thread needs for the weight gradient's chunks of tb tiles */
static Py_ssize_t wg_gradient_scratch_floats(Py_ssize_t C, Py_ssize_t Kp, Py_ssize_t Cp, int m,
                                             Py_ssize_t tb)
{
    return WG_N * WG_N * (C + Cp + Kp) * tb + WG_N * m * (tb + (WG_N - 1) / m + 1) + WG_ROW_FLOATS;
}

/* B^T as the kernel applies it: its input transform of each unit vector */
static void wg_input_matrix(float *bt)
{
    for (int s = 0; s < WG_N; s++) {
        vf_base d[WG_N] = {{0}}, o[WG_N];
        d[s] = (vf_base){1, 1, 1, 1};
        bt6_base(d[0], d[1], d[2], d[3], d[4], d[5], o);
        for (int nu = 0; nu < WG_N; nu++)
            bt[nu * WG_N + s] = o[nu][0];
    }
}

#endif
