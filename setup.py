from setuptools import setup
from setuptools_rust import Binding, RustExtension

setup(
    rust_extensions=[
        RustExtension(
            "caio._native",
            path="rust/native/Cargo.toml",
            binding=Binding.NoBinding,
            py_limited_api=False,
            features=["pyo3-ffi/extension-module"],
            debug=False,
        )
    ],
)
