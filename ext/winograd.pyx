"""Winograd convolution for inference, float32, stride 1: F(m x m, r x r) tiles.

Each output tile of m x m values is computed from an n x n input patch (n = m + r - 1) as
A^T [(G g G^T) * (B^T d B)] A: n*n multiplications per tile and pair of channels instead
of m*m*r*r. The filters come transformed (U = G g G^T, by detector.winograd); this module
does the rest, in chunks of up to TILES tiles of one tile row, each from input to finished
output in per-thread scratch (see winograd_body.h). Chunks depend on the shapes only, never
on the thread count, so results are bit-identical for any number of threads.

The output stage adds the bias and applies the ReLU and a q x q max-pool when q divides m
(a tile is then whole pool windows), as conv2d_infer does.
"""
import numpy as np

from cython.parallel cimport parallel, prange, threadid
from libc.string cimport memcpy, memset

cdef extern from "winograd.h" nogil:
    ctypedef struct wg_outputs:
        Py_ssize_t slot, n, ow, stride
    ctypedef struct wg_inputs:
        Py_ssize_t slot, n, w, pw, stride
    ctypedef void (*wg_chunk_fn)(const float *, Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                 Py_ssize_t, const float *, Py_ssize_t, Py_ssize_t, const float *,
                                 int, int, int, const float *, const float *, const float *,
                                 Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                 float *, Py_ssize_t, Py_ssize_t, const wg_inputs *,
                                 const wg_outputs *, float *) noexcept
    wg_chunk_fn wg_chunk
    ctypedef void (*wg_gradient_fn)(const float *, Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                    Py_ssize_t, const float *, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                    Py_ssize_t, int, const float *, Py_ssize_t, Py_ssize_t,
                                    Py_ssize_t, Py_ssize_t, Py_ssize_t, const wg_inputs *,
                                    const wg_outputs *, float *, double *, float *) noexcept
    wg_gradient_fn wg_gradient_chunk
    ctypedef struct wg_flat:
        Py_ssize_t C, H, W, PH, PW, K, OH, OW, rows, cols
        int m
    ctypedef void (*wg_backward_fn)(const float *, const float *, const wg_flat *, Py_ssize_t,
                                    Py_ssize_t, const float *, Py_ssize_t, Py_ssize_t, float *,
                                    double *, float *, float *) noexcept
    wg_backward_fn wg_backward_chunk
    ctypedef void (*wg_flat_fn)(const float *, const wg_flat *, Py_ssize_t, Py_ssize_t, const float *,
                                Py_ssize_t, const float *, int, int, const float *, const float *,
                                const float *, Py_ssize_t, float *, Py_ssize_t, Py_ssize_t,
                                float *) noexcept
    wg_flat_fn wg_flat_chunk
    Py_ssize_t wg_flat_scratch_floats(Py_ssize_t C, Py_ssize_t Kp, int projects)
    Py_ssize_t wg_backward_scratch_floats(Py_ssize_t C, Py_ssize_t Kp, Py_ssize_t Cp)
    ctypedef void (*wg_filter_fn)(const float *, Py_ssize_t, int, const double *, int, Py_ssize_t,
                                  Py_ssize_t, float *) noexcept
    wg_filter_fn wg_transform_filter
    Py_ssize_t wg_gradient_scratch_floats(Py_ssize_t C, Py_ssize_t Kp, Py_ssize_t Cp, int m,
                                          Py_ssize_t tb)
    const char *wg_isa
    int WG_KB_MAX, WG_N, WG_MMAX, WG_TILES
    void wg_select()
    Py_ssize_t wg_scratch_floats(Py_ssize_t C, Py_ssize_t Kp, int projects, int m, Py_ssize_t tb)
    void wg_input_matrix(float *bt)

wg_select()

# Tiles per chunk (see winograd.h).
cdef Py_ssize_t TILES = WG_TILES

# The weight gradient's sums: one slot per group of chunks, a constant so that the order of
# the sums is fixed by the shapes alone, and enough groups to share out among threads.
GRADIENT_GROUPS = 16
# The fused backward's groups of images: fewer, as each of its slots sums a whole group;
# fewer still (down to 2, to share among threads) where the slots would pass this many floats.
BACKWARD_GROUPS = 8
BACKWARD_SLOT_FLOATS = 1 << 24
# Filters and channels of its slots are padded to multiples of these (its register block,
# and the widest vector).
GRADIENT_FILTER_BLOCK = 2 * WG_KB_MAX
GRADIENT_CHANNEL_BLOCK = 16

