//! Descriptor values with `*` in them: each `*` stands for any run of characters, including none, anywhere in the
//! value (`foo*`, `bar*b`, `svc*ep*rpc`), as envoyproxy/ratelimit matches them.

/// A configured value holding at least one `*`, split once at load so matching allocates nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pattern {
    text: String,
    /// The literal pieces between the `*`s: `bar*b` is `["bar", "b"]`, `foo*` is `["foo", ""]`.
    parts: Vec<String>,
    /// Sum of the pieces' lengths: the shortest value that can match.
    fixed_len: usize,
}

impl Pattern {
    /// `text` as a pattern, or `None` when it holds no `*` (then it is a plain value).
    pub(crate) fn new(text: &str) -> Option<Self> {
        if !text.contains('*') {
            return None;
        }
        let parts: Vec<String> = text.split('*').map(str::to_owned).collect();
        let fixed_len = parts.iter().map(String::len).sum();
        Some(Self { text: text.to_owned(), parts, fixed_len })
    }

    /// The pattern as written in the file.
    pub(crate) fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `value` matches: it starts with the first piece, ends with the last, and holds the middle pieces in
    /// order between them. Taking each middle piece at its leftmost place is enough: a later place never leaves more
    /// room for the pieces after it.
    pub(crate) fn matches(&self, value: &str) -> bool {
        // `split` on a text containing '*' yields at least two pieces.
        let (Some(first), Some(last)) = (self.parts.first(), self.parts.last()) else {
            return false;
        };
        if value.len() < self.fixed_len || !value.starts_with(first.as_str()) || !value.ends_with(last.as_str()) {
            return false;
        }
        // fixed_len <= value.len() keeps the prefix and the suffix apart, so this slice is in bounds; `get` keeps
        // a non-char-boundary (impossible for matched UTF-8 prefixes/suffixes) from panicking.
        let Some(mut rest) = value.get(first.len()..value.len() - last.len()) else {
            return false;
        };
        for piece in &self.parts[1..self.parts.len() - 1] {
            match rest.find(piece.as_str()) {
                Some(at) => rest = &rest[at + piece.len()..],
                None => return false,
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::Pattern;

    fn m(pattern: &str, value: &str) -> bool {
        Pattern::new(pattern).expect("a pattern").matches(value)
    }

    #[test]
    fn trailing_star_is_a_prefix_match() {
        assert!(m("foo*", "foo"));
        assert!(m("foo*", "foo1"));
        assert!(!m("foo*", "fo"));
        assert!(!m("foo*", "bar"));
        assert!(m("*", ""));
        assert!(m("*", "anything"));
    }

    #[test]
    fn middle_star_needs_prefix_and_suffix_and_may_be_empty() {
        assert!(m("bar*b", "barab"));
        assert!(m("bar*b", "bar123b"));
        assert!(m("bar*b", "barb"));
        assert!(!m("bar*b", "bara"));
        assert!(!m("bar*b", "xbarb"));
        assert!(!m("aa*aa", "aaa"), "prefix and suffix may not overlap");
        assert!(m("aa*aa", "aaaa"));
    }

    #[test]
    fn several_stars_need_the_pieces_in_order() {
        assert!(m("foo*bar*baz", "foo123bar456baz"));
        assert!(m("foo*bar*baz", "foobarbaz"));
        assert!(!m("foo*bar*baz", "foo123baz"));
        assert!(!m("foo*bar*baz", "bar456baz"));
        assert!(!m("a*c*b", "abc"), "pieces out of order");
        assert!(m("**", "x"));
    }

    #[test]
    fn plain_values_are_not_patterns() {
        assert!(Pattern::new("plain").is_none());
    }

    #[test]
    fn multibyte_values_never_panic() {
        assert!(m("é*é", "éé"));
        assert!(m("é*", "éa"));
        assert!(!m("é*é", "é"));
        assert!(m("*ü*", "aüb"));
    }
}
