/* One chunk of the Winograd convolution F(m x m, r x r), compiled once per instruction set.
 *
 * simd.h includes this file once per instruction set (V(name) names that copy, V_VW is the
 * floats of a vector, V_KB the filters of a register block); winograd.h picks one at import.
 *
 * A chunk is a run of up to Tb tiles of one tile row of one image (a tile: m x m outputs,
 * read from an n x n input patch, n = m + r - 1). It is computed from start to end in the
 * caller's scratch, all of it in the core's L2 cache:
 *   1. the chunk's n input rows of every channel, copied with the padding as zeros and split
 *      into their m column phases, so that every later read is contiguous over tiles;
 *   2. V[c][xi][t] = (B^T d B)[xi], the input transform of each tile t and channel c;
 *   3. per block of V_KB filters: M[xi][k][t] = sum over c of U[xi][k][c] V[xi][c][t], a
 *      register-blocked vector micro-kernel (the element-wise stage as n*n small GEMMs);
 *   4. Y = A^T M A per filter and tile, then bias, the ReLU and a max-pool of q x q windows
 *      (q divides m: a tile is whole pool windows), written to the output.
 * Every loop runs over tiles innermost (Tb is a multiple of 32), which the compiler turns
 * into vector code for the region's instruction set.
 */

/* o[nu] = sum over s of B^T[nu][s] d[s], B^T of the six points 0, 1, -1, 2, -2 and infinity
 * (detector.winograd.transforms(m, r)[2] for every n = 6 tile; tests check they agree). */
static inline void V(bt6)(V(vf) d0, V(vf) d1, V(vf) d2, V(vf) d3, V(vf) d4, V(vf) d5,
                           V(vf) *o)
{
    V(vf) s12 = d1 + d2, d21 = d2 - d1, s34 = d3 + d4, d34 = d3 - d4;
    V(vf) d31 = d3 - d1, d42 = d4 - d2;
    o[0] = 4 * d0 - 5 * d2 + d4;
    o[1] = 4 * s12 - s34;
    o[2] = 4 * d21 + d34;
    o[3] = 2 * d31 + d42;
    o[4] = d42 - 2 * d31;
    o[5] = 4 * d1 - 5 * d3 + d5;
}

/* o0, o1 = A^T d of F(2, r) over the six points: [1 1 1 1 1 0] d and [0 1 -1 2 -2 1] d */
static inline void V(at2)(V(vf) d0, V(vf) d1, V(vf) d2, V(vf) d3, V(vf) d4, V(vf) d5,
                           V(vf) *o0, V(vf) *o1)
{
    V(vf) s12 = d1 + d2, s34 = d3 + d4;
    *o0 = d0 + s12 + s34;
    *o1 = (d1 - d2) + 2 * (d3 - d4) + d5;
}

/* o0..o3 = A^T d of F(4, r) over the six points: rows [1 1 1 1 1 0], [0 1 -1 2 -2 0],
 * [0 1 1 4 4 0] and [0 1 -1 8 -8 1] */
static inline void V(at4)(V(vf) d0, V(vf) d1, V(vf) d2, V(vf) d3, V(vf) d4, V(vf) d5, V(vf) *o)
{
    V(vf) s12 = d1 + d2, d12 = d1 - d2, s34 = d3 + d4, d34 = d3 - d4;
    o[0] = d0 + s12 + s34;
    o[1] = d12 + 2 * d34;
    o[2] = s12 + 4 * s34;
    o[3] = d12 + 8 * d34 + d5;
}

/* dst[j] = row[first + j * m] for j < J, 0 where first + j * m lies outside [0, W) or row
 * is NULL (a row outside the image): one column phase of a row, contiguous over tiles. */
static void V(phase_copy)(const float *restrict row, Py_ssize_t first, Py_ssize_t W, int m,
                          Py_ssize_t J, float *restrict dst)
{
    if (!row) {
        for (Py_ssize_t j = 0; j < J; j++)
            dst[j] = 0;
        return;
    }
    /* columns first + j*m inside [0, W): j in [lo, hi) */
    Py_ssize_t lo = first >= 0 ? 0 : (-first + m - 1) / m;
    Py_ssize_t hi = first >= W ? 0 : (W - first + m - 1) / m;
    if (hi > J) hi = J;
    if (lo > hi) lo = hi;
    for (Py_ssize_t j = 0; j < lo; j++)
        dst[j] = 0;
    const float *from = row + first;
    /* whole vectors while every float they load lies in the row: the even lanes of two
     * vectors (m = 2), of the even lanes of four (m = 4) */
    Py_ssize_t j = lo;
    if (m == 2)
        for (; j + V_VW <= hi && first + 2 * (j + V_VW) <= W; j += V_VW) {
            const float *f = from + 2 * j;
            *(V(vf) *)(dst + j) = __builtin_shuffle(*(const V(vf) *)f, *(const V(vf) *)(f + V_VW), V(even));
        }
    else if (m == 4)
        for (; j + V_VW <= hi && first + 4 * (j + V_VW) <= W; j += V_VW) {
            const float *f = from + 4 * j;
            V(vf) a = __builtin_shuffle(*(const V(vf) *)f, *(const V(vf) *)(f + V_VW), V(even));
            V(vf) b = __builtin_shuffle(*(const V(vf) *)(f + 2 * V_VW), *(const V(vf) *)(f + 3 * V_VW), V(even));
            *(V(vf) *)(dst + j) = __builtin_shuffle(a, b, V(even));
        }
    lo = j;
    if (m == 2)  /* constant strides, which the compiler turns into shuffles */
        for (Py_ssize_t j = lo; j < hi; j++)
            dst[j] = from[2 * j];
    else if (m == 4)
        for (Py_ssize_t j = lo; j < hi; j++)
            dst[j] = from[4 * j];
    else
        for (Py_ssize_t j = lo; j < hi; j++)
            dst[j] = from[j * m];
    for (Py_ssize_t j = hi; j < J; j++)
        dst[j] = 0;
}

