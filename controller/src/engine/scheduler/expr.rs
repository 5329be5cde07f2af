//! Placement expressions: classic Swarm's `constraint:` and `affinity:` texts, parsed once
//! into [`Expr`]s whose values are compiled (exact, glob or regular expression), and
//! matched against node facts by the filters.
//!
//! ```text
//!  "node.labels.zone==~eu-*"  ──► Expr { key: NodeLabel("zone"), op: Eq, soft: true,
//!                                        value: Glob(^eu-.*$) }
//! ```
//!
//! Grammar (classic Swarm's `expr.go`): `KEY==VALUE` or `KEY!=VALUE`; a `~` after the
//! operator (`==~`, `!=~`) makes it soft. A VALUE between slashes (`/ssd|nvme/`) is a
//! regular expression searched in the fact; a VALUE with `*` is a glob over the whole fact;
//! any other VALUE must equal the fact.

use regex::Regex;
use std::fmt;

/// Whether an expression filters nodes by their own facts or by what they hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExprKind {
    /// `constraint:` — the node's name, ID, role, labels or engine labels.
    Constraint,
    /// `affinity:` — the containers or images the node holds.
    Affinity,
}

impl ExprKind {
    /// The word users write before the `:` (`constraint`, `affinity`).
    pub fn as_str(self) -> &'static str {
        match self {
            ExprKind::Constraint => "constraint",
            ExprKind::Affinity => "affinity",
        }
    }
}

/// What an expression compares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Key {
    /// `node`: the node's host name, or its ID (decimal as `inspect` shows it, or the
    /// 16 hex digits of `docker node ls`).
    Node,
    /// `node.id`: the node's ID only.
    NodeId,
    /// `node.hostname`: the node's host name only.
    NodeHostname,
    /// `node.role`: `manager` or `worker`.
    NodeRole,
    /// `node.labels.K`: an operator label (`docker node update --label-add`).
    NodeLabel(String),
    /// A plain `K`: an engine label the node's daemon started with (`wharf node --label`),
    /// as classic Swarm's `storage==ssd` matched the Docker daemon's labels.
    EngineLabel(String),
    /// `container` (affinity): a container on the node, by name or ID.
    Container,
    /// `image` (affinity): an image the node holds, by reference or ID.
    Image,
}

/// `==` or `!=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// The node must have a matching fact.
    Eq,
    /// The node must have no matching fact.
    Ne,
}

/// A compiled VALUE.
#[derive(Clone, Debug)]
pub enum Pattern {
    /// Equal to the fact.
    Exact(String),
    /// A glob with `*` (any run of characters), anchored at both ends.
    Glob(Regex),
    /// `/re/`: a regular expression searched in the fact.
    Regex(Regex),
}

impl Pattern {
    /// Whether `fact` matches.
    pub fn matches(&self, fact: &str) -> bool {
        match self {
            Pattern::Exact(v) => v == fact,
            Pattern::Glob(r) | Pattern::Regex(r) => r.is_match(fact),
        }
    }

    /// The exact value, when it is one (affinities resolve it as Docker resolves a
    /// reference: a unique ID prefix, a name with or without `/`, an image's tag).
    pub fn exact(&self) -> Option<&str> {
        match self {
            Pattern::Exact(v) => Some(v),
            _ => None,
        }
    }
}

/// One parsed `constraint:` or `affinity:` expression.
#[derive(Clone, Debug)]
pub struct Expr {
    /// Constraint or affinity.
    pub kind: ExprKind,
    /// What it compares.
    pub key: Key,
    /// `==` or `!=`.
    pub op: Op,
    /// Preferred only (`==~`, `!=~`): dropped when no candidate meets it.
    pub soft: bool,
    /// The compiled value.
    pub value: Pattern,
    /// The text as written, trimmed, without the `constraint:` prefix: what messages and
    /// the placement reason show.
    pub text: String,
}

impl PartialEq for Expr {
    fn eq(&self, other: &Expr) -> bool {
        self.kind == other.kind && self.text == other.text
    }
}

impl Eq for Expr {}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let soft = if self.soft { "soft " } else { "" };
        write!(f, "{soft}{} {}", self.kind.as_str(), self.text)
    }
}

