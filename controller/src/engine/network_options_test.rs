//! Unit tests of [`super`]: which network create and container create requests pass.

use super::*;
use serde_json::json;

fn refused(body: Value) -> String {
    parse_create(&body).unwrap_err().to_string()
}

#[test]
fn the_cli_defaults_pass_and_carry_their_values() {
    // What docker network create sends with --subnet, --gateway, --label, --internal.
    let n = parse_create(&json!({
        "Name": "back", "Driver": "bridge", "Scope": "", "Internal": true,
        "Attachable": false, "Ingress": false, "ConfigOnly": false,
        "IPAM": {"Driver": "default", "Options": {}, "Config": [
            {"Subnet": "10.9.0.0/24", "Gateway": "10.9.0.1"}]},
        "Options": {}, "Labels": {"tier": "db"}
    }))
    .unwrap();
    assert_eq!(n.name, "back");
    assert_eq!(n.subnet.as_deref(), Some("10.9.0.0/24"));
    assert_eq!(n.gateway.as_deref(), Some("10.9.0.1"));
    assert_eq!(n.labels.get("tier").map(String::as_str), Some("db"));
    assert!(n.internal && n.icc && n.masquerade);
    let n = parse_create(&json!({"Name": "x"})).unwrap();
    assert!(!n.internal && n.icc && n.masquerade);
    assert_eq!((n.subnet, n.gateway), (None, None));
}

#[test]
fn icc_and_masquerade_options_are_carried_out() {
    let n = parse_create(&json!({"Name": "x", "Options": {
        ENABLE_ICC: "false", ENABLE_IP_MASQUERADE: "0"}}))
    .unwrap();
    assert!(!n.icc && !n.masquerade);
    assert_eq!(shown_options(n.icc, n.masquerade).len(), 2);
    let n = parse_create(&json!({"Name": "x", "Options": {ENABLE_ICC: "True"}})).unwrap();
    assert!(n.icc);
    assert!(shown_options(true, true).is_empty());
    assert!(
        refused(json!({"Name": "x", "Options": {ENABLE_ICC: "nope"}})).contains(
            "invalid value \"nope\" for network option com.docker.network.bridge.enable_icc"
        )
    );
}

#[test]
fn options_wharf_does_not_carry_out_are_refused_by_name() {
    let m = refused(json!({"Name": "x", "Options": {"com.docker.network.driver.mtu": "1400"}}));
    assert!(
        m.contains("\"com.docker.network.driver.mtu\" is not supported by wharf"),
        "{m}"
    );
    for (body, flag) in [
        (json!({"Name": "x", "EnableIPv6": true}), "--ipv6"),
        (json!({"Name": "x", "EnableIPv4": false}), "--ipv4=false"),
        (json!({"Name": "x", "Attachable": true}), "--attachable"),
        (json!({"Name": "x", "Ingress": true}), "--ingress"),
        (json!({"Name": "x", "ConfigOnly": true}), "--config-only"),
        (
            json!({"Name": "x", "ConfigFrom": {"Network": "y"}}),
            "--config-from",
        ),
        (json!({"Name": "x", "Scope": "swarm"}), "--scope"),
        (
            json!({"Name": "x", "IPAM": {"Driver": "other"}}),
            "--ipam-driver",
        ),
        (
            json!({"Name": "x", "IPAM": {"Options": {"a": "b"}}}),
            "--ipam-opt",
        ),
        (
            json!({"Name": "x", "IPAM": {"Config": [{"Subnet": "10.9.0.0/24", "IPRange": "10.9.0.0/25"}]}}),
            "--ip-range",
        ),
        (
            json!({"Name": "x", "IPAM": {"Config": [{"Subnet": "10.9.0.0/24", "AuxiliaryAddresses": {"a": "10.9.0.5"}}]}}),
            "--aux-address",
        ),
        (
            json!({"Name": "x", "IPAM": {"Config": [{"Subnet": "10.9.0.0/24"}, {"Subnet": "10.8.0.0/24"}]}}),
            "--subnet",
        ),
    ] {
        let m = refused(body);
        assert!(
            m.contains(flag) && m.contains("not supported by wharf"),
            "{flag}: {m}"
        );
        let e: EngineError = parse_create(&json!({"Name": "x", "EnableIPv6": true}))
            .unwrap_err()
            .into();
        assert_eq!(e.kind, crate::engine::ErrorKind::InvalidParameter);
    }
    let e: EngineError = parse_create(&json!({"Name": "x", "Driver": "overlay"}))
        .unwrap_err()
        .into();
    assert_eq!(e.kind, crate::engine::ErrorKind::NotFound);
    assert_eq!(e.message, "plugin \"overlay\" not found");
    assert!(refused(json!({"Name": "x", "Internal": "yes"})).contains("Internal"));
}

fn run_refused(body: Value) -> String {
    let hc = body.get("HostConfig").cloned().unwrap_or(json!({}));
    check_run(&body, &hc).unwrap_err().to_string()
}

