/* Chunks of tiles numbered across a batch (wg_flat), compiled once per instruction set.
 *
 * winograd_body.h includes this file at its end. The chunks of winograd_body.h are runs of
 * one tile row; images narrower than a chunk run side by side, and the tiles that straddle
 * two images are computed and dropped. Here a chunk is any run of WG_TILES tiles of the
 * batch: its pieces (wg_pieces) are runs of one tile row of one image, each read or written
 * from two vectors of a row and permuted into (or out of) the tiles' lanes. No tile is
 * wasted, whatever the images' width.
 *
 * The fused backward of a stride-1 convolution runs on it: per chunk, from the input x and
 * the outputs' gradient dout,
 *   V[c][xi][t] = (B^T d_t[c] B)[xi]       the forward's input transform,
 *   D[xi][k][t] = (A dY_t[k] A^T)[xi]      the outputs' gradient through A^T . A,
 *   dU[xi][k][c] += sum over t of D V     the filters' gradient (the caller ends G^T dU G),
 *   dV[xi][c][t] = sum over k of U[xi][k][c] D[xi][k][t],
 *   dx += B dV_t[c] B^T                     each tile's n x n patch, added where it lies.
 * That is the forward A^T [U * (B^T d B)] A transposed: the input gradient takes the forward's
 * tiles (no padded correlation, whose tiles cover the input's larger size), and the outputs'
 * gradient is transformed once for both gradients.
 */

/* the widest piece whose n-column patch row fits two vectors */
#define WG_PIECE(m) ((2 * V_VW - WG_N) / (m) + 1)

/* p[lane] for the lanes l, zeros elsewhere, reading only those lanes; and p[lane] = v[lane]
 * there, writing only those */
static inline V(vf) V(load_lanes)(const float *p, wg_lanes l)
{
#if V_VW == 16
    return (V(vf))_mm512_maskz_loadu_ps((__mmask16)l.bits, p);
#elif V_VW == 8
    const V(vi) lanes = {0, 1, 2, 3, 4, 5, 6, 7};
    return (V(vf))_mm256_maskload_ps(p, (__m256i)((lanes >= l.lo) & (lanes < l.hi)));
#else
    V(vf) v = {0};
    for (int i = l.lo; i < l.hi; i++)
        v[i] = p[i];
    return v;
#endif
}

static inline void V(store_lanes)(float *p, V(vf) v, wg_lanes l)
{
#if V_VW == 16
    _mm512_mask_storeu_ps(p, (__mmask16)l.bits, (__m512)v);
#elif V_VW == 8
    const V(vi) lanes = {0, 1, 2, 3, 4, 5, 6, 7};
    _mm256_maskstore_ps(p, (__m256i)((lanes >= l.lo) & (lanes < l.hi)), (__m256)v);
#else
    for (int i = l.lo; i < l.hi; i++)
        p[i] = v[i];
#endif
}

/* o[s] = sum over mu of B^T[mu][s] x[mu]: B, the transpose of bt6 */
static inline void V(bt6t)(const V(vf) *x, V(vf) *o)
{
    V(vf) d12 = x[1] - x[2], s12 = x[1] + x[2], d34 = x[3] - x[4], s34 = x[3] + x[4];
    o[0] = 4 * x[0];
    o[1] = 4 * d12 - 2 * d34 + 4 * x[5];
    o[2] = 4 * s12 - s34 - 5 * x[0];
    o[3] = 2 * d34 - d12 - 5 * x[5];
    o[4] = x[0] - s12 + s34;
    o[5] = x[5];
}

/* idx[s]: the lanes m * j + s of two vectors (j the lane), column s of each tile of a piece
 * whose row they hold, for s < WG_N (shuffle's indices are taken modulo 2 * V_VW) */
static inline void V(column_lanes)(int m, V(vi) *idx)
{
    for (int s = 0; s < WG_N; s++)
        for (int j = 0; j < V_VW; j++)
            idx[s][j] = (m * j + s) & (2 * V_VW - 1);
}

/* idx[d]: lane j - d of a vector after a vector of zeros, for d < WG_N: a shift up by d lanes */
static inline void V(shift_lanes)(V(vi) *idx)
{
    for (int d = 0; d < WG_N; d++)
        for (int j = 0; j < V_VW; j++)
            idx[d][j] = j >= d ? V_VW + j - d : 0;
}


