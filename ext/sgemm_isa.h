/* One instruction set's float32 GEMM: included by sgemm.h once per instruction set, with
 *   ISA          the suffix of the names defined here
 *   TARGET       the function attribute that compiles them for it (empty: the build's own)
 *   VEC, VL      the vector type and its width in floats
 *   LOADU(p), STOREU(p, v), SET1(s), ZERO(), FMA(a, b, c) = a * b + c
 *   MR1, MR2, MR3  rows of a tile one, two and three vectors wide (its accumulators and the
 *                  vectors of B it reads must fit the register file)
 */
#define SG_CAT_(a, b) a##b
#define SG_CAT(a, b) SG_CAT_(a, b)
#define SG_TILE SG_CAT(sgemm_tile_, ISA)
#define SG_PANEL SG_CAT(sgemm_panel_, ISA)
#define SG_GEMM SG_CAT(sgemm_, ISA)

/* C rows i < mv, columns [0, nt) of one MR x (NV * VL) tile: init, then + A (MR, kc) @ B (kc, NV * VL).
 * Rows of A past mv repeat the last one (they are computed and dropped); B holds NV * VL
 * readable columns (a zero-padded copy at the right edge). A partial tile goes through a
 * local copy, so that the accumulators only see whole vectors at constant indices and stay
 * in registers. */
static inline __attribute__((always_inline)) TARGET void SG_TILE(
    const int MR, const int NV, Py_ssize_t mv, Py_ssize_t nt, Py_ssize_t kc,
    const float *a, Py_ssize_t ars, Py_ssize_t acs, const float *b, Py_ssize_t ldb,
    float *c, Py_ssize_t ldc, int init, const float *bias)
{
    VEC acc[MR1][3];  /* constant sizes (MR1 is the largest MR): a VLA would live in memory */
    const float *arow[MR1];
    float part[MR1 * 3 * VL];
    const int whole = mv == MR && nt == NV * VL;
    float *t = whole ? c : part;
    const Py_ssize_t ldt = whole ? ldc : NV * VL;
    Py_ssize_t i, p, j;
    int v;
    if (!whole) {
        for (i = 0; i < MR; i++)
            for (j = 0; j < NV * VL; j++)
                part[i * ldt + j] = init == SGEMM_ACCUMULATE && i < mv && j < nt ? c[i * ldc + j] : 0.0f;
    }
#pragma GCC unroll 32
    for (i = 0; i < MR; i++) {
        arow[i] = a + (i < mv ? i : mv - 1) * ars;
#pragma GCC unroll 4
        for (v = 0; v < NV; v++) {
            if (init == SGEMM_ACCUMULATE)
                acc[i][v] = LOADU(t + i * ldt + v * VL);
            else if (init == SGEMM_BIAS)
                acc[i][v] = SET1(bias[i < mv ? i : mv - 1]);
            else
                acc[i][v] = ZERO();
        }
    }
    for (p = 0; p < kc; p++) {
        VEC bv[NV];
#pragma GCC unroll 4
        for (v = 0; v < NV; v++)
            bv[v] = LOADU(b + p * ldb + v * VL);
#pragma GCC unroll 32
        for (i = 0; i < MR; i++) {
            VEC s = SET1(arow[i][p * acs]);
#pragma GCC unroll 4
            for (v = 0; v < NV; v++)
                acc[i][v] = FMA(s, bv[v], acc[i][v]);
        }
    }
#pragma GCC unroll 32
    for (i = 0; i < MR; i++)
#pragma GCC unroll 4
        for (v = 0; v < NV; v++)
            STOREU(t + i * ldt + v * VL, acc[i][v]);
    if (!whole) {
        for (i = 0; i < mv; i++)
            for (j = 0; j < nt; j++)
                c[i * ldc + j] = part[i * ldt + j];
    }
}

/* Every tile of rows [0, m) over one panel of B (kc, NV * VL): B stays in L1 while A's rows pass. */
static inline __attribute__((always_inline)) TARGET void SG_PANEL(
    const int MR, const int NV, Py_ssize_t m, Py_ssize_t nt, Py_ssize_t kc,
    const float *a, Py_ssize_t ars, Py_ssize_t acs, const float *b, Py_ssize_t ldb,
    float *c, Py_ssize_t ldc, int init, const float *bias)
{
    Py_ssize_t i0;
    for (i0 = 0; i0 < m; i0 += MR)
        SG_TILE(MR, NV, m - i0 < MR ? m - i0 : MR, nt, kc, a + i0 * ars, ars, acs, b, ldb,
                c + i0 * ldc, ldc, init, bias ? bias + i0 : bias);
}

static TARGET void SG_GEMM(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                           const float *a, Py_ssize_t ars, Py_ssize_t acs,
                           const float *b, Py_ssize_t ldb, float *c, Py_ssize_t ldc,
                           int init, const float *bias)
{
    float pad[SGEMM_KC * 3 * VL];
    Py_ssize_t p0, j0, kc, nt, nv, p, j, ldp;
    const float *panel;
    for (p0 = 0; p0 < k; p0 += SGEMM_KC) {
        kc = k - p0 < SGEMM_KC ? k - p0 : SGEMM_KC;
        for (j0 = 0; j0 < n; j0 += 3 * VL) {
            nt = n - j0 < 3 * VL ? n - j0 : 3 * VL;
            nv = (nt + VL - 1) / VL;
            panel = b + p0 * ldb + j0;
            ldp = ldb;
            if (nt < nv * VL) {  /* the right edge: a zero-padded copy, so tiles read whole vectors */
                ldp = nv * VL;
                for (p = 0; p < kc; p++)
                    for (j = 0; j < ldp; j++)
                        pad[p * ldp + j] = j < nt ? panel[p * ldb + j] : 0.0f;
                panel = pad;
            }
            if (nv == 3)
                SG_PANEL(MR3, 3, m, nt, kc, a + p0 * acs, ars, acs, panel, ldp, c + j0, ldc,
                         p0 ? SGEMM_ACCUMULATE : init, bias);
            else if (nv == 2)
                SG_PANEL(MR2, 2, m, nt, kc, a + p0 * acs, ars, acs, panel, ldp, c + j0, ldc,
                         p0 ? SGEMM_ACCUMULATE : init, bias);
            else
                SG_PANEL(MR1, 1, m, nt, kc, a + p0 * acs, ars, acs, panel, ldp, c + j0, ldc,
                         p0 ? SGEMM_ACCUMULATE : init, bias);
        }
    }
}

#undef SG_TILE
#undef SG_PANEL
#undef SG_GEMM
#undef ISA
#undef TARGET
#undef VEC
#undef VL
#undef LOADU
#undef STOREU
#undef SET1
#undef ZERO
#undef FMA
#undef MR1
#undef MR2
#undef MR3