/* buf[i] = column X0 + i (i < len, a multiple of V_VW) of a row of images side by side, slot
 * columns apart, each w wide from column pw of its slot: row is image 0's row, the others'
 * are stride floats on. Zeros around them. Whole vectors and a masked one, read where the
 * images lie. */
static void V(wide_row)(const float *restrict row, Py_ssize_t stride, Py_ssize_t images,
                        Py_ssize_t w, Py_ssize_t pw, Py_ssize_t slot, Py_ssize_t X0,
                        Py_ssize_t len, float *restrict buf)
{
    for (Py_ssize_t i = 0; i < len; i += V_VW)
        *(V(vf) *)(buf + i) = (V(vf)){0};
    for (Py_ssize_t n = X0 / slot; n * slot < X0 + len && n < images; n++) {
        Py_ssize_t start = n * slot + pw - X0;  /* buf index of the image's column 0 */
        Py_ssize_t lo = start > 0 ? start : 0, hi = start + w < len ? start + w : len;
        const float *src = row + n * stride - start;  /* src[i]: buf[i] */
        Py_ssize_t i = lo;
        for (; i + V_VW <= hi; i += V_VW)
            *(V(vf) *)(buf + i) = *(const V(vf) *)(src + i);
        if (i < hi)
            V(store_part)(buf + i, V(load_part)(src + i, (int)(hi - i)), (int)(hi - i));
    }
}

/* Steps 1 and 2: v[c][xi][t] for the tiles t0 .. t0 + WG_TILES - 1 of tile row ti (m is a
 * constant where input_transform inlines it, so that the tiles' vectors stay in registers). */
static inline __attribute__((always_inline)) void V(input_transform_m)(
    const float *restrict x, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W, Py_ssize_t PH,
    Py_ssize_t PW, const int m, Py_ssize_t ti, Py_ssize_t t0, const wg_inputs *in,
    float *restrict phases, float *restrict v)
{
    /* phases[r][p][j] = x[c][ti*m - PH + r][(t0 + j)*m - PW + p], 0 outside the image; side
     * by side (PW is then 0), from the chunk's columns of the wide row, assembled in buf */
    const Py_ssize_t J = WG_TILES + (WG_N - 1) / m + 1, len = (J * m + V_VW - 1) / V_VW * V_VW;
    const Py_ssize_t col0 = t0 * m - PW;
    float *buf = phases + WG_N * m * J;
    for (Py_ssize_t c = 0; c < C; c++) {
        for (int r = 0; r < WG_N; r++) {
            Py_ssize_t iy = ti * m - PH + r, first = col0, width = W;
            const float *src = iy < 0 || iy >= H ? NULL : x + (c * H + iy) * (in->slot ? in->w : W);
            if (in->slot && src) {
                V(wide_row)(src, in->stride, in->n, in->w, in->pw, in->slot, col0, len, buf);
                src = buf, first = 0, width = len;
            }
            for (int p = 0; p < m; p++)
                V(phase_copy)(src, first + p, width, m, J, phases + (r * m + p) * J);
        }
        /* per vector of tiles: e = d B (rows), then v = B^T e (columns) */
        for (Py_ssize_t t = 0; t < WG_TILES; t += V_VW) {
            V(vf) e[WG_N][WG_N], o[WG_N];
            for (int r = 0; r < WG_N; r++) {
                const float *row = phases + r * m * J + t;
#define WG_D(s) (*(const V(vf) *)(row + ((s) % m) * J + (s) / m))
                V(bt6)(WG_D(0), WG_D(1), WG_D(2), WG_D(3), WG_D(4), WG_D(5), e[r]);
#undef WG_D
            }
            for (int nu = 0; nu < WG_N; nu++) {
                V(bt6)(e[0][nu], e[1][nu], e[2][nu], e[3][nu], e[4][nu], e[5][nu], o);
                for (int mu = 0; mu < WG_N; mu++)
                    *(V(vf) *)(v + (c * WG_N * WG_N + mu * WG_N + nu) * WG_TILES + t) = o[mu];
            }
        }
    }
}