/* A piece's share of one vector of the chunk's tiles: its tiles' lanes (mask, bits) and, per
 * column s of a tile, the lanes of the two vectors of its row that hold it (idx[s]) */
typedef struct {
    Py_ssize_t piece;
    V(vi) mask, idx[WG_N];
    unsigned bits;
    int lane, lanes;  /* its first lane and their number: tiles lane - pos .. of the piece */
} V(share);

/* The shares of the chunk's vectors of tiles, vector by vector: vector i's are
 * shares[first[i]] .. shares[first[i + 1] - 1]. At most np + WG_TILES / V_VW of them. */
static void V(shares)(const wg_piece *pieces, int np, int m, V(share) *shares, int *first)
{
    V(vi) cols[WG_N], lanes;
    V(column_lanes)(m, cols);
    for (int j = 0; j < V_VW; j++)
        lanes[j] = j;
    int n = 0;
    for (int i = 0; i < WG_TILES / V_VW; i++) {
        first[i] = n;
        for (int p = 0; p < np; p++) {
            const Py_ssize_t off = pieces[p].pos - i * V_VW;
            if (off >= V_VW || off + pieces[p].len <= 0)
                continue;
            V(share) *sh = shares + n++;
            const int lo = off < 0 ? 0 : (int)off;
            const int hi = off + pieces[p].len > V_VW ? V_VW : (int)(off + pieces[p].len);
            sh->piece = p;
            sh->mask = (lanes >= lo) & (lanes < hi);
            sh->bits = ((1u << hi) - 1) & ~((1u << lo) - 1);
            sh->lane = lo, sh->lanes = hi - lo;
            for (int s = 0; s < WG_N; s++)
                sh->idx[s] = cols[s] - (int)(m * off);
        }
    }
    first[WG_TILES / V_VW] = n;
}

/* a where the share's lanes are, else b */
static inline V(vf) V(blend)(const V(share) *sh, V(vf) a, V(vf) b)
{
#if V_VW == 16
    return (V(vf))_mm512_mask_blend_ps((__mmask16)sh->bits, (__m512)b, (__m512)a);
#else
    return V(select)(sh->mask, a, b);
#endif
}

/* d[s] = column s of vector tv of the chunk's tiles, for s < cols_n, from one row of their
 * patches: the piece's row (if bit BIT of its ROWS is set) starts at float AT of BASE, and
 * LANES[0], LANES[1] of its two vectors lie inside it. Each piece with a share of those
 * tiles reads its row as two vectors and permutes its columns into its tiles' lanes; zeros
 * where no piece is (past count) and outside the rows. Built in registers: a buffer filled
 * piece by piece with masked stores stalls the full loads that read it back. */
#define WG_GATHER(d, cols_n, tv, BASE, AT, ROWS, BIT, LANES)                                     \
    do {                                                                                        \
        for (int s_ = 0; s_ < (cols_n); s_++)                                                   \
            (d)[s_] = (V(vf)){0};                                                               \
        for (int h_ = first[tv]; h_ < first[(tv) + 1]; h_++) {                                  \
            const V(share) *sh = shares + h_;                                                   \
            const wg_piece *pc = pieces + sh->piece;                                            \
            if (!((pc->ROWS >> (BIT)) & 1))                                                     \
                continue;                                                                       \
            const float *row = (BASE) + (AT);                                                   \
            V(vf) lo = V(load_lanes)(row, pc->LANES[0]), hi = {0};                              \
            if (pc->LANES[1].hi > pc->LANES[1].lo)                                              \
                hi = V(load_lanes)(row + V_VW, pc->LANES[1]);                                   \
            for (int s_ = 0; s_ < (cols_n); s_++)                                               \
                (d)[s_] = V(blend)(sh, __builtin_shuffle(lo, hi, sh->idx[s_]), (d)[s_]);        \
        }                                                                                       \
    } while (0)

/* v[c][xi][t] = (B^T d_t[c] B)[xi] for the chunk's tiles (zeros for t in [count, WG_TILES));
 * e: nn * WG_TILES floats: per row of the patches d B, then v = B^T e. */
