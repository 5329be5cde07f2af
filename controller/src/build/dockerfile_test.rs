use super::*;

fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
    move |n| {
        pairs
            .iter()
            .find(|(k, _)| *k == n)
            .map(|(_, v)| v.to_string())
    }
}

#[test]
fn the_seeds_dockerfile_parses_into_one_stage() {
    let df = parse(
        "FROM ubuntu\nRUN apt-get update && apt-get -y install python\nRUN pip install flask flask-mysql\nCOPY . /opt/source-code\nENTRYPOINT [\"flask\", \"run\"]\n",
    )
    .unwrap();
    assert_eq!(df.stages.len(), 1);
    let s = &df.stages[0];
    assert_eq!(s.base, "ubuntu");
    let kws: Vec<&str> = s.instructions.iter().map(|i| i.keyword.as_str()).collect();
    assert_eq!(kws, ["RUN", "RUN", "COPY", "ENTRYPOINT"]);
    assert_eq!(
        s.instructions[3].json,
        Some(vec!["flask".to_string(), "run".to_string()])
    );
    assert_eq!(s.instructions[0].json, None);
    assert_eq!(s.instructions[1].line, 3);
}

#[test]
fn continuations_comments_and_case() {
    let df = parse(
        "# a comment\nfrom busybox AS Build\n\nrun echo a \\\n# inside\n\n   && echo b\nCOPY --chown=1:2 --from=build a b\n",
    )
    .unwrap();
    let s = &df.stages[0];
    assert_eq!(s.name.as_deref(), Some("build"));
    assert_eq!(s.instructions[0].keyword, "RUN");
    assert_eq!(s.instructions[0].original, "run echo a    && echo b");
    assert_eq!(s.instructions[0].rest, "echo a    && echo b");
    let c = &s.instructions[1];
    assert_eq!(c.flag("chown"), Some("1:2"));
    assert_eq!(c.flag("from"), Some("build"));
    assert_eq!(c.rest, "a b");
}

#[test]
fn escape_directive_changes_the_continuation_character() {
    let df = parse("# escape=`\n# syntax=docker/dockerfile:1\nFROM busybox\nRUN echo \\ `\n  x\n")
        .unwrap();
    assert_eq!(df.escape, '`');
    assert_eq!(df.stages[0].instructions[0].rest, "echo \\   x");
    assert!(matches!(
        parse("# escape=x\nFROM a"),
        Err(ParseError::Directive { .. })
    ));
    // A directive after the first instruction is a comment.
    let df = parse("FROM busybox\n# escape=`\nRUN a \\\n b\n").unwrap();
    assert_eq!(df.escape, '\\');
    assert_eq!(df.stages[0].instructions[0].rest, "a  b");
}

#[test]
fn bad_input_is_refused_with_docker_messages() {
    let e = parse("FROM busybox\nFOO bar\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "dockerfile parse error on line 2: unknown instruction: FOO"
    );
    assert!(matches!(parse("RUN x\n"), Err(ParseError::NoStage { .. })));
    assert!(matches!(parse("# only\n\n"), Err(ParseError::Empty)));
    assert!(matches!(
        parse("FROM a b\n"),
        Err(ParseError::Arguments { .. })
    ));
    let big = "RUN true\n".repeat(MAX_DOCKERFILE / 9 + 1);
    assert!(matches!(
        parse(&format!("FROM a\n{big}")),
        Err(ParseError::TooLarge { .. })
    ));
}

#[test]
fn pre_from_args_and_stages() {
    let df = parse("ARG V=1\nFROM busybox:${V} AS one\nARG V\nFROM one\nRUN x\n").unwrap();
    assert_eq!(df.meta_args.len(), 1);
    assert_eq!(df.stages.len(), 2);
    assert_eq!(df.stages[0].base, "busybox:${V}");
    assert_eq!(df.stages[0].instructions[0].keyword, "ARG");
    assert_eq!(df.stages[1].base, "one");
}

#[test]
fn words_expand_like_the_shell_lexer() {
    let e = env(&[("A", "x y"), ("E", "")]);
    let ex = |w: &str| expand(w, &e, '\\').unwrap();
    assert_eq!(ex("$A"), "x y");
    assert_eq!(ex("${A}b"), "x yb");
    assert_eq!(ex("'$A'"), "$A");
    assert_eq!(ex("\"$A\""), "x y");
    assert_eq!(ex("\\$A"), "$A");
    assert_eq!(ex("${E:-d}"), "d");
    assert_eq!(ex("${E-d}"), "");
    assert_eq!(ex("${N-d}"), "d");
    assert_eq!(ex("${A:+set}"), "set");
    assert_eq!(ex("${N:+set}"), "");
    assert_eq!(ex("$N"), "");
    assert_eq!(ex("a$"), "a$");
    assert!(expand("'open", &e, '\\').is_err());
    assert!(expand("${A", &e, '\\').is_err());
    assert_eq!(
        expand_words("a \"b c\" $A", &e, '\\').unwrap(),
        ["a", "b c", "x y"]
    );
}

#[test]
fn env_and_label_pairs() {
    let e = env(&[("A", "1")]);
    assert_eq!(
        name_values("ENV", "K=v L=\"two words\" M=$A", &e, '\\').unwrap(),
        [
            ("K".to_string(), "v".to_string()),
            ("L".to_string(), "two words".to_string()),
            ("M".to_string(), "1".to_string())
        ]
    );
    assert_eq!(
        name_values("ENV", "K the rest $A", &e, '\\').unwrap(),
        [("K".to_string(), "the rest 1".to_string())]
    );
    assert!(name_values("LABEL", "novalue", &e, '\\').is_err());
    assert!(name_values("ENV", "K", &e, '\\').is_err());
}

#[test]
fn deeply_nested_substitutions_are_refused_not_recursed() {
    let e = env(&[]);
    let word = format!("{}x{}", "${A:-".repeat(100_000), "}".repeat(100_000));
    assert!(expand(&word, &e, '\\').is_err());
    assert_eq!(expand("${A:-${B:-${C:-deep}}}", &e, '\\').unwrap(), "deep");
}
