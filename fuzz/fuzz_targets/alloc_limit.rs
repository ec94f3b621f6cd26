//! A cap on any single allocation while fuzzing. Without it, whether a multi-gigabyte request from a
//! lying length field fails depends on how much address space the process happens to use, so the same
//! input would crash in one run and pass in the next; with it the failure is the same every time.

use std::alloc::{GlobalAlloc, Layout, System};

/// The largest single allocation a target may make: far above what a sane input of a few kilobytes
/// needs, below the 2 GiB resident limit the fuzz script sets.
const MAX_ALLOCATION: usize = 1 << 30;

struct Capped;

// SAFETY: every call is forwarded unchanged to the system allocator, except requests over the cap,
// which get null: the documented way to report a failed allocation (Rust then aborts, or returns the
// error from `try_reserve`).
unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match layout.size() > MAX_ALLOCATION {
            true => std::ptr::null_mut(),
            false => System.alloc(layout),
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match layout.size() > MAX_ALLOCATION {
            true => std::ptr::null_mut(),
            false => System.alloc_zeroed(layout),
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        match new_size > MAX_ALLOCATION {
            true => std::ptr::null_mut(),
            false => System.realloc(ptr, layout, new_size),
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: Capped = Capped;
