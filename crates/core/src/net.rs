//! What a function may reach over the network, for every runtime: every
//! public address, and no loopback, private, link-local, shared or metadata
//! address, except the addresses or CIDR ranges its deployment allows
//! explicitly (`allowed_hosts`). Addresses are checked after DNS, on the
//! address actually connected to, so a name that resolves to 127.0.0.1 is
//! refused too.

use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};

/// Address ranges no function may connect to.
pub const DENIED_NETWORKS: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "255.255.255.255/32",
    // Azure's platform endpoint (metadata and DNS of its VMs).
    "168.63.129.16/32",
    // IPv4-compatible (deprecated) addresses embed any IPv4 address,
    // including ::/128 (unspecified) and ::1/128 (loopback).
    "::/96",
    // IPv4-mapped addresses are checked as the IPv4 address they embed, but
    // refuse the range outright too.
    "::ffff:0:0/96",
    // IPv4-translated addresses (SIIT) embed an IPv4 address too.
    "::ffff:0:0:0/96",
    // NAT64 (well-known and local-use prefixes) and 6to4 reach IPv4 hosts,
    // private ones included, through a translator.
    "64:ff9b::/96",
    "64:ff9b:1::/48",
    "2002::/16",
    // Teredo embeds an IPv4 server and client address.
    "2001::/32",
    // Discard-only, documentation and ORCHID ranges: never a real peer.
    "100::/64",
    "2001:db8::/32",
    "2001:10::/28",
    "2001:20::/28",
    // Unique local, site-local (deprecated), link-local, multicast.
    "fc00::/7",
    "fec0::/10",
    "fe80::/10",
    "ff00::/8",
];

/// The address rules of one function.
#[derive(Clone, Debug, Default)]
pub struct NetRules {
    /// Ranges no function may reach.
    pub denied: Vec<IpNet>,
    /// Ranges this function may reach although they are denied.
    pub allowed: Vec<IpNet>,
}

impl NetRules {
    /// The node's deny list ([`DENIED_NETWORKS`]), less the `allowed` ranges.
    pub fn with_allowed(allowed: &[IpNet]) -> Self {
        static DENIED: std::sync::OnceLock<Vec<IpNet>> = std::sync::OnceLock::new();
        let denied = DENIED.get_or_init(|| {
            DENIED_NETWORKS
                .iter()
                .map(|cidr| cidr.parse().expect("the deny list holds valid CIDRs"))
                .collect()
        });
        Self {
            denied: denied.clone(),
            allowed: allowed.to_vec(),
        }
    }

    /// Whether `ip` may be connected to.
    pub fn permits(&self, ip: IpAddr) -> bool {
        // An IPv4-mapped IPv6 address is judged as the IPv4 address.
        let ip = ip.to_canonical();
        self.allowed.iter().any(|net| net.contains(&ip))
            || !self.denied.iter().any(|net| net.contains(&ip))
    }
}

/// Parses an allowed address (`10.0.0.5`, `fd00::1`) or range (`10.1.0.0/16`).
pub fn parse_allowed(entry: &str) -> Result<IpNet, String> {
    entry
        .parse::<IpNet>()
        .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
        .map(|net| net.trunc())
        .map_err(|_| format!("allowed host {entry:?} is not an IP address or CIDR range"))
}

/// The networks an allowlist opens: addresses and ranges as written, and
/// host names resolved now (blocking), so `db.internal` opens the addresses
/// it has at that moment.
pub fn resolve_allowed(entries: &[String]) -> Result<Vec<IpNet>, String> {
    let mut networks = Vec::new();
    for entry in entries {
        if let Ok(net) = parse_allowed(entry) {
            networks.push(net);
            continue;
        }
        let host = entry
            .rsplit_once(':')
            .map_or(entry.as_str(), |(host, _port)| host);
        let addresses = std::net::ToSocketAddrs::to_socket_addrs(&(host, 0))
            .map_err(|e| format!("allowed host {entry:?} does not resolve: {e}"))?;
        networks.extend(addresses.map(|a| IpNet::from(a.ip())));
    }
    Ok(networks)
}