static inline __attribute__((always_inline)) void V(flat_input_m)(
    const float *restrict x, const wg_flat *g, const int m, const wg_piece *pieces,
    const V(share) *shares, const int *first, float *restrict e, float *restrict v)
{
    const Py_ssize_t nn = WG_N * WG_N;
    for (Py_ssize_t c = 0; c < g->C; c++) {
        for (Py_ssize_t t = 0; t < WG_TILES; t += V_VW)
            for (int r = 0; r < WG_N; r++) {
                V(vf) d[WG_N], o[WG_N];
                WG_GATHER(d, WG_N, t / V_VW, x, pc->x_at + (c * g->H + r) * g->W, rows, r, x_lanes);
                V(bt6)(d[0], d[1], d[2], d[3], d[4], d[5], o);
                for (int nu = 0; nu < WG_N; nu++)
                    *(V(vf) *)(e + (r * WG_N + nu) * WG_TILES + t) = o[nu];
            }
        for (Py_ssize_t t = 0; t < WG_TILES; t += V_VW)
            for (int nu = 0; nu < WG_N; nu++) {
                V(vf) o[WG_N];
#define WG_E(r) (*(const V(vf) *)(e + ((r) * WG_N + nu) * WG_TILES + t))
                V(bt6)(WG_E(0), WG_E(1), WG_E(2), WG_E(3), WG_E(4), WG_E(5), o);
#undef WG_E
                for (int mu = 0; mu < WG_N; mu++)
                    *(V(vf) *)(v + (c * nn + mu * WG_N + nu) * WG_TILES + t) = o[mu];
            }
    }
}

/* o[mu] = sum over a of A[mu][a] d[a], A (n, m) of F(m, r) over the six points: rows
 * (1, 0), (1, 1), (1, -1), (1, 2), (1, -2), (0, 1) for m = 2; for m = 4 the powers
 * (1, p, p^2, p^3) of p = 0, 1, -1, 2, -2, and (0, 0, 0, 1) */
static inline void V(a6)(const V(vf) *d, const int m, V(vf) *o)
{
    if (m == 2) {
        V(vf) two = 2 * d[1];
        o[0] = d[0];
        o[1] = d[0] + d[1];
        o[2] = d[0] - d[1];
        o[3] = d[0] + two;
        o[4] = d[0] - two;
        o[5] = d[1];
    } else {
        V(vf) even1 = d[0] + d[2], odd1 = d[1] + d[3];
        V(vf) even2 = d[0] + 4 * d[2], odd2 = 2 * d[1] + 8 * d[3];
        o[0] = d[0];
        o[1] = even1 + odd1;
        o[2] = even1 - odd1;
        o[3] = even2 + odd2;
        o[4] = even2 - odd2;
        o[5] = d[3];
    }
}

/* ud[xi][k][t] = (A dY_t[k] A^T)[xi] for the chunk's tiles, rows K .. Kp - 1 zeros; db[k] +=
 * the sum of dY_t[k] (in float32 by lanes, then in double). dout: (N, K, OH, OW). */
static inline __attribute__((always_inline)) void V(flat_gradient_m)(
    const float *restrict dout, const wg_flat *g, const int m, const wg_piece *pieces,
    const V(share) *shares, const int *first, Py_ssize_t Kp, float *restrict ud,
    double *restrict db)
{
    for (Py_ssize_t k = 0; k < g->K; k++) {
        V(vf) sum = {0};
        for (Py_ssize_t t = 0; t < WG_TILES; t += V_VW) {
            V(vf) d[WG_MMAX][WG_MMAX], e[WG_N][WG_MMAX], o[WG_N];
            for (int a = 0; a < m; a++) {  /* d[a][b] = dY_t[k][a][b] */
                WG_GATHER(d[a], m, t / V_VW, dout, pc->dout_at + (k * g->OH + a) * g->OW, out_rows, a, dout_lanes);
                for (int b = 0; b < m; b++)
                    sum += d[a][b];
            }
            for (int b = 0; b < m; b++) {  /* e = A dY, column by column */
                V(vf) col[WG_MMAX];
                for (int a = 0; a < m; a++)
                    col[a] = d[a][b];
                V(a6)(col, m, o);
                for (int mu = 0; mu < WG_N; mu++)
                    e[mu][b] = o[mu];
            }
            for (int mu = 0; mu < WG_N; mu++) {  /* e A^T */
                V(a6)(e[mu], m, o);
                for (int nu = 0; nu < WG_N; nu++)
                    *(V(vf) *)(ud + ((mu * WG_N + nu) * Kp + k) * WG_TILES + t) = o[nu];
            }
        }
        double total = 0;
        for (int lane = 0; lane < V_VW; lane++)
            total += sum[lane];
        db[k] += total;
    }
    V(zero_rows)(ud, g->K, Kp);
}

