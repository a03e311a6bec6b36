//! Nothing is kept per departed gcd replica. In a cluster every rollout,
//! scale-down and node loss retires replica addresses for good, so
//! anything the api kept per address would grow without bound over the
//! pod's life.
//!
//! The api library runs in-process behind a counting allocator, which
//! sees the live heap exactly (RSS would mix it with the allocator's own
//! high-water mark). This file is its own test binary so that no other
//! test's allocations are counted.
#![allow(unsafe_code, clippy::unwrap_used, clippy::expect_used)]

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::{
        Arc,
        atomic::{AtomicIsize, Ordering::Relaxed},
    },
    time::Duration,
};

mod common;

use common::{InProcessApi, ScriptedResolver};
use testkit::{eventually, http::get, process::Service};

/// Replicas that come and go before the live heap is taken as the baseline:
/// lazily grown tables (timer wheel levels, connection lists) reach their
/// working size.
const WARM_UP: usize = 10;

/// Replicas that then come and go, each serving traffic before it leaves.
const DEPARTED: usize = 100;

/// What the live heap may grow by over all of them: about 40 bytes per
/// departed replica, so even keeping each one's address would fail; its
/// channel would cost kilobytes.
const ALLOWANCE: isize = 4 * 1024;

#[test]
fn departed_replicas_leave_nothing_on_the_heap() {
    let resolver = Arc::new(ScriptedResolver::default());
    let mut current = Service::gcd(None, &[]);
    resolver.answer(&[current.addr]);
    let api = InProcessApi::start(resolver.clone(), 10);

    // The replica in DNS is replaced by a new one on a new address; the
    // old one keeps running until the new one has taken traffic, then
    // exits, as a rolling update does.
    let mut replace = || {
        let next = Service::gcd(None, &[]);
        resolver.answer(&[next.addr]);
        eventually(
            "the new replica to take traffic",
            Duration::from_secs(10),
            || {
                let response = get(api.addr, "/gcd/12/18");
                assert_eq!(response.status, 200, "{response:?}");
                (next.metric("gcd_compute_requests_total") > 0).then_some(())
            },
        );
        let departing = std::mem::replace(&mut current, next);
        drop(departing);
    };

    for _ in 0..WARM_UP {
        replace();
    }
    // A connection still closing can be on the heap at any one moment;
    // the least of a few readings is what stays.
    let baseline = (0..5)
        .map(|_| live_heap_after_a_request(&api))
        .min()
        .unwrap();
    for _ in 0..DEPARTED {
        replace();
    }
    let grown = eventually(
        &format!("the live heap to come back within {ALLOWANCE} B of {baseline} B"),
        Duration::from_secs(10),
        || {
            let grown = live_heap_after_a_request(&api) - baseline;
            (grown <= ALLOWANCE).then_some(grown)
        },
    );
    eprintln!(
        "live heap: {baseline} B after {WARM_UP} replicas, {grown:+} B after {DEPARTED} more"
    );

    api.stop();
}

/// The live heap once a request has been answered: what the api holds
/// between requests, not what one request holds while it is served.
fn live_heap_after_a_request(api: &InProcessApi) -> isize {
    assert_eq!(get(api.addr, "/gcd/12/18").status, 200);
    LIVE_BYTES.load(Relaxed)
}

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

/// The system allocator, counting the bytes currently allocated.
struct Counting;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

// SAFETY: every call is passed unchanged to the system allocator; the
// counter only observes the sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Relaxed);
        // SAFETY: the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Relaxed);
        // SAFETY: the caller upholds `dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(new_size as isize - layout.size() as isize, Relaxed);
        // SAFETY: the caller upholds `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
