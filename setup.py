"""Builds the Cython kernels in ext/ into detector._ext.*, and the gRPC stubs of
protos/detector.proto into detector_server (project metadata: pyproject.toml).

OpenMP is used when the C compiler accepts -fopenmp (set DETECTOR_NO_OPENMP=1 to build
without it); without it the kernels run serially and give the same results.
"""
import importlib.util
import os
import subprocess
import sysconfig
import tempfile

import scipy_openblas32
from Cython.Build import cythonize
from setuptools import Extension, setup

MODULES = ["activations", "conv", "linear", "parallel", "pool"]

# Set once for the whole build: the Python layer checks every shape before a kernel runs.
DIRECTIVES = {
    "language_level": 3,
    "boundscheck": False,
    "wraparound": False,
    "cdivision": True,
    "initializedcheck": False,
}


def openmp_flags():
    """["-fopenmp"] when the compiler builds and links an OpenMP program, else []."""
    if os.environ.get("DETECTOR_NO_OPENMP"):
        return []
    compiler = (sysconfig.get_config_var("CC") or "cc").split()
    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(tmp, "probe.c")
        with open(source, "w") as f:
            f.write("#include <omp.h>\nint main(void) { return omp_get_max_threads() < 1; }\n")
        probe = subprocess.run(
            [*compiler, "-fopenmp", source, "-o", os.path.join(tmp, "probe")],
            capture_output=True,
        )
    if probe.returncode != 0:
        print("detector: the C compiler has no OpenMP; building serial kernels")
        return []
    return ["-fopenmp"]


def generate_stubs():
    """The gRPC stubs, generated here so that they always match protos/detector.proto."""
    spec = importlib.util.spec_from_file_location("protoc", "server/detector_server/protoc.py")
    protoc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(protoc)
    protoc.generate("protos", "server/detector_server")


generate_stubs()
omp = openmp_flags()
extensions = [
    Extension(
        f"detector._ext.{name}",
        [f"ext/{name}.pyx"],
        include_dirs=[scipy_openblas32.get_include_dir(), "ext"],  # ext/*.h
        extra_compile_args=["-O3", *omp],
        extra_link_args=omp,
    )
    for name in MODULES
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives=DIRECTIVES,
        include_path=["ext"],
        build_dir="build/cython",
    )
)
