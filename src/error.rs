//! The one public error type: a small set of kinds (which map to exit codes and appear
//! in `--json` output) plus a context string and an optional source.

use std::fmt;

/// What went wrong, coarsely: enough for a caller to decide what to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The caller asked for something malformed or out of range.
    Invalid,
    /// Stored bytes failed a hash, tag or structure check.
    Corrupt,
    /// A file, chunk or snapshot does not exist.
    NotFound,
    /// A remote or device is unreachable or refused.
    Unavailable,
    /// The disk is held by another process (its lock): ask that process, or wait.
    Busy,
    /// The operating system refused an I/O operation.
    Io,
    /// A broken invariant inside mindcastle (a bug): reported, never papered over.
    Internal,
}

impl ErrorKind {
    /// Process exit code used by the CLI for this kind.
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorKind::Invalid => 2,
            ErrorKind::Corrupt => 3,
            ErrorKind::NotFound => 4,
            ErrorKind::Unavailable | ErrorKind::Busy => 5,
            ErrorKind::Io => 6,
            ErrorKind::Internal => 7,
        }
    }
}

/// Error returned by every library layer.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    context: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error of `kind` described by `context`.
    pub fn new(kind: ErrorKind, context: impl Into<String>) -> Self {
        Self {
            kind,
            context: context.into(),
            source: None,
        }
    }
    /// Malformed input or an out-of-range request.
    pub fn invalid(context: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, context)
    }
    /// Stored bytes that fail verification.
    pub fn corrupt(context: impl Into<String>) -> Self {
        Self::new(ErrorKind::Corrupt, context)
    }
    /// Something that should exist does not.
    pub fn not_found(context: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, context)
    }
    /// A broken invariant (a bug): EIO on the wire, exit code 7.
    pub fn internal(context: impl Into<String>) -> Self {
        Self::new(
            ErrorKind::Internal,
            format!("internal error (a bug): {}", context.into()),
        )
    }
    /// An I/O error with what we were doing when it happened.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        let kind = if source.kind() == std::io::ErrorKind::NotFound {
            ErrorKind::NotFound
        } else {
            ErrorKind::Io
        };
        Self {
            kind,
            context: context.into(),
            source: Some(Box::new(source)),
        }
    }
    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
    /// True when the operating system said the disk is full.
    pub fn is_no_space(&self) -> bool {
        self.source
            .as_ref()
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .and_then(std::io::Error::raw_os_error)
            == Some(28)
    }
    /// The errno a block-device client sees for this error (FUSE replies and NBD, whose
    /// wire values are Linux's for these three): ENOSPC for a full disk, EINVAL for a
    /// bad request, EIO for everything else.
    pub fn errno(&self) -> i32 {
        if self.is_no_space() {
            return libc::ENOSPC;
        }
        match self.kind() {
            ErrorKind::Invalid => libc::EINVAL,
            _ => libc::EIO,
        }
    }
    /// Prefix more context (outermost first when displayed).
    #[must_use]
    pub fn context(mut self, outer: impl Into<String>) -> Self {
        self.context = format!("{}: {}", outer.into(), self.context);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(s) => write!(f, "{}: {}", self.context, s),
            None => f.write_str(&self.context),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.source {
            Some(s) => Some(s.as_ref()),
            None => None,
        }
    }
}