static void V(input_transform)(const float *restrict x, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                                Py_ssize_t PH, Py_ssize_t PW, int m, Py_ssize_t ti,
                                Py_ssize_t t0, const wg_inputs *in, float *restrict phases,
                                float *restrict v)
{
    if (m == 2)
        V(input_transform_m)(x, C, H, W, PH, PW, 2, ti, t0, in, phases, v);
    else if (m == 4)
        V(input_transform_m)(x, C, H, W, PH, PW, 4, ti, t0, in, phases, v);
    else
        V(input_transform_m)(x, C, H, W, PH, PW, m, ti, t0, in, phases, v);
}

/* Step 4 for one filter: y = A^T M A over the chunk's tiles, then bias, ReLU and pool:
 * fin[(a2 * per + b2) * WG_TILES + t] is output (a2, b2) of tile t (per = m / q a side). m and q
 * are constants where output_transform inlines it: its arrays then live in registers. */
static inline __attribute__((always_inline)) void V(output_transform_mq)(
    const float *restrict mk, Py_ssize_t ldxi, const int m, const float *restrict at, Py_ssize_t count, float bias, int relu, const int q, float *restrict fin)
{
    const int per = m / q;
    for (Py_ssize_t t = 0; t < count; t += V_VW) {
        V(vf) z[WG_MMAX][WG_N], y[WG_MMAX][WG_MMAX];
        if (m == 2) {  /* A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 1], written out */
            for (int nu = 0; nu < WG_N; nu++) {
#define WG_M(mu) (*(const V(vf) *)(mk + ((mu) * WG_N + nu) * ldxi + t))
                V(at2)(WG_M(0), WG_M(1), WG_M(2), WG_M(3), WG_M(4), WG_M(5), &z[0][nu], &z[1][nu]);
#undef WG_M
            }
            for (int a = 0; a < 2; a++)
                V(at2)(z[a][0], z[a][1], z[a][2], z[a][3], z[a][4], z[a][5], &y[a][0], &y[a][1]);
        } else if (m == 4) {  /* the rows of at4, written out */
            for (int nu = 0; nu < WG_N; nu++) {
                V(vf) o[4];
#define WG_M(mu) (*(const V(vf) *)(mk + ((mu) * WG_N + nu) * ldxi + t))
                V(at4)(WG_M(0), WG_M(1), WG_M(2), WG_M(3), WG_M(4), WG_M(5), o);
#undef WG_M
                for (int a = 0; a < 4; a++)
                    z[a][nu] = o[a];
            }
            if (q == 1) {  /* each row finished as it is made: y is never live whole */
                for (int a = 0; a < 4; a++) {
                    V(vf) o[4];
                    V(at4)(z[a][0], z[a][1], z[a][2], z[a][3], z[a][4], z[a][5], o);
                    for (int b = 0; b < 4; b++) {
                        V(vf) top = o[b] + bias;
                        *(V(vf) *)(fin + (a * 4 + b) * WG_TILES + t) = relu ? V(relu)(top) : top;
                    }
                }
                continue;
            }
            for (int a = 0; a < 4; a++)
                V(at4)(z[a][0], z[a][1], z[a][2], z[a][3], z[a][4], z[a][5], y[a]);
        } else {
            /* z[a][nu] = sum over mu of at[a][mu] M[mu][nu] */
            for (int nu = 0; nu < WG_N; nu++) {
                V(vf) col[WG_N];
                for (int mu = 0; mu < WG_N; mu++)
                    col[mu] = *(const V(vf) *)(mk + (mu * WG_N + nu) * ldxi + t);
                for (int a = 0; a < m; a++) {
                    V(vf) acc = col[0] * at[a * WG_N];
                    for (int mu = 1; mu < WG_N; mu++)
                        acc += col[mu] * at[a * WG_N + mu];
                    z[a][nu] = acc;
                }
            }
            /* y[a][b] = sum over nu of z[a][nu] at[b][nu] */
            for (int a = 0; a < m; a++)
                for (int b = 0; b < m; b++) {
                    V(vf) acc = z[a][0] * at[b * WG_N];
                    for (int nu = 1; nu < WG_N; nu++)
                        acc += z[a][nu] * at[b * WG_N + nu];
                    y[a][b] = acc;
                }
        }
        /* max over each q x q window (q = 1: none), then the bias and the ReLU; max and
         * ReLU commute with adding the bias */
        for (int a2 = 0; a2 < per; a2++)
            for (int b2 = 0; b2 < per; b2++) {
                V(vf) top = y[a2 * q][b2 * q];
                for (int i = 0; i < q; i++)
                    for (int j = 0; j < q; j++)
                        if (i || j)
                            top = V(nan_max)(top, y[a2 * q + i][b2 * q + j]);
                top += bias;
                if (relu)
                    top = V(relu)(top);
                *(V(vf) *)(fin + (a2 * per + b2) * WG_TILES + t) = top;
            }
    }
}

