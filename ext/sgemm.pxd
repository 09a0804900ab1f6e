# Our own float32 GEMM (sgemm.h): the training convolutions' products, on AVX-512, AVX2
# or the baseline, chosen at run time.
cdef extern from "sgemm.h" nogil:
    int SGEMM_ZERO, SGEMM_ACCUMULATE, SGEMM_BIAS
    void sgemm(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const float *a, Py_ssize_t ars,
               Py_ssize_t acs, const float *b, Py_ssize_t ldb, float *c, Py_ssize_t ldc,
               int init, const float *bias)
    int sgemm_use_isa(int isa)
