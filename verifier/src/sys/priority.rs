//! The verifier's scheduling priority: it asks for nice −10 at start, when the host lets it
//! (root or CAP_SYS_NICE), as keepalived's `vrrp_priority` does for VRRP. Its work is small and
//! bursty, and what it does in a burst has a deadline: finding a silent member dead on time and
//! re-pointing the kernel (SPEC.md §5.5). On a loaded host (a build on every core, or, in the
//! lab, the three heirs that a failover's standby notices wake at once) ordinary tasks then do
//! not preempt it halfway. It never becomes real-time: a flood it must read stays bounded by
//! the ordinary scheduler. The third module of this crate with `unsafe`: one C call.
#![allow(unsafe_code)]

/// The nice value asked for.
pub const NICE: i32 = -10;

/// Sets the calling thread's nice value to [`NICE`] (threads it starts later inherit it; call
/// it before starting any).
pub fn raise() -> std::io::Result<()> {
    // SAFETY: setpriority takes three integers and touches no memory of ours; `who` 0 is the
    // calling thread.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, NICE) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// [`raise`], the outcome logged (at debug: refused is the normal case without privileges).
pub fn raise_logged() {
    match raise() {
        Ok(()) => tracing::debug!(nice = NICE, "scheduling priority raised"),
        Err(e) => tracing::debug!(error = %e, "scheduling priority left as it is"),
    }
}
