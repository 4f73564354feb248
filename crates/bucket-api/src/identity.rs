//! Who is asking: the bucket key of a request, from the configured header or the client's address, and what a key
//! may look like.
//!
//! Precedence, first match wins:
//! 1. the user header (`X-User-ID` by default), when present: the caller names itself;
//! 2. when the TCP peer is a trusted proxy (`trusted_proxies`): the client address from `Forwarded` (RFC 7239
//!    `for=`), or when that header is absent from `X-Forwarded-For` (else `X-Real-IP`, nginx's `$remote_addr`),
//!    read right to left, skipping trusted proxies: the first untrusted address is the client. Everything left of
//!    it was written by the client and may be forged, so it is never read. A malformed chain falls back to the peer;
//! 3. the peer address. An untrusted peer's forwarding headers are ignored: anyone can send them.
//!
//! An IPv6 client is keyed by its network (`ipv6_prefix`, /64 by default), as one host is routinely handed a whole
//! /64 and could otherwise mint 2^64 buckets; IPv4 by the full address.
//!
//! Everything but [`caller_key`] is pure, so the parsing and the chain walk are unit-tested without a server.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use actix_web::http::header::{HeaderMap, HeaderName};
use actix_web::HttpRequest;
use bucket_store::Key;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Deserializer};
use slog::{debug, Logger};

use crate::error::ApiError;

/// A trusted-proxy network (`10.0.0.0/8`, `2001:db8::/32`), as `trusted_proxies` holds it.
pub type Cidr = IpNet;

/// Why a `trusted_proxies` entry is not a network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IP network: use an address or address/prefix, e.g. 10.0.0.0/8 or 2001:db8::/32")]
pub struct CidrError(String);

/// One `trusted_proxies` entry: a network, or a bare address as a network of one. Host bits are cleared rather
/// than refused (`10.1.2.3/8` plainly means 10.0.0.0/8), and an IPv4-mapped IPv6 address is its IPv4 address, as
/// the chain walk compares canonical addresses.
pub fn parse_cidr(text: &str) -> Result<Cidr, CidrError> {
    let text = text.trim();
    let net = match IpNet::from_str(text) {
        Ok(net) => net,
        Err(_) => {
            IpAddr::from_str(text).map(|addr| IpNet::from(addr.to_canonical())).map_err(|_| CidrError(text.into()))?
        }
    };
    // `::ffff:10.0.0.0/104` is 10.0.0.0/8: as written it could never match the canonical addresses compared here.
    if let IpNet::V6(v6) = net {
        if let (Some(v4), Some(prefix)) = (v6.addr().to_ipv4_mapped(), v6.prefix_len().checked_sub(96)) {
            return Ipv4Net::new(v4, prefix).map(|n| IpNet::V4(n.trunc())).map_err(|_| CidrError(text.into()));
        }
    }
    Ok(net.trunc())
}

/// Parses a comma-separated list of networks; blank entries are skipped.
pub fn parse_cidr_list(text: &str) -> Result<Vec<Cidr>, CidrError> {
    text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(parse_cidr).collect()
}

/// `trusted_proxies` as configuration holds it: a list of networks (the environment's comma-separated form is
/// split into a list by `config_env.rs`).
pub fn deserialize_cidrs<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Cidr>, D::Error> {
    Vec::<String>::deserialize(deserializer)?
        .iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| parse_cidr(s).map_err(serde::de::Error::custom))
        .collect()
}

/// Where the client address came from, for the debug log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientSource {
    /// The TCP peer: no trusted proxy in front, or no forwarding header.
    Peer,
    /// The `Forwarded` header of a trusted proxy.
    Forwarded,
    /// The `X-Forwarded-For` header of a trusted proxy.
    XForwardedFor,
    /// The peer, because a trusted proxy's forwarding header could not be used; the reason is logged.
    PeerAfterMalformed(String),
}

