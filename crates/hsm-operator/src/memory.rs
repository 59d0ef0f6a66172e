//! How the manager binary keeps glibc's allocator from holding on to memory it no longer
//! uses. The manager's work comes in bursts — a first sync, then a safety-net round every
//! `syncInterval` reconciling every HSMSecret — and each burst allocates and frees many
//! small objects (request bodies, cloned objects, desired Secrets). glibc gives freed memory
//! back to the system only from the top of an arena, so after a burst the free pages between
//! live objects stay resident: with 10 000 HSMSecrets, about 20 MiB of the process's RSS
//! (measured in docs/benchmarks.md). Every [`TRIM_INTERVAL`], `malloc_trim(0)` gives the
//! free pages inside every arena back (`madvise(MADV_DONTNEED)`), not only those at the top.
//!
//! The number of arenas is left at glibc's default: with the trim, two arenas
//! (`MALLOC_ARENA_MAX=2`) measured 14 MiB *more* than the default, the threads' short-lived
//! allocations then sharing pages with the caches'.
//!
//! Only the binary does this (`main`): the library leaves its host's allocator alone. On
//! other C libraries it is a no-op.

use std::time::Duration;

/// How often freed memory is handed back. A trim walks the arenas' free lists (about a
/// millisecond for the manager's heap at 10 000 HSMSecrets); shorter than the default
/// `syncInterval`, so a safety-net round's garbage does not stay resident until the next.
pub const TRIM_INTERVAL: Duration = Duration::from_secs(5);

/// Gives memory freed inside the arenas back to the system; the heap in use is not changed.
/// Returns whether any memory was released.
#[allow(unsafe_code)] // a libc call with an integer argument; no memory of ours is touched.
pub fn release_free_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes each arena's lock itself; it is safe from any thread.
    unsafe {
        libc::malloc_trim(0) == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    false
}
/// Runs [`release_free_memory`] every [`TRIM_INTERVAL`], forever (spawn it).
pub async fn release_free_memory_periodically() {
    let mut ticks = tokio::time::interval(TRIM_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let started = std::time::Instant::now();
        let released = release_free_memory();
        tracing::trace!(released, elapsed = ?started.elapsed(), "malloc_trim");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Freed pages in the middle of the heap are handed back: RSS falls after a trim
    /// although the allocations around the freed ones stay.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn a_trim_gives_back_pages_freed_between_live_allocations() {
        fn rss_kib() -> u64 {
            std::fs::read_to_string("/proc/self/status")
                .unwrap()
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap()
        }
        // 64 MiB in 4 KiB blocks (below the mmap threshold: they live in an arena), every
        // 64th kept so that the freed ones cannot be trimmed from the top alone.
        let mut blocks: Vec<Vec<u8>> = (0..16_384).map(|_| vec![1u8; 4096]).collect();
        let kept: Vec<Vec<u8>> = blocks.iter_mut().step_by(64).map(std::mem::take).collect();
        drop(blocks);
        let before = rss_kib();
        release_free_memory();
        let after = rss_kib();
        assert!(
            before.saturating_sub(after) > 32 * 1024,
            "RSS {before} KiB before the trim, {after} KiB after"
        );
        assert!(kept.iter().all(|b| b.iter().all(|&x| x == 1)));
    }
}
