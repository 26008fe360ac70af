//! The host's own figures (CPU, memory, swap, load, disks, network, and selfmon's own process), sampled on an
//! interval, shown at `/metrics` and on the live dashboard, and stored as metrics like any other.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sysinfo::{Disks, Networks, Pid, ProcessRefreshKind, ProcessesToUpdate, System};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::events::{Events, Payload};
use crate::ops::telemetry::Telemetry;
use crate::storage::{Sample, Storage};

/// Reads the system's figures; keeps the state that CPU usage and counters need between samples.
pub struct Collector {
    system: System,
    disks: Disks,
    networks: Networks,
    pid: Option<Pid>,
}

impl Collector {
    pub fn new() -> Result<Self, sysinfo::Error> {
        let mut system = System::new()?;
        // CPU usage is a difference between two readings: take the first now.
        system.refresh_cpu_usage();
        Ok(Self {
            system,
            disks: Disks::new_with_refreshed_list()?,
            networks: Networks::new_with_refreshed_list()?,
            pid: sysinfo::get_current_pid().ok(),
        })
    }

    /// One reading of everything. Blocking (it reads /proc): call it off the async threads.
    pub fn sample(&mut self) -> Vec<Sample> {
        let time = SystemTime::now();
        let mut out = Vec::new();
        let mut push = |name: &str, value: f64, labels: &[(&str, &str)]| {
            if value.is_finite() {
                let mut labels: Vec<(String, String)> =
                    labels.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect();
                labels.sort();
                out.push(Sample { name: name.to_string(), labels, time, value });
            }
        };

        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        push("system_cpu_usage_ratio", f64::from(self.system.global_cpu_usage()) / 100.0, &[]);
        push("system_cpus", self.system.cpus().len() as f64, &[]);
        let (used, total) = (self.system.used_memory() as f64, self.system.total_memory() as f64);
        push("system_memory_used_bytes", used, &[]);
        push("system_memory_total_bytes", total, &[]);
        push("system_memory_used_ratio", used / total, &[]);
        push("system_swap_used_bytes", self.system.used_swap() as f64, &[]);
        push("system_swap_total_bytes", self.system.total_swap() as f64, &[]);
        if let Ok(load) = System::load_average() {
            push("system_load1", load.one, &[]);
            push("system_load5", load.five, &[]);
            push("system_load15", load.fifteen, &[]);
        }

        self.disks.refresh(true);
        for disk in self.disks.iter() {
            let mount = disk.mount_point().to_string_lossy();
            if let Some(usage) = DiskUsage::of(disk.mount_point()) {
                push("system_disk_used_bytes", usage.used, &[("mount", &mount)]);
                push("system_disk_total_bytes", usage.total, &[("mount", &mount)]);
                push("system_disk_used_ratio", usage.ratio(), &[("mount", &mount)]);
            }
        }

        self.networks.refresh(true);
        for (interface, data) in &self.networks {
            let interface = &*interface.to_string_lossy();
            push("system_network_received_bytes_total", data.total_received() as f64, &[("interface", interface)]);
            push(
                "system_network_transmitted_bytes_total",
                data.total_transmitted() as f64,
                &[("interface", interface)],
            );
        }

        if let Some(pid) = self.pid {
            self.system.refresh_processes_specifics(
                ProcessesToUpdate::Some(&[pid]),
                false,
                ProcessRefreshKind::nothing().with_memory().with_cpu(),
            );
            if let Some(process) = self.system.process(pid) {
                push("selfmon_process_resident_memory_bytes", process.memory() as f64, &[]);
                // sysinfo counts 100% per CPU; the ratio is of the whole machine, like system_cpu_usage_ratio.
                let cpus = self.system.cpus().len().max(1) as f64;
                push("selfmon_process_cpu_usage_ratio", f64::from(process.cpu_usage()) / 100.0 / cpus, &[]);
            }
        }
        out
    }
}