static void V(output_transform)(const float *restrict mk, Py_ssize_t ldxi, int m,
                                 const float *restrict at, Py_ssize_t count,
                                 float bias, int relu, int q, float *restrict fin)
{
#define WG_OT(M, Q) V(output_transform_mq)(mk, ldxi, M, at, count, bias, relu, Q, fin)
    if (m == 2 && q == 1) WG_OT(2, 1);
    else if (m == 2 && q == 2) WG_OT(2, 2);
    else if (m == 4 && q == 1) WG_OT(4, 1);
    else if (m == 4 && q == 2) WG_OT(4, 2);
    else WG_OT(m, q);
#undef WG_OT
}

/* Planes of finished outputs (as output_transform leaves them) into the rows of one output
 * channel, plus add[0] when add is given; the rows and columns past the output are dropped.
 * per is a constant where store inlines it. */
static inline __attribute__((always_inline)) void V(store_per)(
    const float *restrict fin, const int per, Py_ssize_t count,
    const float *restrict add, Py_ssize_t row0, Py_ssize_t t0, float *restrict out,
    Py_ssize_t OHo, Py_ssize_t OWo)
{
    V(vf) plus = (V(vf)){0} + (add ? add[0] : 0);
    for (Py_ssize_t t = 0; t < count; t += V_VW) {
        V(vf) best[WG_MMAX][WG_MMAX];
        for (int a2 = 0; a2 < per; a2++)
            for (int b2 = 0; b2 < per; b2++) {
                best[a2][b2] = *(const V(vf) *)(fin + (a2 * per + b2) * WG_TILES + t);
                if (add)
                    best[a2][b2] += plus;
            }
        Py_ssize_t n_t = count - t < V_VW ? count - t : V_VW;
        int whole = n_t == V_VW && (t0 + t + V_VW) * per <= OWo;
        for (int a2 = 0; a2 < per; a2++) {
            Py_ssize_t row = row0 + a2;
            if (row >= OHo)
                break;
            float *restrict orow = out + row * OWo + (t0 + t) * per;
            if (whole && per == 1) {
                *(V(vf) *)orow = best[a2][0];
            } else if (whole && per == 2) {  /* the two columns of each tile, interleaved */
                V(vf) lo = best[a2][0], hi = best[a2][1];
                *(V(vf) *)orow = __builtin_shuffle(lo, hi, V(interleave_lo));
                *(V(vf) *)(orow + V_VW) = __builtin_shuffle(lo, hi, V(interleave_hi));
            } else if (whole && per == 4) {  /* four columns: columns 0, 2 and 1, 3, then both */
                V(vf) a_lo = __builtin_shuffle(best[a2][0], best[a2][2], V(interleave_lo));
                V(vf) a_hi = __builtin_shuffle(best[a2][0], best[a2][2], V(interleave_hi));
                V(vf) b_lo = __builtin_shuffle(best[a2][1], best[a2][3], V(interleave_lo));
                V(vf) b_hi = __builtin_shuffle(best[a2][1], best[a2][3], V(interleave_hi));
                *(V(vf) *)orow = __builtin_shuffle(a_lo, b_lo, V(interleave_lo));
                *(V(vf) *)(orow + V_VW) = __builtin_shuffle(a_lo, b_lo, V(interleave_hi));
                *(V(vf) *)(orow + 2 * V_VW) = __builtin_shuffle(a_hi, b_hi, V(interleave_lo));
                *(V(vf) *)(orow + 3 * V_VW) = __builtin_shuffle(a_hi, b_hi, V(interleave_hi));
            } else {
                for (Py_ssize_t i = 0; i < n_t; i++)
                    for (int b2 = 0; b2 < per && (t0 + t + i) * per + b2 < OWo; b2++)
                        orow[i * per + b2] = best[a2][b2][i];  /* a lane of the vector */
            }
        }
    }
}

static void V(store)(const float *restrict fin, int per, Py_ssize_t count,
                      const float *restrict add, Py_ssize_t row0, Py_ssize_t t0,
                      float *restrict out, Py_ssize_t OHo, Py_ssize_t OWo)
{
    if (per == 1)
        V(store_per)(fin, 1, count, add, row0, t0, out, OHo, OWo);
    else if (per == 2)
        V(store_per)(fin, 2, count, add, row0, t0, out, OHo, OWo);
    else if (per == 4)
        V(store_per)(fin, 4, count, add, row0, t0, out, OHo, OWo);
    else
        V(store_per)(fin, per, count, add, row0, t0, out, OHo, OWo);
}

