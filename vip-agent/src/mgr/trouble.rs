//! What a failed connection or query says about the local mysqld. Pure.
//!
//! The distinction matters because the agent acts differently: a mysqld that is gone
//! loses the write VIP at once, a mysqld that is alive but refuses the agent keeps it
//! (the group is fine; releasing would cause the outage), and a lost connection is first
//! retried at once, because a restarted mysqld is not a dead one.

use std::io::ErrorKind;

use mysql_async::{DriverError, Error, IoError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trouble {
    /// Nobody listens: connection refused, socket file missing, shutdown in progress.
    Down(String),
    /// An established connection broke (mysqld killed or restarted, network cut).
    Lost(String),
    /// mysqld answered and refused the agent: too many connections, bad credentials,
    /// host blocked, missing privilege, TLS required or rejected.
    Refusing { code: Option<u16>, reason: String },
    /// Anything else: the agent cannot tell what it means.
    Other(String),
}

/// Server errors that mean "alive, but not for you".
const REFUSING: &[(u16, &str)] = &[
    (1040, "too many connections (max_connections reached)"),
    (1044, "access denied to a database"),
    (
        1045,
        "access denied: check mysql.user and the password file",
    ),
    (
        1129,
        "host blocked after too many connection errors (FLUSH HOSTS)",
    ),
    (
        1130,
        "this host may not connect (check the user's host part)",
    ),
    (
        1142,
        "SELECT denied: GRANT SELECT ON performance_schema.replication_group_members",
    ),
    (1203, "max_user_connections reached for the agent's user"),
    (1226, "a resource limit of the agent's user was exceeded"),
    (1227, "missing privilege"),
    (
        1251,
        "the server wants an authentication method this client lacks",
    ),
    (1820, "the agent's password has expired (ALTER USER)"),
    (1862, "the agent's password has expired (ALTER USER)"),
    (3118, "the agent's account is locked"),
    (3159, "the server requires TLS (configure [mysql.tls])"),
];

/// Server errors that mean mysqld is going away.
const GOING_DOWN: &[u16] = &[
    1053, /* ER_SERVER_SHUTDOWN */
    1077, /* normal shutdown */
];

pub fn trouble(e: &Error) -> Trouble {
    match e {
        Error::Server(s) => {
            if let Some((_, why)) = REFUSING.iter().find(|(code, _)| *code == s.code) {
                Trouble::Refusing {
                    code: Some(s.code),
                    reason: format!("ERROR {} ({}): {}: {why}", s.code, s.state, s.message),
                }
            } else if GOING_DOWN.contains(&s.code) {
                Trouble::Down(format!("ERROR {}: {}", s.code, s.message))
            } else {
                Trouble::Other(format!("ERROR {} ({}): {}", s.code, s.state, s.message))
            }
        }
        // A rejected certificate (unknown CA, wrong name, expired): rustls reports it
        // through tokio-rustls as an I/O error during the handshake.
        Error::Io(IoError::Io(io)) if let Some(tls) = rustls_error(io) => Trouble::Refusing {
            code: None,
            reason: format!("TLS with mysqld failed: {tls} (check [mysql.tls])"),
        },
        Error::Io(IoError::Io(io)) => match io.kind() {
            ErrorKind::ConnectionRefused => Trouble::Down(format!("connection refused ({io})")),
            ErrorKind::NotFound => Trouble::Down(format!("no such socket ({io})")),
            ErrorKind::AddrNotAvailable => Trouble::Down(format!("address not available ({io})")),
            ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe
            | ErrorKind::UnexpectedEof => Trouble::Lost(io.to_string()),
            _ => Trouble::Other(format!("I/O error: {io}")),
        },
        #[allow(unreachable_patterns)]
        Error::Io(other) => Trouble::Refusing {
            code: None,
            reason: format!("TLS with mysqld failed: {other} (check [mysql.tls])"),
        },
        Error::Driver(DriverError::ConnectionClosed) => {
            Trouble::Lost("the server closed the connection".into())
        }
        Error::Driver(DriverError::NoClientSslFlagFromServer) => Trouble::Refusing {
            code: None,
            reason: "mysqld does not offer TLS, which [mysql.tls] asks for (configure \
                     ssl_cert and ssl_key on mysqld, or remove [mysql.tls])"
                .into(),
        },
        other => Trouble::Other(other.to_string()),
    }
}

/// The rustls error inside an I/O error, if that is what it carries. rustls is not a
/// dependency of its own: its error type is named through mysql_async's `TlsError::Tls`.
fn rustls_error(io: &std::io::Error) -> Option<&(dyn std::error::Error + 'static)> {
    fn inner<T: std::error::Error + 'static>(
        _variant: fn(T) -> mysql_async::TlsError,
        io: &std::io::Error,
    ) -> Option<&(dyn std::error::Error + 'static)> {
        let e = io.get_ref()?.downcast_ref::<T>()?;
        Some(e)
    }
    inner(mysql_async::TlsError::Tls, io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mysql_async::ServerError;

    fn server(code: u16) -> Error {
        Error::Server(ServerError {
            code,
            message: "msg".into(),
            state: "08004".into(),
        })
    }

    fn io(kind: ErrorKind) -> Error {
        Error::Io(IoError::Io(std::io::Error::from(kind)))
    }

    #[test]
    fn refusals_keep_their_code() {
        for code in [1040, 1045, 1129, 1142] {
            match trouble(&server(code)) {
                Trouble::Refusing {
                    code: Some(c),
                    reason,
                } => {
                    assert_eq!(c, code);
                    assert!(reason.contains(&code.to_string()), "{reason}");
                }
                other => panic!("{code}: {other:?}"),
            }
        }
    }

    #[test]
    fn down_lost_and_other() {
        assert!(matches!(
            trouble(&io(ErrorKind::ConnectionRefused)),
            Trouble::Down(_)
        ));
        assert!(matches!(
            trouble(&io(ErrorKind::NotFound)),
            Trouble::Down(_)
        ));
        assert!(matches!(trouble(&server(1053)), Trouble::Down(_)));
        assert!(matches!(
            trouble(&io(ErrorKind::ConnectionReset)),
            Trouble::Lost(_)
        ));
        assert!(matches!(
            trouble(&io(ErrorKind::UnexpectedEof)),
            Trouble::Lost(_)
        ));
        assert!(matches!(
            trouble(&Error::Driver(DriverError::ConnectionClosed)),
            Trouble::Lost(_)
        ));
        assert!(matches!(trouble(&server(1064)), Trouble::Other(_)));
    }

    #[test]
    fn tls_trouble_is_refusing() {
        match trouble(&Error::Driver(DriverError::NoClientSslFlagFromServer)) {
            Trouble::Refusing { code: None, reason } => {
                assert!(reason.contains("does not offer TLS"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        // Only a rustls error inside an I/O error is about TLS (the real-server tests
        // check a rejected certificate); other invalid data is not.
        let garbage = std::io::Error::new(ErrorKind::InvalidData, "Packets out of sync");
        assert!(matches!(
            trouble(&Error::Io(IoError::Io(garbage))),
            Trouble::Other(_)
        ));
    }
}
