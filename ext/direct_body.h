/* One chunk of the direct convolution, compiled once per instruction set by simd.h.
 *
 * For few input channels (the first layer of a net sees one or three), im2col copies every
 * input value FH * FW times and hands BLAS a GEMM too thin to run well. This kernel reads
 * the input where it lies: a block of DK_KB filters and two vectors of output columns stay
 * in registers while every tap (c, i, j) adds its weight times a row of the input, so each
 * loaded vector serves DK_KB filters. Output rows come in pairs when a 2x2 max-pool follows,
 * which the output stage takes together with the bias and the ReLU, as conv2d_infer does.
 *
 * A chunk is `units` output units (a row, or a pair of rows with the pool) of one image. Its
 * input rows are first copied into scratch with the padding as zeros and room for whole
 * vectors on the right, so that the inner loops need no bounds.
 */

#define DK_KB (V_KB / 2)  /* filters per register block, of four vectors each */

/* The chunk's input rows: pad[c][r][PW + col] = x[c][row0 - PH + r][col], zeros around. */
static void V(direct_rows)(const float *restrict x, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                           Py_ssize_t PH, Py_ssize_t PW, Py_ssize_t row0, Py_ssize_t rows,
                           Py_ssize_t Wp, float *restrict pad)
{
    for (Py_ssize_t c = 0; c < C; c++)
        for (Py_ssize_t r = 0; r < rows; r++) {
            float *dst = pad + (c * rows + r) * Wp;
            Py_ssize_t iy = row0 - PH + r;
            Py_ssize_t lo = PW, hi = PW + W;
            if (iy < 0 || iy >= H)
                lo = hi = 0;
            for (Py_ssize_t j = 0; j < lo; j++)
                dst[j] = 0;
            if (hi > lo) {
                const float *src = x + (c * H + iy) * W;
                for (Py_ssize_t j = 0; j < W; j++)
                    dst[PW + j] = src[j];
            }
            for (Py_ssize_t j = hi > lo ? hi : 0; j < Wp; j++)
                dst[j] = 0;
        }
}

/* Output unit `orow` for filters k0 .. k0 + kb - 1 (kb <= DK_KB), columns col .. col + 4 *
 * V_VW / q - 1 (two vectors with pairs): four vectors of accumulators per filter, the two
 * rows of each pool window (q = 2), the two rows of a unit of two (pairs: narrow rows, whose
 * unit is two rows of two vectors each) or four runs of columns (q = 1); q and pairs are
 * constants where it is inlined. */
