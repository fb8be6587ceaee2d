//! Facts about this process read from /proc, for self-telemetry and the memory limiter.

/// Resident set size of this process in bytes, from /proc/self/statm.
pub fn resident_memory_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let resident_pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(resident_pages * page_size())
}

/// User plus system CPU time of this process in seconds, from /proc/self/stat.
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may contain spaces; the fields we need come after its closing parenthesis.
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the full line, 12 and 13 after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks_per_second())
}

/// Total memory of the machine, or the cgroup memory limit when one is set, in bytes.
/// Used by memory_limiter's `limit_percentage`.
pub fn memory_limit_bytes() -> Option<u64> {
    let cgroup_v2 = std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok();
    let cgroup_v1 = || std::fs::read_to_string("/sys/fs/cgroup/memory/memory.limit_in_bytes").ok();
    let from_cgroup = cgroup_v2
        .or_else(cgroup_v1)
        .and_then(|text| text.trim().parse::<u64>().ok());
    let total = total_memory_bytes();
    match (from_cgroup, total) {
        // cgroup v1 reports a huge number when unlimited; the machine total is the real bound then.
        (Some(limit), Some(total)) => Some(limit.min(total)),
        (Some(limit), None) => Some(limit),
        (None, total) => total,
    }
}

fn total_memory_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn page_size() -> u64 {
    // 4 KiB on every Linux platform we build for; /proc/self/smaps would be needed to be exact elsewhere.
    4096
}

fn clock_ticks_per_second() -> f64 {
    // USER_HZ is 100 on Linux regardless of the kernel's internal HZ.
    100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process_figures() {
        let rss = resident_memory_bytes().expect("statm readable");
        assert!(
            rss > 1024 * 1024,
            "a Rust test process has more than 1 MiB resident, got {rss}"
        );
        assert!(cpu_seconds().expect("stat readable") >= 0.0);
        assert!(memory_limit_bytes().expect("meminfo readable") > rss);
    }
}
