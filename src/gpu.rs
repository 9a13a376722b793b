//! GPU identity and telemetry through NVML, loaded at run time.
//!
//! During a measurement, a [`Sampler`] thread reads power, temperature, clocks,
//! utilization, memory and throttle reasons of the server's GPUs every
//! [`INTERVAL`] on the same monotonic clock as the requests, so throttling in a long
//! run lines up with the latencies it caused.
//!
//! `nvml-wrapper` dlopens `libnvidia-ml.so.1` in `Nvml::init`; on a machine without a
//! driver that fails and telemetry is recorded as unavailable, with the reason, while
//! everything else works. The handle is created once per process.

use std::sync::OnceLock;

use nvml_wrapper::Nvml;

use crate::records::{self, Available};

/// Time between two telemetry samples.
pub const INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

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
pub fn availability() -> Available<records::Nvml> {
    match nvml() {
        Ok(nvml) => Available::Yes(records::Nvml {
            driver: nvml.sys_driver_version().ok(),
            cuda: nvml.sys_cuda_driver_version().ok(),
            gpus: gpu_names(),
        }),
        Err(reason) => Available::No { reason: reason.clone() },
    }
}

/// Device memory in use on each of `gpus` (MiB), or nothing without NVML.
pub fn memory_used_mib(gpus: &[u32]) -> Vec<(u32, f64)> {
    let Ok(nvml) = nvml() else { return Vec::new() };
    gpus.iter().filter_map(|&i| Some((i, nvml.device_by_index(i).ok()?.memory_info().ok()?.used as f64 / 1048576.0))).collect()
}

/// One reading of one GPU (a row of the `telemetry` table).
pub use crate::records::TelemetryRow as Sample;

/// Samples GPUs on a thread of its own, on an absolute schedule, until stopped.
pub struct Sampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<Sample>>,
}

impl Sampler {
    /// Start sampling `gpus` (NVML indices) every `interval`; `Err` says why not
    /// (no driver, or a GPU NVML does not know).
    pub fn start(gpus: &[u32], interval: std::time::Duration) -> Result<Sampler, String> {
        let nvml = nvml().as_ref().map_err(Clone::clone)?;
        for &i in gpus {
            nvml.device_by_index(i).map_err(|e| format!("GPU {i}: {e}"))?;
        }
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (gpus, flag) = (gpus.to_vec(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("gpu-telemetry".into())
            .spawn(move || {
                let mut samples = Vec::new();
                let mut next = std::time::Instant::now();
                while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                    samples.extend(gpus.iter().filter_map(|&i| sample(nvml, i)));
                    next += interval;
                    // park_timeout may return early (spuriously, or when stopped).
                    while !flag.load(std::sync::atomic::Ordering::SeqCst) && std::time::Instant::now() < next {
                        std::thread::park_timeout(next.saturating_duration_since(std::time::Instant::now()));
                    }
                }
                samples.extend(gpus.iter().filter_map(|&i| sample(nvml, i)));
                samples
            })
            .map_err(|e| e.to_string())?;
        Ok(Sampler { stop, thread })
    }

    /// Stop (taking one last sample) and return every sample.
    pub fn stop(self) -> Vec<Sample> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.thread().unpark();
        self.thread.join().unwrap_or_default()
    }
}

fn sample(nvml: &Nvml, gpu: u32) -> Option<Sample> {
    use nvml_wrapper::enum_wrappers::device::{Clock, TemperatureSensor};
    let d = nvml.device_by_index(gpu).ok()?;
    Some(Sample {
        t_ns: crate::clock::monotonic_ns(),
        gpu,
        power_w: d.power_usage().ok().map(|mw| mw as f64 / 1000.0),
        temperature_c: d.temperature(TemperatureSensor::Gpu).ok(),
        sm_clock_mhz: d.clock_info(Clock::SM).ok(),
        mem_clock_mhz: d.clock_info(Clock::Memory).ok(),
        gpu_util_pct: d.utilization_rates().ok().map(|u| u.gpu),
        mem_used_mib: d.memory_info().ok().map(|m| m.used as f64 / 1048576.0),
        throttle: d.current_throttle_reasons().ok().map(|r| r.iter_names().map(|(name, _)| name).collect::<Vec<_>>().join("|")),
    })
}
