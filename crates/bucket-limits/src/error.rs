//! Why a set of limits files was refused: one type for the crate boundary, every message naming the file, the place
//! in it, and the problem, so an operator can fix the file from the log line alone.

use std::path::Path;

/// A limits file (or directory) that cannot become a [`crate::Limits`].
///
/// `Clone` so a reload's outcome can be both returned to the caller and handed to the report callback.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    /// The file or directory could not be read.
    #[error("{path}: cannot read: {message}")]
    Io {
        /// The path that failed.
        path: String,
        /// The operating system's reason.
        message: String,
    },
    /// Not YAML, or YAML of the wrong shape (unknown or misspelled key, a list where a map belongs, a number that
    /// does not fit, …).
    #[error("{file}:{line}:{column}: {message}")]
    Syntax {
        /// The file's name as given to the loader.
        file: String,
        /// 1-based line of the offending node (0 when the parser could not tell).
        line: u64,
        /// 1-based column of the offending node (0 when the parser could not tell).
        column: u64,
        /// What is wrong there.
        message: String,
    },
    /// Well-formed YAML whose content breaks a rule of the format.
    #[error("{file}: {place}: {problem}")]
    Invalid {
        /// The file's name as given to the loader.
        file: String,
        /// Where in the file: the domain, or the descriptor path such as `messaging.message_type_marketing.to_number`.
        place: String,
        /// What is wrong there.
        problem: String,
    },
    /// Two files configure the same domain (envoyproxy/ratelimit refuses this unless told to merge).
    #[error("{file}: duplicate domain '{domain}': already configured by {first}")]
    DuplicateDomain {
        /// The second file naming the domain.
        file: String,
        /// The domain.
        domain: String,
        /// The file that configured it first.
        first: String,
    },
}

impl LimitsError {
    pub(crate) fn io(path: &Path, err: &std::io::Error) -> Self {
        Self::Io { path: path.display().to_string(), message: err.to_string() }
    }

    pub(crate) fn invalid(file: &str, place: &str, problem: impl Into<String>) -> Self {
        Self::Invalid { file: file.to_owned(), place: place.to_owned(), problem: problem.into() }
    }

    pub(crate) fn syntax(file: &str, err: &serde_saphyr::Error) -> Self {
        let (line, column) = err.location().map_or((0, 0), |l| (l.line(), l.column()));
        Self::Syntax { file: file.to_owned(), line, column, message: plain_message(err) }
    }
}

/// serde-saphyr's `Display` may render a source snippet over several lines; a log line wants its first line only,
/// without a location prefix we already print ourselves.
fn plain_message(err: &serde_saphyr::Error) -> String {
    let full = err.to_string();
    let first = full.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("invalid YAML");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    // "line 4 column 5: unknown field …": the location is already in our own prefix.
    match first.split_once(": ") {
        Some((loc, rest)) if loc.starts_with("line ") && loc.contains(" column ") => rest.to_owned(),
        _ => first.to_owned(),
    }
}