/* dx[c] += B dV_t B^T for the chunk's tiles, each n x n patch added where it lies (the
 * padding dropped): dv[xi * ld + t] = dV_t[xi] of channel c; pbuf: nn * WG_TILES floats.
 * Column by column (B dV into pbuf), then per piece and row: the tiles' rows (. B^T) in the
 * lanes of a vector, their columns gathered by phase (column s of tile j is column
 * j * m + s of the piece) and interleaved into two vectors of the image's row. */
static inline __attribute__((always_inline)) void V(flat_scatter_m)(
    const float *restrict dv, Py_ssize_t ld, const wg_flat *g, const int m, Py_ssize_t c,
    const wg_piece *pieces, int np, float *restrict pbuf, float *restrict dx)
{
    V(vi) shift[WG_N];
    V(shift_lanes)(shift);
    for (Py_ssize_t t = 0; t < WG_TILES; t += V_VW)
        for (int nu = 0; nu < WG_N; nu++) {
            V(vf) col[WG_N], o[WG_N];
            for (int mu = 0; mu < WG_N; mu++)
                col[mu] = *(const V(vf) *)(dv + (mu * WG_N + nu) * ld + t);
            V(bt6t)(col, o);
            for (int r = 0; r < WG_N; r++)
                *(V(vf) *)(pbuf + (r * WG_N + nu) * WG_TILES + t) = o[r];
        }
    /* row by row over the pieces: the next tile row's patch rows are this one's last four,
     * and a masked load of a row a masked store has just written waits for it to retire */
    for (int r = 0; r < WG_N; r++)
        for (int p = 0; p < np; p++) {
            const wg_piece pc = pieces[p];
            if (!((pc.rows >> r) & 1))
                continue;
            float *row = dx + pc.x_at + (c * g->H + r) * g->W;
            V(vf) q[WG_N], s[WG_N], ph[WG_MMAX], out[2];
            const wg_lanes tiles = wg_row_lanes(0, pc.len, V_VW);
            for (int nu = 0; nu < WG_N; nu++)
                q[nu] = V(load_lanes)(pbuf + (r * WG_N + nu) * WG_TILES + pc.pos, tiles);
            V(bt6t)(q, s);
            for (int ph_i = 0; ph_i < m; ph_i++) {  /* column j * m + ph_i: s[ph_i + m d] of tile j - d */
                ph[ph_i] = s[ph_i];
                for (int d = 1; ph_i + m * d < WG_N; d++)
                    ph[ph_i] += __builtin_shuffle((V(vf)){0}, s[ph_i + m * d], shift[d]);
            }
            if (m == 2) {
                out[0] = __builtin_shuffle(ph[0], ph[1], V(interleave_lo));
                out[1] = __builtin_shuffle(ph[0], ph[1], V(interleave_hi));
            } else {  /* m == 4: a piece's phases fill half a vector */
                V(vf) a = __builtin_shuffle(ph[0], ph[2], V(interleave_lo));
                V(vf) b = __builtin_shuffle(ph[1], ph[3], V(interleave_lo));
                out[0] = __builtin_shuffle(a, b, V(interleave_lo));
                out[1] = __builtin_shuffle(a, b, V(interleave_hi));
            }
            for (int h = 0; h < 2; h++)
                V(store_lanes)(row + h * V_VW, V(load_lanes)(row + h * V_VW, pc.x_lanes[h]) + out[h], pc.x_lanes[h]);
        }
}

/* One chunk of the fused backward: the count tiles from flat tile f0. x (N, C, H, W), dout
 * (N, K, OH, OW); ut: (nn, Cu, K), U[xi][k][c] at ut[(xi * Cu + c) * K + k],
 * Cu = C padded to WG_KB_MAX, zeros past C; slot (nn, Kp, Cp) += the chunk's dU (Kp a
 * multiple of 2 * V_KB, Cp of V_VW); db (K,) += its share; dx (N, C, H, W) += the chunk's
 * input gradient, or no input gradient when dx is NULL. */
