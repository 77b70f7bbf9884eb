//! Printing an error with its causes, each said once.
//!
//! `anyhow`'s `{:#}` prints every link of the `source()` chain joined by `": "`. Many error
//! types — sqlx's, for one (`error returned from database: {0}` whose source is that same
//! database error) — already put their cause in their own message *and* return it from
//! `source()`, so `{:#}` says the cause twice (`… does not exist: … does not exist`).
//! [`Chain`] prints the chain the same way but leaves out a link whose message the previous
//! printed link already contains. Every log line and fatal message that shows an error chain
//! goes through it (the workspace's tidy test refuses `{:#}`); the workspace's own error types
//! either show their cause or return it from `source()`, never both.

use std::error::Error;
use std::fmt;

/// Displays an error and its causes, `outer: inner: innermost`, without repeating a cause
/// an outer message already says. Use `Chain(&*anyhow_error)` or `Chain(&io_error)`.
#[derive(Clone, Copy)]
pub struct Chain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut said = self.0.to_string();
        f.write_str(&said)?;
        let mut next = self.0.source();
        while let Some(cause) = next {
            let message = cause.to_string();
            if !message.is_empty() && !said.contains(&message) {
                write!(f, ": {message}")?;
                said = message;
            }
            next = cause.source();
        }
        Ok(())
    }
}

impl fmt::Debug for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shaped like sqlx's errors: the cause in the message and in `source()`.
    #[derive(Debug, thiserror::Error)]
    enum Repeating {
        #[error("error returned from database: {0}")]
        Database(#[from] std::io::Error),
    }

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let io = std::io::Error::other("database \"x\" does not exist");
        let error = anyhow::Error::from(Repeating::from(io)).context("cannot connect to the database");
        assert_eq!(
            format!("{error:#}"),
            "cannot connect to the database: error returned from database: database \"x\" does not exist: \
             database \"x\" does not exist",
            "anyhow repeats the cause; this is what Chain is for"
        );
        assert_eq!(
            Chain(&*error).to_string(),
            "cannot connect to the database: error returned from database: database \"x\" does not exist"
        );
    }

    #[test]
    fn distinct_causes_are_all_said() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let error = anyhow::Error::from(io).context("reading /etc/x.pem").context("loading tls_ca");
        assert_eq!(Chain(&*error).to_string(), "loading tls_ca: reading /etc/x.pem: no such file");
        let plain = std::io::Error::other("alone");
        assert_eq!(Chain(&plain).to_string(), "alone");
    }
}
