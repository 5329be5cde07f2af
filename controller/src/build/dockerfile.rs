//! Dockerfile text to instructions, as moby's `buildkit/frontend/dockerfile/parser` reads
//! it: parser directives (`# escape=`, `# syntax=`), comments, line continuations, JSON
//! and shell forms, leading `--flags`, and the shell-word rules (quotes, escapes,
//! `$VAR`/`${VAR:-x}`/`${VAR:+x}` expansion) the builder applies to most arguments. Pure.

use std::collections::BTreeMap;

/// Largest Dockerfile accepted (bytes); a bigger one is refused before parsing (and by
/// the agent before it is read).
pub use wharf_protocol::agent::files::MAX_DOCKERFILE;

/// Instructions the classic builder knows.
pub const KEYWORDS: &[&str] = &[
    "FROM",
    "RUN",
    "CMD",
    "LABEL",
    "MAINTAINER",
    "EXPOSE",
    "ENV",
    "ADD",
    "COPY",
    "ENTRYPOINT",
    "VOLUME",
    "USER",
    "WORKDIR",
    "ARG",
    "ONBUILD",
    "STOPSIGNAL",
    "HEALTHCHECK",
    "SHELL",
];

/// Why a Dockerfile could not be read; texts follow Docker's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// A word that is no instruction.
    #[error("dockerfile parse error on line {line}: unknown instruction: {word}")]
    UnknownInstruction {
        /// 1-based line.
        line: usize,
        /// The word as written.
        word: String,
    },
    /// An instruction without the arguments it needs.
    #[error("dockerfile parse error on line {line}: {keyword} requires {what}")]
    Arguments {
        /// 1-based line.
        line: usize,
        /// The instruction.
        keyword: String,
        /// What it needs.
        what: &'static str,
    },
    /// Bad value for a parser directive.
    #[error("invalid {name} directive: {value:?}")]
    Directive {
        /// Directive name.
        name: String,
        /// Its value.
        value: String,
    },
    /// Nothing but directives, comments or pre-`FROM` `ARG`s.
    #[error("the Dockerfile (Dockerfile) cannot be empty")]
    Empty,
    /// An instruction before the first `FROM` other than `ARG`.
    #[error("dockerfile parse error on line {line}: {keyword} before FROM: no build stage in current context")]
    NoStage {
        /// 1-based line.
        line: usize,
        /// The instruction.
        keyword: String,
    },
    /// The Dockerfile is bigger than [`MAX_DOCKERFILE`].
    #[error("the Dockerfile is too large: {size} bytes (the limit is {limit} bytes)")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A quote left open or a `${` without `}`.
    #[error("dockerfile parse error on line {line}: {message}")]
    Syntax {
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// One instruction as written (arguments not yet expanded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// Upper-case keyword (`RUN`).
    pub keyword: String,
    /// The instruction as written, continuations joined (the `Step N/M : …` text).
    pub original: String,
    /// 1-based line where it starts.
    pub line: usize,
    /// Leading `--name=value` flags (`--from`, `--chown`, `--interval`, ...).
    pub flags: Vec<(String, String)>,
    /// The arguments after the flags, trimmed.
    pub rest: String,
    /// The arguments as a JSON array of strings (exec form), when they are one.
    pub json: Option<Vec<String>>,
}

impl Instruction {
    /// The value of flag `--name`, if given.
    pub fn flag(&self, name: &str) -> Option<&str> {
        self.flags
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A build stage: its `FROM` and what follows until the next `FROM`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// The `FROM` instruction.
    pub from: Instruction,
    /// The base image as written (expanded later with the pre-`FROM` args).
    pub base: String,
    /// `AS name`, lower-cased.
    pub name: Option<String>,
    /// The stage's other instructions.
    pub instructions: Vec<Instruction>,
}

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// The escape character (`\` or `` ` ``).
    pub escape: char,
    /// `ARG`s before the first `FROM`.
    pub meta_args: Vec<Instruction>,
    /// The stages, in order.
    pub stages: Vec<Stage>,
}

