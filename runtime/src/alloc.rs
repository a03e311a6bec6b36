//! The global allocator both binaries use: dlmalloc behind a lock the
//! compiler can inline, with the small blocks freed last kept for reuse.
//!
//! Why dlmalloc and not musl's own malloc: with more than one thread,
//! musl's malloc let RSS climb without end under steady load, towards the
//! container's limit (tests/system/test_sustained_load.py); dlmalloc levels
//! off (results/ledger.md).
//!
//! Why not the dlmalloc crate's own `GlobalDlmalloc`: it takes a
//! `pthread_mutex` around every call, a call into libc that checks the
//! mutex's type and owner each time, and the services allocate and free a
//! few dozen blocks per request. A [`std::sync::Mutex`] is one atomic
//! operation to take and one to release when nobody waits (the common
//! case: one worker thread by default, and calls that last nanoseconds),
//! and the futex only when somebody does.
//!
//! Why free lists in front of it: most of those blocks are small, and a
//! request frees what the next one allocates. A block of at most 2 KiB
//! goes onto a list for its size class (16 bytes apart up to 512, then 128
//! apart: header maps and boxed request futures are 0.5 to 1.5 KiB, and
//! several are made per request), up to 32 per class, so at most 768 KiB
//! held in all; the next request of that class takes it back in a few
//! instructions, where dlmalloc would split, bin and coalesce chunks.
//! results/tuning.md has what each step saves.
//!
//! Page sizes: dlmalloc's Linux system allocator assumes 4 KiB pages,
//! while a Raspberry Pi 5's kernel (Raspberry Pi OS, 64-bit) uses 16 KiB
//! pages and other arm64 kernels 64 KiB. What keeps that harmless is the
//! granularity: dlmalloc maps, trims and unmaps memory only in whole
//! multiples of it, so with [`GRANULARITY`] a multiple of every arm64 page
//! size each of those calls covers whole pages on any of these kernels.
//! (Its 4 KiB figure rounds only blocks mapped on their own, which
//! dlmalloc 0.2 never makes: every mapping is a segment of granules.)
//! It is set here rather than left to the crate's default, which could
//! change. tests/system/test_artifacts.py runs the arm64 binaries under
//! qemu-user with 16 KiB pages.
//!
//! The binaries do not fork, so there is no `pthread_atfork` dance; and
//! dlmalloc's size checks on free (`Dlmalloc::free`) are skipped by using
//! its layout-free `c_*` entry points, since the standard library's layouts
//! are what those checks would verify.

// The one place the project implements an unsafe trait: `GlobalAlloc` is
// unsafe by definition, and dlmalloc's entry points are unsafe because they
// trust the pointers and layouts the standard library hands them.
#![allow(unsafe_code)]

use std::{
    alloc::{GlobalAlloc, Layout},
    ptr,
    sync::{Mutex, MutexGuard, PoisonError},
};

use dlmalloc::Dlmalloc;

/// `#[global_allocator] static ALLOCATOR: runtime::alloc::Allocator = runtime::alloc::Allocator;`
pub struct Allocator;

/// The alignment every dlmalloc block has (two words).
const NATURAL_ALIGN: usize = 2 * size_of::<usize>();
/// Small blocks are kept in size classes this many bytes apart...
const SMALL_CLASS_BYTES: usize = 16;
/// ...up to this size...
const SMALL_UP_TO: usize = 512;
const SMALL_CLASSES: usize = SMALL_UP_TO / SMALL_CLASS_BYTES;
/// ...then in classes this many bytes apart...
const LARGE_CLASS_BYTES: usize = 128;
/// ...up to this size; larger ones always go back to dlmalloc.
const CACHED_UP_TO: usize = 2048;
const CLASSES: usize = SMALL_CLASSES + (CACHED_UP_TO - SMALL_UP_TO) / LARGE_CLASS_BYTES;
/// Freed blocks kept per class: at most 768 KiB in all (the sum of the
/// class sizes, 24 KiB, this many times), whatever the load.
const BLOCKS_PER_CLASS: usize = 32;

/// How much dlmalloc asks the kernel for at a time, and the unit it gives
/// memory back in: a multiple of the largest arm64 page (64 KiB), so every
/// mapping is whole pages whatever the kernel's page size (see above).
const GRANULARITY: usize = 64 * 1024;

/// dlmalloc with [`GRANULARITY`]; refused values fail the build.
const fn dlmalloc() -> Dlmalloc {
    let mut dlmalloc = Dlmalloc::new();
    assert!(dlmalloc.set_granularity(GRANULARITY));
    dlmalloc
}

/// The heap: dlmalloc, and in front of it the small blocks freed last, by
/// size class, handed out again without a trip through dlmalloc's bins
/// (a request frees and allocates the same few dozen small blocks; this
/// is the same idea as glibc's fast bins and tcache, but one cache for
/// all threads, under the heap's lock, so memory freed on one thread is
/// reused on any other and the total held is bounded).
struct Heap {
    dlmalloc: Dlmalloc,
    free: [FreeList; CLASSES],
}

