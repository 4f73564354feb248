//! Just enough YAML to check a compose file where no docker-compose is installed (CI on a fresh machine): block
//! mappings, block sequences, block scalars and single-line scalars, with flow values (`[…]`, `{…}`) kept as text.
//! It refuses what would make a real parser refuse or misread the file: tabs, indentation that matches no open
//! level, a mapping line without a key, a duplicate key, unbalanced quotes or brackets.

use anyhow::{bail, Result};

/// A parsed YAML node.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// A block mapping, keys in file order.
    Map(Vec<(String, Node)>),
    /// A block sequence.
    Seq(Vec<Node>),
    /// A scalar or flow value, as written (quotes removed from a plain quoted string).
    Scalar(String),
    /// A key with no value.
    Null,
}

impl Node {
    /// The value of `key` when this is a mapping that has it.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The entries of a mapping; none for anything else.
    pub fn entries(&self) -> &[(String, Node)] {
        match self {
            Node::Map(entries) => entries,
            _ => &[],
        }
    }

    /// The scalar's text.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Node::Scalar(text) => Some(text),
            _ => None,
        }
    }
}

/// One meaningful line: its number (1-based, for messages), indentation and content without a trailing comment.
#[derive(Clone)]
struct Line {
    number: usize,
    indent: usize,
    text: String,
}

/// Parses `source`; the error names the offending line.
pub fn parse(source: &str) -> Result<Node> {
    let mut lines = Vec::new();
    let mut raw_lines = source.lines().enumerate().peekable();
    while let Some((index, raw)) = raw_lines.next() {
        let number = index + 1;
        let content = raw.trim_start_matches(' ');
        if content.starts_with('\t') {
            bail!("line {number}: indented with a tab, which YAML forbids");
        }
        let text = strip_comment(content).trim_end().to_string();
        if text.is_empty() {
            continue;
        }
        let indent = raw.len() - content.len();
        let block = is_block_scalar_start(&text);
        lines.push(Line { number, indent, text });
        if block {
            // Block scalar lines are text: keep them out of the structure (a `#` or `-` inside is not YAML).
            while let Some((_, next)) = raw_lines.peek() {
                let next_content = next.trim_start_matches(' ');
                if !next_content.trim().is_empty() && next.len() - next_content.len() <= indent {
                    break;
                }
                raw_lines.next();
            }
        }
    }
    let mut parser = Parser { lines, next: 0 };
    if parser.lines.is_empty() {
        return Ok(Node::Null);
    }
    let indent = parser.lines[0].indent;
    let node = parser.block(indent)?;
    if let Some(line) = parser.lines.get(parser.next) {
        bail!("line {}: indentation matches no open level", line.number);
    }
    Ok(node)
}

struct Parser {
    lines: Vec<Line>,
    next: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Line> {
        self.lines.get(self.next)
    }

    fn block(&mut self, indent: usize) -> Result<Node> {
        match self.peek() {
            Some(line) if is_seq_item(&line.text) => self.seq(indent),
            Some(_) => self.map(indent),
            None => Ok(Node::Null),
        }
    }

    fn map(&mut self, indent: usize) -> Result<Node> {
        let mut entries: Vec<(String, Node)> = Vec::new();
        while let Some(line) = self.peek().cloned() {
            if line.indent < indent || (line.indent == indent && is_seq_item(&line.text)) {
                break;
            }
            if line.indent > indent {
                bail!("line {}: indented deeper than the mapping it belongs to", line.number);
            }
            self.next += 1;
            let Some((key, value)) = split_key(&line.text) else {
                bail!("line {}: `{}` is not `key: value`", line.number, line.text);
            };
            if entries.iter().any(|(k, _)| *k == key) {
                bail!("line {}: duplicate key `{key}`", line.number);
            }
            let node = if value.is_empty() {
                match self.peek() {
                    Some(next) if next.indent > indent => {
                        let child_indent = next.indent;
                        self.block(child_indent)?
                    }
                    // A sequence may sit at its key's own indentation.
                    Some(next) if next.indent == indent && is_seq_item(&next.text) => self.seq(indent)?,
                    _ => Node::Null,
                }
            } else {
                scalar(&value, line.number)?
            };
            entries.push((key, node));
        }
        Ok(Node::Map(entries))
    }

    fn seq(&mut self, indent: usize) -> Result<Node> {
        let mut items = Vec::new();
        while let Some(line) = self.peek().cloned() {
            if line.indent != indent || !is_seq_item(&line.text) {
                if line.indent > indent {
                    bail!("line {}: indented deeper than the sequence it belongs to", line.number);
                }
                break;
            }
            let rest = line.text[1..].trim_start();
            if rest.is_empty() {
                self.next += 1;
                match self.peek() {
                    Some(next) if next.indent > indent => {
                        let child_indent = next.indent;
                        items.push(self.block(child_indent)?);
                    }
                    _ => items.push(Node::Null),
                }
            } else if split_key(rest).is_some() && !starts_flow_or_quote(rest) {
                // `- key: value` opens a mapping whose keys line up with `key`.
                let column = indent + (line.text.len() - rest.len());
                self.lines[self.next] = Line { number: line.number, indent: column, text: rest.to_string() };
                items.push(self.map(column)?);
            } else {
                self.next += 1;
                items.push(scalar(rest, line.number)?);
            }
        }
        Ok(Node::Seq(items))
    }
}

