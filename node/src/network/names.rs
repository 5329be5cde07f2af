//! Names of the kernel objects one Wharf instance owns: its bridges, veths and iptables
//! chains, all derived from the instance's data directory so that two instances on one
//! machine (parallel tests) never share one. Pure.

use sha2::{Digest, Sha256};
use std::path::Path;
use wharf_protocol::network::Subnet;
pub use wharf_protocol::network::{host_veth, user_bridge, IFNAME_MAX};

/// The data directory of a default installation; its bridge is `wharf0`.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/wharf";

/// The per-instance names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceNames {
    /// 8 hex digits identifying the instance.
    pub tag: String,
    /// nat chain of published ports (jumped to from PREROUTING and OUTPUT).
    pub nat_chain: String,
    /// nat chain of outbound NAT, loopback and hairpin (jumped to from POSTROUTING).
    pub post_chain: String,
    /// filter chain of forwarded traffic (jumped to from FORWARD).
    pub fwd_chain: String,
    /// filter chain dropping traffic that enters one of the instance's bridges after
    /// leaving another (jumped to from the forward chain; Docker's
    /// DOCKER-ISOLATION-STAGE-2).
    pub iso_chain: String,
}

impl InstanceNames {
    /// The names of the instance whose data directory is `data_dir`.
    pub fn for_data_dir(data_dir: &Path) -> InstanceNames {
        let digest = Sha256::digest(data_dir.as_os_str().as_encoded_bytes());
        let tag = hex::encode(&digest[..4]);
        InstanceNames {
            nat_chain: format!("WHARF-{tag}"),
            post_chain: format!("WHARF-{tag}-POST"),
            fwd_chain: format!("WHARF-{tag}-FWD"),
            iso_chain: format!("WHARF-{tag}-ISO"),
            tag,
        }
    }

    /// The default bridge's name when none is configured: `wharf0` for the default data
    /// directory, else `wh-<tag>`.
    pub fn default_bridge(&self, data_dir: &Path) -> String {
        if data_dir == Path::new(DEFAULT_DATA_DIR) {
            "wharf0".to_string()
        } else {
            format!("wh-{}", self.tag)
        }
    }

    /// Candidate default subnets, tried in order until one does not overlap a route of the
    /// host: `10.X.Y.0/24` with X in 128..192, spread by the tag so that instances differ.
    pub fn default_subnets(&self) -> impl Iterator<Item = Subnet> {
        let seed = u32::from_str_radix(&self.tag, 16).unwrap_or(0);
        (0..64 * 256u32).map(move |i| {
            let n = (seed.wrapping_add(i.wrapping_mul(7919))) % (64 * 256);
            Subnet {
                addr: std::net::Ipv4Addr::new(10, 128 + (n / 256) as u8, (n % 256) as u8, 0),
                prefix: 24,
            }
        })
    }
}

/// True if `name` is a valid Linux interface name.
pub fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= IFNAME_MAX
        && name != "."
        && name != ".."
        && !name.contains(['/', ':'])
        && !name.chars().any(char::is_whitespace)
}

/// The IPv4 routes of the host (`/proc/net/route` text) as subnets, to keep away from.
pub fn routes(proc_net_route: &str) -> Vec<Subnet> {
    proc_net_route
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dest = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?;
            if mask == 0 {
                return None;
            }
            Some(Subnet {
                addr: std::net::Ipv4Addr::from(u32::from_be(dest)),
                prefix: u32::from_be(mask).count_ones() as u8,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_the_kernel_and_differ_per_instance() {
        let a = InstanceNames::for_data_dir(Path::new("/tmp/a"));
        let b = InstanceNames::for_data_dir(Path::new("/tmp/b"));
        assert_ne!(a.tag, b.tag);
        assert_eq!(a.tag.len(), 8);
        assert!(
            a.post_chain.len() <= 28,
            "iptables chain names are at most 28 chars"
        );
        assert_eq!(
            a.default_bridge(Path::new("/tmp/a")),
            format!("wh-{}", a.tag)
        );
        let d = InstanceNames::for_data_dir(Path::new(DEFAULT_DATA_DIR));
        assert_eq!(d.default_bridge(Path::new(DEFAULT_DATA_DIR)), "wharf0");
        for n in [
            a.default_bridge(Path::new("/tmp/a")),
            user_bridge(&"f".repeat(64)),
            host_veth(&"a".repeat(64), &"b".repeat(64)),
        ] {
            assert!(valid_ifname(&n), "{n}");
        }
        assert_ne!(host_veth("c1", "n"), host_veth("c2", "n"));
        assert!(!valid_ifname("way-too-long-name0"));
    }

    #[test]
    fn default_subnets_are_private_and_spread() {
        let a: Vec<Subnet> = InstanceNames::for_data_dir(Path::new("/tmp/a"))
            .default_subnets()
            .take(3)
            .collect();
        let b = InstanceNames::for_data_dir(Path::new("/tmp/b"))
            .default_subnets()
            .next()
            .unwrap();
        assert_ne!(a[0], b);
        assert_ne!(a[0], a[1]);
        assert!(a.iter().all(|s| s.addr.octets()[0] == 10 && s.prefix == 24));
    }

    #[test]
    fn host_routes_parse() {
        let text =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                    eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                    eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(routes(text), vec![Subnet::parse("192.0.2.0/24").unwrap()]);
    }
}
