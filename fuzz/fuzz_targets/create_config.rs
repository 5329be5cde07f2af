//! Container-create bodies never panic the decoder or the pure steps that follow it
//! (Docker's entrypoint/cmd and environment merges, signal names, and the `HostConfig`
//! resolution into mounts and limits).

#![no_main]

use libfuzzer_sys::fuzz_target;
use wharf_controller::docker_types::{
    merge_env, merge_process, parse_signal, resolve_host, CreateConfig, ImageRunConfig,
};

fuzz_target!(|data: &[u8]| {
    let Ok(config) = serde_json::from_slice::<CreateConfig>(data) else {
        return;
    };
    let image = ImageRunConfig {
        entrypoint: Some(vec!["/entry".into()]),
        cmd: Some(vec!["default".into()]),
        env: Some(vec!["PATH=/bin".into(), "A=1".into()]),
        ..Default::default()
    };
    let (entrypoint, cmd) = merge_process(
        &image,
        config.entrypoint.clone().map(|e| e.into_vec()),
        config.cmd.clone().map(|c| c.into_vec()),
    );
    let _ = (entrypoint.len(), cmd.len());
    let env = merge_env(
        image.env.as_deref().unwrap_or_default(),
        config.env.as_deref().unwrap_or_default(),
    );
    assert!(env.len() <= 2 + config.env.as_ref().map_or(0, Vec::len));
    if let Some(hc) = &config.host_config {
        let config_volumes: Vec<String> = config.volumes.keys().cloned().collect();
        let mut n = 0u32;
        let mut anon = || {
            n += 1;
            format!("anon{n}")
        };
        if let Ok((host, _needs)) =
            resolve_host(hc, &config_volumes, &["/image-vol".into()], &mut anon)
        {
            assert!(host.mounts.iter().all(|m| m.target.starts_with('/')));
        }
    }
    if let Some(s) = &config.stop_signal {
        if let Some(n) = parse_signal(s) {
            assert!((1..=64).contains(&n));
        }
    }
});