#[test]
fn run_options_without_effect_are_refused() {
    let ok = json!({"Image": "busybox", "HostConfig": {"NetworkMode": "back"},
        "NetworkingConfig": {"EndpointsConfig": {"back": {"Aliases": ["db"]}}}});
    check_run(&ok, &ok["HostConfig"]).unwrap();
    let ep = |settings: Value| {
        json!({"HostConfig": {"NetworkMode": "back"},
            "NetworkingConfig": {"EndpointsConfig": {"back": settings}}})
    };
    for (body, flag) in [
        (
            ep(json!({"IPAMConfig": {"IPv4Address": "10.9.0.9"}})),
            "--ip",
        ),
        (
            ep(json!({"IPAMConfig": {"IPv6Address": "fd00::9"}})),
            "--ip6",
        ),
        (
            ep(json!({"IPAMConfig": {"LinkLocalIPs": ["169.254.0.9"]}})),
            "--link-local-ip",
        ),
        (
            ep(json!({"MacAddress": "02:42:0a:00:00:09"})),
            "--mac-address",
        ),
        (ep(json!({"DriverOpts": {"a": "b"}})), "driver-opt"),
        (ep(json!({"Links": ["a:b"]})), "--link"),
        (json!({"HostConfig": {"Links": ["/a:/b/a"]}}), "--link"),
        (
            json!({"MacAddress": "02:42:0a:00:00:09", "HostConfig": {}}),
            "--mac-address",
        ),
        (
            json!({"Domainname": "example.org", "HostConfig": {}}),
            "--domainname",
        ),
        (
            json!({"NetworkDisabled": true, "HostConfig": {}}),
            "--network none",
        ),
    ] {
        let m = run_refused(body);
        assert!(
            m.contains(flag) && m.contains("not supported by wharf"),
            "{flag}: {m}"
        );
    }
    // Empty values are what clients send when the flag is not given.
    let empty = json!({"Domainname": "", "MacAddress": "", "HostConfig": {"Links": null},
        "NetworkingConfig": {"EndpointsConfig": {"bridge": {"IPAMConfig": null, "Links": null,
        "Aliases": null, "MacAddress": "", "DriverOpts": null}}}});
    check_run(&empty, &empty["HostConfig"]).unwrap();
}

#[test]
fn run_conflicts_are_refused_with_dockers_words() {
    let m = run_refused(json!({"HostConfig": {"NetworkMode": "default"},
        "NetworkingConfig": {"EndpointsConfig": {"bridge": {"Aliases": ["x"]}}}}));
    assert_eq!(
        m,
        "network-scoped aliases are only supported for user-defined networks"
    );
    let m = run_refused(json!({"HostConfig": {"NetworkMode": "container:db",
        "PortBindings": {"80/tcp": [{"HostPort": "8080"}]}}}));
    assert_eq!(
        m,
        "conflicting options: port publishing and the container type network mode"
    );
    let m = run_refused(json!({"Hostname": "h", "HostConfig": {"NetworkMode": "container:db"}}));
    assert_eq!(m, "conflicting options: hostname and the network mode");
    let m = run_refused(json!({"HostConfig": {"NetworkMode": "container:db", "Dns": ["1.1.1.1"]}}));
    assert_eq!(m, "conflicting options: dns and the network mode");
    let m = run_refused(json!({"HostConfig": {"NetworkMode": "none"},
        "NetworkingConfig": {"EndpointsConfig": {"none": {}, "back": {}}}}));
    assert!(m.contains("private (none) mode"), "{m}");
    let m = run_refused(json!({"HostConfig": {"NetworkMode": "host"},
        "NetworkingConfig": {"EndpointsConfig": {"back": {}}}}));
    assert!(
        m.contains("cannot be connected to any other network"),
        "{m}"
    );
    let ok = json!({"HostConfig": {"NetworkMode": "host"},
        "NetworkingConfig": {"EndpointsConfig": {"host": {}}}});
    check_run(&ok, &ok["HostConfig"]).unwrap();
    let m = run_refused(json!({"HostConfig": {"NetworkMode": "host"},
        "NetworkingConfig": {"EndpointsConfig": {"host": {"Aliases": ["x"]}}}}));
    assert_eq!(
        m,
        "network-scoped aliases are only supported for user-defined networks"
    );
}

#[test]
fn network_connect_endpoint_settings_are_checked_too() {
    check_endpoint(true, &json!({"Aliases": ["db"]})).unwrap();
    check_endpoint(false, &json!({"Aliases": null, "IPAMConfig": {}})).unwrap();
    assert!(check_endpoint(false, &json!({"Aliases": ["db"]})).is_err());
    let m = check_endpoint(true, &json!({"IPAMConfig": {"IPv4Address": "10.9.0.9"}}))
        .unwrap_err()
        .to_string();
    assert_eq!(m, "a fixed address (--ip, --ip6) is not supported by wharf");
    assert!(check_endpoint(true, &json!({"DriverOpts": {"a": "b"}})).is_err());
}
