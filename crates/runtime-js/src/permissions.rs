//! What a function may reach over the network: every public address, and no
//! loopback, private, link-local, shared or metadata address, except the
//! addresses or CIDR ranges its deployment allows explicitly. deno_fetch
//! checks each resolved address of a host after DNS, so a name that resolves
//! to 127.0.0.1 is refused too.

use deno_permissions::{
    Host, NetDescriptor, Permissions, PermissionsContainer, RuntimePermissionDescriptorParser,
};
use ipnet::IpNet;
use std::sync::Arc;

pub use isola_core::net::{parse_allowed, resolve_allowed, DENIED_NETWORKS};

/// The rules outbound WebSockets are checked by: the same ranges as
/// `fetch`, less the `allowed` ones.
pub fn net_rules(allowed: &[IpNet]) -> isola_core::net::NetRules {
    isola_core::net::NetRules::with_allowed(allowed)
}

/// `net` without the addresses of `hole`, as CIDR blocks.
fn exclude(net: IpNet, hole: &IpNet) -> Vec<IpNet> {
    if !net.contains(hole) && !hole.contains(&net) {
        return vec![net];
    }
    if hole.contains(&net) {
        return Vec::new();
    }
    let halves = net
        .subnets(net.prefix_len() + 1)
        .expect("a strictly larger network splits");
    halves.flat_map(|half| exclude(half, hole)).collect()
}

fn deny_list(allowed: &[IpNet]) -> Vec<NetDescriptor> {
    DENIED_NETWORKS
        .iter()
        .map(|cidr| {
            cidr.parse::<IpNet>()
                .expect("the deny list holds valid CIDRs")
        })
        .flat_map(|net| {
            allowed.iter().fold(vec![net], |nets, hole| {
                nets.into_iter().flat_map(|n| exclude(n, hole)).collect()
            })
        })
        // IPv6 CIDRs do not parse through `parse_for_list`: build them directly.
        .map(|net| NetDescriptor(Host::IpSubnet(net), None))
        .collect()
}

/// Permissions of a sandboxed function: outbound network to public
/// addresses and the `allowed` ones only; no files, environment,
/// subprocesses or system info.
pub fn sandbox(allowed: &[IpNet]) -> PermissionsContainer {
    let permissions = Permissions {
        net: Permissions::new_unary(Some(vec![]), Some(deny_list(allowed)), false),
        ..Permissions::none_without_prompt()
    };
    PermissionsContainer::new(
        Arc::new(RuntimePermissionDescriptorParser::new(
            sys_traits::impls::RealSys,
        )),
        permissions,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_loopback_addresses_are_denied() {
        let mut perms = sandbox(&[]);
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "169.254.169.254",
            "::1",
            "::ffff:127.0.0.1",
            "fd00::1",
        ] {
            let ip = ip.parse().unwrap();
            assert!(
                perms.check_net_resolved(&ip, 80, "fetch()").is_err(),
                "{ip} allowed"
            );
        }
        let public = "93.184.216.34".parse().unwrap();
        assert!(perms.check_net_resolved(&public, 443, "fetch()").is_ok());
    }

    #[test]
    fn allowed_ranges_open_only_themselves() {
        let allowed = [
            parse_allowed("10.1.2.3").unwrap(),
            parse_allowed("fd00::/64").unwrap(),
        ];
        let mut perms = sandbox(&allowed);
        let open = |perms: &mut PermissionsContainer, ip: &str| {
            perms
                .check_net_resolved(&ip.parse().unwrap(), 80, "fetch()")
                .is_ok()
        };
        assert!(open(&mut perms, "10.1.2.3"));
        assert!(open(&mut perms, "fd00::42"));
        for still_denied in [
            "10.1.2.4",
            "10.0.0.1",
            "127.0.0.1",
            "fd00:0:0:1::1",
            "169.254.169.254",
        ] {
            assert!(!open(&mut perms, still_denied), "{still_denied} opened");
        }
        assert!(parse_allowed("example.com").is_err());
    }

    #[test]
    fn allowed_host_names_open_the_addresses_they_resolve_to() {
        let networks = resolve_allowed(&["localhost".to_string(), "10.9.9.9".to_string()]).unwrap();
        assert!(
            networks
                .iter()
                .any(|n| n.contains(&"127.0.0.1".parse::<std::net::IpAddr>().unwrap())),
            "{networks:?}"
        );
        assert!(networks.contains(&"10.9.9.9/32".parse().unwrap()));
        assert!(resolve_allowed(&["no-such-host.invalid".to_string()]).is_err());
    }
}
