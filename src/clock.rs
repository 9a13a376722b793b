//! The one clock of every recorded timestamp: CLOCK_MONOTONIC in nanoseconds, shared
//! by the client, the simulator and the GPU sampler (and any process on this machine),
//! so that their records line up.

use std::time::Instant;

/// CLOCK_MONOTONIC in nanoseconds: the clock of every recorded timestamp, shared by
/// the client and the simulator (and any process on this machine).
pub fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// An `Instant` on the [`monotonic_ns`] scale.
pub fn instant_to_ns(t: Instant) -> u64 {
    let (now, ns) = (Instant::now(), monotonic_ns());
    if t <= now { ns - (now - t).as_nanos() as u64 } else { ns + (t - now).as_nanos() as u64 }
}

/// A [`monotonic_ns`] time as nanoseconds since the Unix epoch (the wall clock's
/// reading then), for formats that want wall-clock times (OTLP spans).
pub fn unix_ns_of(t: u64) -> u64 {
    let (mono, wall) =
        (monotonic_ns(), std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos() as u64);
    (wall + t).saturating_sub(mono)
}
