//! What `/proc` says of a process: its start time, group and state, and every pid. The start
//! time is what makes a pid safe to signal: a reused pid has another.

/// Field `n` (1-based, as in proc(5)) of `/proc/<pid>/stat`.
pub(super) fn stat_field(pid: u32, n: usize) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; everything after its ')' splits cleanly.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace()
        .nth(n.checked_sub(3)?)
        .map(String::from)
}

/// When the process started, in clock ticks after boot; `None` if there is no such process.
pub fn process_start_time(pid: u32) -> Option<u64> {
    stat_field(pid, 22)?.parse().ok()
}

/// The process's group id.
pub fn process_group(pid: u32) -> Option<u32> {
    stat_field(pid, 5)?.parse().ok()
}

/// Whether `pid` is a live process: it exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    stat_field(pid, 3).is_some_and(|state| state != "Z")
}

/// Every process's pid, from `/proc`.
pub fn all_pids() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .collect()
}
