//! IPv4 subnets for networks: the pool user-defined networks draw from,
//! overlap checks, and the routes the host already uses.
//!
//! The pool is docker's default address pool: `172.17.0.0/16` through
//! `172.31.0.0/16`, then `192.168.0.0/20` through `192.168.240.0/20`. A
//! candidate is free when it overlaps neither another network's subnet nor
//! a route of the host (a subnet in use on the LAN or a VPN must not be
//! shadowed by a bridge).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::error::Context;
use crate::{Error, Result};

/// The subnet the default network prefers, when it is free.
pub const DEFAULT_NETWORK_SUBNET: Ipv4Net = match Ipv4Net::new(Ipv4Addr::new(172, 31, 0, 0), 16) {
    Ok(net) => net,
    Err(_) => panic!("a /16 is a valid prefix"),
};

/// Docker's default address pool, in allocation order.
pub fn default_pool() -> impl Iterator<Item = Ipv4Net> {
    let sixteens = (17..=31u8).map(|second| net(Ipv4Addr::new(172, second, 0, 0), 16));
    let twenties = (0..16u8).map(|step| net(Ipv4Addr::new(192, 168, step * 16, 0), 20));
    sixteens.chain(twenties)
}

fn net(addr: Ipv4Addr, prefix: u8) -> Ipv4Net {
    Ipv4Net::new(addr, prefix).unwrap_or_else(|_| Ipv4Net::default())
}

/// Whether two subnets share at least one address.
pub fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The first of `candidates` that overlaps none of `taken`.
pub fn first_free(
    candidates: impl IntoIterator<Item = Ipv4Net>,
    taken: &[Ipv4Net],
) -> Option<Ipv4Net> {
    candidates
        .into_iter()
        .find(|candidate| !taken.iter().any(|used| overlaps(candidate, used)))
}

/// The destinations of the host's IPv4 routes, default routes left out
/// (everything overlaps `0.0.0.0/0`).
pub fn host_routes() -> Result<Vec<Ipv4Net>> {
    let text = std::fs::read_to_string("/proc/net/route").context("read /proc/net/route")?;
    parse_proc_net_route(&text).context("/proc/net/route")
}

/// Parses the kernel's route table as `/proc/net/route` prints it: a header,
/// then one route a line with the destination and mask as the hexadecimal
/// image of their in-memory (network order) bytes.
pub fn parse_proc_net_route(text: &str) -> Result<Vec<Ipv4Net>> {
    let mut routes = Vec::new();
    for (number, line) in text.lines().enumerate().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        let (Some(destination), Some(mask)) = (fields.get(1), fields.get(7)) else {
            return Err(Error::invalid(format!(
                "line {}: expected at least 8 fields",
                number + 1
            )));
        };
        let destination = parse_route_address(destination)
            .with_context(|| format!("line {}: destination", number + 1))?;
        let mask =
            parse_route_address(mask).with_context(|| format!("line {}: mask", number + 1))?;
        if mask.is_unspecified() {
            continue;
        }
        let route = Ipv4Net::with_netmask(destination, mask)
            .map_err(|err| Error::invalid(format!("line {}: {err}", number + 1)))?;
        routes.push(route);
    }
    Ok(routes)
}

fn parse_route_address(hex: &str) -> Result<Ipv4Addr> {
    let value = u32::from_str_radix(hex, 16)
        .map_err(|err| Error::invalid(format!("{hex:?} is not hexadecimal: {err}")))?;
    Ok(Ipv4Addr::from(value.to_ne_bytes()))
}

