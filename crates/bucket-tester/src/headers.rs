//! The structured-field forms of the IETF rate-limit headers (`RateLimit-Policy`, `RateLimit`), read leniently.
//!
//! Both headers are RFC 8941 lists whose members are an item (the policy name) with parameters, e.g.
//! `"default";q=10;w=10`. Only what the tester needs is parsed: a list of items with parameters, no inner lists.
//! A value that doesn't parse yields `None`, and the caller reports the header as missing or malformed: a server
//! that sends garbage is judged, never trusted.

/// One policy from `RateLimit-Policy`: the quota a bucket holds and the seconds it takes to refill from empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyField {
    /// The policy's name (the item), e.g. `default`.
    pub name: String,
    /// `q`: the quota, which is the bucket's capacity.
    pub quota: u64,
    /// `w`: seconds to refill from empty, rounded up; optional in the draft.
    pub window: Option<u64>,
}

/// One member of `RateLimit`: what is left of a policy's quota and when more arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitField {
    /// The policy's name (the item), e.g. `default`.
    pub name: String,
    /// `r`: whole tokens remaining.
    pub remaining: u64,
    /// `t`: seconds until the next token (or until `cost` tokens after a refusal), rounded up.
    pub reset: Option<u64>,
}

/// Reads the first policy of a `RateLimit-Policy` value; `None` when it is malformed or has no `q`.
pub fn parse_policy(value: &str) -> Option<PolicyField> {
    let member = parse_list(value).ok()?.into_iter().next()?;
    Some(PolicyField { quota: member.uint("q")?, window: member.uint("w"), name: member.item })
}

/// Reads the first member of a `RateLimit` value; `None` when it is malformed or has no `r`.
pub fn parse_ratelimit(value: &str) -> Option<RateLimitField> {
    let member = parse_list(value).ok()?.into_iter().next()?;
    Some(RateLimitField { remaining: member.uint("r")?, reset: member.uint("t"), name: member.item })
}

/// A list member: its item rendered as text and its parameters in order.
#[derive(Debug)]
struct Member {
    item: String,
    params: Vec<(String, Bare)>,
}

impl Member {
    /// A parameter as a non-negative integer; a negative, decimal or textual one counts as absent.
    fn uint(&self, key: &str) -> Option<u64> {
        self.params.iter().find(|(k, _)| k == key).and_then(|(_, v)| match v {
            Bare::Integer(n) => u64::try_from(*n).ok(),
            _ => None,
        })
    }
}

/// The bare item types of RFC 8941 that a rate-limit header can carry.
#[derive(Debug, Clone, PartialEq)]
enum Bare {
    Integer(i64),
    Decimal(f64),
    Text(String),
    Boolean(bool),
}

impl Bare {
    fn render(&self) -> String {
        match self {
            Bare::Integer(n) => n.to_string(),
            Bare::Decimal(d) => d.to_string(),
            Bare::Text(s) => s.clone(),
            Bare::Boolean(b) => b.to_string(),
        }
    }
}

fn parse_list(input: &str) -> Result<Vec<Member>, String> {
    let mut p = Parser { bytes: input.as_bytes(), pos: 0 };
    let mut members = Vec::new();
    p.skip(b" \t");
    while !p.done() {
        let item = p.bare_item()?.render();
        let params = p.params()?;
        members.push(Member { item, params });
        p.skip(b" \t");
        if p.done() {
            break;
        }
        p.expect(b',')?;
        p.skip(b" \t");
        if p.done() {
            return Err("trailing comma".into());
        }
    }
    Ok(members)
}

