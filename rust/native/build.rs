//! Turns the target interpreter's version into `Py_3_x` cfgs and refuses builds we do not support.

fn main() {
    let config = pyo3_build_config::get();
    if config.implementation != pyo3_build_config::PythonImplementation::CPython {
        panic!("caio's native backends need CPython; use caio.python_aio on other interpreters");
    }
    if config.version
        < (pyo3_build_config::PythonVersion {
            major: 3,
            minor: 10,
        })
    {
        panic!("caio needs Python 3.10 or newer, found {}", config.version);
    }
    if config.abi3 {
        panic!("caio's native module uses the full C-API; build without abi3");
    }
    for minor in 7..=15 {
        println!("cargo:rustc-check-cfg=cfg(Py_3_{minor})");
    }
    println!("cargo:rustc-check-cfg=cfg(Py_GIL_DISABLED)");
    pyo3_build_config::use_pyo3_cfgs();
}
