//! `.dockerignore` and `COPY` source globs with Docker's pattern semantics (moby
//! `patternmatcher`, Go's `filepath.Match`): `*` and `?` stop at `/`, `**` crosses
//! directories, `[...]` classes, `\` escapes; in `.dockerignore` a leading `!` re-includes,
//! the last matching line wins, and a pattern that matches a directory covers everything
//! under it. Pure: the controller applies them to its build context, the agent to a
//! container's filesystem (`COPY --from`), so both read a [`crate::archive::CopySpec`] alike.

use regex::Regex;

/// A pattern that is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid pattern {pattern:?}: {reason}")]
pub struct PatternError {
    /// The pattern.
    pub pattern: String,
    /// Why.
    pub reason: String,
}

/// Clean a slash path lexically (Go's `path.Clean` without the leading `/`): no `.`,
/// empty components or trailing `/`; `..` pops (and is kept at the start).
pub fn clean_rel(p: &str) -> String {
    let mut out: Vec<&str> = vec![];
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|l| *l != "..") {
                    out.pop();
                } else {
                    out.push("..");
                }
            }
            c => out.push(c),
        }
    }
    out.join("/")
}

/// Clean an absolute slash path to its components below the root (no leading `/`):
/// `..` stops at the root, as Go's `path.Clean("/../x")` is `/x`.
pub fn clean_abs(p: &str) -> String {
    let mut r = clean_rel(p);
    while r == ".." || r.starts_with("../") {
        r = r.get(3..).unwrap_or("").to_string();
    }
    r
}

/// The regular expression for `pattern`; `double_star` gives `**` its `.dockerignore`
/// meaning (any number of directories), else it is two `*`.
pub fn pattern_regex(pattern: &str, double_star: bool) -> Result<Regex, PatternError> {
    let err = |reason: &str| PatternError {
        pattern: pattern.to_string(),
        reason: reason.to_string(),
    };
    let chars: Vec<char> = pattern.chars().collect();
    let mut re = String::from("^");
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '*' if double_star && chars.get(i + 1) == Some(&'*') => {
                i += 2;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                if i >= chars.len() {
                    re.push_str(".*");
                } else {
                    re.push_str("(.*/)?");
                }
                continue;
            }
            '*' => re.push_str("[^/]*"),
            '?' => re.push_str("[^/]"),
            '\\' => {
                let n = chars.get(i + 1).ok_or_else(|| err("trailing backslash"))?;
                re.push_str(&regex::escape(&n.to_string()));
                i += 2;
                continue;
            }
            '[' => {
                let end = chars[i + 1..]
                    .iter()
                    .position(|x| *x == ']')
                    .ok_or_else(|| err("unclosed character class"))?;
                let class: String = chars[i + 1..i + 1 + end].iter().collect();
                let (neg, body) = match class.strip_prefix('^').or(class.strip_prefix('!')) {
                    Some(b) => (true, b.to_string()),
                    None => (false, class.clone()),
                };
                if body.is_empty() {
                    return Err(err("empty character class"));
                }
                let body = body.replace('\\', "\\\\").replace('[', "\\[");
                re.push('[');
                if neg {
                    re.push('^');
                }
                re.push_str(&body);
                re.push(']');
                i += end + 2;
                continue;
            }
            c => re.push_str(&regex::escape(&c.to_string())),
        }
        i += 1;
    }
    re.push('$');
    Regex::new(&re).map_err(|e| err(&e.to_string()))
}

/// One `.dockerignore` line.
#[derive(Debug, Clone)]
struct Rule {
    exclusion: bool,
    re: Regex,
}

/// The rules of a `.dockerignore` file.
#[derive(Debug, Clone, Default)]
pub struct IgnoreRules {
    rules: Vec<Rule>,
}

