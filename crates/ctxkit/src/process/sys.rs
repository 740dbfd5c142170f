//! The two system calls std lacks: signalling a pid or a process group, and
//! waiting for a child's exit without reaping it.

#[cfg(unix)]
pub(super) use unix::signal;
#[cfg(any(target_os = "linux", target_os = "android", target_vendor = "apple"))]
pub(super) use waitid::exited;

#[cfg(unix)]
mod unix {
    use std::io;
    use std::os::raw::c_int;

    extern "C" {
        fn kill(pid: c_int, sig: c_int) -> c_int;
    }

    /// Sends `signal` to `pid`, or with `group` to the process group it
    /// leads. The caller guarantees that `pid` is an unreaped child of ours,
    /// so that neither the pid nor the group id can have been reused.
    pub(crate) fn signal(pid: u32, group: bool, signal: i32) -> io::Result<()> {
        let pid = c_int::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?;
        let target = if group { -pid } else { pid };
        // SAFETY: kill(2) takes two integers and touches no memory of ours.
        if unsafe { kill(target, signal) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

#[cfg(any(target_os = "linux", target_os = "android", target_vendor = "apple"))]
mod waitid {
    use std::io;
    use std::os::raw::{c_int, c_uint};

    const P_PID: c_uint = 1;
    const WNOHANG: c_int = 1;
    const WEXITED: c_int = 4;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    const WNOWAIT: c_int = 0x0100_0000;
    #[cfg(target_vendor = "apple")]
    const WNOWAIT: c_int = 0x20;

    /// Room for any platform's `siginfo_t` (128 bytes on Linux, 104 on
    /// Apple), aligned for its pointer fields.
    #[repr(C, align(8))]
    struct SigInfo([u8; 256]);

    extern "C" {
        fn waitid(idtype: c_uint, id: c_uint, infop: *mut SigInfo, options: c_int) -> c_int;
    }

    /// Whether child `pid` has exited, leaving it unreaped: its pid stays
    /// ours until someone reaps it. With `block`, waits for the exit.
    pub(crate) fn exited(pid: u32, block: bool) -> io::Result<bool> {
        let options = WEXITED | WNOWAIT | if block { 0 } else { WNOHANG };
        loop {
            let mut info = SigInfo([0; 256]);
            // SAFETY: `info` is writable, larger than siginfo_t and aligned
            // for it; waitid(2) writes nothing outside it.
            if unsafe { waitid(P_PID, pid, &mut info, options) } == 0 {
                // With WNOHANG and no exit to report, waitid succeeds and
                // leaves si_signo (the first int) zero.
                let signo = i32::from_ne_bytes([info.0[0], info.0[1], info.0[2], info.0[3]]);
                return Ok(signo != 0);
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
}
