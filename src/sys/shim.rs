//! Safe access to what `shim.c` provides: module parameters, static inline
//! helpers and constants that bindgen cannot translate on 6.12; and the
//! kernel's XOR library (`xor_blocks`, exported by `crypto/xor.c`, which
//! the 6.12 bindings do not include).

use kernel::{bindings, error::Error, ffi::c_char, str::CStr};

extern "C" {
    fn raidmig_param_members() -> *const c_char;
    fn raidmig_param_level() -> *const c_char;
    fn raidmig_param_chunk_kb() -> u32;
    fn raidmig_param_start() -> bool;
    fn raidmig_param_force() -> bool;
    fn raidmig_param_assume_clean() -> bool;
    fn raidmig_param_checkpoint_units() -> u32;
    fn raidmig_param_checkpoint_ms() -> u32;
    fn raidmig_param_bitmap_region_mb() -> u32;
    fn raidmig_param_speed_limit_max_kbps() -> u32;
    fn raidmig_bio_copy(bio: *mut core::ffi::c_void, skip: u32, buf: *mut u8, len: u32, to_bio: bool);
    fn raidmig_plug_take() -> *mut core::ffi::c_void;
    fn raidmig_plug_restore(plug: *mut core::ffi::c_void);
    fn raidmig_flush_vmap(addr: *mut core::ffi::c_void, len: i32);
    fn raidmig_invalidate_vmap(addr: *mut core::ffi::c_void, len: i32);
    fn raidmig_limits_start_update(q: *mut core::ffi::c_void, lim: *mut bindings::queue_limits);
    static raidmig_feat_write_cache: bindings::blk_features_t;
    static raidmig_feat_fua: bindings::blk_features_t;
    static raidmig_open_rw_excl: bindings::blk_mode_t;
    static raidmig_sts_ioerr: bindings::blk_status_t;
    static raidmig_sts_notsupp: bindings::blk_status_t;
    static raidmig_gfp_noio: bindings::gfp_t;
    fn xor_blocks(src_count: u32, bytes: u32, dest: *mut core::ffi::c_void, srcs: *mut *mut core::ffi::c_void);
}

/// What the XOR library's templates need: whole lines of 512 bytes (the
/// AVX template does `bytes >> 9` lines and ignores the rest) and aligned
/// buffers (its `vmovdqa` needs 32 bytes; 64 leaves room for wider ones).
const XOR_LINE: usize = 512;
const XOR_ALIGN: usize = 64;

/// Longest piece XORed in one call: the library runs with preemption off
/// (`kernel_fpu_begin`), for as long as the piece takes.
const XOR_PIECE: usize = 64 << 10;

/// `dst ^= src` over the shorter of the two: the kernel's XOR library (SIMD,
/// the template chosen at boot, as md's raid5 uses) for the aligned whole
/// lines, the core's portable loop for anything else.
pub(crate) fn xor_into(dst: &mut [u8], src: &[u8]) {
    let n = dst.len().min(src.len());
    let aligned = (dst.as_ptr() as usize | src.as_ptr() as usize) % XOR_ALIGN == 0;
    let lib = if aligned { n / XOR_LINE * XOR_LINE } else { 0 };
    let (dst_lib, dst_rest) = dst[..n].split_at_mut(lib);
    let (src_lib, src_rest) = src[..n].split_at(lib);
    for (d, s) in dst_lib.chunks_mut(XOR_PIECE).zip(src_lib.chunks(XOR_PIECE)) {
        let mut srcs = [s.as_ptr().cast_mut().cast::<core::ffi::c_void>()];
        // SAFETY: `d` and `s` are valid for `d.len()` bytes (a multiple of
        // 512, at most `XOR_PIECE`) and cannot overlap (one is borrowed
        // mutably); both start 64-byte aligned, and every piece after the
        // first starts a multiple of `XOR_PIECE` further. `xor_blocks` reads
        // `srcs[0]` and writes only `dest`, with one source.
        unsafe { xor_blocks(1, d.len() as u32, d.as_mut_ptr().cast(), srcs.as_mut_ptr()) };
    }
    crate::raidmig_core::parity::xor_into(dst_rest, src_rest);
}

