//! What a MongoDB driver error means to the caller: a dependency outage
//! (`Unavailable`, retried for as long as it lasts), a document the server
//! will never take (`Rejected`), or anything else (`Internal`).

use mongodb::error::{ErrorKind, WriteFailure};
use products_core::app::PortError;

pub(super) const DUPLICATE_KEY: i32 = 11000;
pub(super) const NAMESPACE_NOT_FOUND: i32 = 26;

/// A write refused because the `_id` (or another unique key) exists.
pub fn is_duplicate_key(err: &mongodb::error::Error) -> bool {
    match err.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(e)) => e.code == DUPLICATE_KEY,
        ErrorKind::Command(e) => e.code == DUPLICATE_KEY,
        _ => false,
    }
}

/// Whether a failed write may still have been applied: not when no server
/// was selected or the command was refused for what it is (a server error
/// code); yes when the connection broke or timed out with the command sent.
pub(super) fn may_have_written(err: &mongodb::error::Error) -> bool {
    !matches!(
        err.kind.as_ref(),
        ErrorKind::ServerSelection { .. }
            | ErrorKind::ConnectionPoolCleared { .. }
            | ErrorKind::InvalidArgument { .. }
            | ErrorKind::BsonSerialization(_)
            | ErrorKind::Command(_)
            | ErrorKind::Write(WriteFailure::WriteError(_))
    )
}

/// Server error codes that mean "not now": the server is shutting down,
/// stepping down, not primary, or the operation timed out.
const TRANSIENT_CODES: [i32; 14] = [
    6,     // HostUnreachable
    7,     // HostNotFound
    89,    // NetworkTimeout
    91,    // ShutdownInProgress
    189,   // PrimarySteppedDown
    262,   // ExceededTimeLimit
    9001,  // SocketException
    10107, // NotWritablePrimary
    11600, // InterruptedAtShutdown
    11602, // InterruptedDueToReplStateChange
    13435, // NotPrimaryNoSecondaryOk
    13436, // NotPrimaryOrSecondary
    50,    // MaxTimeMSExpired
    64,    // WriteConcernFailed (wtimeout)
];

/// Server error codes that mean "never this document": retrying the same
/// write cannot succeed.
const REJECTED_CODES: [i32; 5] = [
    2,     // BadValue
    121,   // DocumentValidationFailure
    10334, // BSONObjectTooLarge
    17419, // document exceeds the maximum size after an update
    17280, // key too large to index
];

/// Classifies a driver error by what the caller can do about it. Connection
/// failures, server selection, pool resets, timeouts and shutdown/not-primary
/// codes are transient whatever the labels say (FerretDB never sets
/// `RetryableWriteError`); a too large or invalid document is the request's
/// fault; the rest is internal. The driver's message can name hosts, never
/// credentials.
pub(super) fn port_error(err: mongodb::error::Error) -> PortError {
    let code = match err.kind.as_ref() {
        ErrorKind::ServerSelection { .. }
        | ErrorKind::Io(_)
        | ErrorKind::ConnectionPoolCleared { .. }
        | ErrorKind::Shutdown => return PortError::Unavailable(err.to_string()),
        ErrorKind::Command(e) => Some(e.code),
        ErrorKind::Write(WriteFailure::WriteError(e)) => Some(e.code),
        ErrorKind::Write(WriteFailure::WriteConcernError(e)) => Some(e.code),
        ErrorKind::InvalidArgument { .. } | ErrorKind::BsonSerialization(_) => {
            return PortError::Rejected(err.to_string())
        }
        _ => None,
    };
    if err.contains_label("RetryableWriteError")
        || err.contains_label("TransientTransactionError")
        || code.is_some_and(|c| TRANSIENT_CODES.contains(&c))
    {
        PortError::Unavailable(err.to_string())
    } else if code.is_some_and(|c| REJECTED_CODES.contains(&c)) {
        PortError::Rejected(err.to_string())
    } else {
        PortError::Internal(err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::port_error;
    use products_core::app::PortError;

    fn command_error(code: i32) -> mongodb::error::Error {
        let failure: mongodb::error::CommandError = mongodb::bson::from_document(
            mongodb::bson::doc! { "code": code, "codeName": "Test", "errmsg": "test" },
        )
        .unwrap();
        mongodb::error::Error::from(mongodb::error::ErrorKind::Command(failure))
    }

    #[test]
    fn connection_failures_are_transient() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let err = mongodb::error::Error::from(io);
        assert!(matches!(port_error(err), PortError::Unavailable(_)));
    }

    #[test]
    fn shutdown_and_not_primary_codes_are_transient() {
        for code in [91, 189, 10107, 11600, 13435, 50] {
            assert!(
                matches!(port_error(command_error(code)), PortError::Unavailable(_)),
                "code {code}"
            );
        }
    }

    #[test]
    fn a_too_large_or_invalid_document_is_rejected() {
        for code in [10334, 121, 2] {
            assert!(
                matches!(port_error(command_error(code)), PortError::Rejected(_)),
                "code {code}"
            );
        }
    }

    #[test]
    fn other_server_errors_are_internal() {
        assert!(matches!(
            port_error(command_error(8000)),
            PortError::Internal(_)
        ));
    }
}