/// Freed blocks of one size class, linked through their first word.
#[derive(Clone, Copy)]
struct FreeList {
    head: *mut u8,
    len: usize,
}

// SAFETY: `Dlmalloc` and the free lists hold raw pointers into memory
// dlmalloc mapped itself and owns; nothing ties them to a thread. Every
// access goes through `HEAP`'s mutex, so it is used by one thread at a
// time.
unsafe impl Send for Heap {}

static HEAP: Mutex<Heap> = Mutex::new(Heap {
    dlmalloc: dlmalloc(),
    free: [FreeList {
        head: ptr::null_mut(),
        len: 0,
    }; CLASSES],
});

/// The heap, locked. A panic cannot happen while it is held (dlmalloc does
/// not panic, and the binaries abort on panic), so poisoning means nothing.
#[inline]
fn heap() -> MutexGuard<'static, Heap> {
    HEAP.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The size class of blocks of `layout`, if they are cached. Every block
/// of a class is allocated with the class's whole size, so any block in
/// a class's list fits any request of that class.
#[inline]
fn class_of(size: usize, align: usize) -> Option<usize> {
    if size == 0 || size > CACHED_UP_TO || align > NATURAL_ALIGN {
        return None;
    }
    Some(if size <= SMALL_UP_TO {
        (size - 1) / SMALL_CLASS_BYTES
    } else {
        SMALL_CLASSES + (size - SMALL_UP_TO - 1) / LARGE_CLASS_BYTES
    })
}

#[inline]
fn class_size(class: usize) -> usize {
    if class < SMALL_CLASSES {
        (class + 1) * SMALL_CLASS_BYTES
    } else {
        SMALL_UP_TO + (class + 1 - SMALL_CLASSES) * LARGE_CLASS_BYTES
    }
}

impl Heap {
    /// # Safety
    /// As [`GlobalAlloc::alloc`].
    #[inline]
    unsafe fn alloc(&mut self, layout: Layout) -> *mut u8 {
        let Some(class) = class_of(layout.size(), layout.align()) else {
            return unsafe { self.dlmalloc.c_memalign(layout.align(), layout.size()) };
        };
        let list = &mut self.free[class];
        if list.head.is_null() {
            return unsafe { self.dlmalloc.c_malloc(class_size(class)) };
        }
        let block = list.head;
        // SAFETY: a listed block is a free block of at least one word,
        // aligned for a pointer, whose first word `dealloc` wrote.
        list.head = unsafe { block.cast::<*mut u8>().read() };
        list.len -= 1;
        block
    }

    /// # Safety
    /// As [`GlobalAlloc::dealloc`].
    #[inline]
    unsafe fn dealloc(&mut self, block: *mut u8, layout: Layout) {
        if let Some(class) = class_of(layout.size(), layout.align()) {
            let list = &mut self.free[class];
            if list.len < BLOCKS_PER_CLASS {
                // SAFETY: the block is ours again, at least 16 bytes and
                // aligned for a pointer.
                unsafe { block.cast::<*mut u8>().write(list.head) };
                list.head = block;
                list.len += 1;
                return;
            }
        }
        unsafe { self.dlmalloc.c_free(block) }
    }
}

