//! GPU identity and telemetry through NVML, loaded at run time.
//!
//! `nvml-wrapper` dlopens `libnvidia-ml.so.1` in `Nvml::init`; on a machine without a
//! driver that fails and telemetry is recorded as unavailable, with the reason, while
//! everything else works. The handle is created once per process.

use std::sync::OnceLock;

use nvml_wrapper::Nvml;

fn nvml() -> &'static Result<Nvml, String> {
    static NVML: OnceLock<Result<Nvml, String>> = OnceLock::new();
    NVML.get_or_init(|| Nvml::init().map_err(|e| e.to_string()))
}

/// Names of the GPUs NVML reports, in index order.
pub fn gpu_names() -> Vec<String> {
    let Ok(nvml) = nvml() else { return Vec::new() };
    let n = nvml.device_count().unwrap_or(0);
    (0..n).filter_map(|i| nvml.device_by_index(i).ok()?.name().ok()).collect()
}

/// What a measurement ran on: enters measure keys, so other hardware re-measures.
pub fn hardware_identity() -> String {
    let gpus = gpu_names();
    if gpus.is_empty() {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| s.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).map(|s| s.trim().to_string()));
        format!("cpu: {}", cpu.unwrap_or_else(|| std::env::consts::ARCH.into()))
    } else {
        format!("gpu: {}", gpus.join(", "))
    }
}

/// Whether telemetry can be sampled here, and if not, why.
pub fn availability() -> serde_json::Value {
    match nvml() {
        Ok(nvml) => serde_json::json!({
            "available": true,
            "driver": nvml.sys_driver_version().ok(),
            "cuda": nvml.sys_cuda_driver_version().ok(),
            "gpus": gpu_names(),
        }),
        Err(reason) => serde_json::json!({"available": false, "reason": reason}),
    }
}
