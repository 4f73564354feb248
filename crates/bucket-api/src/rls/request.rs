//! One rate-limit request as both fronts (gRPC `ShouldRateLimit` and `POST /v1/ratelimit`) hand it over, and the
//! checks that make a malformed one an `INVALID_ARGUMENT` (HTTP 400) naming the field instead of a guess.

use bucket_limits::Descriptor;

/// Longest descriptor key or value, and longest domain: the bucket key derived from them stays bounded.
pub const MAX_FIELD_BYTES: usize = 255;

/// A whole request: the domain, every descriptor, and the costs. The descriptors are kept in the form the limits
/// are matched against, so deciding never copies them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RlsRequest {
    /// The limits' namespace (`domain:` of the configuration).
    pub domain: String,
    /// The descriptors, decided together: `(key, value)` entries, outermost first. (Envoy's per-descriptor `limit`
    /// override is not taken: the configured rules decide, so a gateway cannot raise its own limit.)
    pub descriptors: Vec<Descriptor>,
    /// Each descriptor's own cost (`hits_addend` on the descriptor), by index; absent (the list may be empty when
    /// no descriptor has one) or 0 means the request's.
    pub descriptor_hits: Vec<Option<u64>>,
    /// Tokens each descriptor takes unless it says otherwise; 0 (unset in protobuf) means 1, as Envoy means it.
    pub hits_addend: u64,
}

impl RlsRequest {
    /// The tokens descriptor `index` takes: its own non-zero `hits_addend`, else the request's, else 1.
    pub fn cost(&self, index: usize) -> u64 {
        match self.descriptor_hits.get(index).copied().flatten() {
            Some(hits) if hits > 0 => hits,
            _ => self.hits_addend.max(1),
        }
    }

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
            descriptors: vec![Descriptor::new(entries.iter().copied())],
            descriptor_hits: vec![None],
            hits_addend: 0,
        }
    }

    #[test]
    fn unset_or_zero_hits_mean_one_and_the_descriptor_overrides_the_request() {
        let mut r = request("d", &[("k", "v")]);
        assert_eq!(r.cost(0), 1);
        r.hits_addend = 3;
        assert_eq!(r.cost(0), 3);
        r.descriptor_hits = vec![Some(5)];
        assert_eq!(r.cost(0), 5);
        r.descriptor_hits = vec![Some(0)];
        r.hits_addend = 2;
        assert_eq!(r.cost(0), 2);
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
        let none = RlsRequest { domain: "d".into(), ..RlsRequest::default() };
        assert_eq!(none.validate().unwrap_err(), "descriptors must not be empty");
    }
}