/* store() of output channel k of out (OHo, OWo), or, side by side, into the chunk's wide
 * rows in buf and from there into each image's own rows: runs of at most a row of an image,
 * copied by whole vectors and a masked one. */
static void V(emit)(const float *restrict fin, int per, Py_ssize_t count,
                     const float *restrict add, Py_ssize_t row0, Py_ssize_t t0,
                     float *restrict out, Py_ssize_t k, Py_ssize_t OHo, Py_ssize_t OWo,
                     const wg_outputs *side, float *restrict buf)
{
    if (!side->slot) {
        V(store)(fin, per, count, add, row0, t0, out + k * OHo * OWo, OHo, OWo);
        return;
    }
    const Py_ssize_t rows = OHo - row0 < per ? OHo - row0 : per, len = count * per;
    V(store)(fin, per, count, add, 0, 0, buf, rows, len);
    for (Py_ssize_t a2 = 0; a2 < rows; a2++)
        for (Py_ssize_t i = 0; i < len;) {
            Py_ssize_t X = t0 * per + i, n = X / side->slot, col = X - n * side->slot;
            Py_ssize_t end = i + side->slot - col < len ? i + side->slot - col : len;
            Py_ssize_t kept = n < side->n && col < side->ow ? (side->ow - col < end - i ? side->ow - col : end - i) : 0;
            float *dst = out + n * side->stride + (k * OHo + row0 + a2) * side->ow + col;
            const float *src = buf + a2 * len + i;
            Py_ssize_t j = 0;
            for (; j + V_VW <= kept; j += V_VW)
                *(V(vf) *)(dst + j) = *(const V(vf) *)(src + j);
            if (j < kept)
                V(store_part)(dst + j, *(const V(vf) *)(src + j), (int)(kept - j));
            i = end;
        }
}

/* Where a chunk's finished planes of one output channel go (emit's arguments but the plane,
 * the value added and the channel). */
typedef struct {
    int per;
    Py_ssize_t count, row0, t0, OHo, OWo;
    float *out, *rows;
    const wg_outputs *side;
} V(row_target);

static void V(emit_rows)(void *target, const float *restrict fin, const float *restrict add,
                          Py_ssize_t k)
{
    const V(row_target) *r = target;
    V(emit)(fin, r->per, r->count, add, r->row0, r->t0, r->out, k, r->OHo, r->OWo, r->side, r->rows);
}

/* Steps 3 and 4 of a chunk from its transformed inputs v (n*n x C x WG_TILES): per block of
 * V_KB filters the n*n tile products, then A^T M A with bias, ReLU and pool into planes, each
 * channel's handed to emit (with target, no value added). With a projection (p: (K2p, K), K2p
 * a multiple of 8, and bias p_bias), every filter's planes first, in fin (Kp * planes), then
 * the 1x1 convolution of them, V_KB output channels at a time, each handed to emit with its
 * bias added; the K channels are never stored. */
static void V(tile_outputs)(const float *restrict u, const float *restrict v, Py_ssize_t C,
                             Py_ssize_t K, Py_ssize_t Kp, const float *restrict bias, int relu,
                             int q, int m, const float *restrict at, Py_ssize_t count,
                             const float *restrict p, const float *restrict p_bias,
                             Py_ssize_t K2, float *restrict mb, float *restrict fin,
                             void (*emit)(void *, const float *, const float *, Py_ssize_t),
                             void *target)
{
    const Py_ssize_t nn = WG_N * WG_N, planes = (m / q) * (m / q) * WG_TILES;
    for (Py_ssize_t k0 = 0; k0 < K; k0 += V_KB) {
        for (Py_ssize_t xi = 0; xi < nn; xi++)
            V(gemm_block)(u + (xi * Kp + k0) * C, C, v + xi * WG_TILES, nn * WG_TILES, C,
                           WG_TILES, mb + xi * V_KB * WG_TILES);
        for (int kk = 0; kk < V_KB && k0 + kk < K; kk++) {
            float *f = p ? fin + (k0 + kk) * planes : fin;
            V(output_transform)(mb + kk * WG_TILES, V_KB * WG_TILES, m, at, count, bias[k0 + kk],
                                 relu, q, f);
            if (!p)
                emit(target, f, NULL, k0 + kk);
        }
    }
    if (!p)
        return;
    for (Py_ssize_t j0 = 0; j0 < K2; j0 += V_KB) {
        V(gemm_block)(p + j0 * K, K, fin, planes, K, planes, mb);
        for (int jj = 0; jj < V_KB && j0 + jj < K2; jj++)
            emit(target, mb + jj * planes, p_bias + j0 + jj, j0 + jj);
    }
}

