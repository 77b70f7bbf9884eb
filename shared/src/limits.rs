//! Process limits raised at start: the open-files soft limit goes up to the hard limit, since
//! every agent connection (control plane) and every probe (agent) holds a descriptor.

/// Raises the soft open-files limit to the hard limit; returns the limit now in force.
pub fn raise_open_files() -> std::io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}
