//! Process-wide allocator settings shared by the `datamesh` binary and the
//! benchmarks (so both measure the same allocator behaviour).

/// Keeps peak memory flat in file size. Chunks and shards are multi-MiB
/// buffers; by default glibc raises its mmap threshold each time such a
/// buffer is freed, after which they come from per-thread arenas, fragment
/// them, and a node's peak RSS grows with the data moved (measured: 94 MB
/// after a 64 MiB put, 120 MB after 1 GiB). A fixed 256 KiB threshold keeps
/// every large buffer in its own mapping, returned to the OS on free: flat
/// (68 → 71 MB). The price is a page fault per page of every fresh buffer:
/// a middle setting (5 MiB threshold, one arena) put 2 GiB 3× faster but let
/// the node's peak grow by 18.6 MB from a 64 MiB put to a 2 GiB put. Reusing
/// buffers in the pipeline is the fix that gets both.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn tune_allocator() {
    // SAFETY: mallopt only sets allocator parameters; called once at start,
    // before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}

/// Elsewhere the platform allocator's defaults stand.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune_allocator() {}
