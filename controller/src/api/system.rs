//! `/_ping`, `/version`, `/info`, `/system/df`.

use super::http::{json, Resp, API_VERSION, MIN_API_VERSION};
use crate::engine::Engine;
use http::{HeaderValue, Method, StatusCode};
use serde_json::json;
use wharf_protocol::state::ContainerStatus;

/// `HEAD|GET /_ping`: `OK` with the version headers the CLI reads first.
pub fn ping(method: &Method) -> Resp {
    let body = if method == Method::HEAD { "" } else { "OK" };
    let mut r = http::Response::new(super::http::full(body));
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert("Builder-Version", HeaderValue::from_static("1"));
    h.insert("Swarm", HeaderValue::from_static("inactive"));
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    h.insert(http::header::PRAGMA, HeaderValue::from_static("no-cache"));
    r
}

fn kernel_version() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `GET /version`.
pub fn version() -> Resp {
    let v = env!("CARGO_PKG_VERSION");
    json(
        StatusCode::OK,
        &json!({
            "Platform": {"Name": "Wharf"},
            "Components": [{
                "Name": "Engine",
                "Version": v,
                "Details": {
                    "ApiVersion": API_VERSION,
                    "MinAPIVersion": MIN_API_VERSION,
                    "Os": "linux",
                    "Arch": "amd64",
                    "KernelVersion": kernel_version(),
                    "Experimental": "false",
                }
            }],
            "Version": v,
            "ApiVersion": API_VERSION,
            "MinAPIVersion": MIN_API_VERSION,
            "GitCommit": "",
            "GoVersion": "rust",
            "Os": "linux",
            "Arch": "amd64",
            "KernelVersion": kernel_version(),
            "BuildTime": "",
        }),
    )
}

/// `GET /info`.
pub async fn info(engine: &Engine) -> Resp {
    // The host facts of the first Ready node that runs containers (none: defaults).
    // Bounded: a host that stops answering must not hold up `docker info` (nor `docker
    // node ls`, which asks for it too).
    let host = match engine.info_node() {
        Ok(node) => tokio::time::timeout(
            std::time::Duration::from_secs(2),
            engine.agents().host_info(&node),
        )
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default(),
        Err(_) => Default::default(),
    };
    let (total, running, paused, images) = engine.store().read(|s| {
        let count = |st| s.containers.values().filter(|c| c.status == st).count();
        (
            s.containers.len(),
            count(ContainerStatus::Running),
            count(ContainerStatus::Paused),
            s.images.len(),
        )
    });
    let mut mem_total = nix::sys::sysinfo::sysinfo()
        .map(|i| i.ram_total())
        .unwrap_or(0);
    let mut ncpu = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let store = engine.store();
    let me = wharf_protocol::NodeId(store.node_id());
    let leader = store.leader().map(|(id, _)| wharf_protocol::NodeId(id));
    let period_ns = engine.heartbeat_period_ns();
    let (swarm, leader_name, name, totals) = store.read(|s| {
        let (swarm, leader_name) = super::nodes::swarm_info(s, me, leader, period_ns);
        let name = s.nodes.get(&me).map(|n| n.description.hostname.clone());
        // A cluster's capacity: the hosts that run containers, as classic Swarm summed.
        let hosts: Vec<_> = s
            .nodes
            .values()
            .filter(|n| n.description.runs_containers)
            .collect();
        let totals = (s.nodes.len() > 1 && !hosts.is_empty()).then(|| {
            (
                hosts
                    .iter()
                    .map(|n| n.description.cpus as usize)
                    .sum::<usize>(),
                hosts.iter().map(|n| n.description.memory).sum::<u64>(),
            )
        });
        (swarm, leader_name, name, totals)
    });
    if let Some((cpus, memory)) = totals {
        ncpu = cpus;
        mem_total = memory;
    }
    let labels: Vec<String> = leader_name
        .map(|l| format!("com.wharf.leader={l}"))
        .into_iter()
        .collect();
    json(
        StatusCode::OK,
        &json!({
            "ID": "",
            "Containers": total,
            "ContainersRunning": running,
            "ContainersPaused": paused,
            "ContainersStopped": total - running - paused,
            "Images": images,
            "Driver": "overlay2",
            "DriverStatus": [["Backing Filesystem", "extfs"]],
            "Plugins": {"Volume": ["local"], "Network": ["bridge", "host", "null"], "Authorization": null, "Log": ["json-file"]},
            "MemoryLimit": true,
            "SwapLimit": true,
            "CpuCfsPeriod": true,
            "CpuCfsQuota": true,
            "CPUShares": true,
            "CPUSet": true,
            "PidsLimit": true,
            "IPv4Forwarding": true,
            "Debug": false,
            "NFd": 0,
            "OomKillDisable": false,
            "NGoroutines": 0,
            "SystemTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            "LoggingDriver": "json-file",
            "CgroupDriver": "cgroupfs",
            "CgroupVersion": "1",
            "NEventsListener": engine.events().listeners(),
            "KernelVersion": kernel_version(),
            "OperatingSystem": "Wharf",
            "OSVersion": "",
            "OSType": "linux",
            "Architecture": std::env::consts::ARCH,
            "IndexServerAddress": "https://index.docker.io/v1/",
            "NCPU": ncpu,
            "MemTotal": mem_total,
            "DockerRootDir": host.root_dir,
            "Name": name.unwrap_or_else(hostname),
            "Labels": labels,
            "ExperimentalBuild": false,
            "ServerVersion": env!("CARGO_PKG_VERSION"),
            "Runtimes": {"wharf": {"path": "libcontainer"}},
            "DefaultRuntime": "wharf",
            "Swarm": swarm,
            "LiveRestoreEnabled": true,
            "Isolation": "",
            "InitBinary": "",
            "SecurityOptions": ["name=seccomp,profile=builtin"],
            "Warnings": null,
        }),
    )
}

