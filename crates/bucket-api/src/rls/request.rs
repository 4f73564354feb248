//! One rate-limit request as both fronts (gRPC `ShouldRateLimit` and `POST /v1/ratelimit`) hand it over, and the
//! checks that make a malformed one an `INVALID_ARGUMENT` (HTTP 400) naming the field instead of a guess.

/// Longest descriptor key or value, and longest domain: the bucket key derived from them stays bounded.
pub const MAX_FIELD_BYTES: usize = 255;

/// One descriptor: ordered key/value entries, and optionally its own cost. (Envoy's per-descriptor `limit`
/// override is not taken: the configured rules decide, so a gateway cannot raise its own limit.)
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RlsDescriptor {
    /// `(key, value)` pairs, outermost first, as Envoy's actions produced them.
    pub entries: Vec<(String, String)>,
    /// This descriptor's cost, overriding the request's (`hits_addend` on the descriptor); 0 means unset.
    pub hits_addend: Option<u64>,
}

/// A whole request: the domain, every descriptor, and the request-level cost.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RlsRequest {
    /// The limits' namespace (`domain:` of the configuration).
    pub domain: String,
    /// The descriptors, decided together.
    pub descriptors: Vec<RlsDescriptor>,
    /// Tokens each descriptor takes unless it says otherwise; 0 (unset in protobuf) means 1, as Envoy means it.
    pub hits_addend: u64,
}

impl RlsDescriptor {
    /// The tokens this descriptor takes: its own non-zero `hits_addend`, else the request's, else 1.
    pub fn cost(&self, request_hits: u64) -> u64 {
        match self.hits_addend {
            Some(hits) if hits > 0 => hits,
            _ => request_hits.max(1),
        }
    }
}

impl RlsRequest {
    /// Refuses what cannot be a request, naming the field: an empty domain, no descriptors, a descriptor without
    /// entries, an empty key, a key, value or domain over 255 bytes.
    pub fn validate(&self) -> Result<(), String> {
        if self.domain.is_empty() {
            return Err("domain must not be empty".into());
        }
        if self.domain.len() > MAX_FIELD_BYTES {
            return Err(format!("domain is {} bytes; at most {MAX_FIELD_BYTES}", self.domain.len()));
        }
        if self.descriptors.is_empty() {
            return Err("descriptors must not be empty".into());
        }
        for (i, descriptor) in self.descriptors.iter().enumerate() {
            if descriptor.entries.is_empty() {
                return Err(format!("descriptors[{i}] has no entries"));
            }
            for (j, (key, value)) in descriptor.entries.iter().enumerate() {
                if key.is_empty() {
                    return Err(format!("descriptors[{i}].entries[{j}].key must not be empty"));
                }
                if key.len() > MAX_FIELD_BYTES {
                    return Err(format!(
                        "descriptors[{i}].entries[{j}].key is {} bytes; at most {MAX_FIELD_BYTES}",
                        key.len()
                    ));
                }
                if value.len() > MAX_FIELD_BYTES {
                    return Err(format!(
                        "descriptors[{i}].entries[{j}].value is {} bytes; at most {MAX_FIELD_BYTES}",
                        value.len()
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(domain: &str, entries: &[(&str, &str)]) -> RlsRequest {
        RlsRequest {
            domain: domain.into(),
            descriptors: vec![RlsDescriptor {
                entries: entries.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                ..RlsDescriptor::default()
            }],
            hits_addend: 0,
        }
    }

    #[test]
    fn unset_or_zero_hits_mean_one_and_the_descriptor_overrides_the_request() {
        let d = RlsDescriptor::default();
        assert_eq!(d.cost(0), 1);
        assert_eq!(d.cost(3), 3);
        let own = RlsDescriptor { hits_addend: Some(5), ..RlsDescriptor::default() };
        assert_eq!(own.cost(3), 5);
        let zero = RlsDescriptor { hits_addend: Some(0), ..RlsDescriptor::default() };
        assert_eq!(zero.cost(2), 2);
    }

    #[test]
    fn malformed_requests_name_the_field() {
        assert!(request("d", &[("k", "v")]).validate().is_ok());
        assert!(request("d", &[("k", "")]).validate().is_ok(), "an empty value matches key-only rules");
        assert_eq!(request("", &[("k", "v")]).validate().unwrap_err(), "domain must not be empty");
        assert_eq!(request("d", &[]).validate().unwrap_err(), "descriptors[0] has no entries");
        assert_eq!(
            request("d", &[("", "v")]).validate().unwrap_err(),
            "descriptors[0].entries[0].key must not be empty"
        );
        let long = "x".repeat(256);
        assert!(request("d", &[("k", &long)])
            .validate()
            .unwrap_err()
            .starts_with("descriptors[0].entries[0].value is 256"));
        assert!(request("d", &[(&long, "v")]).validate().unwrap_err().contains("key is 256 bytes"));
        assert!(request(&long, &[("k", "v")]).validate().unwrap_err().starts_with("domain is 256 bytes"));
        let none = RlsRequest { domain: "d".into(), descriptors: vec![], hits_addend: 0 };
        assert_eq!(none.validate().unwrap_err(), "descriptors must not be empty");
    }
}
