//! Who is asking: the TCP peer, or — when the peer is a trusted proxy — the rightmost address in
//! `X-Forwarded-For` that is not a trusted proxy. All `X-Forwarded-For` lines count, in order
//! (a proxy may add its own line rather than append to the client's), ports are stripped, and
//! IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, what a dual-stack listener reports for IPv4
//! peers) are the IPv4 addresses they carry, for peers, hops and the trusted list alike.

use ipnet::IpNet;
use serde::{Deserialize, Deserializer};
use std::net::IpAddr;

/// The proxies whose `X-Forwarded-For` is believed: addresses or CIDR ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// `10.0.0.2`, `10.0.0.0/8`, `fd00::/8`, `::ffff:10.0.0.2`…
    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        entries
            .into_iter()
            .map(|entry| {
                let net = match entry.parse::<IpNet>() {
                    Ok(net) => net,
                    Err(_) => IpNet::from(entry.parse::<IpAddr>().map_err(|_| {
                        format!("trusted_proxies: {entry:?} is not an address or CIDR range")
                    })?),
                };
                Ok(normalize_net(net))
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = normalize(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client: `peer` itself unless it is trusted; then, walking `X-Forwarded-For` (all
    /// `lines`, joined in order) from the right, the first hop that is not trusted. A hop that
    /// does not parse stops the walk (whatever is left of it was written by someone untrusted),
    /// and so does reaching the left end: the last address seen is the answer.
    pub fn client<'a>(&self, peer: IpAddr, lines: impl IntoIterator<Item = &'a str>) -> IpAddr {
        let peer = normalize(peer);
        if !self.contains(peer) {
            return peer;
        }
        let hops: Vec<&str> = lines.into_iter().flat_map(|line| line.split(',')).collect();
        let mut nearest = peer;
        for hop in hops.iter().rev() {
            let Some(ip) = parse_hop(hop) else { break };
            nearest = ip;
            if !self.contains(ip) {
                break;
            }
        }
        nearest
    }
}

impl<'de> Deserialize<'de> for TrustedProxies {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let entries = Vec::<String>::deserialize(deserializer)?;
        Self::parse(entries.iter().map(String::as_str)).map_err(serde::de::Error::custom)
    }
}

/// `::ffff:a.b.c.d` is `a.b.c.d`.
pub fn normalize(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn normalize_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).map_or(net, IpNet::V4),
            None => net,
        },
        other => other,
    }
}

/// One `X-Forwarded-For` entry: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]:5678`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim().trim_matches('"');
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(normalize(ip));
    }
    if let Some(rest) = hop.strip_prefix('[') {
        let (ip, _port) = rest.split_once(']')?;
        return ip.parse().ok().map(normalize);
    }
    let (ip, port) = hop.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    ip.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn trusted(entries: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(entries.iter().copied()).unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_says() {
        let proxies = trusted(&["10.0.0.2"]);
        assert_eq!(
            proxies.client(ip("198.51.100.7"), ["1.2.3.4"]),
            ip("198.51.100.7")
        );
        assert_eq!(proxies.client(ip("::ffff:198.51.100.7"), []), ip("198.51.100.7"));
    }

    #[test]
    fn every_line_counts_and_the_rightmost_untrusted_hop_wins() {
        let proxies = trusted(&["10.0.0.0/8"]);
        // The client wrote line one; the proxy added its own line with what it saw.
        let lines = ["6.6.6.6", "203.0.113.9"];
        assert_eq!(proxies.client(ip("10.0.0.2"), lines), ip("203.0.113.9"));
        // Several proxies, ports, brackets, mapped addresses.
        let lines = ["6.6.6.6, 203.0.113.9:41234", "10.1.2.3, [::ffff:10.9.9.9]:80"];
        assert_eq!(proxies.client(ip("::ffff:10.0.0.2"), lines), ip("203.0.113.9"));
        let lines = ["[2001:db8::5]:443"];
        assert_eq!(proxies.client(ip("10.0.0.2"), lines), ip("2001:db8::5"));
    }

    #[test]
    fn junk_or_only_trusted_hops_stop_at_the_last_address_seen() {
        let proxies = trusted(&["10.0.0.0/8", "127.0.0.1"]);
        assert_eq!(
            proxies.client(ip("127.0.0.1"), ["unknown, 10.0.0.7"]),
            ip("10.0.0.7")
        );
        assert_eq!(
            proxies.client(ip("127.0.0.1"), ["10.0.0.3, 10.0.0.7"]),
            ip("10.0.0.3")
        );
        assert_eq!(proxies.client(ip("127.0.0.1"), []), ip("127.0.0.1"));
    }

    #[test]
    fn the_trusted_list_takes_addresses_ranges_and_mapped_forms() {
        let proxies = trusted(&["::ffff:10.0.0.2", "192.168.0.0/16", "fd00::/8"]);
        assert!(proxies.contains(ip("10.0.0.2")));
        assert!(proxies.contains(ip("::ffff:192.168.4.4")));
        assert!(proxies.contains(ip("fd12::1")));
        assert!(!proxies.contains(ip("10.0.0.3")));
        assert!(TrustedProxies::parse(["not-an-ip"]).is_err());
    }
}
