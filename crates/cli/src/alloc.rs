//! The process-wide allocator of the `datamesh` binary. A library does not
//! choose it: the binaries do (this one, `datamesh-bench` and the
//! in-process 80-node test set the same one, so they measure what ships).
//!
//! Chunks and shards are multi-MiB buffers allocated and freed many times a
//! second. glibc cannot serve that well either way: with its defaults it
//! raises its mmap threshold as such buffers are freed, after which they
//! fragment per-thread arenas and a node's peak RSS grows with the data
//! moved (measured: 94 MB after a 64 MiB put, 120 MB after 1 GiB); with a
//! fixed low threshold every buffer is its own mapping, flat in memory but
//! faulted in and zeroed page by page on every use (a repair spent more
//! time in page faults than in Reed-Solomon). mimalloc keeps freed
//! segments for reuse and gives them back after a short delay: the repair
//! benchmark rebuilds about 1.6× faster than with the fixed threshold, and
//! a node's peak stays flat in file size (192 / 196 / 203 MB through 1, 3
//! and 6 GiB put and read back), at a higher floor than glibc's (~70 MB).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
