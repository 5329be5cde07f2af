//! The per-container `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf`, rendered as
//! Docker renders them (moby `libnetwork/etchosts`, `libnetwork/resolvconf`). Pure: the
//! shim reads the host's resolv.conf, writes the results into the container's state
//! directory and bind-mounts them.

pub use wharf_protocol::runtime::split_extra_host;

/// Docker's fallback name servers when the host has only loopback ones (IPv4 only).
pub const DEFAULT_NAMESERVERS: [&str; 2] = ["8.8.8.8", "8.8.4.4"];

/// `/etc/hosts` of a container without a network: the loopback entries, then
/// `--add-host` entries (`name:ip`, the IP possibly IPv6) as `ip\tname` lines.
pub fn hosts_file(extra_hosts: &[String]) -> String {
    let mut out = String::from(
        "127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         ff00::0\tip6-mcastprefix\n\
         ff02::1\tip6-allnodes\n\
         ff02::2\tip6-allrouters\n",
    );
    for entry in extra_hosts {
        if let Some((name, ip)) = split_extra_host(entry) {
            out.push_str(&format!("{ip}\t{name}\n"));
        }
    }
    out
}

/// `/etc/hostname`.
pub fn hostname_file(hostname: &str) -> String {
    format!("{hostname}\n")
}

fn is_loopback(addr: &str) -> bool {
    addr.parse::<std::net::IpAddr>()
        .map(|ip| ip.is_loopback())
        .unwrap_or(false)
}

/// `/etc/resolv.conf` from the host's: its loopback name servers dropped (they mean
/// nothing in the container's network namespace), Docker's defaults when none is left;
/// `dns`, `search` and `options` replace the host's lines of that kind when given.
pub fn resolv_conf(host: &str, dns: &[String], search: &[String], options: &[String]) -> String {
    let mut servers: Vec<String> = vec![];
    let mut host_search: Vec<String> = vec![];
    let mut host_options: Vec<String> = vec![];
    for line in host.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                if let Some(addr) = words.next() {
                    if !is_loopback(addr) {
                        servers.push(addr.to_string());
                    }
                }
            }
            Some("search") | Some("domain") => {
                host_search = words.map(str::to_string).collect();
            }
            Some("options") => host_options.extend(words.map(str::to_string)),
            _ => {}
        }
    }
    if !dns.is_empty() {
        servers = dns.to_vec();
    }
    if servers.is_empty() {
        servers = DEFAULT_NAMESERVERS.iter().map(|s| s.to_string()).collect();
    }
    let search = if search.is_empty() {
        host_search
    } else {
        search
            .iter()
            .filter(|s| s.as_str() != ".")
            .cloned()
            .collect()
    };
    let options = if options.is_empty() {
        host_options
    } else {
        options.to_vec()
    };
    let mut out = String::new();
    for s in &servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn hosts_has_loopback_and_extra_hosts() {
        let h = hosts_file(&v(&["db:10.0.0.2", "v6:[::2]", "eq=1.2.3.4", "bad"]));
        assert!(h.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(h.contains("\n10.0.0.2\tdb\n"));
        assert!(h.contains("\n::2\tv6\n"));
        assert!(h.contains("\n1.2.3.4\teq\n"));
        assert!(!h.contains("bad"));
    }

    #[test]
    fn loopback_nameservers_fall_back_to_google() {
        let r = resolv_conf(
            "# x\nnameserver 127.0.0.53\nnameserver ::1\nsearch a.b\noptions edns0\n",
            &[],
            &[],
            &[],
        );
        assert_eq!(
            r,
            "nameserver 8.8.8.8\nnameserver 8.8.4.4\nsearch a.b\noptions edns0\n"
        );
    }

    #[test]
    fn host_servers_kept_and_dns_flags_override() {
        let host = "nameserver 10.1.1.1\nnameserver 127.0.0.1\n";
        assert_eq!(resolv_conf(host, &[], &[], &[]), "nameserver 10.1.1.1\n");
        assert_eq!(
            resolv_conf(host, &v(&["1.1.1.1"]), &v(&["x.y"]), &v(&["ndots:2"])),
            "nameserver 1.1.1.1\nsearch x.y\noptions ndots:2\n"
        );
        assert_eq!(hostname_file("h"), "h\n");
    }
}