fn directive(line: &str) -> Option<(String, String)> {
    let rest = line.trim_start().strip_prefix('#')?;
    let (k, v) = rest.split_once('=')?;
    let k = k.trim();
    if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    Some((k.to_ascii_lowercase(), v.trim().to_string()))
}

fn uses_json(keyword: &str) -> bool {
    matches!(
        keyword,
        "RUN" | "CMD" | "ENTRYPOINT" | "SHELL" | "COPY" | "ADD" | "VOLUME"
    )
}

/// Split leading `--name[=value]` words off `rest`.
fn split_flags(rest: &str) -> (Vec<(String, String)>, String) {
    let mut flags = vec![];
    let mut r = rest.trim_start();
    while let Some(after) = r.strip_prefix("--") {
        if after.is_empty() || after.starts_with(char::is_whitespace) {
            break;
        }
        let end = after.find(char::is_whitespace).unwrap_or(after.len());
        let word = &after[..end];
        let (k, v) = word.split_once('=').unwrap_or((word, ""));
        flags.push((k.to_ascii_lowercase(), v.to_string()));
        r = after[end..].trim_start();
    }
    (flags, r.trim().to_string())
}

/// Parse Dockerfile text.
pub fn parse(text: &str) -> Result<Dockerfile, ParseError> {
    if text.len() > MAX_DOCKERFILE {
        return Err(ParseError::TooLarge {
            size: text.len(),
            limit: MAX_DOCKERFILE,
        });
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    let mut escape = '\\';
    let mut i = 0;
    let mut seen = BTreeMap::new();
    while i < lines.len() {
        let Some((k, v)) = directive(lines[i]) else {
            break;
        };
        if seen.insert(k.clone(), ()).is_some() {
            break;
        }
        if k == "escape" {
            escape = match v.as_str() {
                "\\" => '\\',
                "`" => '`',
                _ => return Err(ParseError::Directive { name: k, value: v }),
            };
        }
        i += 1;
    }
    let mut instructions = vec![];
    while i < lines.len() {
        let first = lines[i];
        let t = first.trim();
        if t.is_empty() || t.starts_with('#') {
            i += 1;
            continue;
        }
        let start = i + 1;
        let mut joined = String::new();
        let mut cur = first.trim_start().to_string();
        loop {
            let trimmed = cur.trim_end();
            if let Some(body) = trimmed.strip_suffix(escape) {
                joined.push_str(body);
                i += 1;
                // Comment and empty lines inside a continuation are dropped.
                while i < lines.len() {
                    let t = lines[i].trim();
                    if t.starts_with('#') || t.is_empty() {
                        i += 1;
                    } else {
                        break;
                    }
                }
                if i >= lines.len() {
                    break;
                }
                cur = lines[i].to_string();
            } else {
                joined.push_str(&cur);
                i += 1;
                break;
            }
        }
        let original = joined.trim().to_string();
        let (word, rest) = original
            .split_once(char::is_whitespace)
            .unwrap_or((original.as_str(), ""));
        let keyword = word.to_ascii_uppercase();
        if !KEYWORDS.contains(&keyword.as_str()) {
            return Err(ParseError::UnknownInstruction {
                line: start,
                word: word.to_string(),
            });
        }
        let (flags, rest) = if keyword == "ONBUILD" {
            (vec![], rest.trim().to_string())
        } else {
            split_flags(rest)
        };
        let json = if uses_json(&keyword) && rest.starts_with('[') {
            serde_json::from_str::<Vec<String>>(&rest).ok()
        } else {
            None
        };
        instructions.push(Instruction {
            keyword,
            original,
            line: start,
            flags,
            rest,
            json,
        });
    }
    let mut meta_args = vec![];
    let mut stages: Vec<Stage> = vec![];
    for ins in instructions {
        if ins.keyword == "FROM" {
            let words = split_raw(&ins.rest, escape);
            let (base, name) = match words.as_slice() {
                [b] => (b.clone(), None),
                [b, as_, n] if as_.eq_ignore_ascii_case("as") => {
                    (b.clone(), Some(n.to_ascii_lowercase()))
                }
                _ => {
                    return Err(ParseError::Arguments {
                        line: ins.line,
                        keyword: "FROM".into(),
                        what: "either one or three arguments",
                    })
                }
            };
            stages.push(Stage {
                from: ins,
                base,
                name,
                instructions: vec![],
            });
            continue;
        }
        match stages.last_mut() {
            Some(s) => s.instructions.push(ins),
            None if ins.keyword == "ARG" => meta_args.push(ins),
            None => {
                return Err(ParseError::NoStage {
                    line: ins.line,
                    keyword: ins.keyword,
                })
            }
        }
    }
    if stages.is_empty() {
        return Err(ParseError::Empty);
    }
    Ok(Dockerfile {
        escape,
        meta_args,
        stages,
    })
}

/// Split `s` at unquoted whitespace, keeping quotes and escapes in the words (moby's
/// `parseWords`); expansion with [`expand`] removes them afterwards.
pub fn split_raw(s: &str, escape: char) -> Vec<String> {
    let mut out = vec![];
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == escape {
            cur.push(c);
            if let Some(n) = chars.next() {
                cur.push(n);
            }
            continue;
        }
        match quote {
            Some(q) if c == q => {
                quote = None;
                cur.push(c);
            }
            Some(_) => cur.push(c),
            None if c == '"' || c == '\'' => {
                quote = Some(c);
                cur.push(c);
            }
            None if c.is_whitespace() => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            None => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Why a word could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    /// A quote left open.
    #[error("unexpected end of statement while looking for matching {0}")]
    Unbalanced(char),
    /// `${` without `}` or with an unsupported modifier.
    #[error("bad substitution: {0}")]
    BadSubstitution(String),
}

/// Expand one word as the builder does (moby `shell.Lex.ProcessWord`): quotes removed,
/// the escape character taken literally before the next character, `$NAME`,
/// `${NAME}`, `${NAME:-word}`, `${NAME:+word}`, `${NAME-word}`, `${NAME+word}` replaced
/// from `env` (unset variables become empty; nothing inside single quotes).
pub fn expand(
    word: &str,
    env: &dyn Fn(&str) -> Option<String>,
    escape: char,
) -> Result<String, ExpandError> {
    expand_at(word, env, escape, 0)
}

/// How deep `${a:-${b:-…}}` may nest: a hostile Dockerfile must not exhaust the stack.
const MAX_NESTING: usize = 32;

fn expand_at(
    word: &str,
    env: &dyn Fn(&str) -> Option<String>,
    escape: char,
    depth: usize,
) -> Result<String, ExpandError> {
    if depth > MAX_NESTING {
        return Err(ExpandError::BadSubstitution(
            "substitutions nested too deeply".to_string(),
        ));
    }
    let chars: Vec<char> = word.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == escape {
            if let Some(n) = chars.get(i + 1) {
                out.push(*n);
                i += 2;
            } else {
                out.push(c);
                i += 1;
            }
            continue;
        }
        match c {
            '\'' => {
                let end = chars[i + 1..]
                    .iter()
                    .position(|x| *x == '\'')
                    .ok_or(ExpandError::Unbalanced('\''))?;
                out.extend(&chars[i + 1..i + 1 + end]);
                i += end + 2;
            }
            '"' => {
                i += 1;
                loop {
                    let Some(&d) = chars.get(i) else {
                        return Err(ExpandError::Unbalanced('"'));
                    };
                    if d == '"' {
                        i += 1;
                        break;
                    }
                    if d == escape {
                        match chars.get(i + 1) {
                            Some(&n) if n == '"' || n == '$' || n == escape => {
                                out.push(n);
                                i += 2;
                            }
                            _ => {
                                out.push(d);
                                i += 1;
                            }
                        }
                        continue;
                    }
                    if d == '$' {
                        i = dollar(&chars, i, env, escape, depth, &mut out)?;
                        continue;
                    }
                    out.push(d);
                    i += 1;
                }
            }
            '$' => i = dollar(&chars, i, env, escape, depth, &mut out)?,
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Expand the `$` at `chars[i]`; returns the index after it.
fn dollar(
    chars: &[char],
    i: usize,
    env: &dyn Fn(&str) -> Option<String>,
    escape: char,
    nesting: usize,
    out: &mut String,
) -> Result<usize, ExpandError> {
    let name_char = |c: char| c.is_ascii_alphanumeric() || c == '_';
    match chars.get(i + 1) {
        Some('{') => {
            let start = i + 2;
            let mut depth = 1;
            let mut j = start;
            while j < chars.len() {
                match chars[j] {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            if j >= chars.len() {
                return Err(ExpandError::BadSubstitution(chars[i..].iter().collect()));
            }
            let inner: String = chars[start..j].iter().collect();
            let name_len = inner.chars().take_while(|c| name_char(*c)).count();
            let name = &inner[..name_len];
            let modifier = &inner[name_len..];
            if name.is_empty() {
                return Err(ExpandError::BadSubstitution(inner));
            }
            let val = env(name);
            let (op, word) = if let Some(w) = modifier.strip_prefix(":-") {
                (":-", w)
            } else if let Some(w) = modifier.strip_prefix(":+") {
                (":+", w)
            } else if let Some(w) = modifier.strip_prefix('-') {
                ("-", w)
            } else if let Some(w) = modifier.strip_prefix('+') {
                ("+", w)
            } else if modifier.is_empty() {
                ("", "")
            } else {
                return Err(ExpandError::BadSubstitution(inner));
            };
            let sub = |w: &str| expand_at(w, env, escape, nesting + 1);
            let v = match op {
                "" => val.unwrap_or_default(),
                ":-" => match val {
                    Some(v) if !v.is_empty() => v,
                    _ => sub(word)?,
                },
                "-" => match val {
                    Some(v) => v,
                    None => sub(word)?,
                },
                ":+" => match val {
                    Some(v) if !v.is_empty() => sub(word)?,
                    _ => String::new(),
                },
                _ => match val {
                    Some(_) => sub(word)?,
                    None => String::new(),
                },
            };
            out.push_str(&v);
            Ok(j + 1)
        }
        Some(&c) if name_char(c) && !c.is_ascii_digit() => {
            let end = chars[i + 1..]
                .iter()
                .position(|c| !name_char(*c))
                .map_or(chars.len(), |p| i + 1 + p);
            let name: String = chars[i + 1..end].iter().collect();
            out.push_str(&env(&name).unwrap_or_default());
            Ok(end)
        }
        _ => {
            out.push('$');
            Ok(i + 1)
        }
    }
}

/// Split and expand every word of `s` (moby `ProcessWords`).
pub fn expand_words(
    s: &str,
    env: &dyn Fn(&str) -> Option<String>,
    escape: char,
) -> Result<Vec<String>, ExpandError> {
    split_raw(s, escape)
        .iter()
        .map(|w| expand(w, env, escape))
        .collect()
}

/// `ENV`/`LABEL` arguments as key/value pairs: `k=v k2="v 2"`, or the legacy
/// `ENV k the rest` (one pair); expanded with `env`.
pub fn name_values(
    keyword: &str,
    rest: &str,
    env: &dyn Fn(&str) -> Option<String>,
    escape: char,
) -> Result<Vec<(String, String)>, String> {
    let words = split_raw(rest, escape);
    let Some(first) = words.first() else {
        return Err(format!("{keyword} requires at least one argument"));
    };
    if !first.contains('=') {
        if keyword == "LABEL" {
            return Err(format!("LABEL names can not be blank: {first:?}"));
        }
        let value = rest.trim()[first.len()..].trim();
        if value.is_empty() {
            return Err(format!("{keyword} must have two arguments"));
        }
        let k = expand(first, env, escape).map_err(|e| e.to_string())?;
        let v = expand(value, env, escape).map_err(|e| e.to_string())?;
        return Ok(vec![(k, v)]);
    }
    let mut out = vec![];
    for w in &words {
        let Some((k, _)) = w.split_once('=') else {
            return Err(format!(
                "Syntax error - can't find = in {w:?}. Must be of the form: name=value"
            ));
        };
        if k.is_empty() {
            return Err(format!("{keyword} names can not be blank"));
        }
        let full = expand(w, env, escape).map_err(|e| e.to_string())?;
        let (k, v) = full.split_once('=').unwrap_or((full.as_str(), ""));
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

#[cfg(test)]
#[path = "dockerfile_test.rs"]
mod tests;
