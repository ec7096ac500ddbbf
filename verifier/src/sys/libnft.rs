//! A persistent libnftables context (Debian `libnftables1`, the library the `nft` tool is built
//! on): a ruleset or a few element commands go to the kernel as one netlink transaction from this
//! process, with no `nft` process per change. The second module of this crate with `unsafe`:
//! five C calls, each wrapped here.
//!
//! Safety argument, for every call below: the context pointer comes from `nft_ctx_new`, is
//! non-null (checked at creation), is owned by one [`NftSession`] alone (it is neither `Send` nor
//! `Sync`, and not `Clone`) and is freed exactly once, in `Drop`. Command text is passed as a
//! NUL-terminated `CString` that outlives the call (libnftables copies what it keeps). The output
//! and error buffers libnftables returns are NUL-terminated strings it owns until the next call
//! on the same context, so they are copied into owned `String`s before any further call.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_uint, CStr, CString};

#[repr(C)]
struct NftCtx {
    _opaque: [u8; 0],
}

#[link(name = "nftables")]
extern "C" {
    fn nft_ctx_new(flags: u32) -> *mut NftCtx;
    fn nft_ctx_free(ctx: *mut NftCtx);
    fn nft_ctx_buffer_output(ctx: *mut NftCtx) -> c_int;
    fn nft_ctx_buffer_error(ctx: *mut NftCtx) -> c_int;
    fn nft_ctx_get_output_buffer(ctx: *mut NftCtx) -> *const c_char;
    fn nft_ctx_get_error_buffer(ctx: *mut NftCtx) -> *const c_char;
    fn nft_ctx_output_set_flags(ctx: *mut NftCtx, flags: c_uint);
    fn nft_run_cmd_from_buffer(ctx: *mut NftCtx, buf: *const c_char) -> c_int;
}

const NFT_CTX_DEFAULT: u32 = 0;

/// What libnftables refused: its error text (the kernel's or the parser's), on one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("nftables: {0}")]
pub struct NftError(pub String);

/// One libnftables context, kept for the life of the executor.
#[derive(Debug)]
pub struct NftSession {
    ctx: *mut NftCtx,
}

impl NftSession {
    pub fn new() -> Result<NftSession, NftError> {
        // SAFETY: no arguments but flags; the result is checked for null before any use.
        let ctx = unsafe { nft_ctx_new(NFT_CTX_DEFAULT) };
        if ctx.is_null() {
            return Err(NftError("cannot create a libnftables context".into()));
        }
        // SAFETY: `ctx` is valid (above). Buffering sends output and errors to memory we read
        // after each command instead of the process's stdout and stderr.
        unsafe {
            nft_ctx_output_set_flags(ctx, 0);
            if nft_ctx_buffer_output(ctx) != 0 || nft_ctx_buffer_error(ctx) != 0 {
                nft_ctx_free(ctx);
                return Err(NftError("cannot buffer libnftables output".into()));
            }
        }
        Ok(NftSession { ctx })
    }

    /// Runs `commands` (what `nft -f` reads) as one transaction; returns what they printed
    /// (a `list` command's listing).
    pub fn run(&mut self, commands: &str) -> Result<String, NftError> {
        let text = CString::new(commands)
            .map_err(|_| NftError("a NUL byte in the command text".into()))?;
        // SAFETY: see the module doc: valid owned context, NUL-terminated text that outlives
        // the call; the buffers are copied out before the next call on this context.
        let (rc, out, err) = unsafe {
            let rc = nft_run_cmd_from_buffer(self.ctx, text.as_ptr());
            let out = owned(nft_ctx_get_output_buffer(self.ctx));
            let err = owned(nft_ctx_get_error_buffer(self.ctx));
            (rc, out, err)
        };
        if rc == 0 {
            return Ok(out);
        }
        let err = err.trim().replace('\n', "; ");
        Err(NftError(if err.is_empty() {
            format!("failed ({rc})")
        } else {
            err
        }))
    }
}

/// Copies a libnftables buffer (null: empty).
///
/// # Safety
/// `p` is null or a NUL-terminated string valid for the duration of this call.
unsafe fn owned(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: the caller's contract.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

impl Drop for NftSession {
    fn drop(&mut self) {
        // SAFETY: created non-null by `new`, freed only here, once.
        unsafe { nft_ctx_free(self.ctx) }
    }
}
