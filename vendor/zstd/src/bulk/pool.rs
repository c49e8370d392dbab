//! trailwatch patch: contexts of bulk compressors and decompressors are kept per thread and
//! reused, instead of created for every `Compressor::new` / `Decompressor::new`.
//!
//! arrow-rs's Parquet codec builds one compressor and one decompressor for every column chunk it
//! reads or writes. Creating a zstd context runs the `cpuid` instruction three times, and in a
//! virtual machine (Firecracker under Lambda, or a CI runner) every `cpuid` traps to the
//! hypervisor: over half of the time of reading a lake of small files went there. A pooled
//! context is reset (session and parameters, which drops any dictionary) before reuse.
//!
//! Idle contexts are bounded per thread by count and by bytes (`ZSTD_sizeof_*CCtx`): one that
//! would exceed the budget is freed as before.

use std::cell::RefCell;

const MAX_IDLE: usize = 256;
const MAX_IDLE_BYTES: usize = 8 << 20;

struct Idle<T> {
    items: Vec<(T, usize)>,
    bytes: usize,
}

impl<T> Idle<T> {
    const fn new() -> Self {
        Idle { items: Vec::new(), bytes: 0 }
    }

    fn take(&mut self) -> Option<T> {
        let (item, size) = self.items.pop()?;
        self.bytes -= size;
        Some(item)
    }

    fn give(&mut self, item: T, size: usize) {
        if self.items.len() < MAX_IDLE && self.bytes + size <= MAX_IDLE_BYTES {
            self.bytes += size;
            self.items.push((item, size));
        }
    }
}

thread_local! {
    static CCTX: RefCell<Idle<zstd_safe::CCtx<'static>>> = const { RefCell::new(Idle::new()) };
    static DCTX: RefCell<Idle<zstd_safe::DCtx<'static>>> = const { RefCell::new(Idle::new()) };
}

/// A compression context: an idle one of this thread, else a new one.
pub(crate) fn cctx() -> zstd_safe::CCtx<'static> {
    CCTX.try_with(|p| p.borrow_mut().take()).ok().flatten().unwrap_or_default()
}

/// A decompression context: an idle one of this thread, else a new one.
pub(crate) fn dctx() -> zstd_safe::DCtx<'static> {
    DCTX.try_with(|p| p.borrow_mut().take()).ok().flatten().unwrap_or_default()
}

/// Resets a context and keeps it for reuse (or frees it when the pool is full).
pub(crate) fn give_cctx<'a>(mut ctx: zstd_safe::CCtx<'a>) {
    if ctx.reset(zstd_safe::ResetDirective::SessionAndParameters).is_err() {
        return;
    }
    let size = ctx.sizeof();
    // SAFETY: the lifetime only ties the context to a dictionary it references; resetting the
    // parameters dropped any dictionary, so the context borrows nothing any more.
    let ctx: zstd_safe::CCtx<'static> = unsafe { std::mem::transmute(ctx) };
    let _ = CCTX.try_with(|p| p.borrow_mut().give(ctx, size));
}

/// Resets a context and keeps it for reuse (or frees it when the pool is full).
pub(crate) fn give_dctx<'a>(mut ctx: zstd_safe::DCtx<'a>) {
    if ctx.reset(zstd_safe::ResetDirective::SessionAndParameters).is_err() {
        return;
    }
    let size = ctx.sizeof();
    // SAFETY: as for `give_cctx`: no dictionary is referenced after the reset.
    let ctx: zstd_safe::DCtx<'static> = unsafe { std::mem::transmute(ctx) };
    let _ = DCTX.try_with(|p| p.borrow_mut().give(ctx, size));
}
