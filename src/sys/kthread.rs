//! A kernel thread that runs a function over shared data until stopped.

use kernel::{bindings, error::from_err_ptr, prelude::*, str::CStr};

struct Body<T> {
    data: T,
    run: fn(&T),
}

/// A running kernel thread. Dropping it stops the thread and waits for it.
///
/// # Invariants
///
/// `task` is a kernel thread created to run `run_thread::<T>` over `*body`,
/// whose function returns only once [`should_stop`] says so, and on whose
/// task this holds a reference, so that `kthread_stop` may be called even if
/// the thread died early.
pub(crate) struct Thread<T: Send + Sync> {
    task: *mut bindings::task_struct,
    /// The data the thread runs over, kept until it has stopped.
    _body: KBox<Body<T>>,
}

// SAFETY: the thread may be stopped from any thread; `T` is Send + Sync.
unsafe impl<T: Send + Sync> Send for Thread<T> {}
// SAFETY: `&Thread` gives access to nothing.
unsafe impl<T: Send + Sync> Sync for Thread<T> {}

unsafe extern "C" fn run_thread<T: Send + Sync>(data: *mut core::ffi::c_void) -> core::ffi::c_int {
    // SAFETY: `data` is the body owned by the `Thread`, which outlives the
    // thread (its drop stops the thread first).
    let body = unsafe { &*data.cast::<Body<T>>() };
    (body.run)(&body.data);
    0
}

impl<T: Send + Sync> Thread<T> {
    /// Starts a thread named `name` running `run(&data)`, which must return
    /// only once [`should_stop`].
    pub(crate) fn spawn(name: &CStr, data: T, run: fn(&T)) -> Result<Self> {
        let body = KBox::new(Body { data, run }, GFP_KERNEL)?;
        let ptr = core::ptr::from_ref::<Body<T>>(&body).cast_mut().cast();
        // SAFETY: the format is "%s" with a NUL-terminated argument; `ptr`
        // stays valid until the thread is stopped (see `Drop`).
        let task = from_err_ptr(unsafe {
            bindings::kthread_create_on_node(
                Some(run_thread::<T>),
                ptr,
                bindings::NUMA_NO_NODE,
                kernel::c_str!("%s").as_char_ptr(),
                name.as_char_ptr(),
            )
        })?;
        // SAFETY: `task` was just created and waits to be woken; the
        // reference taken first keeps the task struct until `Drop` puts it.
        unsafe {
            bindings::get_task_struct(task);
            bindings::wake_up_process(task);
        }
        // INVARIANT: started over `body`, with a reference on its task.
        Ok(Thread { task, _body: body })
    }
}

impl<T: Send + Sync> Drop for Thread<T> {
    fn drop(&mut self) {
        // SAFETY: by the type invariant we hold a reference on the thread's
        // task; `kthread_stop_put` waits for the thread to return (at once
        // if it already did), after which `body` is unused and may be
        // dropped with `self`, and gives the reference up.
        unsafe { bindings::kthread_stop_put(self.task) };
    }
}

/// Whether the current kernel thread has been told to stop.
pub(crate) fn should_stop() -> bool {
    // SAFETY: no preconditions (false outside kernel threads).
    unsafe { bindings::kthread_should_stop() }
}
