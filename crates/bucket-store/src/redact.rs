//! Hiding passwords in connection strings before they reach a log line, an error message or a `Debug` print.
//!
//! One implementation for every URL the service holds (PostgreSQL in URL or libpq key-value form, Redis), so the
//! start-up log, the stores' connection warnings and `Config::redacted()` cannot disagree about what is secret.

/// Hides every password in a connection string: the userinfo password of `scheme://user:password@host/...`, and
/// the value of any `password=` parameter, in a URL's query (`?password=...`) or a libpq key-value string
/// (`host=db password='s e' dbname=x`). Everything else is kept so an operator can still read where it points.
pub fn redact_url(url: &str) -> String {
    redact_password_params(&redact_userinfo(url))
}

fn redact_userinfo(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else { return url.to_string() };
    let rest = &url[scheme_end..];
    let Some(first_at) = rest.find('@') else { return url.to_string() };
    // The authority ends at the first `/`, `?` or `#` after the first `@`, so an unencoded `/` inside a password
    // still counts as password; the userinfo ends at the last `@` before that.
    let authority_end = rest[first_at..].find(['/', '?', '#']).map_or(rest.len(), |i| first_at + i);
    let Some(at) = rest[..authority_end].rfind('@') else { return url.to_string() };
    let userinfo = &rest[..at];
    let user = match userinfo.find(':') {
        Some(colon) => &userinfo[..colon],
        // A lone userinfo in a Redis URL (`redis://secret@host`) is the password.
        None if url.starts_with("redis") => "",
        None => return url.to_string(),
    };
    format!("{}{}:***{}", &url[..scheme_end], user, &rest[at..])
}

/// Replaces the value after every `password=` (any case, any `*password` such as `sslpassword`) with `***`; a
/// value in single quotes (libpq) ends at the closing quote, others at whitespace or `&`.
fn redact_password_params(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut pos = 0;
    while let Some(found) = lower[pos..].find("password") {
        let key_end = pos + found + "password".len();
        let after_key = &text[key_end..];
        let spaces = after_key.len() - after_key.trim_start().len();
        let Some(value_text) = after_key.trim_start().strip_prefix('=') else {
            out.push_str(&text[pos..key_end]);
            pos = key_end;
            continue;
        };
        let value_start = key_end + spaces + 1 + (value_text.len() - value_text.trim_start().len());
        let value = &text[value_start..];
        let value_len = if let Some(quoted) = value.strip_prefix('\'') {
            let mut escaped = false;
            let close = quoted.char_indices().find(|&(_, c)| {
                let closes = c == '\'' && !escaped;
                escaped = c == '\\' && !escaped;
                closes
            });
            close.map_or(value.len(), |(i, _)| i + 2)
        } else {
            value.find(|c: char| c.is_whitespace() || c == '&').unwrap_or(value.len())
        };
        out.push_str(&text[pos..value_start]);
        out.push_str("***");
        pos = value_start + value_len;
    }
    out.push_str(&text[pos..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden_in_every_form_and_the_rest_kept() {
        assert_eq!(redact_url("postgres://app:s3cr3t@db:5432/bucket"), "postgres://app:***@db:5432/bucket");
        assert_eq!(redact_url("redis://:pw@cache:6379/0"), "redis://:***@cache:6379/0");
        assert_eq!(redact_url("redis://pw@cache"), "redis://:***@cache");
        assert_eq!(redact_url("postgres://app@db/bucket"), "postgres://app@db/bucket");
        assert_eq!(redact_url("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redact_url("postgres://a:b@c/d?x=e@f"), "postgres://a:***@c/d?x=e@f");
        assert_eq!(redact_url("postgres://app:p%40ss%2Fw@db/x"), "postgres://app:***@db/x");
        assert_eq!(redact_url("postgres://app:pa/ss@db/x"), "postgres://app:***@db/x");
        assert_eq!(
            redact_url("postgres://db/x?user=a&password=hunter2&sslmode=require"),
            "postgres://db/x?user=a&password=***&sslmode=require"
        );
        assert_eq!(redact_url("host=db user=app password=hunter2 dbname=x"), "host=db user=app password=*** dbname=x");
        assert_eq!(redact_url("host=db PASSWORD = 'it\\'s secret' dbname=x"), "host=db PASSWORD = *** dbname=x");
        assert_eq!(redact_url("host=db password='unterminated"), "host=db password=***");
        assert_eq!(redact_url("password"), "password");
        // The forms the stores' own tests pinned before they shared this function.
        assert_eq!(redact_url("postgres://bob:s3cr@t@db:5432/x"), "postgres://bob:***@db:5432/x");
        assert_eq!(redact_url("rediss://app:p@ss@host"), "rediss://app:***@host");
        assert_eq!(redact_url("redis://app:s3cret@host/1"), "redis://app:***@host/1");
    }
}
