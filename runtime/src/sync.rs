//! Locks that outlive a panic. With `panic = "abort"` a poisoned lock
//! cannot be seen in a release build, and in tests a panicking thread
//! must not turn every later lock into a second panic: the data behind
//! these locks (replica lists, connection slots) stays consistent at every
//! await-free step, so a poisoned guard is as good as a clean one.

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, taking the guard even if a holder panicked.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