// SAFETY: blocks come from dlmalloc, which hands out each at most once
// until it is freed, with its natural alignment or `c_memalign`'s; a block
// in a free list is one the program freed and is handed out again only
// once, to a request of its class, which it fits (see `class_of`). The
// heap is only touched under its lock.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { heap().alloc(layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { heap().dealloc(ptr, layout) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let block = unsafe { heap().alloc(layout) };
        if !block.is_null() {
            // SAFETY: the block holds at least `layout.size()` bytes.
            unsafe { block.write_bytes(0, layout.size()) };
        }
        block
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old_class = class_of(layout.size(), layout.align());
        let new_class = class_of(new_size, layout.align());
        if old_class.is_some() && old_class == new_class {
            // The block already holds its class's whole size.
            return ptr;
        }
        if old_class.is_none() && new_class.is_none() && layout.align() <= NATURAL_ALIGN {
            // Large to large: dlmalloc may grow the block where it is.
            return unsafe { heap().dlmalloc.c_realloc(ptr, new_size) };
        }
        // SAFETY: `GlobalAlloc::realloc` promises a valid layout for
        // `new_size` with the old alignment.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // One lock for the whole move: the copy is at most a few hundred
        // bytes (one side is a small block).
        let mut heap = heap();
        let block = unsafe { heap.alloc(new_layout) };
        if !block.is_null() {
            unsafe {
                ptr::copy_nonoverlapping(ptr, block, layout.size().min(new_size));
                heap.dealloc(ptr, layout);
            }
        }
        block
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fills `size` bytes at `ptr` with `byte`.
    unsafe fn fill(ptr: *mut u8, size: usize, byte: u8) {
        unsafe { ptr.write_bytes(byte, size) }
    }

    unsafe fn holds(ptr: *mut u8, size: usize, byte: u8) -> bool {
        unsafe {
            std::slice::from_raw_parts(ptr, size)
                .iter()
                .all(|&b| b == byte)
        }
    }

    /// The allocator hands out aligned, writable, distinct memory that
    /// keeps its contents through growth and shrinking, across size
    /// classes and to and from large blocks, from several threads at once
    /// (and so through the free lists, which the rounds keep refilling).
    #[test]
    fn allocates_aligns_and_reallocates_from_many_threads() {
        let threads: Vec<_> = (0..4u8)
            .map(|seed| {
                std::thread::spawn(move || {
                    let mut kept = Vec::new();
                    for round in 0..3_000usize {
                        for align in [1usize, 8, 16, 64, 4096] {
                            let size = 1 + (round * 37 + seed as usize) % 1100;
                            let layout = Layout::from_size_align(size, align).unwrap();
                            unsafe {
                                let ptr = Allocator.alloc(layout);
                                assert!(!ptr.is_null());
                                assert_eq!(ptr as usize % align, 0);
                                fill(ptr, size, seed);
                                let grown = Allocator.realloc(ptr, layout, size * 3);
                                assert!(!grown.is_null());
                                assert_eq!(grown as usize % align, 0);
                                assert!(holds(grown, size, seed));
                                fill(grown, size * 3, seed ^ 0xff);
                                let grown_layout =
                                    Layout::from_size_align(size * 3, align).unwrap();
                                let small = size / 4 + 1;
                                let shrunk = Allocator.realloc(grown, grown_layout, small);
                                assert_eq!(shrunk as usize % align, 0);
                                assert!(holds(shrunk, small, seed ^ 0xff));
                                let small_layout = Layout::from_size_align(small, align).unwrap();
                                if round % 3 == 0 {
                                    // Held a while: freed blocks must not
                                    // be handed out while these live.
                                    kept.push((shrunk, small_layout, seed ^ 0xff));
                                } else {
                                    Allocator.dealloc(shrunk, small_layout);
                                }
                                let zeroed = Allocator.alloc_zeroed(layout);
                                assert!(holds(zeroed, size, 0));
                                Allocator.dealloc(zeroed, layout);
                            }
                        }
                        if kept.len() > 200 {
                            for (ptr, layout, byte) in kept.drain(..) {
                                unsafe {
                                    assert!(holds(ptr, layout.size(), byte));
                                    Allocator.dealloc(ptr, layout);
                                }
                            }
                        }
                    }
                    for (ptr, layout, byte) in kept {
                        unsafe {
                            assert!(holds(ptr, layout.size(), byte));
                            Allocator.dealloc(ptr, layout);
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
    }

    #[test]
    fn small_blocks_are_classed_by_size_and_alignment() {
        assert_eq!(class_of(0, 1), None);
        assert_eq!(class_of(1, 1), Some(0));
        assert_eq!(class_of(16, 8), Some(0));
        assert_eq!(class_of(17, 8), Some(1));
        assert_eq!(class_of(CACHED_UP_TO, NATURAL_ALIGN), Some(CLASSES - 1));
        assert_eq!(class_of(CACHED_UP_TO + 1, 1), None);
        assert_eq!(class_of(16, NATURAL_ALIGN * 2), None);
        assert_eq!(class_of(SMALL_UP_TO + 1, 8), Some(SMALL_CLASSES));
        let mut held = 0;
        for class in 0..CLASSES {
            held += class_size(class) * BLOCKS_PER_CLASS;
        }
        assert_eq!(held, 768 * 1024, "the bound the documentation gives");
        for size in 1..=CACHED_UP_TO {
            let class = class_of(size, 1).unwrap();
            let step = if size <= SMALL_UP_TO {
                SMALL_CLASS_BYTES
            } else {
                LARGE_CLASS_BYTES
            };
            assert!(class_size(class) >= size && class_size(class) < size + step);
        }
    }

    /// A freed small block is what the next request of its class gets,
    /// and the lists never hold more than their bound.
    #[test]
    fn freed_small_blocks_are_reused_and_bounded() {
        let mut heap = Heap {
            dlmalloc: dlmalloc(),
            free: [FreeList {
                head: ptr::null_mut(),
                len: 0,
            }; CLASSES],
        };
        let layout = Layout::from_size_align(40, 8).unwrap();
        unsafe {
            let blocks: Vec<_> = (0..BLOCKS_PER_CLASS + 10)
                .map(|_| heap.alloc(layout))
                .collect();
            for &block in &blocks {
                heap.dealloc(block, layout);
            }
            assert_eq!(heap.free[class_of(40, 8).unwrap()].len, BLOCKS_PER_CLASS);
            let again = heap.alloc(Layout::from_size_align(33, 1).unwrap());
            assert!(blocks.contains(&again));
            heap.dealloc(again, layout);
        }
    }
}