/// `GET /system/df`: disk usage of images (with how many containers use each), containers
/// (their writable layers) and volumes, as `docker system df` reads it.
pub async fn df(engine: &Engine) -> Resp {
    let (images, containers) = engine.store().read(|s| {
        let images: Vec<(wharf_protocol::state::ImageRecord, Vec<String>, usize)> = s
            .images
            .values()
            .map(|img| {
                let tags = s
                    .tags
                    .iter()
                    .filter(|(_, id)| **id == img.id)
                    .map(|(t, _)| t.clone())
                    .collect();
                let used = s
                    .containers
                    .values()
                    .filter(|c| c.run.image_id == img.id)
                    .count();
                (img.clone(), tags, used)
            })
            .collect();
        let containers: Vec<wharf_protocol::state::ContainerRecord> =
            s.containers.values().cloned().collect();
        (images, containers)
    });
    let mut rw_sizes = std::collections::HashMap::new();
    for c in &containers {
        // Its writable layer's changes, as the agent of its node counts them.
        let rw = engine
            .agents()
            .usage(&c.node, &c.id)
            .await
            .map_or(0, |u| u.1);
        rw_sizes.insert(c.id.clone(), rw);
    }
    let layers_size: u64 = images.iter().map(|(img, _, _)| img.size).sum();
    let now = crate::engine::now_ns();
    let image_entries: Vec<serde_json::Value> = images
        .iter()
        .map(|(img, tags, used)| {
            json!({
                "Id": img.id.to_string(),
                "ParentId": "",
                "RepoTags": tags,
                "RepoDigests": [],
                "Created": serde_json::from_slice::<crate::docker_types::ImageConfigFile>(&img.config)
                    .ok()
                    .and_then(|c| c.created)
                    .and_then(|c| chrono::DateTime::parse_from_rfc3339(&c).ok())
                    .map(|t| t.timestamp())
                    .unwrap_or(img.loaded_ns / 1_000_000_000),
                "Size": img.size,
                "SharedSize": 0,
                "Labels": {},
                "Containers": used,
            })
        })
        .collect();
    let container_entries: Vec<serde_json::Value> = containers
        .iter()
        .map(|c| {
            let size_rw = rw_sizes.get(&c.id).copied().unwrap_or(0);
            let image_size = images
                .iter()
                .find(|(img, _, _)| img.id == c.run.image_id)
                .map(|(img, _, _)| img.size)
                .unwrap_or(0);
            json!({
                "Id": c.id.as_str(),
                "Names": [engine.store().read(|s| crate::engine::network::shown_container_name(s, c))],
                "Image": c.image_ref,
                "ImageID": c.run.image_id.to_string(),
                "Command": c.run.args.join(" "),
                "Created": c.created_ns / 1_000_000_000,
                "Ports": engine.ps_ports(c),
                "SizeRw": size_rw,
                "SizeRootFs": size_rw + image_size,
                "Labels": super::ps::labels_of(c),
                "State": c.status.as_str(),
                "Status": super::containers::status_text(c, now),
                "HostConfig": {"NetworkMode": crate::engine::network::mode_of(c).shown()},
                "NetworkSettings": {"Networks": engine.store().read(|s| crate::engine::network::ps_networks_json(s, c))},
                "Mounts": engine.mounts_json(c),
            })
        })
        .collect();
    let volumes = engine.volumes();
    let sizes = engine
        .volume_sizes(volumes.iter().map(|v| v.name.clone()).collect())
        .await;
    let volume_entries: Vec<serde_json::Value> = volumes
        .iter()
        .zip(sizes)
        .map(|(v, size)| {
            let mut entry = super::volumes::volume_json(engine, v);
            if let Some(o) = entry.as_object_mut() {
                o.insert(
                    "UsageData".into(),
                    json!({"Size": size, "RefCount": engine.volume_users(&v.name).len()}),
                );
            }
            entry
        })
        .collect();
    json(
        StatusCode::OK,
        &json!({
            "LayersSize": layers_size,
            "Images": image_entries,
            "Containers": container_entries,
            "Volumes": volume_entries,
            "BuildCache": [],
        }),
    )
}
