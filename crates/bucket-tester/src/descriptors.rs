//! The descriptors a `--grpc` run sends, as Envoy's rate_limit actions would build them, with the part that varies
//! by simulated user marked, so every scenario gets buckets fresh to this run.
//!
//! Each `--descriptor key=value[,key=value...]` is one descriptor, its entries outermost first. A value may
//! contain `{user}`, replaced on every request by the scenario's user id; `--user-key KEY` is shorthand for the
//! value `{user}` on every entry keyed `KEY` (written `KEY` alone or with any value), or for a whole descriptor
//! `KEY={user}` when no `--descriptor` is given. Values cannot contain a comma.

/// What stands for the simulated user in a descriptor value.
pub const USER: &str = "{user}";

/// The descriptors of every request, with `{user}` where the user goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptors {
    /// One `(key, value)` list per descriptor, in request order.
    pub entries: Vec<Vec<(String, String)>>,
    /// The descriptor whose status the scenarios judge: the first one that varies by user.
    pub judged: usize,
}

impl Descriptors {
    /// Reads `--descriptor` values and `--user-key`, or says what is wrong with them.
    pub fn parse(raw: &[String], user_key: Option<&str>) -> Result<Self, String> {
        if user_key.is_some_and(str::is_empty) {
            return Err("--user-key must not be empty".into());
        }
        let mut entries = raw.iter().map(|d| parse_one(d, user_key)).collect::<Result<Vec<_>, _>>()?;
        if let Some(key) = user_key {
            if entries.is_empty() {
                entries.push(vec![(key.to_string(), USER.to_string())]);
            } else if !entries.iter().flatten().any(|(k, _)| k == key) {
                return Err(format!("--user-key {key}: no --descriptor has an entry {key:?}"));
            }
        }
        if entries.is_empty() {
            return Err("--grpc needs descriptors: --descriptor key=value (repeatable) or --user-key KEY".into());
        }
        let judged = entries.iter().position(|d| d.iter().any(|(_, v)| v.contains(USER))).ok_or_else(|| {
            format!(
                "no descriptor varies by user, so every scenario would share one bucket: put {USER} in a value \
                 (e.g. --descriptor user_id={USER}) or name the entry with --user-key"
            )
        })?;
        Ok(Descriptors { entries, judged })
    }

    /// The descriptors for one request as `user`.
    pub fn fill(&self, user: &str) -> Vec<Vec<(String, String)>> {
        self.entries.iter().map(|d| d.iter().map(|(k, v)| (k.clone(), v.replace(USER, user))).collect()).collect()
    }

    /// How many descriptors each request carries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Always false once parsed (a request needs a descriptor); here for clippy's `len` convention.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// `(k=v,k=v) (k=v)`: the descriptors as the banner shows them.
    pub fn describe(&self) -> String {
        let one = |d: &Vec<(String, String)>| {
            let entries: Vec<String> = d.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("({})", entries.join(","))
        };
        self.entries.iter().map(one).collect::<Vec<_>>().join(" ")
    }
}

/// One `--descriptor` value.
fn parse_one(raw: &str, user_key: Option<&str>) -> Result<Vec<(String, String)>, String> {
    let mut entries = Vec::new();
    for part in raw.split(',') {
        let (key, value) = match part.split_once('=') {
            Some((key, value)) => (key.trim(), value.to_string()),
            None => (part.trim(), String::new()),
        };
        if key.is_empty() {
            return Err(format!("--descriptor {raw:?}: an entry has no key (write key=value[,key=value...])"));
        }
        let value = if Some(key) == user_key {
            USER.to_string()
        } else if part.contains('=') {
            value
        } else {
            return Err(format!("--descriptor {raw:?}: entry {key:?} has no value (write {key}=value)"));
        };
        entries.push((key.to_string(), value));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[&str], user_key: Option<&str>) -> Result<Descriptors, String> {
        Descriptors::parse(&raw.iter().map(|s| s.to_string()).collect::<Vec<_>>(), user_key)
    }

    fn pairs(d: &[(&str, &str)]) -> Vec<(String, String)> {
        d.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn a_placeholder_marks_the_user_and_the_first_such_descriptor_is_judged() {
        let d = parse(&["plan=free", "to_cluster=search,user={user}"], None).unwrap();
        assert_eq!(d.judged, 1);
        assert_eq!(d.fill("u1"), vec![pairs(&[("plan", "free")]), pairs(&[("to_cluster", "search"), ("user", "u1")])]);
        let d = parse(&["path=/api/{user}/x=y"], None).unwrap();
        assert_eq!(d.fill("u"), vec![pairs(&[("path", "/api/u/x=y")])]);
        assert_eq!(d.describe(), "(path=/api/{user}/x=y)");
    }

    #[test]
    fn user_key_replaces_an_entry_or_makes_the_only_descriptor() {
        let d = parse(&[], Some("remote_address")).unwrap();
        assert_eq!(d.fill("u"), vec![pairs(&[("remote_address", "u")])]);
        let d = parse(&["to_cluster=search,user"], Some("user")).unwrap();
        assert_eq!(d.fill("u"), vec![pairs(&[("to_cluster", "search"), ("user", "u")])]);
        let d = parse(&["user=fixed"], Some("user")).unwrap();
        assert_eq!(d.fill("u"), vec![pairs(&[("user", "u")])]);
        let d = parse(&["k="], Some("k")).unwrap();
        assert_eq!(d.describe(), "(k={user})");
    }

    #[test]
    fn unusable_descriptors_say_why() {
        let cases: [(&[&str], Option<&str>, &str); 6] = [
            (&[], None, "--grpc needs descriptors"),
            (&["user=alice"], None, "no descriptor varies by user"),
            (&["=x"], None, "an entry has no key"),
            (&["a=1,b"], None, "entry \"b\" has no value"),
            (&["a=1"], Some("user"), "no --descriptor has an entry \"user\""),
            (&["a=1"], Some(""), "--user-key must not be empty"),
        ];
        for (raw, key, expected) in cases {
            let err = parse(raw, key).unwrap_err();
            assert!(err.contains(expected), "{raw:?} {key:?}: {err}");
        }
    }

    #[test]
    fn an_empty_value_is_a_value() {
        let d = parse(&["k=,u={user}"], None).unwrap();
        assert_eq!(d.fill("x"), vec![pairs(&[("k", ""), ("u", "x")])]);
    }
}
