//! The systemd notify protocol (`Type=notify`): one datagram per state change to the
//! socket named in `NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace).
//! Without it (not started by systemd) every call does nothing.

use std::os::unix::net::UnixDatagram;

use tracing::debug;

/// Send `state` (e.g. "READY=1\nSTATUS=...") to the service manager, if any.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = UnixDatagram::unbound().and_then(|s| {
        let bytes = path.as_encoded_bytes();
        match bytes.strip_prefix(b"@") {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                s.send_to_addr(state.as_bytes(), &addr)
            }
            None => s.send_to(state.as_bytes(), &path),
        }
    });
    if let Err(e) = sent {
        debug!(error = %e, "NOTIFY_SOCKET");
    }
}
