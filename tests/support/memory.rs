//! The test process's own memory use (Linux `/proc/self/status`). The proxy
//! under test runs in-process, so this bounds what it holds on to.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// Resident set size of this process in bytes (`VmRSS`).
pub fn rss_bytes() -> u64 {
    status_kib("VmRSS:") * 1024
}

/// Peak resident set size of this process so far in bytes (`VmHWM`).
pub fn peak_rss_bytes() -> u64 {
    status_kib("VmHWM:") * 1024
}

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

/// Samples `VmRSS` every few milliseconds on a plain thread (independent of
/// the async runtime under load) and keeps the highest value seen, so a
/// transient spike counts even if the allocator returns the memory later.
pub struct RssSampler {
    baseline: u64,
    max: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RssSampler {
    pub fn start() -> Self {
        let baseline = rss_bytes();
        let max = Arc::new(AtomicU64::new(baseline));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (max, stop) = (max.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    max.fetch_max(rss_bytes(), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        Self {
            baseline,
            max,
            stop,
            thread: Some(thread),
        }
    }

    /// RSS when sampling started, in bytes.
    pub fn baseline(&self) -> u64 {
        self.baseline
    }

    /// Stops sampling; returns how far RSS rose above the baseline at its
    /// highest, in bytes.
    pub fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.max
            .load(Ordering::Relaxed)
            .max(rss_bytes())
            .saturating_sub(self.baseline)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