/* The whole chunk: tiles t0 .. t0 + count - 1 (count <= WG_TILES) of tile row ti of one image.
 * u: (n*n, Kp, C) with Kp a multiple of 8; out: (K, OHo, OWo) of this image. With a
 * projection (p: (K2p, K), K2p a multiple of 8, and bias p_bias), a 1x1 convolution of the
 * finished outputs: out is then (K2, OHo, OWo), and the K channels are never stored. */
static void V(chunk)(const float *restrict x, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                      Py_ssize_t PH, Py_ssize_t PW, const float *restrict u, Py_ssize_t K,
                      Py_ssize_t Kp, const float *restrict bias, int relu, int q,
                      int m, const float *restrict at,
                      const float *restrict p, const float *restrict p_bias, Py_ssize_t K2,
                      Py_ssize_t ti, Py_ssize_t t0, Py_ssize_t count,
                      float *restrict out, Py_ssize_t OHo, Py_ssize_t OWo,
                      const wg_inputs *in, const wg_outputs *side, float *restrict scratch)
{
    const Py_ssize_t nn = WG_N * WG_N, per = m / q, planes = per * per * WG_TILES;
    float *v = scratch;                                  /* nn * C * WG_TILES */
    float *mb = v + nn * C * WG_TILES;                         /* nn * V_KB * WG_TILES */
    float *fin = mb + nn * V_KB * WG_TILES;                   /* Kp * planes with p, else planes */
    float *rows = fin + (p ? Kp : 1) * planes;          /* m * m * WG_TILES: emit's wide rows */
    float *phases = rows + m * m * WG_TILES;         /* WG_N * m * (WG_TILES + (WG_N - 1) / m + 1), a row */
    V(row_target) target = {(int)per, count, (ti * m) / q, t0, OHo, OWo, out, rows, side};
    V(input_transform)(x, C, H, W, PH, PW, m, ti, t0, in, phases, v);
    V(tile_outputs)(u, v, C, K, Kp, bias, relu, q, m, at, count, p, p_bias, K2, mb, fin,
                    V(emit_rows), &target);
}

/* -- The weight gradient: F(r x r, m x m) over the same tiles ---------------------------------
 *
 * dw[k][c] = sum over tiles t of the r x r correlation of the tile's n x n input patch d_t[c]
 * with its m x m outputs' gradient D_t[k], which is F(r x r, m x m) over the same six points:
 * A'^T [(G' D_t G'^T) * (B^T d_t B)] A', with the forward's B^T. A' is linear, so the sum over
 * tiles comes first: M[xi][k][c] = sum over t of (G' D_t[k] G'^T)[xi] (B^T d_t[c] B)[xi] is
 * n*n GEMMs with the tiles as the long inner dimension, and A'^T M A' is left to the caller. */

/* rows[i][j] -> rows[j][i] for a V_VW x V_VW block: log2(V_VW) rounds of interleaving rows
 * i and i + V_VW / 2 */
static inline void V(transpose)(V(vf) *rows)
{
    for (int round = 1; round < V_VW; round *= 2) {
        V(vf) next[V_VW];
        for (int i = 0; i < V_VW / 2; i++) {
            next[2 * i] = __builtin_shuffle(rows[i], rows[i + V_VW / 2], V(interleave_lo));
            next[2 * i + 1] = __builtin_shuffle(rows[i], rows[i + V_VW / 2], V(interleave_hi));
        }
        for (int i = 0; i < V_VW; i++)
            rows[i] = next[i];
    }
}

/* ud[xi][k][t] = (G' D_t[k] G'^T)[xi] for one filter k and the tiles t < WG_TILES, from
 * d[(a * m + b) * WG_TILES + t] = D_t[k][a][b] (g: G' (n, m)); db[k] += the sum of every
 * D_t[k] value (zeros past the outputs), in float32 by lanes, then in double. */
static inline __attribute__((always_inline)) void V(gradient_math_m)(
    const float *restrict d_ab, const int m, const float *restrict g, Py_ssize_t Kp,
    Py_ssize_t k, float *restrict ud, double *restrict db)
{
    V(vf) sum = {0};
    for (Py_ssize_t t = 0; t < WG_TILES; t += V_VW) {
        V(vf) d[WG_MMAX][WG_MMAX], e[WG_N][WG_MMAX];
        for (int a = 0; a < m; a++)
            for (int b = 0; b < m; b++) {
                d[a][b] = *(const V(vf) *)(d_ab + (a * m + b) * WG_TILES + t);
                sum += d[a][b];
            }
        for (int mu = 0; mu < WG_N; mu++)  /* e = G' D */
            for (int b = 0; b < m; b++) {
                V(vf) acc = d[0][b] * g[mu * m];
                for (int a = 1; a < m; a++)
                    acc += d[a][b] * g[mu * m + a];
                e[mu][b] = acc;
            }
        for (int mu = 0; mu < WG_N; mu++)  /* e G'^T */
            for (int nu = 0; nu < WG_N; nu++) {
                V(vf) acc = e[mu][0] * g[nu * m];
                for (int b = 1; b < m; b++)
                    acc += e[mu][b] * g[nu * m + b];
                *(V(vf) *)(ud + ((mu * WG_N + nu) * Kp + k) * WG_TILES + t) = acc;
            }
    }
    double total = 0;
    for (int lane = 0; lane < V_VW; lane++)
        total += sum[lane];
    db[k] += total;
}