/// Reads a `charp` parameter: `None` when unset or not UTF-8.
fn string_param(ptr: *const c_char) -> Option<&'static str> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: a non-null `charp` parameter points to a NUL-terminated string
    // owned by the module loader; parameters declared 0444 are never changed
    // after load, so the string lives as long as the module.
    unsafe { CStr::from_char_ptr(ptr) }.to_str().ok()
}

/// `members=`, as given.
pub(crate) fn members() -> Option<&'static str> {
    // SAFETY: a plain getter without preconditions.
    string_param(unsafe { raidmig_param_members() })
}

/// `level=`, as given.
pub(crate) fn level() -> Option<&'static str> {
    // SAFETY: a plain getter without preconditions.
    string_param(unsafe { raidmig_param_level() })
}

/// `chunk_kb=` (default 64).
pub(crate) fn chunk_kb() -> u32 {
    // SAFETY: a plain getter without preconditions.
    unsafe { raidmig_param_chunk_kb() }
}

/// `start=`: start the migration at once.
pub(crate) fn start() -> bool {
    // SAFETY: a plain getter without preconditions.
    unsafe { raidmig_param_start() }
}

/// `force=`: take a first member whose reserved tail is not free.
pub(crate) fn force() -> bool {
    // SAFETY: a plain getter without preconditions.
    unsafe { raidmig_param_force() }
}

/// `assume_clean=`: make a new array directly in its layout.
pub(crate) fn assume_clean() -> bool {
    // SAFETY: a plain getter without preconditions.
    unsafe { raidmig_param_assume_clean() }
}

/// `checkpoint_units=`.
pub(crate) fn checkpoint_units() -> u32 {
    // SAFETY: a plain getter without preconditions.
    unsafe { raidmig_param_checkpoint_units() }
}

/// `checkpoint_ms=`.
pub(crate) fn checkpoint_ms() -> u32 {
    // SAFETY: a plain getter without preconditions.
    unsafe { raidmig_param_checkpoint_ms() }
}

/// `bitmap_region_mb=`.
pub(crate) fn bitmap_region_mb() -> u32 {
    // SAFETY: a plain getter without preconditions.
    unsafe { raidmig_param_bitmap_region_mb() }
}

/// `speed_limit_max_kbps=`.
pub(crate) fn speed_limit_max_kbps() -> u32 {
    // SAFETY: a plain getter without preconditions.
    unsafe { raidmig_param_speed_limit_max_kbps() }
}

/// Copies `buf.len()` bytes of `bio`'s data, from `skip` bytes into it,
/// into `buf`.
///
/// # Safety
///
/// `bio` must be a live bio whose data holds `skip + buf.len()` bytes and is
/// not written concurrently.
pub(crate) unsafe fn copy_from_bio(bio: *mut bindings::bio, skip: u32, buf: &mut [u8]) {
    // SAFETY: guaranteed by the caller; `buf` is valid for its length.
    unsafe { raidmig_bio_copy(bio.cast(), skip, buf.as_mut_ptr(), buf.len() as u32, false) }
}

/// Copies `buf` into the data of `bio`, from byte `skip` of it on.
///
/// # Safety
///
/// `bio` must be a live bio whose data holds `skip + buf.len()` bytes and is
/// not accessed concurrently.
pub(crate) unsafe fn copy_to_bio(bio: *mut bindings::bio, skip: u32, buf: &[u8]) {
    // SAFETY: guaranteed by the caller; `buf` is valid for its length, and
    // with `to_bio` the C side only reads it.
    unsafe { raidmig_bio_copy(bio.cast(), skip, buf.as_ptr().cast_mut(), buf.len() as u32, true) }
}

/// Sets the calling task's block plug aside: `current->plug`, which is
/// left empty until [`plug_restore`]. (Untyped: bindgen gives `blk_plug`
/// a field that is not FFI-safe.)
pub(crate) fn plug_take() -> *mut core::ffi::c_void {
    // SAFETY: only the calling task's own field is read and cleared.
    unsafe { raidmig_plug_take() }
}