/// Why an expression could not be parsed; each says the offending text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExprError {
    /// Neither `==` nor `!=`.
    #[error(
        "invalid {kind} \"{text}\": expected KEY==VALUE or KEY!=VALUE (==~ and !=~ for a soft one)"
    )]
    NoOperator {
        /// `constraint` or `affinity`.
        kind: &'static str,
        /// The text.
        text: String,
    },
    /// Nothing (or only `~`) after the operator.
    #[error("invalid {kind} \"{text}\": no value after the operator")]
    NoValue {
        /// `constraint` or `affinity`.
        kind: &'static str,
        /// The text.
        text: String,
    },
    /// A key this kind of expression does not know.
    #[error("invalid {kind} \"{text}\": unknown key \"{key}\" (expected {expected})")]
    Key {
        /// `constraint` or `affinity`.
        kind: &'static str,
        /// The text.
        text: String,
        /// The key as written.
        key: String,
        /// What keys there are.
        expected: &'static str,
    },
    /// A value that starts with a second operator character (`node===x`).
    #[error("invalid {kind} \"{text}\": the value may not start with '=', '!' or '~'")]
    Value {
        /// `constraint` or `affinity`.
        kind: &'static str,
        /// The text.
        text: String,
    },
    /// `/…/` that is not a regular expression.
    #[error("invalid {kind} \"{text}\": bad regular expression: {reason}")]
    Regex {
        /// `constraint` or `affinity`.
        kind: &'static str,
        /// The text.
        text: String,
        /// The regex crate's message.
        reason: String,
    },
}

const CONSTRAINT_KEYS: &str =
    "node, node.id, node.hostname, node.role, node.labels.KEY or an engine label KEY";
const AFFINITY_KEYS: &str = "container or image";

/// A label key as written in a constraint: letters, digits and `._-/`.
fn label_key(k: &str) -> bool {
    !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b))
}

impl Expr {
    /// Parse `text` (without its `constraint:` or `affinity:` prefix) as an expression
    /// of `kind`; call once per create, before any node is looked at.
    pub fn parse(kind: ExprKind, text: &str) -> Result<Expr, ExprError> {
        let text = text.trim();
        let k = kind.as_str();
        let owned = || text.to_string();
        let (at, op) = match (text.find("=="), text.find("!=")) {
            (Some(e), Some(n)) if n < e => (n, Op::Ne),
            (Some(e), _) => (e, Op::Eq),
            (None, Some(n)) => (n, Op::Ne),
            (None, None) => {
                return Err(ExprError::NoOperator {
                    kind: k,
                    text: owned(),
                })
            }
        };
        let key_text = text[..at].trim();
        let mut value = text[at + 2..].trim();
        let soft = value.starts_with('~');
        if soft {
            value = value[1..].trim_start();
        }
        if value.is_empty() {
            return Err(ExprError::NoValue {
                kind: k,
                text: owned(),
            });
        }
        if value.starts_with(['=', '!', '~']) {
            return Err(ExprError::Value {
                kind: k,
                text: owned(),
            });
        }
        let bad_key = |expected| ExprError::Key {
            kind: k,
            text: owned(),
            key: key_text.to_string(),
            expected,
        };
        let key = match (kind, key_text) {
            (ExprKind::Constraint, "node") => Key::Node,
            (ExprKind::Constraint, "node.id") => Key::NodeId,
            (ExprKind::Constraint, "node.hostname") => Key::NodeHostname,
            (ExprKind::Constraint, "node.role") => Key::NodeRole,
            (ExprKind::Constraint, t) => match t.strip_prefix("node.labels.") {
                Some(l) if label_key(l) => Key::NodeLabel(l.to_string()),
                Some(_) => return Err(bad_key(CONSTRAINT_KEYS)),
                None if t.starts_with("node.") || !label_key(t) => {
                    return Err(bad_key(CONSTRAINT_KEYS))
                }
                None => Key::EngineLabel(t.to_string()),
            },
            (ExprKind::Affinity, "container") => Key::Container,
            (ExprKind::Affinity, "image") => Key::Image,
            (ExprKind::Affinity, _) => return Err(bad_key(AFFINITY_KEYS)),
        };
        let value = Self::pattern(value).map_err(|e| ExprError::Regex {
            kind: k,
            text: owned(),
            reason: e.to_string(),
        })?;
        Ok(Expr {
            kind,
            key,
            op,
            soft,
            value,
            text: text.to_string(),
        })
    }

    fn pattern(value: &str) -> Result<Pattern, regex::Error> {
        if let Some(re) = value
            .strip_prefix('/')
            .and_then(|v| v.strip_suffix('/'))
            .filter(|_| value.len() >= 2)
        {
            return Ok(Pattern::Regex(Regex::new(re)?));
        }
        if value.contains('*') {
            let parts: Vec<String> = value.split('*').map(regex::escape).collect();
            return Ok(Pattern::Glob(Regex::new(&format!(
                "^{}$",
                parts.join(".*")
            ))?));
        }
        Ok(Pattern::Exact(value.to_string()))
    }

