//! systemd's notify protocol (`sd_notify`), without libsystemd: `READY=1` once
//! the server's API or the agent is ready, `WATCHDOG=1` pings at half the
//! unit's `WatchdogSec`, sent as datagrams to `$NOTIFY_SOCKET` (a path, or an
//! abstract name written `@name`). Outside systemd (no `$NOTIFY_SOCKET`) every
//! call does nothing.

use std::time::Duration;

/// Send `state` (e.g. `READY=1`) to systemd; false when not under systemd or
/// the send failed.
pub fn notify(state: &str) -> bool {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return false;
    };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return false;
    };
    let name = socket.to_string_lossy().into_owned();
    let sent = match name.strip_prefix('@') {
        Some(abstract_name) => {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes())
                .and_then(|a| sock.send_to_addr(state.as_bytes(), &a))
        }
        None => sock.send_to(state.as_bytes(), &name),
    };
    sent.is_ok()
}

/// Tell systemd the service is ready.
pub fn ready() -> bool {
    notify("READY=1")
}

/// How often to ping the watchdog: half of `$WATCHDOG_USEC` when it is set
/// for this process (`$WATCHDOG_PID` absent or ours).
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok()? != std::process::id()
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_reach_the_socket() {
        let dir = std::env::temp_dir().join(format!("skiff-notify-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let listener = std::os::unix::net::UnixDatagram::bind(&dir).unwrap();
        // SAFETY: this test is the only one in the crate that touches these
        // variables, and nothing else reads them concurrently.
        unsafe {
            std::env::set_var("NOTIFY_SOCKET", &dir);
            std::env::set_var("WATCHDOG_USEC", "4000000");
            std::env::set_var("WATCHDOG_PID", std::process::id().to_string());
        }
        assert!(ready());
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        assert_eq!(watchdog_interval(), Some(Duration::from_secs(2)));
        unsafe {
            std::env::remove_var("NOTIFY_SOCKET");
            std::env::remove_var("WATCHDOG_USEC");
            std::env::remove_var("WATCHDOG_PID");
        }
        assert!(!ready());
        let _ = std::fs::remove_file(&dir);
    }
}
