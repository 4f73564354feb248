//! Just enough parsing of `postgres://` and `redis://` URLs to know where a server should be and whether the xtask
//! may start it (only on this machine). Anything fancier is the drivers' business, so the URL is passed on unchanged.

use std::net::{SocketAddr, ToSocketAddrs};

use anyhow::{anyhow, bail, Context, Result};

/// The parts of a service URL the xtask needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceUrl {
    /// The URL as given, passed on to the tests unchanged.
    pub raw: String,
    /// User name, if the URL names one.
    pub user: Option<String>,
    /// Password, if the URL carries one (never printed).
    pub password: Option<String>,
    /// Host name or address, without IPv6 brackets.
    pub host: String,
    /// Port, or the scheme's default.
    pub port: u16,
    /// The path without its leading slash and without the query: the database name for PostgreSQL.
    pub path: String,
}

impl ServiceUrl {
    /// Parses `raw`, using `default_port` when it names none.
    pub fn parse(raw: &str, default_port: u16) -> Result<Self> {
        let (_scheme, rest) = raw.split_once("://").ok_or_else(|| anyhow!("`{raw}` is not a URL (no `scheme://`)"))?;
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((userinfo, hostport)) => (Some(userinfo), hostport),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            Some(info) => match info.split_once(':') {
                Some((user, password)) => (Some(user.to_string()), Some(password.to_string())),
                None => (Some(info.to_string()), None),
            },
            None => (None, None),
        };
        let (host, port) = if let Some(bracketed) = hostport.strip_prefix('[') {
            let (host, after) =
                bracketed.split_once(']').ok_or_else(|| anyhow!("`{raw}`: unclosed `[` in the IPv6 address"))?;
            (host, after.strip_prefix(':'))
        } else {
            match hostport.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (hostport, None),
            }
        };
        let port = match port {
            Some(port) if !port.is_empty() => port.parse().with_context(|| format!("`{raw}`: bad port `{port}`"))?,
            _ => default_port,
        };
        if host.is_empty() {
            bail!("`{raw}` names no host");
        }
        let path = tail.split('?').next().unwrap_or("").trim_start_matches('/').to_string();
        Ok(Self {
            raw: raw.to_string(),
            user: user.filter(|u| !u.is_empty()),
            password: password.filter(|p| !p.is_empty()),
            host: host.to_string(),
            port,
            path,
        })
    }

    /// Whether the server would run on this machine, the only place the xtask may start one.
    pub fn is_local(&self) -> bool {
        matches!(self.host.as_str(), "localhost" | "::1") || self.host.starts_with("127.")
    }

    /// The address to connect to (the first one the host name resolves to).
    pub fn socket_addr(&self) -> Result<SocketAddr> {
        (self.host.as_str(), self.port)
            .to_socket_addrs()
            .with_context(|| format!("cannot resolve the host `{}`", self.host))?
            .next()
            .ok_or_else(|| anyhow!("the host `{}` resolves to no address", self.host))
    }

    /// The URL with its password masked, for messages.
    pub fn redacted(&self) -> String {
        match &self.password {
            Some(password) => self.raw.replacen(&format!(":{password}@"), ":***@", 1),
            None => self.raw.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_url_with_user_port_and_database() {
        let url = ServiceUrl::parse("postgres://postgres@127.0.0.1:5433/test?sslmode=disable", 5432).unwrap();
        assert_eq!(url.user.as_deref(), Some("postgres"));
        assert_eq!((url.host.as_str(), url.port, url.path.as_str()), ("127.0.0.1", 5433, "test"));
        assert!(url.is_local());
    }

    #[test]
    fn redis_url_without_port_gets_the_default() {
        let url = ServiceUrl::parse("redis://localhost", 6379).unwrap();
        assert_eq!((url.host.as_str(), url.port, url.user), ("localhost", 6379, None));
    }

    #[test]
    fn password_is_masked_and_ipv6_is_unbracketed() {
        let url = ServiceUrl::parse("redis://:secret@[::1]:6380/0", 6379).unwrap();
        assert_eq!((url.host.as_str(), url.port), ("::1", 6380));
        assert_eq!(url.redacted(), "redis://:***@[::1]:6380/0");
    }

    #[test]
    fn remote_host_is_not_local() {
        assert!(!ServiceUrl::parse("postgres://db.example:5432/x", 5432).unwrap().is_local());
    }

    #[test]
    fn text_without_scheme_is_refused() {
        assert!(ServiceUrl::parse("127.0.0.1:5432", 5432).is_err());
    }
}
