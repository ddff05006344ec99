//! What a function may reach over the network: every public address, and no
//! loopback, private, link-local, shared or metadata address. deno_fetch
//! checks each resolved address of a host after DNS, so a name that resolves
//! to 127.0.0.1 is refused too.

use deno_permissions::{
    Host, NetDescriptor, Permissions, PermissionsContainer, RuntimePermissionDescriptorParser,
};
use std::sync::Arc;

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
    "::/128",
    "::1/128",
    "64:ff9b::/96",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
];

fn deny_list() -> Vec<NetDescriptor> {
    DENIED_NETWORKS
        .iter()
        .map(|cidr| {
            // IPv6 CIDRs do not parse through `parse_for_list`: build them directly.
            let net = cidr.parse().expect("the deny list holds valid CIDRs");
            NetDescriptor(Host::IpSubnet(net), None)
        })
        .collect()
}

/// Permissions of a sandboxed function: outbound network to public
/// addresses only; no files, environment, subprocesses or system info.
pub fn sandbox() -> PermissionsContainer {
    let permissions = Permissions {
        net: Permissions::new_unary(Some(vec![]), Some(deny_list()), false),
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
        let mut perms = sandbox();
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
}