    /// Whether a node whose facts for this key are `facts` meets it: with `==`, one fact
    /// matches; with `!=`, none does (an absent label is no fact, so it meets `!=`).
    pub fn meets<'a>(&self, mut facts: impl Iterator<Item = &'a str>) -> bool {
        let hit = facts.any(|f| self.value.matches(f));
        hit == (self.op == Op::Eq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(t: &str) -> Expr {
        Expr::parse(ExprKind::Constraint, t).unwrap()
    }

    #[test]
    fn keys_operators_and_softness() {
        let e = c(" node.labels.zone ==~ eu-1 ");
        assert_eq!(e.key, Key::NodeLabel("zone".into()));
        assert_eq!((e.op, e.soft), (Op::Eq, true));
        assert_eq!(e.text, "node.labels.zone ==~ eu-1");
        assert_eq!(e.to_string(), "soft constraint node.labels.zone ==~ eu-1");
        let e = c("storage!=ssd");
        assert_eq!(
            (e.key, e.op, e.soft),
            (Key::EngineLabel("storage".into()), Op::Ne, false)
        );
        assert!(c("node!=~a").soft);
        assert_eq!(c("node==a").key, Key::Node);
        assert_eq!(c("node.id==7").key, Key::NodeId);
        assert_eq!(c("node.hostname==a").key, Key::NodeHostname);
        assert_eq!(c("node.role==worker").key, Key::NodeRole);
        assert_eq!(
            c("com.example/tier==a").key,
            Key::EngineLabel("com.example/tier".into())
        );
        let a = Expr::parse(ExprKind::Affinity, "container!=web").unwrap();
        assert_eq!((a.key, a.op), (Key::Container, Op::Ne));
        let a = Expr::parse(ExprKind::Affinity, "image==~busybox").unwrap();
        assert_eq!((a.key, a.soft), (Key::Image, true));
    }

    #[test]
    fn values_are_exact_globs_or_regular_expressions() {
        let m = |t: &str, fact: &str| c(t).meets([fact].into_iter());
        assert!(m("k==ssd", "ssd"));
        assert!(!m("k==ssd", "ssd2"), "exact is whole");
        assert!(m("k==eu-*", "eu-west"));
        assert!(m("k==*-west", "eu-west"));
        assert!(!m("k==eu-*", "us-eu-west"), "a glob is anchored");
        assert!(!m("k==a.c", "abc"), "a glob's other characters are literal");
        assert!(m("k==a.*", "a.c"));
        assert!(m("k==/ss?d/", "nvme-sd"), "a regex is searched");
        assert!(m("k==/^(ssd|nvme)$/", "nvme"));
        assert!(!m("k==/^(ssd|nvme)$/", "hdd"));
        assert!(m("k!=ssd", "hdd"));
        assert!(!m("k!=ssd", "ssd"));
        assert!(c("k!=ssd").meets(std::iter::empty()), "absent meets !=");
        assert!(!c("k==*").meets(std::iter::empty()), "absent never matches");
        assert!(c("k==*").meets(["a", "x"].into_iter()));
        assert_eq!(c("k==/x/").value.exact(), None);
        assert_eq!(c("k==x").value.exact(), Some("x"));
    }

    #[test]
    fn malformed_expressions_name_their_text() {
        for (kind, bad) in [
            (ExprKind::Constraint, "node=a"),
            (ExprKind::Constraint, "zone"),
            (ExprKind::Constraint, "node=="),
            (ExprKind::Constraint, "node==~"),
            (ExprKind::Constraint, "node===a"),
            (ExprKind::Constraint, "node.labels.==x"),
            (ExprKind::Constraint, "node.labels==x"),
            (ExprKind::Constraint, "node.platform==x"),
            (ExprKind::Constraint, "==x"),
            (ExprKind::Constraint, "my key==x"),
            (ExprKind::Constraint, "k==/(/"),
            (ExprKind::Affinity, "volume==x"),
            (ExprKind::Affinity, "container=web"),
        ] {
            let e = Expr::parse(kind, bad).unwrap_err();
            let shown = e.to_string();
            assert!(
                shown.starts_with(&format!("invalid {} \"{bad}\"", kind.as_str())),
                "{shown}"
            );
        }
        let e = Expr::parse(ExprKind::Affinity, "volume==x").unwrap_err();
        assert!(e.to_string().contains("container or image"), "{e}");
        let e = Expr::parse(ExprKind::Constraint, "k==/(/").unwrap_err();
        assert!(e.to_string().contains("bad regular expression"), "{e}");
    }
}
