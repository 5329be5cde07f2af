use super::*;
use crate::build::dockerfile::parse;

/// Apply every instruction of the one-stage Dockerfile `text` to `cfg`; the comments.
fn run(cfg: &mut Map<String, Value>, text: &str) -> Result<Vec<String>, String> {
    let df = parse(&format!("FROM x\n{text}")).map_err(|e| e.to_string())?;
    let mut author = None;
    let mut cmd_set = false;
    let lookup = |n: &str| (n == "V").then(|| "7".to_string());
    let mut out = vec![];
    for ins in &df.stages[0].instructions {
        out.push(apply(cfg, &mut author, &mut cmd_set, ins, '\\', &lookup)?);
    }
    if let Some(a) = author {
        out.push(format!("author={a}"));
    }
    Ok(out)
}

#[test]
fn env_label_expose_volume_user_and_signal() {
    let mut cfg = Map::new();
    cfg.insert("Env".into(), json!(["PATH=/bin", "A=old"]));
    let c = run(
        &mut cfg,
        "ENV A=new B=\"two words\" C=$V\nLABEL \"x y\"=z v=$V\nEXPOSE 80 53/UDP\nVOLUME /data /logs\nUSER app:$V\nSTOPSIGNAL SIGINT\nMAINTAINER me <me@x>\n",
    )
    .unwrap();
    assert_eq!(c[0], "ENV A=new B=two words C=7");
    assert_eq!(c[1], "LABEL \"x y\"=z v=7");
    assert_eq!(c[6], "MAINTAINER me <me@x>");
    assert_eq!(c[7], "author=me <me@x>");
    assert_eq!(
        cfg["Env"],
        json!(["PATH=/bin", "A=new", "B=two words", "C=7"])
    );
    assert_eq!(cfg["Labels"], json!({"x y": "z", "v": "7"}));
    assert_eq!(cfg["ExposedPorts"], json!({"80/tcp": {}, "53/udp": {}}));
    assert_eq!(cfg["Volumes"], json!({"/data": {}, "/logs": {}}));
    assert_eq!(cfg["User"], json!("app:7"));
    assert_eq!(cfg["StopSignal"], json!("SIGINT"));
}

#[test]
fn cmd_entrypoint_and_shell_forms() {
    let mut cfg = Map::new();
    cfg.insert("Cmd".into(), json!(["sh"]));
    run(&mut cfg, "ENTRYPOINT [\"app\"]\n").unwrap();
    assert_eq!(
        cfg["Cmd"],
        Value::Null,
        "an ENTRYPOINT drops the inherited CMD"
    );
    run(&mut cfg, "CMD [\"--help\"]\nENTRYPOINT [\"tool\"]\n").unwrap();
    assert_eq!(cfg["Cmd"], json!(["--help"]), "a CMD of this stage stays");
    run(&mut cfg, "SHELL [\"/bin/ash\", \"-eo\"]\nCMD echo $HOME\n").unwrap();
    assert_eq!(cfg["Cmd"], json!(["/bin/ash", "-eo", "echo $HOME"]));
    assert!(run(&mut cfg, "SHELL /bin/bash\n").is_err());
}

#[test]
fn healthcheck_onbuild_and_invalid_values() {
    let mut cfg = Map::new();
    run(
        &mut cfg,
        "HEALTHCHECK --interval=5s --timeout=1m30s --retries=3 CMD [\"check\", \"-q\"]\nONBUILD RUN make\n",
    )
    .unwrap();
    assert_eq!(
        cfg["Healthcheck"],
        json!({"Test": ["CMD", "check", "-q"], "Interval": 5_000_000_000i64, "Timeout": 90_000_000_000i64, "Retries": 3})
    );
    assert_eq!(cfg["OnBuild"], json!(["RUN make"]));
    run(&mut cfg, "HEALTHCHECK NONE\n").unwrap();
    assert_eq!(cfg["Healthcheck"], json!({"Test": ["NONE"]}));
    for bad in [
        "EXPOSE 0\n",
        "EXPOSE 80/xyz\n",
        "STOPSIGNAL SIGNOPE\n",
        "ONBUILD FROM x\n",
        "HEALTHCHECK --interval=soon CMD x\n",
        "HEALTHCHECK RUN x\n",
        "LABEL novalue\n",
    ] {
        assert!(run(&mut Map::new(), bad).is_err(), "{bad}");
    }
}

#[test]
fn durations_and_quotes() {
    assert_eq!(parse_duration_ns("30s"), Some(30_000_000_000));
    assert_eq!(parse_duration_ns("500ms"), Some(500_000_000));
    assert_eq!(parse_duration_ns("x"), None);
    assert_eq!(parse_duration_ns(""), None);
    assert_eq!(quote("a b"), "\"a b\"");
    assert_eq!(quote("plain"), "plain");
}
