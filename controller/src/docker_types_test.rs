//! Unit tests of `HostConfig` resolution: binds, `--mount`, tmpfs, anonymous volumes,
//! limits and their refusals.

use super::*;

fn hc(json: &str) -> HostConfig {
    serde_json::from_str(json).unwrap()
}

fn resolve(
    h: &HostConfig,
    cfg_vols: &[&str],
    img_vols: &[&str],
) -> Result<(HostSpec, Vec<VolumeNeed>), String> {
    let mut n = 0;
    let mut anon = || {
        n += 1;
        format!("anon{n}")
    };
    let c: Vec<String> = cfg_vols.iter().map(|s| s.to_string()).collect();
    let i: Vec<String> = img_vols.iter().map(|s| s.to_string()).collect();
    resolve_host(h, &c, &i, &mut anon)
}

#[test]
fn binds_are_host_paths_or_volume_names() {
    let (m, need) = parse_bind("/srv:/data:ro,rslave").unwrap();
    assert_eq!(
        (
            m.kind,
            m.source.as_str(),
            m.target.as_str(),
            m.read_only,
            m.propagation.as_str()
        ),
        (MountKind::Bind, "/srv", "/data", true, "rslave")
    );
    assert!(need.is_none());
    let (m, need) = parse_bind("cache:/c:nocopy").unwrap();
    assert_eq!((m.kind, m.no_copy), (MountKind::Volume, true));
    assert_eq!(need.unwrap().name, "cache");
    assert!(parse_bind("a/b:/x")
        .unwrap_err()
        .contains("includes invalid characters"));
    assert!(parse_bind("/x")
        .unwrap_err()
        .contains("invalid volume specification"));
    assert!(parse_bind("/x:rel")
        .unwrap_err()
        .contains("must be absolute"));
    assert!(parse_bind("/x:/")
        .unwrap_err()
        .contains("destination can't be '/'"));
    assert!(parse_bind("/x:/proc")
        .unwrap_err()
        .contains("not of type proc"));
    assert!(parse_bind("/x:/proc/sys/")
        .unwrap_err()
        .contains("inside /proc"));
    assert!(parse_bind("/x:/y:bogus")
        .unwrap_err()
        .contains("invalid mode: bogus"));
}

#[test]
fn mount_flag_types() {
    let h = hc(r#"{"Mounts":[
        {"Type":"bind","Source":"/srv","Target":"/b","ReadOnly":true,"BindOptions":{"Propagation":"shared"}},
        {"Type":"volume","Target":"/anon"},
        {"Type":"volume","Source":"v1","Target":"/v","VolumeOptions":{"NoCopy":true,"Labels":{"a":"b"}}},
        {"Type":"tmpfs","Target":"/t","TmpfsOptions":{"SizeBytes":1048576,"Mode":448}}
    ]}"#);
    let (host, needs) = resolve(&h, &[], &[]).unwrap();
    let m = &host.mounts;
    assert_eq!(
        (m[0].read_only, m[0].propagation.as_str()),
        (true, "shared")
    );
    assert_eq!((m[1].source.as_str(), m[1].anonymous), ("anon1", true));
    assert_eq!((m[2].source.as_str(), m[2].no_copy), ("v1", true));
    assert_eq!(m[3].options, ["size=1024k", "mode=700"]);
    assert_eq!(needs.len(), 2);
    assert_eq!(needs[1].labels.get("a").map(String::as_str), Some("b"));

    let bad = |json: &str| resolve(&hc(json), &[], &[]).unwrap_err();
    assert!(bad(r#"{"Mounts":[{"Type":"npipe","Target":"/x"}]}"#).contains("mount type unknown"));
    assert!(
        bad(r#"{"Mounts":[{"Type":"tmpfs","Source":"x","Target":"/x"}]}"#)
            .contains("source must not be specified")
    );
    assert!(
        bad(r#"{"Mounts":[{"Type":"bind","Source":"rel","Target":"/x"}]}"#)
            .contains("must be absolute")
    );
    assert!(bad(r#"{"Binds":["/a:/x","/b:/x"]}"#).contains("Duplicate mount point: /x"));
}

#[test]
fn anonymous_volumes_from_request_and_image_unless_covered() {
    let h = hc(r#"{"Binds":["/srv:/data"],"Tmpfs":{"/run":"size=1m"}}"#);
    let (host, needs) = resolve(&h, &["/scratch"], &["/data/", "/var/lib/x"]).unwrap();
    let targets: Vec<&str> = host.mounts.iter().map(|m| m.target.as_str()).collect();
    assert_eq!(targets, ["/data", "/run", "/scratch", "/var/lib/x"]);
    assert!(needs.iter().all(|n| n.anonymous));
    assert_eq!(needs.len(), 2);
    assert_eq!(host.mounts[1].options, ["size=1m"]);
}

#[test]
fn limits_and_their_refusals() {
    let (host, _) = resolve(
        &hc(r#"{"Memory":67108864,"NanoCpus":500000000,"PidsLimit":20,"CpuShares":512}"#),
        &[],
        &[],
    )
    .unwrap();
    let r = &host.resources;
    assert_eq!(
        (r.memory, r.memory_swap),
        (64 << 20, 128 << 20),
        "swap defaults to twice memory"
    );
    assert_eq!(
        (r.nano_cpus, r.pids_limit, r.cpu_shares),
        (500_000_000, 20, 512)
    );
    let (host, _) = resolve(&hc(r#"{"Memory":67108864,"MemorySwap":-1}"#), &[], &[]).unwrap();
    assert_eq!(host.resources.memory_swap, -1);
    let bad = |json: &str| resolve(&hc(json), &[], &[]).unwrap_err();
    assert!(bad(r#"{"Memory":1000}"#).contains("Minimum memory limit allowed is 6MB"));
    assert!(bad(r#"{"Memory":67108864,"MemorySwap":1000}"#).contains("larger than memory"));
    assert!(bad(r#"{"MemorySwap":67108864}"#).contains("always set the Memory limit"));
    assert!(bad(r#"{"NanoCpus":1,"CpuPeriod":1000}"#).contains("Conflicting options"));
    assert!(bad(r#"{"PidMode":"container:x"}"#).contains("invalid PID mode"));
    assert!(bad(r#"{"IpcMode":"container:x"}"#).contains("invalid IPC mode"));
    assert!(bad(r#"{"ExtraHosts":["db:notanip"]}"#).contains("invalid IP address in add-host"));
    assert!(bad(r#"{"SecurityOpt":["seccomp={}"]}"#).contains("invalid --security-opt"));
}

#[test]
fn flags_and_nulls() {
    let (host, _) = resolve(
        &hc(
            r#"{"Binds":null,"Dns":null,"PidMode":"host","IpcMode":"host","Privileged":true,
            "ReadonlyRootfs":true,"SecurityOpt":["seccomp=unconfined","no-new-privileges:true"],
            "Ulimits":[{"Name":"nofile","Soft":10,"Hard":20}],"ShmSize":1048576}"#,
        ),
        &[],
        &[],
    )
    .unwrap();
    assert!(host.pid_host && host.ipc_host && host.privileged && host.read_only);
    assert!(host.seccomp_unconfined && host.no_new_privileges);
    assert_eq!(host.ulimits[0].hard, 20);
    assert_eq!(host.shm_size, 1 << 20);
    assert!(valid_volume_name("a1") && valid_volume_name("my_vol.2-x"));
    assert!(!valid_volume_name("a") && !valid_volume_name("-a") && !valid_volume_name("a/b"));
}
