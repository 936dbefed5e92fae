"""Build: pip install --no-build-isolation extensions/kernels   (from the repository root, needs nvcc
and a CUDA build of torch). Installs the module `structured_kernels`, which src/ops/*/cuda.py
import when the `cuda` backend is asked for."""

from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CUDAExtension

setup(
    name="structured_kernels",
    version="0.1",
    ext_modules=[
        CUDAExtension(
            "structured_kernels",
            ["kernels.cpp", "vandermonde.cu", "cauchy.cu"],
            extra_compile_args={"cxx": ["-O3"], "nvcc": ["-O3", "-lineinfo"]},
        )
    ],
    cmdclass={"build_ext": BuildExtension},
)
