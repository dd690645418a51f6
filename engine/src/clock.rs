//! Milliseconds for timings. `std::time::Instant` panics on wasm32-unknown-unknown, so there the
//! host (the extension, with `performance.now()`) registers a clock; without one timings read 0.

use std::sync::OnceLock;

static HOST_CLOCK: OnceLock<fn() -> f64> = OnceLock::new();

/// Lets a host without `Instant` provide a monotonic millisecond clock. First registration wins.
pub fn set_host_clock(now_ms: fn() -> f64) {
    let _ = HOST_CLOCK.set(now_ms);
}

pub fn now_ms() -> f64 {
    if let Some(f) = HOST_CLOCK.get() {
        return f();
    }
    native_now_ms()
}

#[cfg(not(target_arch = "wasm32"))]
fn native_now_ms() -> f64 {
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed().as_secs_f64() * 1e3
}

#[cfg(target_arch = "wasm32")]
fn native_now_ms() -> f64 {
    0.0
}