/// Puts back a plug set aside by [`plug_take`].
///
/// # Safety
///
/// `plug` must come from `plug_take` on this task, with every plug started
/// since finished.
pub(crate) unsafe fn plug_restore(plug: *mut core::ffi::c_void) {
    // SAFETY: guaranteed by the caller.
    unsafe { raidmig_plug_restore(plug) }
}

/// `flush_kernel_vmap_range`: before a device reads or writes vmalloc
/// memory at `[addr, addr + len)`.
///
/// # Safety
///
/// The range must be mapped vmalloc memory.
pub(crate) unsafe fn flush_vmap(addr: *mut u8, len: usize) {
    // SAFETY: guaranteed by the caller; buffers are far below 2 GiB.
    unsafe { raidmig_flush_vmap(addr.cast(), len as i32) }
}

/// `invalidate_kernel_vmap_range`: after a device wrote vmalloc memory at
/// `[addr, addr + len)`.
///
/// # Safety
///
/// The range must be mapped vmalloc memory.
pub(crate) unsafe fn invalidate_vmap(addr: *mut u8, len: usize) {
    // SAFETY: guaranteed by the caller; buffers are far below 2 GiB.
    unsafe { raidmig_invalidate_vmap(addr.cast(), len as i32) }
}

// SAFETY (for all the getters below): the statics are `const` in C,
// initialised at compile time and never written.

/// `BLK_FEAT_WRITE_CACHE | BLK_FEAT_FUA`.
pub(crate) fn feat_write_cache_fua() -> bindings::blk_features_t {
    // SAFETY: see above.
    unsafe { raidmig_feat_write_cache | raidmig_feat_fua }
}

/// `BLK_OPEN_READ | BLK_OPEN_WRITE | BLK_OPEN_EXCL`.
pub(crate) fn open_rw_excl() -> bindings::blk_mode_t {
    // SAFETY: see above.
    unsafe { raidmig_open_rw_excl }
}

/// `BLK_STS_IOERR`.
pub(crate) fn sts_ioerr() -> bindings::blk_status_t {
    // SAFETY: see above.
    unsafe { raidmig_sts_ioerr }
}

/// `BLK_STS_NOTSUPP`.
pub(crate) fn sts_notsupp() -> bindings::blk_status_t {
    // SAFETY: see above.
    unsafe { raidmig_sts_notsupp }
}

/// `GFP_NOIO`: allocations on the I/O path must not recurse into I/O.
pub(crate) fn gfp_noio() -> bindings::gfp_t {
    // SAFETY: see above.
    unsafe { raidmig_gfp_noio }
}

/// 16 random bytes (a UUID for an array or a member).
pub(crate) fn random_uuid() -> [u8; 16] {
    let mut u = [0u8; 16];
    // SAFETY: `u` is valid for 16 bytes.
    unsafe { bindings::get_random_bytes(u.as_mut_ptr().cast(), u.len()) };
    u
}

/// The kernel's errno for the core's.
pub(crate) fn errno(e: crate::raidmig_core::lifecycle::Errno) -> Error {
    use crate::raidmig_core::lifecycle::Errno;
    let code = match e {
        Errno::Inval => bindings::EINVAL,
        Errno::NoSpc => bindings::ENOSPC,
        Errno::Exist => bindings::EEXIST,
        Errno::Uclean => bindings::EUCLEAN,
        Errno::Stale => bindings::ESTALE,
        Errno::Io => bindings::EIO,
        Errno::NoMem => bindings::ENOMEM,
    };
    Error::from_errno(-(code as i32))
}

/// Takes queue `q`'s limits lock and copies its limits into `lim`.
///
/// # Safety
///
/// `q` must be a live queue; the caller must commit the update
/// (`queue_limits_commit_update*`), which releases the lock.
pub(crate) unsafe fn limits_start_update(q: *mut bindings::request_queue, lim: &mut bindings::queue_limits) {
    // SAFETY: guaranteed by the caller; `lim` is valid for writes.
    unsafe { raidmig_limits_start_update(q.cast(), lim) }
}
