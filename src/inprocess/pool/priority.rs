//! The scheduling priority of the interpreter's threads: a host that must stay
//! responsive while Python trains (`serve` answering HTTP) runs the workers, and the
//! start-up thread that imports the service module (so the BLAS threads numpy starts
//! there inherit it), at a lower priority (a higher nice value). Linux sets nice per
//! thread; a thread started later inherits its creator's.

/// The highest nice value (the lowest priority).
pub const MAX_NICE: u32 = 19;

/// Lowers the calling thread's priority to nice value `nice` (0 to [`MAX_NICE`]); a
/// thread already at that or a lower priority is left alone. Never raises priority
/// (that needs privileges), so it cannot fail in a way that matters: a refusal is
/// logged.
pub fn lower_current_thread(nice: u32) {
    let nice = nice.min(MAX_NICE) as i32;
    if nice == 0 {
        return;
    }
    // SAFETY: plain syscalls on the calling thread's own id.
    unsafe {
        let tid = libc::gettid() as libc::id_t;
        *libc::__errno_location() = 0;
        let current = libc::getpriority(libc::PRIO_PROCESS, tid);
        if current >= nice {
            return;
        }
        if libc::setpriority(libc::PRIO_PROCESS, tid, nice) != 0 {
            tracing::debug!(
                "cannot lower the thread's priority to nice {nice}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// The calling thread's nice value.
pub fn current_thread_nice() -> i32 {
    // SAFETY: plain syscall on the calling thread's own id.
    unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_is_lowered_but_never_raised() {
        std::thread::spawn(|| {
            let before = current_thread_nice().max(0) as u32;
            let lowered = (before + 3).min(MAX_NICE) as i32;
            lower_current_thread(0);
            assert_eq!(current_thread_nice(), before as i32);
            lower_current_thread(before + 3);
            assert_eq!(current_thread_nice(), lowered);
            lower_current_thread(before + 1);
            assert_eq!(current_thread_nice(), lowered, "not raised");
            let child = std::thread::spawn(current_thread_nice).join().unwrap();
            assert_eq!(child, lowered, "inherited");
        })
        .join()
        .unwrap();
    }
}
