//! Hiding passwords in connection strings before they reach a log line, an error message or a `Debug` print.
//!
//! The string is parsed, never searched: a URL by the `url` crate (its password, and any `*password` query
//! parameter, replaced by `***`), a libpq key=value string by tokio-postgres (shown as its host, port, user and
//! database). What does not parse is not shown at all, since nothing says where its secret is. One
//! implementation for every URL the service holds, so the start-up log, the stores' connection warnings and the
//! service's printed configuration cannot disagree about what is secret.

use std::str::FromStr;

use url::Url;

/// What is printed for a connection string that does not parse.
const UNPARSED: &str = "<unparsable connection string, not shown>";

/// The password replacement.
const HIDDEN: &str = "***";

/// `url` with every password hidden and everything else an operator needs to see where it points kept.
pub fn redact_url(url: &str) -> String {
    // Several Redis URLs (cluster seeds, sentinels), comma-separated: each on its own.
    if url.matches("://").count() > 1 && url.contains(',') {
        return url.split(',').map(|one| redact_url(one.trim())).collect::<Vec<_>>().join(",");
    }
    if url.contains("://") {
        redact_parsed_url(url)
    } else {
        describe_key_value(url)
    }
}

fn redact_parsed_url(text: &str) -> String {
    let Ok(mut url) = Url::parse(text) else { return UNPARSED.to_owned() };
    if url.password().is_some() {
        // Fails only for a URL without a host, which cannot hold a password either.
        let _ = url.set_password(Some(HIDDEN));
    } else if url.scheme().starts_with("redis") && !url.username().is_empty() {
        // A lone userinfo in a Redis URL (`redis://secret@host`) is the password.
        let _ = url.set_username("");
        let _ = url.set_password(Some(HIDDEN));
    }
    if let Some(query) = url.query() {
        let query = query
            .split('&')
            .map(|pair| {
                let key = url::form_urlencoded::parse(pair.as_bytes()).next().map(|(key, _)| key);
                match key {
                    // `password`, `sslpassword`, any case.
                    Some(key) if key.to_ascii_lowercase().ends_with("password") => {
                        format!("{}={HIDDEN}", pair.split('=').next().unwrap_or_default())
                    }
                    _ => pair.to_owned(),
                }
            })
            .collect::<Vec<_>>()
            .join("&");
        url.set_query(Some(&query));
    }
    url.to_string()
}

/// A libpq key=value string as its host(s), port(s), user and database, plus `password=***` when it has one.
fn describe_key_value(text: &str) -> String {
    let Ok(config) = tokio_postgres::Config::from_str(text) else { return UNPARSED.to_owned() };
    let mut parts = Vec::new();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|host| match host {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    if !hosts.is_empty() {
        parts.push(format!("host={}", hosts.join(",")));
    }
    let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
    if !ports.is_empty() {
        parts.push(format!("port={}", ports.join(",")));
    }
    if let Some(user) = config.get_user() {
        parts.push(format!("user={user}"));
    }
    if config.get_password().is_some() {
        parts.push(format!("password={HIDDEN}"));
    }
    if let Some(dbname) = config.get_dbname() {
        parts.push(format!("dbname={dbname}"));
    }
    parts.join(" ")
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
        assert_eq!(
            redact_url("postgres://db/x?user=a&password=hunter2&sslmode=require"),
            "postgres://db/x?user=a&password=***&sslmode=require"
        );
        assert_eq!(redact_url("postgres://db/x?SSLPassword=hunter2"), "postgres://db/x?SSLPassword=***");
        assert_eq!(redact_url("host=db user=app password=hunter2 dbname=x"), "host=db user=app password=*** dbname=x");
        assert_eq!(redact_url("host=db password='it\\'s secret' dbname=x"), "host=db password=*** dbname=x");
        assert_eq!(redact_url("host=a,b port=1,2 dbname=x"), "host=a,b port=1,2 dbname=x");
        assert_eq!(redact_url("postgres://bob:s3cr@t@db:5432/x"), "postgres://bob:***@db:5432/x");
        assert_eq!(redact_url("rediss://app:p@ss@host"), "rediss://app:***@host");
        assert_eq!(redact_url("redis://app:s3cret@host/1"), "redis://app:***@host/1");
        assert_eq!(redact_url("redis://:pw@a:1, redis://:pw@b:2"), "redis://:***@a:1,redis://:***@b:2");
    }

    #[test]
    fn what_does_not_parse_is_not_shown() {
        // An unencoded `/` ends the authority, so the password looks like a port: no parser can say where the
        // secret is, and nothing of it is printed.
        for text in ["postgres://app:pa/ss@db/x", "host=db PASSWORD=hunter2", "host=db password='unterminated"] {
            assert_eq!(redact_url(text), UNPARSED, "{text}");
        }
    }
}
