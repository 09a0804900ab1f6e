"""What the build knows about OpenMP (it is optional: without it every kernel runs serially)."""

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    static int detector_openmp_enabled(void) { return 1; }
    static int detector_omp_max_threads(void) { return omp_get_max_threads(); }
    #else
    static int detector_openmp_enabled(void) { return 0; }
    static int detector_omp_max_threads(void) { return 1; }
    #endif
    """
    int detector_openmp_enabled()
    int detector_omp_max_threads()


def openmp_enabled():
    """True when the kernels were compiled with OpenMP."""
    return bool(detector_openmp_enabled())


def omp_max_threads():
    """OpenMP's default team size (1 without OpenMP)."""
    return detector_omp_max_threads()