/// Why an outbound connection was not made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The host name did not resolve.
    #[error("{host} does not resolve: {detail}")]
    Unresolved { host: String, detail: String },
    /// Every address of the host is one functions may not reach.
    #[error("{host} is a private or local address functions may not reach (allow it with allowed_hosts)")]
    Denied { host: String },
    /// No permitted address answered.
    #[error("connecting to {host}: {detail}")]
    Failed { host: String, detail: String },
}

/// A TCP connection to the first permitted address of `host` that answers:
/// the address checked is the one connected to (no second lookup).
pub async fn connect_permitted(
    host: &str,
    port: u16,
    rules: &NetRules,
) -> Result<tokio::net::TcpStream, ConnectError> {
    // A bracketed IPv6 literal (`[::1]`, as URLs write it) resolves bare.
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let addresses = resolve(bare, port)
        .await
        .map_err(|e| ConnectError::Unresolved {
            host: host.to_string(),
            detail: e.to_string(),
        })?;
    let permitted = addresses.iter().filter(|a| rules.permits(a.ip()));
    let mut last = None;
    for address in permitted {
        match tokio::net::TcpStream::connect(address).await {
            Ok(stream) => return Ok(stream),
            Err(error) => last = Some(error.to_string()),
        }
    }
    Err(match last {
        None => ConnectError::Denied {
            host: host.to_string(),
        },
        Some(detail) => ConnectError::Failed {
            host: host.to_string(),
            detail,
        },
    })
}

/// Host-name lookups under way at once, node-wide. The system resolver
/// runs on blocking threads and cannot be cancelled (a name whose DNS
/// server never answers holds its thread for the resolver's whole
/// timeout), so functions may hold at most this many of those threads.
const MAX_LOOKUPS: usize = 16;

static LOOKUPS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_LOOKUPS);

/// The addresses of `host` (an IP address is its own), looked up on a
/// blocking thread that holds one of the [`MAX_LOOKUPS`] permits until the
/// lookup ends, even if the caller has given up by then.
async fn resolve(host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let permit = LOOKUPS
        .acquire()
        .await
        .map_err(|_| std::io::Error::other("lookups are closed"))?;
    let host = host.to_string();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port)).map(Iterator::collect)
    })
    .await
    .map_err(std::io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_deny_private_ranges_unless_allowed() {
        let rules = NetRules::with_allowed(&["10.1.0.0/16".parse().unwrap()]);
        for denied in [
            "127.0.0.1",
            "::ffff:127.0.0.1",
            "10.2.0.1",
            "169.254.169.254",
            "::1",
            "fd00::1",
        ] {
            assert!(!rules.permits(denied.parse().unwrap()), "{denied}");
        }
        assert!(rules.permits("10.1.2.3".parse().unwrap()));
        assert!(rules.permits("93.184.216.34".parse().unwrap()));
    }

    #[test]
    fn allowed_entries_parse_or_resolve() {
        assert_eq!(
            parse_allowed("10.1.2.3").unwrap(),
            "10.1.2.3/32".parse().unwrap()
        );
        assert!(parse_allowed("example.com").is_err());
        let networks = resolve_allowed(&["localhost".to_string(), "10.9.9.9".to_string()]).unwrap();
        assert!(networks
            .iter()
            .any(|n| n.contains(&"127.0.0.1".parse::<IpAddr>().unwrap())));
        assert!(resolve_allowed(&["no-such-host.invalid".to_string()]).is_err());
    }

    #[tokio::test]
    async fn connections_go_only_where_the_rules_permit() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let denied = connect_permitted("127.0.0.1", port, &NetRules::with_allowed(&[])).await;
        assert!(
            matches!(denied, Err(ConnectError::Denied { .. })),
            "{denied:?}"
        );
        let open = NetRules::with_allowed(&[parse_allowed("127.0.0.1").unwrap()]);
        assert!(connect_permitted("localhost", port, &open).await.is_ok());
    }
}