/// The minimum interval: CPU usage needs time between readings to mean anything.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// What a system metric means, for the `HELP` line of `/metrics`.
pub fn describe(name: &str) -> &'static str {
    match name {
        "system_cpu_usage_ratio" => "Share of all CPUs busy since the previous sample (0 to 1).",
        "system_cpus" => "Logical CPUs.",
        "system_memory_used_bytes" => "Memory in use.",
        "system_memory_total_bytes" => "Memory installed.",
        "system_memory_used_ratio" => "Share of memory in use (0 to 1).",
        "system_swap_used_bytes" => "Swap in use.",
        "system_swap_total_bytes" => "Swap configured.",
        "system_load1" => "Load average over 1 minute.",
        "system_load5" => "Load average over 5 minutes.",
        "system_load15" => "Load average over 15 minutes.",
        "system_disk_used_bytes" => "Space used on the file system at `mount`.",
        "system_disk_total_bytes" => "Size of the file system at `mount`.",
        "system_disk_used_ratio" => "Share of the file system at `mount` in use, as `df` shows it (0 to 1).",
        "system_network_received_bytes_total" => "Bytes received on `interface` since it came up.",
        "system_network_transmitted_bytes_total" => "Bytes sent on `interface` since it came up.",
        "selfmon_process_resident_memory_bytes" => "selfmon's resident memory.",
        "selfmon_process_cpu_usage_ratio" => {
            "CPU time selfmon used since the previous sample, in CPUs (0 to the CPU count)."
        }
        _ => "A system figure.",
    }
}

/// Sample on `interval` until `stop`: each sample goes to `/metrics`, the live dashboard and storage.
pub fn spawn(
    interval: Duration,
    storage: Storage,
    telemetry: Arc<Telemetry>,
    events: Events,
    tasks: &TaskTracker,
    stop: CancellationToken,
) {
    tasks.spawn(async move {
        let mut collector = match Collector::new() {
            Ok(collector) => collector,
            Err(error) => {
                tracing::error!(%error, "System collector unavailable");
                return;
            }
        };
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + MIN_INTERVAL, interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let Ok((back, samples)) = tokio::task::spawn_blocking(move || {
                let samples = collector.sample();
                (collector, samples)
            })
            .await
            else {
                return;
            };
            collector = back;
            telemetry.set_system(&samples, describe);
            events.publish(Payload::SystemSampled(samples.clone().into()));
            if storage.write_samples(samples).await.is_err() {
                return;
            }
        }
    });
}

/// A file system's space as `df` counts it: used is what is not free, and the share in use is of what its users
/// may have (used and available), not of its size, since blocks reserved for root are neither.
#[derive(Debug, Clone, Copy, PartialEq)]
struct DiskUsage {
    used: f64,
    available: f64,
    total: f64,
}

impl DiskUsage {
    fn of(mount: &std::path::Path) -> Option<Self> {
        let stats = rustix::fs::statvfs(mount).ok()?;
        let unit = stats.f_frsize as f64;
        let usage = Self {
            used: stats.f_blocks.saturating_sub(stats.f_bfree) as f64 * unit,
            available: stats.f_bavail as f64 * unit,
            total: stats.f_blocks as f64 * unit,
        };
        (usage.total > 0.0).then_some(usage)
    }

    fn ratio(&self) -> f64 {
        if self.used + self.available > 0.0 { self.used / (self.used + self.available) } else { 0.0 }
    }
}

#[cfg(test)]
mod tests {
    use super::DiskUsage;

    /// `df`'s own figures for the file system at `/`: used and available 1K-blocks, and the share in use.
    fn df() -> (f64, f64, f64) {
        let output = std::process::Command::new("df").args(["-P", "-k", "/"]).output().expect("df runs");
        let text = String::from_utf8(output.stdout).unwrap();
        let fields: Vec<&str> = text.lines().nth(1).unwrap().split_whitespace().collect();
        let number = |i: usize| fields[i].trim_end_matches('%').parse::<f64>().unwrap();
        (number(2) * 1024.0, number(3) * 1024.0, number(4))
    }

    #[test]
    fn disk_use_is_what_df_shows() {
        let (used, available, percent) = df();
        let usage = DiskUsage::of(std::path::Path::new("/")).unwrap();
        // The disk may change between the two readings by a little; df rounds its percentage up.
        let close = |a: f64, b: f64| (a - b).abs() <= 64.0 * 1024.0 * 1024.0;
        assert!(close(usage.used, used) && close(usage.available, available), "{usage:?} vs df {used} {available}");
        let ours = usage.ratio() * 100.0;
        assert!(ours <= percent && percent - ours < 1.5, "{ours:.2} % vs df's {percent} %");
    }
}