/// The client's address given the peer and the forwarding headers' values (each header's lines in order).
///
/// Pure: the request-facing wrapper is [`caller_key`]. An empty `trusted` list means forwarding headers are never
/// read.
pub fn client_ip(
    peer: IpAddr,
    forwarded: &[&[u8]],
    x_forwarded_for: &[&[u8]],
    trusted: &[Cidr],
) -> (IpAddr, ClientSource) {
    let peer = peer.to_canonical();
    let is_trusted = |addr: IpAddr| trusted.iter().any(|net| net.contains(&addr));
    if !is_trusted(peer) {
        return (peer, ClientSource::Peer);
    }
    // `Forwarded` is the standard and wins; the two are not merged, as a proxy writing both writes the same hops.
    let (chain, source) = if !forwarded.is_empty() {
        (forwarded_chain(forwarded), ClientSource::Forwarded)
    } else if !x_forwarded_for.is_empty() {
        (x_forwarded_for_chain(x_forwarded_for), ClientSource::XForwardedFor)
    } else {
        return (peer, ClientSource::Peer);
    };
    let chain = match chain {
        Ok(chain) if !chain.is_empty() => chain,
        Ok(_) => return (peer, ClientSource::PeerAfterMalformed("the forwarding header lists no address".into())),
        Err(reason) => return (peer, ClientSource::PeerAfterMalformed(reason)),
    };
    // Right to left: the rightmost hop was written by our trusted peer, each further one by the hop to its right.
    // Stop at the first address that is not ours; if every hop is trusted the leftmost is the client.
    let mut client = peer;
    for hop in chain.iter().rev() {
        match hop {
            Hop::Addr(addr) => {
                client = *addr;
                if !is_trusted(*addr) {
                    break;
                }
            }
            Hop::Unusable(node) => {
                return (peer, ClientSource::PeerAfterMalformed(format!("unusable hop {node:?} in the chain")));
            }
        }
    }
    (client, source)
}

/// One entry of a forwarding chain.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Hop {
    Addr(IpAddr),
    /// `unknown`, an obfuscated name (`_hidden`), or garbage: it names no address, so the walk cannot pass it.
    Unusable(String),
}

/// The `for=` of every element of `Forwarded`, in order. An element without `for=` is a hop that did not record
/// its client: unusable.
fn forwarded_chain(lines: &[&[u8]]) -> Result<Vec<Hop>, String> {
    let mut hops = Vec::new();
    for line in lines {
        let line = std::str::from_utf8(line).map_err(|_| "Forwarded is not UTF-8".to_string())?;
        for element in split_outside_quotes(line, ',')? {
            let mut node = None;
            for pair in split_outside_quotes(element, ';')? {
                let pair = pair.trim();
                if pair.is_empty() {
                    continue;
                }
                let (name, value) = pair.split_once('=').ok_or_else(|| format!("Forwarded pair {pair:?} has no ="))?;
                if name.trim().eq_ignore_ascii_case("for") {
                    if node.is_some() {
                        return Err("Forwarded element with two for= parameters".into());
                    }
                    node = Some(unquote(value.trim())?);
                }
            }
            hops.push(match node {
                Some(node) => parse_node(&node),
                None => Hop::Unusable(element.trim().to_string()),
            });
        }
    }
    Ok(hops)
}

/// The addresses of `X-Forwarded-For`, in order.
fn x_forwarded_for_chain(lines: &[&[u8]]) -> Result<Vec<Hop>, String> {
    let mut hops = Vec::new();
    for line in lines {
        let line = std::str::from_utf8(line).map_err(|_| "X-Forwarded-For is not UTF-8".to_string())?;
        for entry in line.split(',') {
            hops.push(parse_node(entry.trim().trim_matches('"')));
        }
    }
    Ok(hops)
}

/// Splits on `separator` except inside a quoted-string (RFC 7230, with `\` escapes).
fn split_outside_quotes(text: &str, separator: char) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == separator && !quoted => {
                parts.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    if quoted {
        return Err("unterminated quoted string in Forwarded".into());
    }
    parts.push(&text[start..]);
    Ok(parts)
}

