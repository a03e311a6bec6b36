//! The global allocator both binaries use: dlmalloc behind a lock the
//! compiler can inline.
//!
//! Why dlmalloc and not musl's own malloc: with more than one thread,
//! musl's malloc let RSS climb without end under steady load, towards the
//! container's limit (tests/system/test_sustained_load.py); dlmalloc levels
//! off (results/ledger.md).
//!
//! Why not the dlmalloc crate's own `GlobalDlmalloc`: it takes a
//! `pthread_mutex` around every call, a call into libc that checks the
//! mutex's type and owner each time, and the services allocate and free a
//! few hundred times per request. A [`std::sync::Mutex`] is one atomic
//! operation to take and one to release when nobody waits (the common
//! case: one worker thread by default, and calls that last nanoseconds),
//! and the futex only when somebody does (results/tuning.md has the
//! instructions this saves).
//!
//! The binaries do not fork, so there is no `pthread_atfork` dance.

// The one place the project implements an unsafe trait: `GlobalAlloc` is
// unsafe by definition, and dlmalloc's entry points are unsafe because they
// trust the pointers and layouts the standard library hands them.
#![allow(unsafe_code)]

use std::{
    alloc::{GlobalAlloc, Layout},
    sync::{Mutex, MutexGuard, PoisonError},
};

use dlmalloc::Dlmalloc;

/// `#[global_allocator] static ALLOCATOR: ops::alloc::Allocator = ops::alloc::Allocator;`
pub struct Allocator;

/// The heap, which only ever hands out memory under its lock.
struct Heap(Dlmalloc);

// SAFETY: `Dlmalloc` holds raw pointers into memory it mapped itself and
// owns; nothing ties them to a thread. Every access goes through `HEAP`'s
// mutex, so it is used by one thread at a time.
unsafe impl Send for Heap {}

static HEAP: Mutex<Heap> = Mutex::new(Heap(Dlmalloc::new()));

/// The heap, locked. A panic cannot happen while it is held (dlmalloc does
/// not panic, and the binaries abort on panic), so poisoning means nothing.
#[inline]
fn heap() -> MutexGuard<'static, Heap> {
    HEAP.lock().unwrap_or_else(PoisonError::into_inner)
}

// SAFETY: each method passes the standard library's pointer and layout
// straight to the matching dlmalloc function, under the lock, which is
// what `dlmalloc::GlobalDlmalloc` does too.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { heap().0.malloc(layout.size(), layout.align()) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { heap().0.free(ptr, layout.size(), layout.align()) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        unsafe { heap().0.calloc(layout.size(), layout.align()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        unsafe {
            heap()
                .0
                .realloc(ptr, layout.size(), layout.align(), new_size)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The allocator hands out aligned, writable memory that keeps its
    /// contents through growth, from several threads at once.
    #[test]
    fn allocates_aligns_and_reallocates_from_many_threads() {
        let threads: Vec<_> = (0..4)
            .map(|seed| {
                std::thread::spawn(move || {
                    for round in 0..2_000usize {
                        for align in [1usize, 8, 16, 64, 4096] {
                            let size = 1 + (round * 37 + seed) % 700;
                            let layout = Layout::from_size_align(size, align).unwrap();
                            unsafe {
                                let ptr = Allocator.alloc(layout);
                                assert!(!ptr.is_null());
                                assert_eq!(ptr as usize % align, 0);
                                ptr.write_bytes(seed as u8, size);
                                let grown = Allocator.realloc(ptr, layout, size * 3);
                                assert!(!grown.is_null());
                                assert!(
                                    std::slice::from_raw_parts(grown, size)
                                        .iter()
                                        .all(|&byte| byte == seed as u8)
                                );
                                Allocator.dealloc(
                                    grown,
                                    Layout::from_size_align(size * 3, align).unwrap(),
                                );
                                let zeroed = Allocator.alloc_zeroed(layout);
                                assert!(
                                    std::slice::from_raw_parts(zeroed, size)
                                        .iter()
                                        .all(|&byte| byte == 0)
                                );
                                Allocator.dealloc(zeroed, layout);
                            }
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
    }
}
