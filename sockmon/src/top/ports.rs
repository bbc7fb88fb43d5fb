//! Port classes and address scopes of the Listeners view, as CONTRACTS.md
//! names them (`port_class`: `well_known|registered|dynamic`, `addr_scope`:
//! `loopback|link_local|specific|wildcard`), computed here from the IANA
//! ranges (RFC 6335) until the policy helper's fields are in the stream.

use std::net::IpAddr;

/// IANA's class of a port: system (0-1023), user (1024-49151), dynamic.
pub fn port_class(port: u16) -> &'static str {
    match port {
        0..=1023 => "well_known",
        1024..=49151 => "registered",
        _ => "dynamic",
    }
}

/// Who can reach an address: this host only, this link, one address, any.
pub fn addr_scope(ip: IpAddr) -> &'static str {
    let ip = crate::event::unmap(ip);
    if ip.is_unspecified() {
        "wildcard"
    } else if ip.is_loopback() {
        "loopback"
    } else {
        match ip {
            IpAddr::V4(v4) if v4.is_link_local() => "link_local",
            IpAddr::V6(v6) if v6.is_unicast_link_local() => "link_local",
            _ => "specific",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_follow_the_iana_ranges() {
        assert_eq!(port_class(0), "well_known");
        assert_eq!(port_class(443), "well_known");
        assert_eq!(port_class(1023), "well_known");
        assert_eq!(port_class(1024), "registered");
        assert_eq!(port_class(49151), "registered");
        assert_eq!(port_class(49152), "dynamic");
        assert_eq!(port_class(65535), "dynamic");
    }

    #[test]
    fn scopes() {
        let s = |a: &str| addr_scope(a.parse().unwrap());
        assert_eq!(s("0.0.0.0"), "wildcard");
        assert_eq!(s("::"), "wildcard");
        assert_eq!(s("127.0.0.53"), "loopback");
        assert_eq!(s("::1"), "loopback");
        assert_eq!(s("::ffff:127.0.0.1"), "loopback");
        assert_eq!(s("169.254.1.2"), "link_local");
        assert_eq!(s("fe80::1"), "link_local");
        assert_eq!(s("10.1.2.3"), "specific");
        assert_eq!(s("2001:db8::1"), "specific");
    }
}