/// A token or a quoted-string value, unescaped.
fn unquote(value: &str) -> Result<String, String> {
    let Some(inner) = value.strip_prefix('"') else { return Ok(value.to_string()) };
    let inner = inner.strip_suffix('"').ok_or_else(|| format!("unbalanced quotes in {value:?}"))?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        out.push(if c == '\\' { chars.next().ok_or_else(|| format!("dangling escape in {value:?}"))? } else { c });
    }
    Ok(out)
}

/// A node (`192.0.2.1`, `192.0.2.1:80`, `[2001:db8::1]`, `[2001:db8::1]:80`, a bare IPv6 address) as an address.
fn parse_node(node: &str) -> Hop {
    let addr = if let Some(rest) = node.strip_prefix('[') {
        // `[v6]` or `[v6]:port`
        rest.split_once(']')
            .filter(|(_, after)| after.is_empty() || valid_port(after.strip_prefix(':').unwrap_or("x")))
            .and_then(|(inner, _)| Ipv6Addr::from_str(inner).ok())
            .map(IpAddr::V6)
    } else if let Ok(addr) = IpAddr::from_str(node) {
        Some(addr)
    } else {
        // `v4:port`; a bare IPv6 address was handled above, so one colon here means a port.
        node.split_once(':')
            .filter(|(_, port)| valid_port(port))
            .and_then(|(host, _)| Ipv4Addr::from_str(host).ok())
            .map(IpAddr::V4)
    };
    match addr {
        Some(addr) => Hop::Addr(addr.to_canonical()),
        None => Hop::Unusable(node.to_string()),
    }
}

/// RFC 7239 ports: digits, or an obfuscated `_name`.
fn valid_port(port: &str) -> bool {
    (port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok())
        || (port.starts_with('_') && port.len() > 1)
}

/// The bucket key of a client address: IPv4 as is, IPv6 as its `/ipv6_prefix` network (`2001:db8:1:2::/64`),
/// unless the prefix is 128.
pub fn address_key(addr: IpAddr, ipv6_prefix: u8) -> String {
    match addr.to_canonical() {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) if ipv6_prefix >= 128 => a.to_string(),
        IpAddr::V6(a) => Ipv6Net::new(a, ipv6_prefix).map_or_else(|_| a.to_string(), |net| net.trunc().to_string()),
    }
}

/// How [`caller_key`] identifies callers: the relevant slice of the configuration.
#[derive(Debug, Clone, Copy)]
pub struct IdentitySettings<'a> {
    /// Header naming the caller, as configured (error messages use this spelling).
    pub user_header: &'a str,
    /// The same header parsed, for the look-up.
    pub user_header_name: &'a HeaderName,
    /// Whether a caller without that header is keyed by address.
    pub peer_fallback: bool,
    /// Proxies whose forwarding headers are believed.
    pub trusted_proxies: &'a [Cidr],
    /// Network size that keys an IPv6 client.
    pub ipv6_prefix: u8,
}

/// The caller's key: the value of the user header if present, else the client address (see the module docs for
/// the order), when `peer_fallback` is on.
///
/// The peer's port is left out because it changes with every connection. A key from the header is borrowed from
/// the request, so a decision copies no key.
pub fn caller_key<'r>(
    req: &'r HttpRequest,
    settings: IdentitySettings<'_>,
    log: &Logger,
) -> Result<Cow<'r, str>, ApiError> {
    let header = settings.user_header;
    if let Some(value) = req.headers().get(settings.user_header_name) {
        let key = std::str::from_utf8(value.as_bytes())
            .map_err(|_| ApiError::InvalidHeader(format!("header {header} is not valid UTF-8")))?
            .trim();
        if key.is_empty() {
            return Err(ApiError::InvalidHeader(format!("header {header} is empty")));
        }
        return Ok(Cow::Borrowed(Key::new(key)?.as_str()));
    }
    if !settings.peer_fallback {
        return Err(ApiError::MissingIdentity(format!("header {header} is required")));
    }
    let peer = req
        .peer_addr()
        .ok_or_else(|| ApiError::MissingIdentity(format!("no {header} header and no peer address to fall back on")))?;
    let mut x_forwarded_for = header_lines(req.headers(), "x-forwarded-for");
    if x_forwarded_for.is_empty() {
        x_forwarded_for = header_lines(req.headers(), "x-real-ip");
    }
    let (client, source) =
        client_ip(peer.ip(), &header_lines(req.headers(), "forwarded"), &x_forwarded_for, settings.trusted_proxies);
    if let ClientSource::PeerAfterMalformed(reason) = &source {
        debug!(log, "ignoring a trusted proxy's forwarding header"; "peer" => %peer.ip(), "reason" => reason);
    }
    Ok(Cow::Owned(address_key(client, settings.ipv6_prefix)))
}

