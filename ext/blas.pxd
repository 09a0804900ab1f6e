# BLAS from the scipy-openblas32 wheel, called without the GIL.
#
# detector/_ext/__init__.py imports scipy_openblas32 first, which loads the library
# into the global namespace, so these symbols resolve when our modules load.
from cython cimport floating

cdef extern from "cblas.h" nogil:
    enum CBLAS_ORDER:
        CblasRowMajor
    enum CBLAS_TRANSPOSE:
        CblasNoTrans
        CblasTrans
    void scipy_cblas_sgemm(CBLAS_ORDER order, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb,
                           int m, int n, int k, float alpha, const float *a, int lda,
                           const float *b, int ldb, float beta, float *c, int ldc)
    void scipy_cblas_dgemm(CBLAS_ORDER order, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb,
                           int m, int n, int k, double alpha, const double *a, int lda,
                           const double *b, int ldb, double beta, double *c, int ldc)


cdef inline void gemm(bint trans_a, bint trans_b, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                      const floating *a, Py_ssize_t lda, const floating *b, Py_ssize_t ldb,
                      floating beta, floating *c, Py_ssize_t ldc) noexcept nogil:
    """Row-major C (m, n) = op(A) (m, k) @ op(B) (k, n) + beta * C."""
    cdef CBLAS_TRANSPOSE ta = CblasTrans if trans_a else CblasNoTrans
    cdef CBLAS_TRANSPOSE tb = CblasTrans if trans_b else CblasNoTrans
    if m == 0 or n == 0:
        return
    if floating is float:
        scipy_cblas_sgemm(CblasRowMajor, ta, tb, <int>m, <int>n, <int>k, 1.0, a, <int>lda,
                          b, <int>ldb, beta, c, <int>ldc)
    else:
        scipy_cblas_dgemm(CblasRowMajor, ta, tb, <int>m, <int>n, <int>k, 1.0, a, <int>lda,
                          b, <int>ldb, beta, c, <int>ldc)