fn is_seq_item(text: &str) -> bool {
    text == "-" || text.starts_with("- ")
}

fn starts_flow_or_quote(text: &str) -> bool {
    text.starts_with(['"', '\'', '[', '{'])
}

fn is_block_scalar_start(text: &str) -> bool {
    let value = split_key(text).map(|(_, value)| value).unwrap_or_else(|| text.trim_start_matches("- ").to_string());
    matches!(value.trim(), "|" | "|-" | "|+" | ">" | ">-" | ">+")
}

/// `key: value` or `key:` outside quotes and brackets; the key unquoted.
fn split_key(text: &str) -> Option<(String, String)> {
    let mut quote = None;
    let mut depth = 0i32;
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') => {}
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '[' | '{') => depth += 1,
            (None, ']' | '}') => depth -= 1,
            (None, ':') if depth == 0 && chars.get(i + 1).is_none_or(|next| *next == ' ') => {
                let key: String = chars[..i].iter().collect();
                let key = key.trim().trim_matches(['"', '\'']).to_string();
                if key.is_empty() {
                    return None;
                }
                let value: String = chars[i + 1..].iter().collect();
                return Some((key, value.trim().to_string()));
            }
            _ => {}
        }
    }
    None
}

/// A single-line value, checked for balanced quotes and brackets; block scalars become their marker.
fn scalar(value: &str, number: usize) -> Result<Node> {
    let mut quote = None;
    let mut stack = Vec::new();
    let mut escaped = false;
    for c in value.chars() {
        match quote {
            Some('"') if escaped => escaped = false,
            Some('"') if c == '\\' => escaped = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '"' | '\'' if starts_flow_or_quote(value) => quote = Some(c),
                '[' | '{' if starts_flow_or_quote(value) => stack.push(c),
                ']' | '}' if starts_flow_or_quote(value) => {
                    let open = if c == ']' { '[' } else { '{' };
                    if stack.pop() != Some(open) {
                        bail!("line {number}: `{c}` closes nothing in `{value}`");
                    }
                }
                _ => {}
            },
        }
    }
    if quote.is_some() {
        bail!("line {number}: unterminated quote in `{value}`");
    }
    if !stack.is_empty() {
        bail!("line {number}: unclosed bracket in `{value}`");
    }
    let unquoted = if value.len() >= 2
        && ((value.starts_with('"') && value.ends_with('"')) || (value.starts_with('\'') && value.ends_with('\'')))
    {
        &value[1..value.len() - 1]
    } else {
        value
    };
    Ok(Node::Scalar(unquoted.to_string()))
}

/// The line without a ` #` comment (a `#` inside quotes or glued to a word is text).
fn strip_comment(text: &str) -> &str {
    if text.starts_with('#') {
        return "";
    }
    let mut quote = None;
    let mut previous = ' ';
    for (i, c) in text.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if (c == '"' || c == '\'') && (i == 0 || matches!(previous, ' ' | '[' | ',')) => quote = Some(c),
            None if c == '#' && previous == ' ' => return &text[..i],
            None => {}
        }
        previous = c;
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mappings_sequences_and_block_scalars() {
        let yaml = "services:\n  api:\n    image: x # comment\n    command: [\"a\", \"b: c\"]\n    ports:\n\
                    \x20     - \"8080:8080\"\n    depends_on:\n      db:\n        condition: service_healthy\n\
                    \x20 db:\n    healthcheck:\n      test: |\n        pg_isready\n        # not a comment\n\
                    volumes:\n  data:\nlist:\n- name: a\n  value: 1\n- b\n";
        let root = parse(yaml).unwrap();
        let api = root.get("services").and_then(|s| s.get("api")).unwrap();
        assert_eq!(api.get("image").and_then(Node::as_str), Some("x"));
        assert_eq!(api.get("command").and_then(Node::as_str), Some("[\"a\", \"b: c\"]"));
        assert_eq!(api.get("ports"), Some(&Node::Seq(vec![Node::Scalar("8080:8080".into())])));
        let condition = api.get("depends_on").and_then(|d| d.get("db")).and_then(|d| d.get("condition"));
        assert_eq!(condition.and_then(Node::as_str), Some("service_healthy"));
        assert_eq!(root.get("volumes").and_then(|v| v.get("data")), Some(&Node::Null));
        let list = root.get("list").unwrap();
        let Node::Seq(items) = list else { panic!("not a sequence: {list:?}") };
        assert_eq!(items[0].get("value").and_then(Node::as_str), Some("1"));
        assert_eq!(items[1], Node::Scalar("b".into()));
    }

    #[test]
    fn broken_files_are_refused_with_their_line() {
        for (yaml, expected) in [
            ("a:\n\tb: 1\n", "line 2: indented with a tab"),
            ("a:\n    b: 1\n  c: 2\n", "line 3"),
            ("a:\n  b: 1\n  b: 2\n", "line 3: duplicate key `b`"),
            ("a:\n  just text\n", "line 2: `just text` is not `key: value`"),
            ("a: [\"x\", \"y\"\n", "line 1: unclosed bracket"),
            ("a: \"x\n", "line 1: unterminated quote"),
        ] {
            let error = parse(yaml).expect_err(yaml).to_string();
            assert!(error.contains(expected), "{yaml:?}: {error}");
        }
    }
}
