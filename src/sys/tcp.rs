//! Noticing a TCP peer whose host vanished: `SO_KEEPALIVE` with short probes, and
//! `TCP_USER_TIMEOUT`.
//!
//! A peer process that dies closes its socket and the other side sees the end of the stream at
//! once. A peer *host* that crashes or drops off the network sends nothing: an idle connection
//! would look healthy for hours (keepalive is off by default, then 2 h), and unacknowledged data
//! is retransmitted for up to ~15 minutes. Both are bounded here.
//!
//! # References
//! - [tcp(7)](https://man7.org/linux/man-pages/man7/tcp.7.html): `TCP_KEEPIDLE`,
//!   `TCP_KEEPINTVL`, `TCP_KEEPCNT`, `TCP_USER_TIMEOUT`
//! - [socket(7)](https://man7.org/linux/man-pages/man7/socket.7.html): `SO_KEEPALIVE`

use std::io;
use std::os::fd::AsFd;
use std::time::Duration;

use rustix::net::sockopt;

/// Makes a TCP connection fail within about `after` once its peer stops answering: idle, it
/// probes after `after / 2` and every `after / 4`, giving up after two unanswered probes; with
/// data in flight, data unacknowledged for `after` closes it (`ETIMEDOUT`).
///
/// # Errors
///
/// When `sock` is not a TCP socket (`EOPNOTSUPP`, `ENOPROTOOPT`), among others.
pub(crate) fn fail_after_silence(sock: impl AsFd, after: Duration) -> io::Result<()> {
    let sock = sock.as_fd();
    let at_least_a_second = |d: Duration| d.max(Duration::from_secs(1));
    sockopt::set_socket_keepalive(sock, true)?;
    sockopt::set_tcp_keepidle(sock, at_least_a_second(after / 2))?;
    sockopt::set_tcp_keepintvl(sock, at_least_a_second(after / 4))?;
    sockopt::set_tcp_keepcnt(sock, 2)?;
    let millis = u32::try_from(after.as_millis()).unwrap_or(u32::MAX);
    sockopt::set_tcp_user_timeout(sock, millis)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_set_on_tcp_and_refused_on_unix_sockets() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        fail_after_silence(&client, Duration::from_secs(20)).unwrap();
        assert!(sockopt::socket_keepalive(&client).unwrap());
        assert_eq!(
            sockopt::tcp_keepidle(&client).unwrap(),
            Duration::from_secs(10)
        );
        assert_eq!(
            sockopt::tcp_keepintvl(&client).unwrap(),
            Duration::from_secs(5)
        );
        assert_eq!(sockopt::tcp_keepcnt(&client).unwrap(), 2);
        assert_eq!(sockopt::tcp_user_timeout(&client).unwrap(), 20_000);
        let (unix, _other) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(fail_after_silence(&unix, Duration::from_secs(20)).is_err());
    }
}