/// Checks a requested subnet, gateway and IP range against each other and
/// returns the gateway (the subnet's first host address when none is given).
pub fn validate(
    subnet: &Ipv4Net,
    gateway: Option<Ipv4Addr>,
    ip_range: Option<&Ipv4Net>,
) -> Result<Ipv4Addr> {
    if subnet.prefix_len() > 30 {
        return Err(Error::invalid(format!(
            "subnet {subnet}: too small for a gateway and containers (at most /30)"
        )));
    }
    if subnet.trunc() != *subnet {
        return Err(Error::invalid(format!(
            "subnet {subnet}: host bits set (did you mean {}?)",
            subnet.trunc()
        )));
    }
    let first_host = subnet
        .hosts()
        .next()
        .ok_or_else(|| Error::invalid(format!("subnet {subnet}: has no host addresses")))?;
    let gateway = gateway.unwrap_or(first_host);
    if !subnet.contains(&gateway) || gateway == subnet.network() || gateway == subnet.broadcast() {
        return Err(Error::invalid(format!(
            "gateway {gateway}: not a host address of subnet {subnet}"
        )));
    }
    if let Some(range) = ip_range {
        if !subnet.contains(range) {
            return Err(Error::invalid(format!(
                "IP range {range}: not inside subnet {subnet}"
            )));
        }
    }
    Ok(gateway)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(text: &str) -> Ipv4Net {
        text.parse().unwrap()
    }

    #[test]
    fn pool_is_dockers_default_pool_in_order() {
        let pool: Vec<Ipv4Net> = default_pool().collect();
        assert_eq!(pool.len(), 15 + 16);
        assert_eq!(pool[0], n("172.17.0.0/16"));
        assert_eq!(pool[14], n("172.31.0.0/16"));
        assert_eq!(pool[15], n("192.168.0.0/20"));
        assert_eq!(pool[16], n("192.168.16.0/20"));
        assert_eq!(pool[30], n("192.168.240.0/20"));
    }

    #[test]
    fn first_free_skips_overlapping_subnets_and_routes() {
        let taken = [n("172.17.0.0/16"), n("172.18.5.0/24"), n("172.16.0.0/12")];
        // 172.16.0.0/12 covers every 172.x /16 of the pool.
        assert_eq!(
            first_free(default_pool(), &taken),
            Some(n("192.168.0.0/20"))
        );
        let taken = [n("172.17.0.0/16"), n("172.18.5.0/24")];
        assert_eq!(first_free(default_pool(), &taken), Some(n("172.19.0.0/16")));
        let everything = [n("0.0.0.0/1"), n("128.0.0.0/1")];
        assert_eq!(first_free(default_pool(), &everything), None);
    }

    #[test]
    fn overlap_is_symmetric_and_exact() {
        assert!(overlaps(&n("10.0.0.0/8"), &n("10.1.2.0/24")));
        assert!(overlaps(&n("10.1.2.0/24"), &n("10.0.0.0/8")));
        assert!(!overlaps(&n("10.1.2.0/24"), &n("10.1.3.0/24")));
    }

    #[test]
    fn proc_net_route_destinations_without_default() {
        let text =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                    eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                    eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        if cfg!(target_endian = "little") {
            assert_eq!(parse_proc_net_route(text).unwrap(), vec![n("192.0.2.0/24")]);
        }
        let bad = "header\neth0\tzz\n";
        assert!(parse_proc_net_route(bad).is_err());
    }

    #[test]
    fn validate_defaults_gateway_and_refuses_nonsense() {
        assert_eq!(
            validate(&n("10.9.0.0/16"), None, None).unwrap(),
            Ipv4Addr::new(10, 9, 0, 1)
        );
        let err = validate(&n("10.9.0.1/16"), None, None).unwrap_err();
        assert!(err.message.contains("host bits"), "{err}");
        let err = validate(&n("10.9.0.0/16"), Some(Ipv4Addr::new(10, 8, 0, 1)), None).unwrap_err();
        assert!(err.message.contains("not a host address"), "{err}");
        let err = validate(&n("10.9.0.0/16"), None, Some(&n("10.10.0.0/24"))).unwrap_err();
        assert!(err.message.contains("not inside"), "{err}");
        let err = validate(&n("10.9.0.0/31"), None, None).unwrap_err();
        assert!(err.message.contains("too small"), "{err}");
    }
}