static inline __attribute__((always_inline)) void V(direct_block)(
    const float *restrict base, Py_ssize_t rows, Py_ssize_t Wp, const float *restrict w,
    Py_ssize_t C, Py_ssize_t FH, Py_ssize_t FW, Py_ssize_t k0, int kb, Py_ssize_t col,
    const float *restrict bias, int relu, const int q, const int pairs, float *restrict out,
    Py_ssize_t OHo, Py_ssize_t orow, Py_ssize_t OWo)
{
    const Py_ssize_t taps = C * FH * FW;
    const int two = q == 2 || pairs;  /* the slots span two rows of two vectors */
    /* slot s reads row ro[s] of the unit, at column co[s] of the block */
    const Py_ssize_t ro[4] = {0, 0, two ? 1 : 0, two ? 1 : 0};
    const Py_ssize_t co[4] = {0, V_VW, two ? 0 : 2 * V_VW, two ? V_VW : 3 * V_VW};
    V(vf) acc[DK_KB][4];
    for (int kk = 0; kk < DK_KB; kk++)
        for (int sl = 0; sl < 4; sl++)
            acc[kk][sl] = (V(vf)){0};
    for (Py_ssize_t c = 0; c < C; c++)
        for (Py_ssize_t i = 0; i < FH; i++) {
            const float *in = base + (c * rows + i) * Wp + col;
            const float *wt = w + (k0 * C + c) * FH * FW + i * FW;
            for (Py_ssize_t j = 0; j < FW; j++) {
                V(vf) a[4];
                for (int sl = 0; sl < 4; sl++)
                    a[sl] = *(const V(vf) *)(in + ro[sl] * Wp + co[sl] + j);
#pragma GCC unroll 8
                for (int kk = 0; kk < DK_KB; kk++) {
                    float wk = kk < kb ? wt[kk * taps + j] : 0;
                    for (int sl = 0; sl < 4; sl++)
                        acc[kk][sl] += wk * a[sl];
                }
            }
        }
    for (int kk = 0; kk < kb; kk++) {
        V(vf) res[4];
        int n;
        if (q == 2) {  /* the rows of each window, then its even and odd columns */
            V(vf) top0 = V(nan_max)(acc[kk][0], acc[kk][2]);
            V(vf) top1 = V(nan_max)(acc[kk][1], acc[kk][3]);
            res[0] = V(nan_max)(__builtin_shuffle(top0, top1, V(even)),
                                __builtin_shuffle(top0, top1, V(odd)));
            n = 1;
        } else {
            for (int sl = 0; sl < 4; sl++)
                res[sl] = acc[kk][sl];
            n = 4;
        }
        Py_ssize_t left = OWo - col / q;
        for (int v = 0; v < n; v++) {
            /* pairs: vectors 2 and 3 are the unit's second row, when the image has it */
            Py_ssize_t row = pairs ? 2 * orow + v / 2 : orow, at = pairs ? v % 2 : v;
            float *o = out + ((k0 + kk) * OHo + row) * OWo + col / q;
            if (row >= OHo)
                break;
            V(vf) val = res[v] + bias[k0 + kk];
            if (relu)
                val = V(relu)(val);
            if (left >= (at + 1) * V_VW)
                *(V(vf) *)(o + at * V_VW) = val;
            else if (left > at * V_VW)
                V(store_part)(o + at * V_VW, val, (int)(left - at * V_VW));
        }
    }
}

/* out (K, OHo, OWo) of one image: output units u0 .. u0 + units - 1, each q rows (q = 1, 2;
 * narrow unpooled rows: 2, see direct_unit_rows), OWu output columns kept (with the pool, OWo * 2). */
static void V(direct_chunk)(const float *restrict x, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                            Py_ssize_t PH, Py_ssize_t PW, const float *restrict w, Py_ssize_t K,
                            Py_ssize_t FH, Py_ssize_t FW, const float *restrict bias, int relu,
                            int q, Py_ssize_t u0, Py_ssize_t units, Py_ssize_t OWu,
                            float *restrict out, Py_ssize_t OHo, Py_ssize_t OWo,
                            float *restrict scratch)
{
    /* rows no wider than two vectors go in pairs, unpooled: two rows of two vectors */
    const int pairs = q == 1 && OWu <= 2 * V_VW, per = pairs ? 2 : q;  /* rows of a unit */
    const Py_ssize_t block = pairs ? 2 * V_VW : 4 * V_VW / q;  /* output columns of one register block */
    const Py_ssize_t rows = units * per + FH - 1;
    const Py_ssize_t Wp = DIRECT_ROW_FLOATS(OWu, FW);
    V(direct_rows)(x, C, H, W, PH, PW, u0 * per, rows, Wp, scratch);
    for (Py_ssize_t u = 0; u < units; u++) {
        const float *base = scratch + u * per * Wp;
        for (Py_ssize_t k0 = 0; k0 < K; k0 += DK_KB) {
            int kb = K - k0 < DK_KB ? (int)(K - k0) : DK_KB;
            for (Py_ssize_t col = 0; col < OWu; col += block) {
                if (q == 2)
                    V(direct_block)(base, rows, Wp, w, C, FH, FW, k0, kb, col, bias, relu, 2, 0,
                                    out, OHo, u0 + u, OWo);
                else if (pairs)
                    V(direct_block)(base, rows, Wp, w, C, FH, FW, k0, kb, col, bias, relu, 1, 1,
                                    out, OHo, u0 + u, OWo);
                else
                    V(direct_block)(base, rows, Wp, w, C, FH, FW, k0, kb, col, bias, relu, 1, 0,
                                    out, OHo, u0 + u, OWo);
            }
        }
    }
}