static void V(backward_chunk)(const float *restrict x, const float *restrict dout,
                               const wg_flat *g, Py_ssize_t f0, Py_ssize_t count,
                               const float *restrict ut,
                               Py_ssize_t Kp, Py_ssize_t Cp, float *restrict slot,
                               double *restrict db, float *restrict dx, float *restrict scratch)
{
    const Py_ssize_t nn = WG_N * WG_N, C = g->C, K = g->K;
    const Py_ssize_t Cu = (C + WG_KB_MAX - 1) / WG_KB_MAX * WG_KB_MAX;
    const int m = g->m;
    float *v = scratch;                    /* nn * C * WG_TILES */
    float *vt = v + nn * C * WG_TILES;     /* nn * WG_TILES * Cp */
    float *ud = vt + nn * WG_TILES * Cp;   /* nn * Kp * WG_TILES */
    float *e = ud + nn * Kp * WG_TILES;    /* nn * WG_TILES */
    float *dv = e + nn * WG_TILES;         /* nn * V_KB * WG_TILES */
    wg_piece pieces[WG_TILES];
    const int np = wg_pieces(g, f0, count, WG_PIECE(m), V_VW, pieces);
    V(share) shares[WG_TILES + WG_TILES / V_VW];
    int first[WG_TILES / V_VW + 1];
    V(shares)(pieces, np, m, shares, first);
    if (m == 2) {
        V(flat_input_m)(x, g, 2, pieces, shares, first, e, v);
        V(flat_gradient_m)(dout, g, 2, pieces, shares, first, Kp, ud, db);
    } else {
        V(flat_input_m)(x, g, 4, pieces, shares, first, e, v);
        V(flat_gradient_m)(dout, g, 4, pieces, shares, first, Kp, ud, db);
    }
    V(transpose_tiles)(v, C, Cp, vt);
    V(gradient_accumulate)(ud, vt, Kp, Cp, count, slot);
    if (!dx)
        return;
    for (Py_ssize_t c0 = 0; c0 < C; c0 += V_KB) {
        for (Py_ssize_t xi = 0; xi < nn; xi++)
            V(gemm_block)(ut + (xi * Cu + c0) * K, K, ud + xi * Kp * WG_TILES, WG_TILES, K,
                          WG_TILES, dv + xi * V_KB * WG_TILES);
        for (int cc = 0; cc < V_KB && c0 + cc < C; cc++) {
            if (m == 2)
                V(flat_scatter_m)(dv + cc * WG_TILES, V_KB * WG_TILES, g, 2, c0 + cc, pieces, np, e, dx);
            else
                V(flat_scatter_m)(dv + cc * WG_TILES, V_KB * WG_TILES, g, 4, c0 + cc, pieces, np, e, dx);
        }
    }
}

/* -- The forward over the same chunks ------------------------------------------------------ */

/* Output channel k of the chunk's finished tiles into out (N, K, OHo, OWo), plus add[0] when
 * add is given: fin[(a2 * per + b2) * WG_TILES + t] is output (a2, b2) of tile t (per a side,
 * after the pool). Per vector
 * of tiles and piece with a share of it: the share's lanes moved down to lane 0, a tile's
 * per columns interleaved, stored with a mask up to the row's end. */
static inline __attribute__((always_inline)) void V(flat_emit_per)(
    const float *restrict fin, const int per, const wg_piece *pieces, const V(share) *shares,
    const int *first, const float *restrict add, Py_ssize_t k, Py_ssize_t K,
    float *restrict out, Py_ssize_t OHo, Py_ssize_t OWo)
{
    const V(vf) plus = (V(vf)){0} + (add ? add[0] : 0);
    for (int tv = 0; tv < WG_TILES / V_VW; tv++) {
        V(vf) plane[WG_MMAX][WG_MMAX];
        for (int a2 = 0; a2 < per; a2++)
            for (int b2 = 0; b2 < per; b2++) {
                plane[a2][b2] = *(const V(vf) *)(fin + (a2 * per + b2) * WG_TILES + tv * V_VW);
                if (add)
                    plane[a2][b2] += plus;
            }
        for (int h = first[tv]; h < first[tv + 1]; h++) {
            const V(share) *sh = shares + h;
            const wg_piece *pc = pieces + sh->piece;
            const Py_ssize_t col = (pc->tj + tv * V_VW + sh->lane - pc->pos) * per;
            const Py_ssize_t kept = OWo - col < sh->lanes * per ? OWo - col : sh->lanes * per;
            V(vi) down;
            for (int j = 0; j < V_VW; j++)
                down[j] = (j + sh->lane) & (V_VW - 1);
            for (int a2 = 0; a2 < per; a2++) {
                const Py_ssize_t row = pc->ti * per + a2;
                if (row >= OHo)
                    break;
                float *restrict o = out + ((pc->img * K + k) * OHo + row) * OWo + col;
                V(vf) v[WG_MMAX], w[WG_MMAX];
                for (int b2 = 0; b2 < per; b2++)
                    v[b2] = __builtin_shuffle(plane[a2][b2], down);
                if (per == 1) {
                    w[0] = v[0];
                } else if (per == 2) {
                    w[0] = __builtin_shuffle(v[0], v[1], V(interleave_lo));
                    w[1] = __builtin_shuffle(v[0], v[1], V(interleave_hi));
                } else {  /* per == 4 */
                    V(vf) a_lo = __builtin_shuffle(v[0], v[2], V(interleave_lo));
                    V(vf) a_hi = __builtin_shuffle(v[0], v[2], V(interleave_hi));
                    V(vf) b_lo = __builtin_shuffle(v[1], v[3], V(interleave_lo));
                    V(vf) b_hi = __builtin_shuffle(v[1], v[3], V(interleave_hi));
                    w[0] = __builtin_shuffle(a_lo, b_lo, V(interleave_lo));
                    w[1] = __builtin_shuffle(a_lo, b_lo, V(interleave_hi));
                    w[2] = __builtin_shuffle(a_hi, b_hi, V(interleave_lo));
                    w[3] = __builtin_shuffle(a_hi, b_hi, V(interleave_hi));
                }
                for (int i = 0; i < per && i * V_VW < kept; i++)
                    V(store_lanes)(o + i * V_VW, w[i], wg_row_lanes(i * V_VW, kept, V_VW));
            }
        }
    }
}

