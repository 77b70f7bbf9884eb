//! Rebuilds the crate when a migration is added or changed: `sqlx::migrate!` embeds the
//! migrations at compile time but cannot tell cargo to watch their directories by itself.

fn main() {
    println!("cargo:rerun-if-changed=../migrations/control");
    println!("cargo:rerun-if-changed=../migrations/timeseries");
}