static void V(gradient_math)(const float *restrict d_ab, int m, const float *restrict g,
                              Py_ssize_t Kp, Py_ssize_t k, float *restrict ud, double *restrict db)
{
    if (m == 2)
        V(gradient_math_m)(d_ab, 2, g, Kp, k, ud, db);
    else if (m == 4)
        V(gradient_math_m)(d_ab, 4, g, Kp, k, ud, db);
    else
        V(gradient_math_m)(d_ab, m, g, Kp, k, ud, db);
}

/* ud's rows k in [K, Kp) of every xi: zeros */
static void V(zero_rows)(float *restrict ud, Py_ssize_t K, Py_ssize_t Kp)
{
    for (Py_ssize_t xi = 0; xi < WG_N * WG_N; xi++)
        for (Py_ssize_t k = K; k < Kp; k++)
            for (Py_ssize_t t = 0; t < WG_TILES; t++)
                ud[(xi * Kp + k) * WG_TILES + t] = 0;
}

/* ud[xi][k][t] = (G' D_t[k] G'^T)[xi] for filters k < K (rows up to Kp are zeros), the tiles
 * t0 .. t0 + WG_TILES - 1 of tile row ti: D_t[k][a][b] = dout[k][ti*m + a][(t0 + t)*m + b], 0 past
 * (OH, OW); g: G' (n, m). */
static void V(gradient_transform)(const float *restrict dout, Py_ssize_t K, Py_ssize_t Kp,
                                   Py_ssize_t OH, Py_ssize_t OW, Py_ssize_t ldo, int m,
                                   const float *restrict g, Py_ssize_t ti, Py_ssize_t t0,
                                   const wg_outputs *side, float *restrict phases,
                                   float *restrict ud, double *restrict db)
{
    float *buf = phases + m * m * WG_TILES;  /* the chunk's part of a wide row */
    for (Py_ssize_t k = 0; k < K; k++) {
        for (int a = 0; a < m; a++) {  /* phases[a][b][t] = D_t[k][a][b] */
            Py_ssize_t row = ti * m + a, first = t0 * m, width = OW;
            const float *src = row < OH ? dout + (k * OH + row) * ldo : NULL;
            if (side->slot && src) {  /* images side by side: the chunk's columns of their rows */
                V(wide_row)(src, side->stride, side->n, ldo, 0, side->slot, first, m * WG_TILES, buf);
                src = buf, width = OW - first, first = 0;
            }
            for (int b = 0; b < m; b++)
                V(phase_copy)(src, first + b, width, m, WG_TILES, phases + (a * m + b) * WG_TILES);
        }
        V(gradient_math)(phases, m, g, Kp, k, ud, db);
    }
    V(zero_rows)(ud, K, Kp);
}

/* vt[xi][t][c] = v[c][xi][t] for the tiles t < WG_TILES, zeros for c in [C, Cp) */
static void V(transpose_tiles)(const float *restrict v, Py_ssize_t C, Py_ssize_t Cp,
                                float *restrict vt)
{
    const Py_ssize_t nn = WG_N * WG_N;
    for (Py_ssize_t xi = 0; xi < nn; xi++)
        for (Py_ssize_t t = 0; t < WG_TILES; t += V_VW)
            for (Py_ssize_t c0 = 0; c0 < Cp; c0 += V_VW) {
                V(vf) rows[V_VW];
                for (int i = 0; i < V_VW; i++)
                    rows[i] = c0 + i < C ? *(const V(vf) *)(v + ((c0 + i) * nn + xi) * WG_TILES + t) : (V(vf)){0};
                V(transpose)(rows);
                for (int i = 0; i < V_VW; i++)
                    *(V(vf) *)(vt + (xi * WG_TILES + t + i) * Cp + c0) = rows[i];
            }
}

/* slot[xi][k][c] (Kp x Cp per xi, Kp a multiple of 2 * V_KB, Cp of V_VW) += the products of
 * one chunk's tiles t < count: its transformed gradients ud[xi][k][t] and inputs
 * vt[xi][t][c], register-blocked as 2 * V_KB filters by a vector of channels. */
