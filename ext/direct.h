/* The direct convolution kernel (direct_body.h), built for each instruction set by simd.h,
 * and the copy this CPU runs, picked at import. */
#ifndef DETECTOR_DIRECT_H
#define DETECTOR_DIRECT_H

/* floats of one padded input row for OWu output columns of FW-wide filters: room for whole
 * register blocks (of at most 64 columns) and the vectors they read past them */
#define DIRECT_ROW_FLOATS(OWu, FW) ((((OWu) + 63) / 64) * 64 + (FW) - 1 + 64)

#define SIMD_BODY "direct_body.h"
#include "simd.h"

typedef void (*direct_chunk_fn)(const float *, Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                Py_ssize_t, const float *, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                const float *, int, int, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                float *, Py_ssize_t, Py_ssize_t, float *);

static direct_chunk_fn direct_chunk = direct_chunk_base;
static const char *direct_isa = "baseline";
static int direct_vw = 4;  /* floats of a vector in the copy it runs */

/* Picks the fastest copy this CPU runs; called once, at import. */
static void direct_select(void)
{
    static const int widths[] = {4, 8, 16};
    direct_chunk = SIMD_PICK(direct_chunk);
    direct_isa = simd_names[simd_level()];
    direct_vw = widths[SIMD_MULTIVERSION ? simd_level() : 0];
}

/* Output rows of one unit of a chunk: q (1, or 2 with the pool), or 2 for unpooled rows no
 * wider than two vectors, which run in pairs (direct_body.h). */
static Py_ssize_t direct_unit_rows(int q, Py_ssize_t OWu)
{
    return q == 1 && OWu <= 2 * direct_vw ? 2 : q;
}

#endif