impl IgnoreRules {
    /// Parse `.dockerignore` text: one pattern a line, `#` comments, blank lines ignored.
    pub fn parse(text: &str) -> Result<IgnoreRules, PatternError> {
        let mut rules = vec![];
        for line in text.lines() {
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            let (exclusion, p) = match t.strip_prefix('!') {
                Some(p) => (true, p.trim()),
                None => (false, t),
            };
            let p = clean_rel(p.trim_start_matches('/'));
            if p.is_empty() {
                continue;
            }
            rules.push(Rule {
                exclusion,
                re: pattern_regex(&p, true)?,
            });
        }
        Ok(IgnoreRules { rules })
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether any rule re-includes (`!pattern`): an excluded directory may then still
    /// hold included files.
    pub fn has_exclusions(&self) -> bool {
        self.rules.iter().any(|r| r.exclusion)
    }

    /// Whether the context path `path` (relative, `/`-separated) is ignored: the last rule
    /// matching it or one of its parent directories decides.
    pub fn ignored(&self, path: &str) -> bool {
        let path = clean_rel(path);
        let comps: Vec<&str> = path.split('/').collect();
        let mut matched = false;
        for r in &self.rules {
            let mut hit = r.re.is_match(&path);
            if !hit {
                let mut prefix = String::new();
                for c in &comps[..comps.len().saturating_sub(1)] {
                    if !prefix.is_empty() {
                        prefix.push('/');
                    }
                    prefix.push_str(c);
                    if r.re.is_match(&prefix) {
                        hit = true;
                        break;
                    }
                }
            }
            if hit {
                matched = !r.exclusion;
            }
        }
        matched
    }
}

/// Whether `path` (relative, cleaned) matches the `COPY` glob `pattern` (Go's
/// `filepath.Match`, component by component).
pub fn glob_match(pattern: &str, path: &str) -> bool {
    pattern_regex(&clean_rel(pattern), false).is_ok_and(|re| re.is_match(path))
}

/// Whether `s` holds glob metacharacters.
pub fn has_wildcards(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_clean_like_go() {
        assert_eq!(clean_rel("./a//b/../c/"), "a/c");
        assert_eq!(clean_rel("../x"), "../x");
        assert_eq!(clean_rel("a/../../x"), "../x");
        assert_eq!(clean_rel("."), "");
        assert_eq!(clean_abs("/../../x/./y"), "x/y");
        assert_eq!(clean_abs("/.."), "");
        assert_eq!(clean_abs("/..a/b"), "..a/b");
    }

    #[test]
    fn dockerignore_last_match_wins_and_parents_cover_children() {
        let r = IgnoreRules::parse("# comment\n\n*.md\n!README.md\ntmp\n/secret/**\n**/*.log\n")
            .unwrap();
        assert!(r.ignored("notes.md"));
        assert!(!r.ignored("README.md"));
        assert!(!r.ignored("docs/notes.md"), "* does not cross /");
        assert!(r.ignored("tmp"));
        assert!(
            r.ignored("tmp/a/b"),
            "a matched directory covers its children"
        );
        assert!(r.ignored("secret/key"));
        assert!(r.ignored("a/b/c.log"));
        assert!(r.ignored("c.log"), "**/ matches zero directories");
        assert!(!r.ignored("src/main.rs"));
        assert!(r.has_exclusions());
    }

    #[test]
    fn dockerignore_classes_and_escapes() {
        let r = IgnoreRules::parse("file[0-9].txt\nq?.c\nstar\\*\n").unwrap();
        assert!(r.ignored("file3.txt"));
        assert!(!r.ignored("filex.txt"));
        assert!(r.ignored("q1.c"));
        assert!(!r.ignored("q12.c"));
        assert!(r.ignored("star*"));
        assert!(!r.ignored("starx"));
        assert!(IgnoreRules::parse("bad[").is_err());
    }

    #[test]
    fn exclusion_reincludes_inside_an_ignored_directory() {
        let r = IgnoreRules::parse("build\n!build/keep.txt\n").unwrap();
        assert!(r.ignored("build/x.o"));
        assert!(!r.ignored("build/keep.txt"));
    }

    #[test]
    fn copy_globs_stay_in_one_directory() {
        assert!(glob_match("*.py", "app.py"));
        assert!(!glob_match("*.py", "sub/app.py"));
        assert!(glob_match("sub/*.py", "sub/app.py"));
        assert!(glob_match("./a?c", "abc"));
        assert!(
            !glob_match("**", "a/b"),
            "** is no wildcard of its own in COPY"
        );
        assert!(has_wildcards("a*"));
        assert!(!has_wildcards("plain/path"));
    }
}
