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

/* Tiles numbered across a batch: tile f is tile (ti, tj) of image img, f = (img * rows + ti)
 * * cols + tj; a chunk is any run of them, so that images narrower than a chunk, and rows
 * that would leave a chunk mostly empty, waste no tiles. */
typedef struct {
    Py_ssize_t C, H, W, PH, PW;  /* the input images (C, H, W) and their padding */
    Py_ssize_t K, OH, OW;        /* the output channels and size */
    Py_ssize_t rows, cols;       /* tiles of an image */
    int m;                       /* outputs of a tile, a side */
} wg_flat;

/* the lanes [lo, hi) of a vector of vw floats that lie inside a row: columns first + lane
 * in [0, width) */
typedef struct {
    int lo, hi;
    unsigned bits;
} wg_lanes;

static wg_lanes wg_row_lanes(Py_ssize_t first, Py_ssize_t width, int vw)
{
    Py_ssize_t lo = -first, hi = width - first;
    wg_lanes l;
    l.lo = lo < 0 ? 0 : lo > vw ? vw : (int)lo;
    l.hi = hi < 0 ? 0 : hi > vw ? vw : (int)hi;
    if (l.hi < l.lo) l.hi = l.lo;
    l.bits = (unsigned)(((1ull << l.hi) - 1) & ~((1ull << l.lo) - 1));
    return l;
}

/* A run of tiles of one tile row of one image: tiles tj .. tj + len - 1, at position pos of
 * the chunk. Its patch rows r (bit r of rows set: inside the image) start at float
 * x_at + r * W (+ c * H * W for channel c) of the images and cover two vectors, whose lanes
 * inside the row are x_lanes[0], x_lanes[1]; its output rows a (bit a of out_rows) start at
 * dout_at + a * OW (+ k * OH * OW), with lanes dout_lanes[0], [1]. */
typedef struct {
    Py_ssize_t img, ti, tj, pos, len;
    Py_ssize_t x_at, dout_at;
    unsigned rows, out_rows;
    wg_lanes x_lanes[2], dout_lanes[2];
} wg_piece;

/* The pieces of the chunk of count tiles from flat tile f0, each at most max tiles (the
 * widest that two vectors of vw floats hold a row of); returns their number (at most
 * count). */
static int wg_pieces(const wg_flat *g, Py_ssize_t f0, Py_ssize_t count, Py_ssize_t max,
                     int vw, wg_piece *out)
{
    int n = 0;
    const Py_ssize_t per = g->rows * g->cols;
    for (Py_ssize_t pos = 0; pos < count;) {
        Py_ssize_t f = f0 + pos, rem = f % per;
        wg_piece p;
        p.img = f / per, p.ti = rem / g->cols, p.tj = rem % g->cols, p.pos = pos;
        p.len = g->cols - p.tj;
        if (p.len > count - pos) p.len = count - pos;
        if (p.len > max) p.len = max;
        const Py_ssize_t iy = p.ti * g->m - g->PH, ix = p.tj * g->m - g->PW;
        const Py_ssize_t oy = p.ti * g->m, ox = p.tj * g->m;
        p.x_at = (p.img * g->C * g->H + iy) * g->W + ix;
        p.dout_at = (p.img * g->K * g->OH + oy) * g->OW + ox;
        p.rows = p.out_rows = 0;
        for (int r = 0; r < WG_N; r++)
            if (iy + r >= 0 && iy + r < g->H)
                p.rows |= 1u << r;
        for (int a = 0; a < g->m; a++)
            if (oy + a < g->OH)
                p.out_rows |= 1u << a;
        for (int h = 0; h < 2; h++) {
            p.x_lanes[h] = wg_row_lanes(ix + h * vw, g->W, vw);
            p.dout_lanes[h] = wg_row_lanes(ox + h * vw, g->OW, vw);
        }
        out[n++] = p;
        pos += p.len;
    }
    return n;
}

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

typedef void (*wg_backward_fn)(const float *, const float *, const wg_flat *, Py_ssize_t,
                               Py_ssize_t, const float *, Py_ssize_t, Py_ssize_t, float *,
                               double *, float *, float *);

typedef void (*wg_flat_fn)(const float *, const wg_flat *, Py_ssize_t, Py_ssize_t, const float *,
                           Py_ssize_t, const float *, int, int, const float *, const float *,
                           const float *, Py_ssize_t, float *, Py_ssize_t, Py_ssize_t, float *);

static wg_chunk_fn wg_chunk = chunk_base;
static wg_flat_fn wg_flat_chunk = flat_chunk_base;
static wg_backward_fn wg_backward_chunk = backward_chunk_base;
static wg_filter_fn wg_transform_filter = transform_filter_base;
static wg_gradient_fn wg_gradient_chunk = gradient_chunk_base;
static const char *wg_isa = "baseline";

/* Picks the fastest copy this CPU runs; called once, at import. */
static void wg_select(void)
{
    wg_chunk = SIMD_PICK(chunk);
    wg_transform_filter = SIMD_PICK(transform_filter);
    wg_gradient_chunk = SIMD_PICK(gradient_chunk);
    wg_backward_chunk = SIMD_PICK(backward_chunk);
    wg_flat_chunk = SIMD_PICK(flat_chunk);
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

/* floats of scratch one thread needs for the forward's chunks of tiles numbered across the
 * batch (flat_chunk) */
static Py_ssize_t wg_flat_scratch_floats(Py_ssize_t C, Py_ssize_t Kp, int projects)
{
    return WG_N * WG_N * WG_TILES * (C + WG_KB_MAX + 1)
           + (projects ? Kp * WG_MMAX * WG_MMAX * WG_TILES : 0);
}

/* floats of scratch one thread needs for the fused backward's chunks (backward_chunk) */
static Py_ssize_t wg_backward_scratch_floats(Py_ssize_t C, Py_ssize_t Kp, Py_ssize_t Cp)
{
    return WG_N * WG_N * WG_TILES * (C + Cp + Kp + 1 + WG_KB_MAX);
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