fn header_lines<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a [u8]> {
    headers.get_all(name).map(|value| value.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn nets(list: &str) -> Vec<Cidr> {
        parse_cidr_list(list).unwrap()
    }

    fn resolve(peer: &str, fwd: &[&str], xff: &[&str], trusted: &str) -> (IpAddr, ClientSource) {
        let fwd: Vec<&[u8]> = fwd.iter().map(|s| s.as_bytes()).collect();
        let xff: Vec<&[u8]> = xff.iter().map(|s| s.as_bytes()).collect();
        client_ip(ip(peer), &fwd, &xff, &nets(trusted))
    }

    #[test]
    fn cidrs_parse_mask_and_match() {
        let trusts = |list: &str, addr: &str| resolve(addr, &[], &["203.0.113.1"], list).1 != ClientSource::Peer;
        let net = parse_cidr("10.1.2.3/8").unwrap();
        assert_eq!(net.to_string(), "10.0.0.0/8");
        assert!(trusts("10.1.2.3/8", "10.255.0.1"));
        assert!(!trusts("10.0.0.0/8", "11.0.0.1"));
        assert!(trusts("10.0.0.0/8", "::ffff:10.0.0.9"), "IPv4-mapped IPv6 is the IPv4 address");
        assert_eq!(parse_cidr("192.0.2.1").unwrap().to_string(), "192.0.2.1/32");
        assert_eq!(parse_cidr("::ffff:192.0.2.1").unwrap().to_string(), "192.0.2.1/32");
        assert_eq!(parse_cidr("::ffff:10.1.0.0/104").unwrap().to_string(), "10.0.0.0/8");
        assert!(trusts("::ffff:10.0.0.0/104", "10.2.3.4"));
        assert!(!trusts("192.0.2.1", "192.0.2.2"));
        assert!(trusts("2001:db8::/32", "2001:db8:ffff::1"));
        assert!(!trusts("2001:db8::/32", "2001:db9::1"));
        assert!(!trusts("2001:db8::/32", "10.0.0.1"));
        assert!(trusts("0.0.0.0/0", "203.0.113.9"));
        for bad in ["", "10.0.0.0/33", "::/129", "10.0.0.0/", "10.0.0.0/+8", "host/8", "10.0.0.0/8/8", "1.2.3"] {
            assert!(parse_cidr(bad).is_err(), "{bad:?} should not parse");
        }
        assert_eq!(parse_cidr_list(" 10.0.0.0/8, ,::1 ").unwrap().len(), 2);
        assert!(parse_cidr_list("").unwrap().is_empty());
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let r = resolve("203.0.113.5", &["for=1.1.1.1"], &["2.2.2.2"], "10.0.0.0/8");
        assert_eq!(r, (ip("203.0.113.5"), ClientSource::Peer));
        let r = resolve("10.0.0.1", &["for=1.1.1.1"], &["2.2.2.2"], "");
        assert_eq!(r, (ip("10.0.0.1"), ClientSource::Peer), "nothing trusted without configuration");
    }

    #[test]
    fn x_forwarded_for_is_read_right_to_left_skipping_trusted_hops() {
        let trusted = "10.0.0.0/8";
        let r = resolve("10.0.0.1", &[], &["6.6.6.6, 203.0.113.7, 10.0.0.2"], trusted);
        assert_eq!(r, (ip("203.0.113.7"), ClientSource::XForwardedFor), "the forged leftmost entry is never read");
        let r = resolve("10.0.0.1", &[], &["6.6.6.6", "203.0.113.7"], trusted);
        assert_eq!(r.0, ip("203.0.113.7"), "header lines join in order");
        let r = resolve("10.0.0.1", &[], &["10.0.0.3, 10.0.0.2"], trusted);
        assert_eq!(r.0, ip("10.0.0.3"), "an all-trusted chain gives its leftmost");
        let r = resolve("10.0.0.1", &[], &["203.0.113.7:4711"], trusted);
        assert_eq!(r.0, ip("203.0.113.7"), "ports are dropped");
        let r = resolve("10.0.0.1", &[], &["[2001:db8::7]:443"], trusted);
        assert_eq!(r.0, ip("2001:db8::7"));
        let r = resolve("10.0.0.1", &[], &["2001:db8::8"], trusted);
        assert_eq!(r.0, ip("2001:db8::8"), "bare IPv6");
    }

    #[test]
    fn forwarded_wins_and_takes_quoted_ipv6_with_ports() {
        let trusted = "10.0.0.0/8, 2001:db8:ffff::/48";
        let r = resolve(
            "10.0.0.1",
            &[r#"for="_gazonk", for=198.51.100.17;proto=https, For="[2001:db8:cafe::17]:4711";by=10.0.0.1"#],
            &["9.9.9.9"],
            trusted,
        );
        assert_eq!(r, (ip("2001:db8:cafe::17"), ClientSource::Forwarded));
        let r = resolve("10.0.0.1", &["for=198.51.100.17:8080", r#"for="[2001:db8:ffff::1]""#], &[], trusted);
        assert_eq!(r.0, ip("198.51.100.17"), "trusted IPv6 hop skipped, IPv4 with a port taken");
        let r = resolve("10.0.0.1", &[r#"for="198.51.100.9""#], &[], trusted);
        assert_eq!(r.0, ip("198.51.100.9"), "quoted IPv4");
    }

    #[test]
    fn malformed_chains_fall_back_to_the_peer() {
        let trusted = "10.0.0.0/8";
        for (fwd, xff) in [
            (vec!["for=unknown"], vec![]),
            (vec!["for=\"[2001:db8::1\""], vec![]),
            (vec!["for=\"unterminated"], vec![]),
            (vec!["proto=https"], vec![]),
            (vec!["for"], vec![]),
            (vec!["for=1.2.3.4;for=5.6.7.8"], vec![]),
            (vec![], vec!["not-an-ip"]),
            (vec![], vec!["1.2.3.4, , 10.0.0.2"]),
            (vec![], vec!["1.2.3.4:99999"]),
            (vec![], vec![""]),
        ] {
            let r = resolve("10.0.0.1", &fwd, &xff, trusted);
            assert_eq!(r.0, ip("10.0.0.1"), "{fwd:?} {xff:?}");
            assert!(matches!(r.1, ClientSource::PeerAfterMalformed(_)), "{fwd:?} {xff:?}: {:?}", r.1);
        }
        // Garbage left of the client is never read, so it cannot break anything.
        let r = resolve("10.0.0.1", &[], &["garbage, 203.0.113.7"], trusted);
        assert_eq!(r.0, ip("203.0.113.7"));
        let not_utf8: &[u8] = b"for=\xff";
        assert_eq!(client_ip(ip("10.0.0.1"), &[not_utf8], &[], &nets(trusted)).0, ip("10.0.0.1"));
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_network() {
        assert_eq!(address_key(ip("2001:db8:1:2:aaaa::1"), 64), "2001:db8:1:2::/64");
        assert_eq!(address_key(ip("2001:db8:1:2:ffff::9"), 64), "2001:db8:1:2::/64");
        assert_eq!(address_key(ip("2001:db8:1:3::1"), 64), "2001:db8:1:3::/64");
        assert_eq!(address_key(ip("2001:db8:1:2:aaaa::1"), 48), "2001:db8:1::/48");
        assert_eq!(address_key(ip("2001:db8::1"), 128), "2001:db8::1");
        assert_eq!(address_key(ip("203.0.113.7"), 64), "203.0.113.7");
        assert_eq!(address_key(ip("::ffff:203.0.113.7"), 64), "203.0.113.7", "IPv4-mapped is IPv4");
    }
}
