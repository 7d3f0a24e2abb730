//! Standard output of the commands that print text. A reader that went away (`| head`,
//! `| true`) ends the command quietly with success: the text is a report, and nothing
//! is lost. `export -` is different (its bytes are the disk) and fails instead.

use std::io::Write;

use crate::error::{Error, Result};

/// Writes `text` to standard output.
pub fn print(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Error::io("writing to standard output", e)),
    }
}
