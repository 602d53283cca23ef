//! Route access lists (`allow` / `deny`): which client addresses a route serves.
//!
//! A leaf: it knows networks and addresses, not requests. The address checked
//! is the client address weir resolved (see `headers::client_ip`), so PROXY
//! protocol and trusted proxies count here as they do for `X-Real-IP`.

use std::net::IpAddr;

use ipnet::IpNet;

/// A route's `allow` and `deny` networks.
///
/// `deny` wins: an address in both lists is refused. With `allow`, only
/// addresses in it are served; without it, every address not denied is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessList {
    /// `None` when the route has no `allow` key: every address may pass.
    allow: Option<Vec<IpNet>>,
    /// Refused whatever `allow` says.
    deny: Vec<IpNet>,
}

impl AccessList {
    /// The list for a route's keys; `None` when it has neither, so such
    /// routes check nothing per request.
    pub fn new(allow: Option<Vec<IpNet>>, deny: Vec<IpNet>) -> Option<Self> {
        (allow.is_some() || !deny.is_empty()).then_some(Self { allow, deny })
    }

    /// Whether a client at `ip` may use the route.
    pub fn permits(&self, ip: IpAddr) -> bool {
        // A dual-stack listener sees IPv4 clients as `::ffff:a.b.c.d`; the
        // lists are written with plain IPv4 networks.
        let ip = ip.to_canonical();
        if self.deny.iter().any(|net| net.contains(&ip)) {
            return false;
        }
        self.allow
            .as_ref()
            .is_none_or(|allow| allow.iter().any(|net| net.contains(&ip)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().expect("net")).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn no_keys_means_no_list() {
        assert_eq!(AccessList::new(None, Vec::new()), None);
    }

    #[test]
    fn allow_alone_serves_only_its_networks() {
        let list =
            AccessList::new(Some(nets(&["10.0.0.0/8", "192.0.2.7/32"])), Vec::new()).expect("list");
        assert!(list.permits(ip("10.1.2.3")));
        assert!(list.permits(ip("192.0.2.7")));
        assert!(!list.permits(ip("192.0.2.8")));
        assert!(!list.permits(ip("2001:db8::1")));
    }

    #[test]
    fn deny_alone_serves_everyone_else() {
        let list = AccessList::new(None, nets(&["203.0.113.0/24"])).expect("list");
        assert!(!list.permits(ip("203.0.113.9")));
        assert!(list.permits(ip("198.51.100.1")));
    }

    #[test]
    fn deny_wins_over_allow() {
        let list =
            AccessList::new(Some(nets(&["10.0.0.0/8"])), nets(&["10.0.0.5/32"])).expect("list");
        assert!(!list.permits(ip("10.0.0.5")));
        assert!(list.permits(ip("10.0.0.6")));
        assert!(!list.permits(ip("11.0.0.1")));
    }

    #[test]
    fn ipv4_mapped_clients_match_ipv4_networks() {
        let list = AccessList::new(Some(nets(&["127.0.0.0/8"])), Vec::new()).expect("list");
        assert!(list.permits(ip("::ffff:127.0.0.1")));
        let list = AccessList::new(None, nets(&["127.0.0.1/32"])).expect("list");
        assert!(!list.permits(ip("::ffff:127.0.0.1")));
    }

    proptest! {
        /// An address in `deny` is never served, whatever `allow` holds.
        #[test]
        fn a_denied_address_is_never_permitted(a in any::<u32>(), prefix in 0u8..=32, allow_all in any::<bool>()) {
            let addr = std::net::Ipv4Addr::from(a);
            let denied = IpNet::V4(ipnet::Ipv4Net::new(addr, prefix).expect("prefix").trunc());
            let allow = allow_all.then(|| nets(&["0.0.0.0/0", "::/0"]));
            let list = AccessList::new(allow, vec![denied]).expect("list");
            prop_assert!(!list.permits(IpAddr::V4(addr)));
        }
    }
}
