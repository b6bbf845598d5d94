//! Finds where a value sits in the config text, so that a problem found after parsing
//! still prints as `FILE:LINE:COL`.

use std::fmt;
use std::ops::Range;
use toml_edit::{ImDocument, Item, Table, Value};

/// A path to a value: `nodes.alice.tunnel_ip`, `sites.web.sync[0].path`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPath(Vec<Seg>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

impl KeyPath {
    pub fn root() -> Self {
        Self::default()
    }
    pub fn key(&self, key: &str) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Key(key.to_owned()));
        p
    }
    pub fn index(&self, i: usize) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Index(i));
        p
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// A line and column, both counted from 1 (columns in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

pub struct Locator<'a> {
    text: &'a str,
    doc: Option<ImDocument<&'a str>>,
}

#[derive(Clone, Copy)]
enum Node<'d> {
    Item(&'d Item),
    Table(&'d Table),
    Value(&'d Value),
}

impl<'a> Locator<'a> {
    pub fn new(text: &'a str) -> Self {
        Self {
            text,
            doc: ImDocument::parse(text).ok(),
        }
    }

    /// The position of the value at `path`, or of its nearest existing ancestor.
    pub fn locate(&self, path: &KeyPath) -> Option<Position> {
        self.span(path).map(|s| self.position(s.start))
    }

    fn span(&self, path: &KeyPath) -> Option<Range<usize>> {
        let doc = self.doc.as_ref()?;
        let mut node = Node::Table(doc.as_table());
        let mut best = None;
        for seg in &path.0 {
            let (next, key_span) = match (node, seg) {
                (Node::Table(t), Seg::Key(k)) | (Node::Item(Item::Table(t)), Seg::Key(k)) => {
                    let Some(item) = t.get(k) else { break };
                    (Node::Item(item), t.key(k).and_then(|k| k.span()))
                }
                (Node::Item(Item::Value(Value::InlineTable(t))), Seg::Key(k))
                | (Node::Value(Value::InlineTable(t)), Seg::Key(k)) => {
                    let Some(v) = t.get(k) else { break };
                    (Node::Value(v), t.key(k).and_then(|k| k.span()))
                }
                (Node::Item(Item::ArrayOfTables(a)), Seg::Index(i)) => {
                    let Some(t) = a.get(*i) else { break };
                    (Node::Table(t), None)
                }
                (Node::Item(Item::Value(Value::Array(a))), Seg::Index(i))
                | (Node::Value(Value::Array(a)), Seg::Index(i)) => {
                    let Some(v) = a.get(*i) else { break };
                    (Node::Value(v), None)
                }
                _ => break,
            };
            let own = match next {
                Node::Item(i) => i.span(),
                Node::Table(t) => t.span(),
                Node::Value(v) => v.span(),
            };
            best = own.or(key_span).or(best);
            node = next;
        }
        best
    }

    /// The line and column of a byte offset in the text.
    pub fn position(&self, offset: usize) -> Position {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Position {
            line,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "[cluster]\nname = \"home\"\n\n[nodes.alice]\ntunnel_ip = \"x\"\nssh = { user = \"u\", port = 1 }\n\n[[sites.web.sync]]\nname = \"a\"\n\n[[sites.web.sync]]\nname = \"b\"\nexclude = [\"c\", \"d\"]\n";

    fn at(path: KeyPath) -> (usize, usize) {
        let p = Locator::new(TEXT).locate(&path).unwrap();
        (p.line, p.column)
    }

    #[test]
    fn finds_values_tables_and_array_entries() {
        let root = KeyPath::root();
        assert_eq!(at(root.key("cluster").key("name")), (2, 8));
        assert_eq!(at(root.key("nodes").key("alice").key("tunnel_ip")), (5, 13));
        assert_eq!(
            at(root.key("nodes").key("alice").key("ssh").key("port")),
            (6, 28)
        );
        assert_eq!(
            at(root
                .key("sites")
                .key("web")
                .key("sync")
                .index(1)
                .key("name")),
            (12, 8)
        );
        assert_eq!(
            at(root
                .key("sites")
                .key("web")
                .key("sync")
                .index(1)
                .key("exclude")
                .index(1)),
            (13, 17)
        );
    }

    #[test]
    fn a_missing_key_points_at_its_table() {
        let p = KeyPath::root().key("nodes").key("alice").key("endpoint");
        assert_eq!(at(p).0, 4);
        assert_eq!(
            KeyPath::root().key("sites").key("w").index(2).to_string(),
            "sites.w[2]"
        );
    }
}
