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

/* Picks the fastest copy this CPU runs; called once, at import. */
static void direct_select(void)
{
    direct_chunk = SIMD_PICK(direct_chunk);
    direct_isa = simd_names[simd_level()];
}

#endif