static void V(gradient_accumulate)(const float *restrict ud, const float *restrict vt,
                                    Py_ssize_t Kp, Py_ssize_t Cp,
                                    Py_ssize_t count, float *restrict slot)
{
    enum { KB = 2 * V_KB };
    for (Py_ssize_t xi = 0; xi < WG_N * WG_N; xi++)
        for (Py_ssize_t c0 = 0; c0 < Cp; c0 += V_VW)
            for (Py_ssize_t k0 = 0; k0 < Kp; k0 += KB) {
                float *s = slot + (xi * Kp + k0) * Cp + c0;
                const float *u = ud + (xi * Kp + k0) * WG_TILES;
                const float *v = vt + xi * WG_TILES * Cp + c0;
                V(vf) acc[KB];
#pragma GCC unroll 16
                for (int kk = 0; kk < KB; kk++)
                    acc[kk] = *(V(vf) *)(s + kk * Cp);
                for (Py_ssize_t t = 0; t < count; t++) {
                    V(vf) vv = *(const V(vf) *)(v + t * Cp);
#pragma GCC unroll 16
                    for (int kk = 0; kk < KB; kk++)
                        acc[kk] += u[kk * WG_TILES + t] * vv;
                }
#pragma GCC unroll 16
                for (int kk = 0; kk < KB; kk++)
                    *(V(vf) *)(s + kk * Cp) = acc[kk];
            }
}

/* One chunk's share of the weight gradient, added to slot (n*n, Kp, Cp), and of the bias
 * gradient, added to db (K,) (each filter's values of the chunk summed in float32, by
 * lanes, then in double): tiles t0 .. t0 +
 * count - 1 of tile row ti of one image, x (C, H, W) and dout (K, OH, ldo). */
static void V(gradient_chunk)(const float *restrict x, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                               Py_ssize_t PH, Py_ssize_t PW, const float *restrict dout,
                               Py_ssize_t K, Py_ssize_t OH, Py_ssize_t OW, Py_ssize_t ldo, int m,
                               const float *restrict g, Py_ssize_t ti, Py_ssize_t t0,
                               Py_ssize_t count, Py_ssize_t Kp, Py_ssize_t Cp,
                               const wg_inputs *in, const wg_outputs *side, float *restrict slot,
                               double *restrict db, float *restrict scratch)
{
    const Py_ssize_t nn = WG_N * WG_N;
    float *v = scratch;               /* nn * C * WG_TILES */
    float *vt = v + nn * C * WG_TILES;      /* nn * WG_TILES * Cp */
    float *ud = vt + nn * WG_TILES * Cp;    /* nn * Kp * WG_TILES */
    float *phases = ud + nn * Kp * WG_TILES; /* WG_N * m * (WG_TILES + (WG_N - 1) / m + 1), a row */
    V(input_transform)(x, C, H, W, PH, PW, m, ti, t0, in, phases, v);
    V(transpose_tiles)(v, C, Cp, vt);
    V(gradient_transform)(dout, K, Kp, OH, OW, ldo, m, g, ti, t0, side, phases, ud, db);
    V(gradient_accumulate)(ud, vt, Kp, Cp, count, slot);
}

/* Filter k (C, r, r) at f into dst[(i * n + j) * Kp + k, c] = (G f_c G^T)[i, j] (gm: G, rows
 * 8 apart), in double, a vector of channels at a time: the filters are transformed on each
 * training call, where a channel at a time cost 7% of a small layer's pass. */
static void V(transform_filter)(const float *restrict f, Py_ssize_t C, int r,
                                 const double *restrict gm, int n, Py_ssize_t Kp, Py_ssize_t k,
                                 float *restrict dst)
{
    enum { DW = V_VW / 2 };  /* doubles of a vector */
    typedef double vd __attribute__((vector_size(V_VW * 4)));
    typedef float vh __attribute__((vector_size(V_VW * 2), aligned(4)));
    for (Py_ssize_t c0 = 0; c0 < C; c0 += DW) {
        const int nc = C - c0 < DW ? (int)(C - c0) : DW;
        vd wv[WG_N][WG_N], half[WG_N][WG_N];
        for (int a = 0; a < r; a++)
            for (int b = 0; b < r; b++)
                for (int l = 0; l < DW; l++)
                    wv[a][b][l] = l < nc ? f[((c0 + l) * r + a) * r + b] : 0;
        for (int i = 0; i < n; i++)  /* half = G f */
            for (int b = 0; b < r; b++) {
                vd acc = wv[0][b] * gm[i * 8];
                for (int a = 1; a < r; a++)
                    acc += wv[a][b] * gm[i * 8 + a];
                half[i][b] = acc;
            }
        for (int i = 0; i < n; i++)  /* G f G^T */
            for (int j = 0; j < n; j++) {
                vd acc = half[i][0] * gm[j * 8];
                for (int b = 1; b < r; b++)
                    acc += half[i][b] * gm[j * 8 + b];
                float *o = dst + ((i * n + j) * Kp + k) * C + c0;
                if (nc == DW) {
                    vh narrow = __builtin_convertvector(acc, vh);
                    memcpy(o, &narrow, sizeof narrow);
                } else {
                    for (int l = 0; l < nc; l++)
                        o[l] = (float)acc[l];
                }
            }
    }
}

#include "winograd_flat_body.h"