/* Where a flat chunk's finished planes of one output channel go */
typedef struct {
    int per;
    const wg_piece *pieces;
    const V(share) *shares;
    const int *first;
    Py_ssize_t K, OHo, OWo;
    float *out;
} V(flat_target);

static void V(emit_flat)(void *target, const float *restrict fin, const float *restrict add,
                          Py_ssize_t k)
{
    const V(flat_target) *t = target;
#define WG_EMIT(PER) V(flat_emit_per)(fin, PER, t->pieces, t->shares, t->first, add, k, t->K, t->out, t->OHo, t->OWo)
    if (t->per == 1)
        WG_EMIT(1);
    else if (t->per == 2)
        WG_EMIT(2);
    else
        WG_EMIT(4);
#undef WG_EMIT
}

/* The forward of one chunk: the count tiles from flat tile f0 (g->rows x g->cols an image:
 * those that hold a kept output), then bias, ReLU, a q x q max-pool and a projection as
 * chunk() does (tile_outputs); u: (n*n, Kp, C); out: (N, K, OHo, OWo), or (N, K2, OHo, OWo)
 * with a projection. */
static void V(flat_chunk)(const float *restrict x, const wg_flat *g, Py_ssize_t f0,
                           Py_ssize_t count, const float *restrict u, Py_ssize_t Kp,
                           const float *restrict bias, int relu, int q,
                           const float *restrict at, const float *restrict p,
                           const float *restrict p_bias, Py_ssize_t K2, float *restrict out,
                           Py_ssize_t OHo, Py_ssize_t OWo, float *restrict scratch)
{
    const Py_ssize_t nn = WG_N * WG_N;
    const int m = g->m;
    float *v = scratch;                   /* nn * C * WG_TILES */
    float *mb = v + nn * g->C * WG_TILES; /* nn * V_KB * WG_TILES */
    float *e = mb + nn * WG_KB_MAX * WG_TILES;  /* nn * WG_TILES, then a channel's planes */
    float *fin = p ? e + nn * WG_TILES : e;     /* with p: Kp * planes, every filter's */
    wg_piece pieces[WG_TILES];
    const int np = wg_pieces(g, f0, count, WG_PIECE(m), V_VW, pieces);
    V(share) shares[WG_TILES + WG_TILES / V_VW];
    int first[WG_TILES / V_VW + 1];
    V(shares)(pieces, np, m, shares, first);
    if (m == 2)
        V(flat_input_m)(x, g, 2, pieces, shares, first, e, v);
    else
        V(flat_input_m)(x, g, 4, pieces, shares, first, e, v);
    V(flat_target) target = {m / q, pieces, shares, first, p ? K2 : g->K, OHo, OWo, out};
    V(tile_outputs)(u, v, g->C, g->K, Kp, bias, relu, q, m, at, WG_TILES, p, p_bias, K2, mb, fin,
                    V(emit_flat), &target);
}