# Filters of U are padded with zeros to a multiple of this (every register block fits in it).
FILTER_BLOCK = WG_KB_MAX
TILES_PER_CHUNK = TILES


# Every tile reads an N x N input patch, and gives at most M_MAX x M_MAX outputs.
N = WG_N
M_MAX = WG_MMAX


cdef inline float *line_start(float *s) noexcept nogil:
    """The first float of s (a thread's scratch, with 16 floats of slack) on a 64-byte line."""
    return s + (16 - (<size_t>s // 4) % 16) % 16


def input_matrix():
    """B^T (N, N) as the kernel applies it, read back from its transform of unit vectors."""
    bt = np.empty((WG_N, WG_N), np.float32)
    cdef float[:, ::1] view = bt
    wg_input_matrix(&view[0, 0])
    return bt


def instruction_set():
    """The copy of the kernel this CPU runs: "avx512", "avx2" or "baseline"."""
    return wg_isa.decode()


def transform_filters(const float[:, :, :, ::1] w,  # IN (K, C, r, r)
                      const double[:, ::1] g,  # IN (N, r): G
                      float[:, :, ::1] u,  # OUT (N*N, Kp, C), Kp >= K: U = G w G^T, rest 0
                      int num_threads):
    """u[i * N + j, k, c] = sum over a, b of g[i, a] w[k, c, a, b] g[j, b], in float64."""
    cdef Py_ssize_t K = w.shape[0], C = w.shape[1], r = w.shape[2], n = g.shape[0]
    cdef Py_ssize_t k, i, a, nn = n * n, Kp = u.shape[1]
    cdef double gm[64]
    for i in range(n):
        for a in range(r):
            gm[i * 8 + a] = g[i, a]
    u[:, K:, :] = 0
    if K == 0 or C == 0:
        return
    with nogil:
        for k in prange(K, num_threads=num_threads, schedule='static'):
            wg_transform_filter(&w[k, 0, 0, 0], C, r, gm, n, Kp, k, &u[0, 0, 0])


cdef wg_inputs side_by_side(Py_ssize_t slot, Py_ssize_t n, Py_ssize_t w, Py_ssize_t pw,
                            Py_ssize_t stride) noexcept:
    cdef wg_inputs wide
    wide.slot, wide.n, wide.w, wide.pw, wide.stride = slot, n, w, pw, stride
    return wide


def winograd_infer(const float[:, :, :, ::1] x,  # IN (N, C, H, W)
                   const float[:, :, ::1] u,  # IN (n*n, Kp, C), Kp a multiple of FILTER_BLOCK
                   const float[::1] b,  # IN (K,)
                   const float[:, ::1] at,  # IN (m, N): A^T; B^T is input_matrix()
                   float[:, :, :, ::1] out,  # OUT (N, K or K2, OH // q, OW // q)
                   Py_ssize_t PH, Py_ssize_t PW, Py_ssize_t OH, Py_ssize_t OW,
                   bint apply_relu, int q, int num_threads,
                   const float[:, ::1] p=None,  # IN (K2p, K), K2p a multiple of FILTER_BLOCK
                   const float[::1] p_bias=None,  # IN (K2,)
                   Py_ssize_t slot=0):
    """The convolution, bias, ReLU and pool; with p, then the 1x1 convolution p, p_bias of
    that (out has K2 = p_bias.shape[0] channels). slot > 0: the images run side by side as
    one wide image, each in a slot of that many columns with its PW columns of padding on
    each side (detector.winograd.layout), read and written where they lie."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t K = b.shape[0], Kp = u.shape[1]
    cdef int m = at.shape[0]
    cdef bint projects = p is not None
    cdef Py_ssize_t K2 = p_bias.shape[0] if projects else 0
    cdef Py_ssize_t OHo = out.shape[2], OWo = out.shape[3]
    cdef wg_outputs side
    side.slot, side.n, side.ow, side.stride = slot // q, out.shape[0], OWo, out.shape[1] * OHo * OWo
    cdef wg_inputs wide = side_by_side(slot, N, W, PW, C * H * W)
    if slot:  # one wide image, the padding inside its slots; its output's columns
        N, W, PW = 1, N * slot, 0
        OWo = (W - (WG_N - m)) // q
    # the tiles that hold an output that is kept (with a pool, the rows and columns of
    # incomplete windows are never computed)
    cdef Py_ssize_t rows = (OHo * q + m - 1) // m, cols = (OWo * q + m - 1) // m
    cdef Py_ssize_t tb = TILES, per_row = (cols + tb - 1) // tb
    cdef Py_ssize_t floats = wg_scratch_floats(C, Kp, projects, m, tb)
    # 16 floats of slack per thread to start each thread's scratch on a 64-byte line
    cdef float[:, ::1] scratch = np.empty((num_threads, floats + 16), dtype=np.float32)
    cdef Py_ssize_t chunk, img, ti, t0, count
    cdef float *s
    cdef const float *pp = &p[0, 0] if projects else NULL
    cdef const float *pb = &p_bias[0] if projects else NULL
    if N == 0 or K == 0 or rows == 0 or cols == 0:
        return
    with nogil, parallel(num_threads=num_threads):
        s = line_start(&scratch[threadid(), 0])
        for chunk in prange(N * rows * per_row, schedule='static'):
            img = chunk // (rows * per_row)
            ti = chunk // per_row % rows
            t0 = chunk % per_row * tb
            count = min(tb, cols - t0)
            wg_chunk(&x[img, 0, 0, 0], C, H, W, PH, PW, &u[0, 0, 0], K, Kp, &b[0],
                     apply_relu, q, m, &at[0, 0], pp, pb, K2, ti, t0, count,
                     &out[img, 0, 0, 0], OHo, OWo, &wide, &side, s)


def _check_flat(x, u, b, at, out, Py_ssize_t PH, Py_ssize_t PW, int q, p, p_bias):
    """ValueError naming what flat_infer cannot take: the shapes its chunks would read and
    write past, or a pool that does not tile the output tiles."""
    cdef Py_ssize_t m = at.shape[0], r = WG_N - m + 1
    if at.shape[1] != WG_N or not 1 <= m <= WG_MMAX:
        raise ValueError(f"at must be A^T (m, {WG_N}) with m at most {WG_MMAX}, not {tuple(at.shape)[:2]}")
    if q < 1 or m % q:
        raise ValueError(f"a {q}x{q} pool does not tile the {m}x{m} output tiles")
    if PH < 0 or PW < 0:
        raise ValueError(f"padding must be at least 0, not {(PH, PW)}")
    k, oh, ow = b.shape[0], x.shape[2] + 2 * PH - r + 1, x.shape[3] + 2 * PW - r + 1
    if (p is None) != (p_bias is None):
        raise ValueError("a projection takes both p and p_bias")
    if p is not None and (p.shape[1] != k or p.shape[0] < p_bias.shape[0] or p.shape[0] % FILTER_BLOCK):
        raise ValueError(f"p must be (K2 padded to {FILTER_BLOCK}, {k}) for {p_bias.shape[0]} outputs, "
                         f"not {tuple(p.shape)[:2]}")
    channels = k if p is None else p_bias.shape[0]
    expected = (x.shape[0], channels, max(oh, 0) // q, max(ow, 0) // q)
    if tuple(out.shape)[:4] != expected:
        raise ValueError(f"out must have shape {expected}, not {tuple(out.shape)[:4]}")
    if tuple(u.shape)[:3] != (WG_N * WG_N, u.shape[1], x.shape[1]) or u.shape[1] < k or u.shape[1] % FILTER_BLOCK:
        raise ValueError(f"u must be ({WG_N * WG_N}, K padded to {FILTER_BLOCK}, {x.shape[1]}) for {k} filters, "
                         f"not {tuple(u.shape)[:3]}")


def flat_infer(const float[:, :, :, ::1] x,  # IN (N, C, H, W)
               const float[:, :, ::1] u,  # IN (n*n, Kp, C), Kp a multiple of FILTER_BLOCK
               const float[::1] b,  # IN (K,)
               const float[:, ::1] at,  # IN (m, N): A^T
               float[:, :, :, ::1] out,  # OUT (N, K or K2, OH // q, OW // q)
               Py_ssize_t PH, Py_ssize_t PW, bint apply_relu, int q, int num_threads,
               const float[:, ::1] p=None,  # IN (K2p, K), K2p a multiple of FILTER_BLOCK
               const float[::1] p_bias=None):  # IN (K2,)
    """winograd_infer over tiles numbered across the batch (winograd_flat_body.h): chunks of
    TILES tiles of any images, so that narrow images, and rows that would leave a chunk
    mostly empty, waste none. Each chunk writes its own outputs: the bits do not depend on
    the thread count."""
    cdef wg_flat geo
    cdef int m = at.shape[0]
    cdef Py_ssize_t N = x.shape[0], OHo = out.shape[2], OWo = out.shape[3]
    _check_flat(x, u, b, at, out, PH, PW, q, p, p_bias)
    cdef bint projects = p is not None
    cdef Py_ssize_t K2 = p_bias.shape[0] if projects else 0
    cdef const float *pp = &p[0, 0] if projects else NULL
    cdef const float *pb = &p_bias[0] if projects else NULL
    geo.C, geo.H, geo.W, geo.PH, geo.PW, geo.m = x.shape[1], x.shape[2], x.shape[3], PH, PW, m
    geo.K, geo.OH, geo.OW = b.shape[0], OHo * q, OWo * q
    geo.rows, geo.cols = (OHo * q + m - 1) // m, (OWo * q + m - 1) // m
    cdef Py_ssize_t tiles = N * geo.rows * geo.cols, chunks = (tiles + TILES - 1) // TILES
    cdef float[:, ::1] scratch = np.empty((num_threads, wg_flat_scratch_floats(geo.C, u.shape[1], projects) + 16),
                                          dtype=np.float32)
    cdef Py_ssize_t chunk
    cdef float *s
    if tiles == 0 or geo.K == 0:
        return
    with nogil, parallel(num_threads=num_threads):
        s = line_start(&scratch[threadid(), 0])
        for chunk in prange(chunks, schedule='static'):
            wg_flat_chunk(&x[0, 0, 0, 0], &geo, chunk * TILES, min(TILES, tiles - chunk * TILES),
                          &u[0, 0, 0], u.shape[1], &b[0], apply_relu, q, &at[0, 0], pp, pb, K2,
                          &out[0, 0, 0, 0], OHo, OWo, &s[0])


def weight_gradient(const float[:, :, :, ::1] x,  # IN (N, C, H, W)
                    const float[:, :, :, ::1] dout,  # IN (N, K, OH, >= OW)
                    const float[:, ::1] g,  # IN (N, m): G' of F(r, m), r the filters' size
                    const double[:, ::1] at,  # IN (r, N): A'^T of F(r, m)
                    float[:, :, :, ::1] slots,  # SCRATCH (groups, N*N, Kp, Cp)
                    float[:, :, :, ::1] dw,  # OUT (K, C, r, r)
                    float[::1] db,  # OUT (K,)
                    Py_ssize_t PH, Py_ssize_t PW, Py_ssize_t OW, int num_threads,
                    Py_ssize_t slot=0):
    """dw[k, c] = A'^T M A', M[xi] the sum over the tiles t of (G' D_t[k] G'^T)[xi] times
    (B^T d_t[c] B)[xi], D_t the tile's m x m outputs' gradient and d_t its input patch (see
    winograd_body.h). Chunks are the forward's; slot s sums a run of them fixed by the
    shapes alone, and the slots are summed in order, in float64. db: the sum of dout, from
    the values the chunks read, in float64 slots summed likewise. slot > 0: side by side, as
    in winograd_infer; OW is then the wide output's columns."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t K = dout.shape[1], OH = dout.shape[2], ldo = dout.shape[3]
    cdef Py_ssize_t groups = slots.shape[0], Kp = slots.shape[2], Cp = slots.shape[3]
    cdef int m = g.shape[1]
    cdef wg_outputs side
    side.slot, side.n, side.ow, side.stride = slot, dout.shape[0], ldo, K * OH * ldo
    cdef wg_inputs wide = side_by_side(slot, N, W, PW, C * H * W)
    if slot:  # one wide image, the padding inside its slots
        N, W, PW = 1, N * slot, 0
    cdef Py_ssize_t rows = (OH + m - 1) // m, cols = (OW + m - 1) // m
    cdef Py_ssize_t tb = TILES, per_row = (cols + tb - 1) // tb, chunks = N * rows * per_row
    cdef Py_ssize_t floats = wg_gradient_scratch_floats(C, Kp, Cp, m, tb)
    cdef float[:, ::1] scratch = np.empty((num_threads, floats + 16), dtype=np.float32)
    cdef Py_ssize_t group, chunk, img, ti, t0
    cdef float *s
    cdef double[:, ::1] db_slots = np.zeros((groups, K))
    slots[:] = 0
    db[:] = 0
    if chunks == 0 or K == 0 or C == 0:
        return
    groups = min(groups, chunks)
    with nogil, parallel(num_threads=num_threads):
        s = line_start(&scratch[threadid(), 0])
        for group in prange(groups, schedule='static'):
            for chunk in range(group * chunks // groups, (group + 1) * chunks // groups):
                img = chunk // (rows * per_row)
                ti = chunk // per_row % rows
                t0 = chunk % per_row * tb
                wg_gradient_chunk(&x[img, 0, 0, 0], C, H, W, PH, PW, &dout[img, 0, 0, 0],
                                  K, OH, OW, ldo, m, &g[0, 0], ti, t0, min(tb, cols - t0),
                                  Kp, Cp, &wide, &side, &slots[group, 0, 0, 0], &db_slots[group, 0], s)
    _finish_weight_gradient(slots, db_slots, groups, at, dw, db, num_threads)


cdef _finish_weight_gradient(float[:, :, :, ::1] slots, double[:, ::1] db_slots, Py_ssize_t groups,
                             const double[:, ::1] at, float[:, :, :, ::1] dw, float[::1] db,
                             int num_threads):
    """db: the sum of the first groups slots of db_slots; dw[k, c] = A'^T M A', M the sum of
    the first groups slots, in order, in float64 (at: A'^T (r, N)). Both loops run over
    channels innermost, in a row of each array."""
    cdef Py_ssize_t K = dw.shape[0], C = dw.shape[1]
    cdef Py_ssize_t r = at.shape[0], nn = WG_N * WG_N, k, c, xi, i, j, a, b, group
    cdef double[:, :, ::1] total = np.empty((nn, K, C))
    cdef double[:, ::1] halves = np.empty((num_threads, WG_N * max(C, 1)))
    cdef double am[36]  # WG_N * WG_N
    cdef double *half
    cdef double *row
    cdef const float *slot
    cdef double acc, coef
    for i in range(r):
        for a in range(WG_N):
            am[i * WG_N + a] = at[i, a]
    for k in range(K):
        acc = 0
        for group in range(groups):
            acc = acc + db_slots[group, k]
        db[k] = <float>acc
    if K == 0 or C == 0:
        return
    with nogil, parallel(num_threads=num_threads):
        for xi in prange(nn, schedule='static'):
            for k in range(K):
                row, slot = &total[xi, k, 0], &slots[0, xi, k, 0]
                for c in range(C):
                    row[c] = slot[c]
                for group in range(1, groups):
                    slot = &slots[group, xi, k, 0]
                    for c in range(C):
                        row[c] = row[c] + slot[c]
    with nogil, parallel(num_threads=num_threads):
        half = &halves[threadid(), 0]
        for k in prange(K, schedule='static'):
            for i in range(r):
                for b in range(WG_N):  # row i of A'^T M, a channel at a time
                    for c in range(C):
                        half[b * C + c] = 0
                    for a in range(WG_N):
                        coef, row = am[i * WG_N + a], &total[a * WG_N + b, k, 0]
                        for c in range(C):
                            half[b * C + c] = half[b * C + c] + coef * row[c]
                for j in range(r):
                    for c in range(C):
                        acc = 0
                        for b in range(WG_N):
                            acc = acc + half[b * C + c] * am[j * WG_N + b]
                        dw[k, c, i, j] = <float>acc


def _check_fused(x, dout, ut, gt, slots, dx, dw, db, Py_ssize_t PH, Py_ssize_t PW):
    """ValueError naming what fused_backward cannot take: shapes its chunks would read or
    write past."""
    cdef Py_ssize_t r = gt.shape[0], m = WG_N - r + 1
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], K = dout.shape[1]
    if gt.shape[1] != WG_N or not 1 <= m <= WG_MMAX:
        raise ValueError(f"gt must be G^T (r, {WG_N}) of a tile of at most {WG_MMAX}, not {tuple(gt.shape)[:2]}")
    if PH < 0 or PW < 0:
        raise ValueError(f"padding must be at least 0, not {(PH, PW)}")
    outs = (N, K, x.shape[2] + 2 * PH - r + 1, x.shape[3] + 2 * PW - r + 1)
    if tuple(dout.shape)[:4] != outs:
        raise ValueError(f"dout must have shape {outs}, not {tuple(dout.shape)[:4]}")
    cu = (C + FILTER_BLOCK - 1) // FILTER_BLOCK * FILTER_BLOCK
    if tuple(ut.shape)[:3] != (WG_N * WG_N, cu, K):
        raise ValueError(f"ut must have shape {(WG_N * WG_N, cu, K)}, not {tuple(ut.shape)[:3]}")
    kp, cp = slots.shape[2], slots.shape[3]
    if (slots.shape[0] < 1 or slots.shape[1] != WG_N * WG_N or kp < K or kp % GRADIENT_FILTER_BLOCK
            or cp < C or cp % GRADIENT_CHANNEL_BLOCK):
        raise ValueError(f"slots of shape {tuple(slots.shape)[:4]} do not hold {K} filters of {C} channels")
    if dx is not None and tuple(dx.shape)[:4] != tuple(x.shape)[:4]:
        raise ValueError(f"dx must have x's shape {tuple(x.shape)[:4]}, not {tuple(dx.shape)[:4]}")
    if tuple(dw.shape)[:4] != (K, C, r, r) or db.shape[0] != K:
        raise ValueError(f"dw and db must have shapes {(K, C, r, r)} and {(K,)}")


def fused_backward(const float[:, :, :, ::1] x,  # IN (N, C, H, W)
                   const float[:, :, :, ::1] dout,  # IN (N, K, OH, OW)
                   const float[:, :, ::1] ut,  # IN (N6*N6, Cu, K): U transposed, Cu = C padded to FILTER_BLOCK
                   const double[:, ::1] gt,  # IN (r, N6): G^T of F(m, r)
                   float[:, :, :, ::1] slots,  # SCRATCH (groups, N6*N6, Kp, Cp)
                   float[:, :, :, ::1] dx,  # OUT (N, C, H, W); or None
                   float[:, :, :, ::1] dw,  # OUT (K, C, r, r)
                   float[::1] db,  # OUT (K,)
                   Py_ssize_t PH, Py_ssize_t PW, int num_threads):
    """The gradients of a stride-1 Winograd convolution from one pass over its tiles, numbered
    across the batch (winograd_flat_body.h): dw = G^T dU G, dU summed per group of images in
    float32 and over the groups in float64, in order; db likewise; dx (when given) added tile
    by tile, each group's images by one thread, in the tiles' order. Groups are fixed by the
    shapes alone: the bits do not depend on the thread count."""
    cdef wg_flat geo
    cdef int m = WG_N - gt.shape[0] + 1  # n = m + r - 1
    _check_fused(x, dout, ut, gt, slots, dx, dw, db, PH, PW)
    geo.C, geo.H, geo.W, geo.PH, geo.PW = x.shape[1], x.shape[2], x.shape[3], PH, PW
    geo.K, geo.OH, geo.OW, geo.m = dout.shape[1], dout.shape[2], dout.shape[3], m
    geo.rows, geo.cols = (geo.OH + m - 1) // m, (geo.OW + m - 1) // m
    cdef Py_ssize_t N = x.shape[0], per = geo.rows * geo.cols
    cdef Py_ssize_t groups = min(slots.shape[0], N), Kp = slots.shape[2], Cp = slots.shape[3]
    cdef Py_ssize_t floats = wg_backward_scratch_floats(geo.C, Kp, Cp)
    cdef float[:, ::1] scratch = np.empty((num_threads, floats + 16), dtype=np.float32)
    cdef double[:, ::1] db_slots = np.zeros((slots.shape[0], geo.K))
    cdef Py_ssize_t group, f, f1
    cdef float *s
    cdef float *dxp = &dx[0, 0, 0, 0] if dx is not None and dx.size else NULL
    cdef Py_ssize_t image = geo.C * geo.H * geo.W, slot = WG_N * WG_N * Kp * Cp
    db[:] = 0
    if N == 0 or per == 0 or geo.K == 0 or geo.C == 0:
        dw[:] = 0
        if dx is not None:
            dx[:] = 0
        return
    with nogil, parallel(num_threads=num_threads):
        s = line_start(&scratch[threadid(), 0])
        for group in prange(groups, schedule='static'):
            # each group zeroes its slot and its images' dx, in its own thread
            memset(&slots[group, 0, 0, 0], 0, slot * sizeof(float))
            if dxp != NULL:
                memset(dxp + group * N // groups * image, 0, ((group + 1) * N // groups - group * N // groups) * image * sizeof(float))
            f = group * N // groups * per
            f1 = (group + 1) * N // groups * per
            while f < f1:
                wg_backward_chunk(&x[0, 0, 0, 0], &dout[0, 0, 0, 0], &geo, f, min(TILES, f1 - f),
                                  &ut[0, 0, 0], Kp, Cp, &slots[group, 0, 0, 0],
                                  &db_slots[group, 0], dxp, s)
                f = f + TILES
    _finish_weight_gradient(slots, db_slots, groups, gt, dw, db, num_threads)
