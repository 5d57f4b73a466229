//! A workqueue of the array's own, for work that memory reclaim may wait
//! for: the disk's requests ([`super::disk`]) and the steps of asynchronous
//! member I/O ([`super::jobs`]).
//!
//! Memory reclaim may wait for I/O through it, so it has a rescuer
//! (`WQ_MEM_RECLAIM`). It is unbound: request work items sleep for member
//! I/O, and up to a queue depth of them at once in a per-CPU pool would
//! take the workers that `system_highpri_wq` shares with it. libata issues
//! a cache flush deferred behind NCQ commands from that queue: with every
//! worker of the pool asleep in our requests and no new one to be had under
//! memory pressure (kthreadd itself waiting to swap to this volume), the
//! flush waited for its 60 s SCSI timeout and failed.

use kernel::{bindings, prelude::*, str::CStr};

/// A workqueue, destroyed (after the work queued on it has run) on drop.
pub(crate) struct Workqueue(*mut bindings::workqueue_struct);

// SAFETY: a workqueue may be used and destroyed from any thread.
unsafe impl Send for Workqueue {}
// SAFETY: queueing work is internally synchronised.
unsafe impl Sync for Workqueue {}

impl Workqueue {
    /// A workqueue named `name`.
    pub(crate) fn new(name: &CStr) -> Result<Workqueue> {
        // SAFETY: the format is "%s" and the argument a NUL-terminated string.
        let wq = unsafe {
            bindings::alloc_workqueue(
                kernel::c_str!("%s").as_char_ptr(),
                bindings::wq_flags_WQ_MEM_RECLAIM | bindings::wq_flags_WQ_HIGHPRI | bindings::wq_flags_WQ_UNBOUND,
                0,
                name.as_char_ptr(),
            )
        };
        if wq.is_null() {
            return Err(ENOMEM);
        }
        Ok(Workqueue(wq))
    }

    /// The C workqueue, live as long as `self`.
    pub(crate) fn raw(&self) -> *mut bindings::workqueue_struct {
        self.0
    }
}

impl Drop for Workqueue {
    fn drop(&mut self) {
        // SAFETY: allocated in `new`; `destroy_workqueue` drains it, and
        // nothing queues work on it any more (its owners see to that).
        unsafe { bindings::destroy_workqueue(self.0) };
    }
}