struct Parser<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn done(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip(&mut self, set: &[u8]) {
        while self.peek().is_some_and(|b| set.contains(&b)) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, want: u8) -> Result<(), String> {
        match self.peek() {
            Some(b) if b == want => {
                self.pos += 1;
                Ok(())
            }
            other => Err(format!("expected {:?} at {}, found {:?}", want as char, self.pos, other.map(char::from))),
        }
    }

    fn params(&mut self) -> Result<Vec<(String, Bare)>, String> {
        let mut params = Vec::new();
        while self.peek() == Some(b';') {
            self.pos += 1;
            self.skip(b" ");
            let key = self.key()?;
            // A key without a value is boolean true (RFC 8941 §3.1.2).
            let value = if self.peek() == Some(b'=') {
                self.pos += 1;
                self.bare_item()?
            } else {
                Bare::Boolean(true)
            };
            params.push((key, value));
        }
        Ok(params)
    }

    fn key(&mut self) -> Result<String, String> {
        let start = self.pos;
        match self.peek() {
            Some(b) if b.is_ascii_lowercase() || b == b'*' => self.pos += 1,
            _ => return Err(format!("expected a parameter key at {start}")),
        }
        while self.peek().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.*".contains(&b)) {
            self.pos += 1;
        }
        Ok(String::from_utf8_lossy(&self.bytes[start..self.pos]).into_owned())
    }

    fn bare_item(&mut self) -> Result<Bare, String> {
        match self.peek() {
            Some(b'"') => self.string(),
            Some(b'?') => self.boolean(),
            Some(b) if b == b'-' || b.is_ascii_digit() => self.number(),
            Some(b) if b.is_ascii_alphabetic() || b == b'*' => Ok(self.token()),
            other => Err(format!("unexpected {:?} at {}", other.map(char::from), self.pos)),
        }
    }

    fn string(&mut self) -> Result<Bare, String> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.peek() {
                None => return Err("unterminated string".into()),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(Bare::Text(out));
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(c @ (b'"' | b'\\')) => out.push(c as char),
                        _ => return Err("bad escape in string".into()),
                    }
                    self.pos += 1;
                }
                Some(c) if (0x20..0x7f).contains(&c) => {
                    out.push(c as char);
                    self.pos += 1;
                }
                Some(c) => return Err(format!("byte {c:#x} not allowed in a string")),
            }
        }
    }

    fn boolean(&mut self) -> Result<Bare, String> {
        self.pos += 1;
        let value = match self.peek() {
            Some(b'1') => true,
            Some(b'0') => false,
            _ => return Err("expected ?0 or ?1".into()),
        };
        self.pos += 1;
        Ok(Bare::Boolean(value))
    }

    fn number(&mut self) -> Result<Bare, String> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        while self.peek().is_some_and(|b| b.is_ascii_digit() || b == b'.') {
            self.pos += 1;
        }
        let text = std::str::from_utf8(&self.bytes[start..self.pos]).map_err(|e| e.to_string())?;
        if text.contains('.') {
            text.parse().map(Bare::Decimal).map_err(|_| format!("bad decimal {text:?}"))
        } else {
            text.parse().map(Bare::Integer).map_err(|_| format!("bad integer {text:?}"))
        }
    }

    fn token(&mut self) -> Bare {
        let start = self.pos;
        // tchar plus ":" and "/" (RFC 8941 §3.3.4); none of the separators of a list or parameter.
        while self.peek().is_some_and(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:/".contains(&b)) {
            self.pos += 1;
        }
        Bare::Text(String::from_utf8_lossy(&self.bytes[start..self.pos]).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_documented_policy_form() {
        let p = parse_policy(r#""default";q=10;w=10"#).unwrap();
        assert_eq!(p, PolicyField { name: "default".into(), quota: 10, window: Some(10) });
    }

    #[test]
    fn reads_the_documented_ratelimit_form() {
        let r = parse_ratelimit(r#""default";r=3;t=1"#).unwrap();
        assert_eq!(r, RateLimitField { name: "default".into(), remaining: 3, reset: Some(1) });
    }

    #[test]
    fn accepts_a_token_name_spaces_and_several_members() {
        let p = parse_policy(r#"burst;q=100;w=60 ,  "daily";q=1000;w=86400"#).unwrap();
        assert_eq!((p.name.as_str(), p.quota, p.window), ("burst", 100, Some(60)));
    }

    #[test]
    fn unknown_parameters_and_escapes_do_not_confuse_it() {
        let p = parse_policy(r#""a \"q\" b";pk=:abc:;qu="x";q=5"#);
        // `pk=:abc:` is a byte sequence, which this parser does not read: the whole value is rejected.
        assert_eq!(p, None);
        let p = parse_policy(r#""a \"q\" b";qu="x";flag;q=5"#).unwrap();
        assert_eq!((p.name.as_str(), p.quota, p.window), (r#"a "q" b"#, 5, None));
    }

    #[test]
    fn rejects_missing_negative_or_fractional_quota() {
        assert_eq!(parse_policy(r#""default";w=10"#), None);
        assert_eq!(parse_policy(r#""default";q=-1"#), None);
        assert_eq!(parse_policy(r#""default";q=1.5"#), None);
    }

    #[test]
    fn rejects_malformed_values() {
        for bad in ["", "10", r#""default;q=10"#, r#""default";q=10,"#, r#""default";Q=10"#, "default;q=1 0"] {
            assert_eq!(parse_policy(bad), None, "{bad:?} should not parse");
        }
    }
}
