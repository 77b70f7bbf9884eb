//! Reading `shared_preload_libraries` for the start-up log line: whether TimescaleDB's loader
//! is in the list. The storage mode does not depend on it (only superusers and members of
//! `pg_read_all_settings` may read the list; the migration looks for the loader's own setting
//! instead, see `migrations/timeseries/0001`), but when the list is readable it says why a
//! database came out plain, or that the versioned library was preloaded instead of the loader.
//!
//! The list is parsed as PostgreSQL splits it (`SplitDirectoriesString`): entries separated by
//! commas, whitespace around an entry ignored, an entry in double quotes taken verbatim (`""`
//! inside quotes is one `"`), no case folding. An entry names a library by file name or path:
//! `timescaledb`, `$libdir/timescaledb`, `/usr/lib/postgresql/15/lib/timescaledb.so`.

/// What `shared_preload_libraries` says about TimescaleDB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimescalePreload {
    /// The loader (`timescaledb`, under any directory, with or without a `.so` suffix): the
    /// library TimescaleDB expects to be preloaded.
    Loader,
    /// Only a versioned library (`timescaledb-2.28.3`): loaded, but not the loader that
    /// TimescaleDB documents, so background jobs and version switching are not set up by it.
    Versioned(String),
    /// No TimescaleDB library in the list.
    Absent,
}

impl TimescalePreload {
    /// A short word for the log: `loader`, `versioned <version>`, `absent`.
    pub fn describe(&self) -> String {
        match self {
            TimescalePreload::Loader => "loader".into(),
            TimescalePreload::Versioned(version) => format!("versioned {version}"),
            TimescalePreload::Absent => "absent".into(),
        }
    }
}

/// An unreadable `shared_preload_libraries` value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PreloadError {
    #[error("unterminated double quote in shared_preload_libraries")]
    UnterminatedQuote,
    #[error("unexpected text after a quoted entry in shared_preload_libraries")]
    TextAfterQuote,
    #[error("empty entry in shared_preload_libraries")]
    EmptyEntry,
}

/// The entries of a `shared_preload_libraries` value, in order; an empty or blank value is
/// an empty list.
pub fn libraries(list: &str) -> Result<Vec<String>, PreloadError> {
    let mut out = Vec::new();
    let mut chars = list.chars().peekable();
    let skip_space = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
    };
    skip_space(&mut chars);
    if chars.peek().is_none() {
        return Ok(out);
    }
    loop {
        skip_space(&mut chars);
        let mut entry = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err(PreloadError::UnterminatedQuote),
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        entry.push('"');
                    }
                    Some('"') => break,
                    Some(c) => entry.push(c),
                }
            }
            skip_space(&mut chars);
            if !matches!(chars.peek(), None | Some(',')) {
                return Err(PreloadError::TextAfterQuote);
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                entry.push(c);
                chars.next();
            }
            entry.truncate(entry.trim_end().len());
        }
        if entry.is_empty() {
            return Err(PreloadError::EmptyEntry);
        }
        out.push(entry);
        match chars.next() {
            None => return Ok(out),
            Some(',') => continue,
            Some(_) => unreachable!("an entry ends at a comma or the end"),
        }
    }
}

/// Whether TimescaleDB is among the preloaded libraries (see [`TimescalePreload`]).
pub fn timescaledb(list: &str) -> Result<TimescalePreload, PreloadError> {
    let mut found = TimescalePreload::Absent;
    for entry in libraries(list)? {
        let file = entry.rsplit('/').next().unwrap_or(&entry);
        let name = [".so", ".dylib", ".dll"].iter().find_map(|s| file.strip_suffix(s)).unwrap_or(file);
        if name == "timescaledb" {
            return Ok(TimescalePreload::Loader);
        }
        if let Some(version) = name.strip_prefix("timescaledb-") {
            if version.starts_with(|c: char| c.is_ascii_digit()) {
                found = TimescalePreload::Versioned(version.to_owned());
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_the_loader_and_others() {
        use TimescalePreload::*;
        let cases: &[(&str, Result<TimescalePreload, PreloadError>)] = &[
            ("", Ok(Absent)),
            ("   ", Ok(Absent)),
            ("timescaledb", Ok(Loader)),
            ("pg_stat_statements,timescaledb", Ok(Loader)),
            ("pg_stat_statements, timescaledb", Ok(Loader)),
            ("  timescaledb  ,  pg_stat_statements ", Ok(Loader)),
            ("$libdir/timescaledb", Ok(Loader)),
            ("'$libdir/timescaledb'", Ok(Absent)),
            ("\"timescaledb\"", Ok(Loader)),
            ("\"$libdir/timescaledb\", auto_explain", Ok(Loader)),
            ("/usr/lib/postgresql/15/lib/timescaledb.so", Ok(Loader)),
            ("\"/opt/my libs/timescaledb.so\"", Ok(Loader)),
            ("timescaledb-2.28.3", Ok(Versioned("2.28.3".into()))),
            ("$libdir/timescaledb-2.17.0.so", Ok(Versioned("2.17.0".into()))),
            ("timescaledb-2.28.3,timescaledb", Ok(Loader)),
            ("timescaledb_toolkit", Ok(Absent)),
            ("timescaledb-toolkit", Ok(Absent)),
            ("pg_timescaledb", Ok(Absent)),
            ("TimescaleDB", Ok(Absent)),
            ("\"timescaledb", Err(PreloadError::UnterminatedQuote)),
            ("\"timescaledb\"x", Err(PreloadError::TextAfterQuote)),
            ("pg_stat_statements,,timescaledb", Err(PreloadError::EmptyEntry)),
            ("timescaledb,", Err(PreloadError::EmptyEntry)),
        ];
        for (list, want) in cases {
            assert_eq!(&timescaledb(list), want, "{list:?}");
        }
    }

    #[test]
    fn entries_keep_quoted_commas_and_quotes() {
        assert_eq!(
            libraries(r#"a, "b,c" , "d""e",f g"#).unwrap(),
            vec!["a".to_owned(), "b,c".into(), "d\"e".into(), "f g".into()]
        );
        assert_eq!(libraries("").unwrap(), Vec::<String>::new());
    }
}
