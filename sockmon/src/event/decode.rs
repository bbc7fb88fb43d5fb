//! Decoding ring-buffer records into [`Event`]s. Pure: bytes in, value out.
//!
//! Records are decoded from a copy (`read_unaligned`), never in place: the
//! ring buffer's data pages may be mapped read-only and are reused by the
//! kernel once consumed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use sockmon_common::{
    AF_INET, AF_INET6, EventKind, Header, IPPROTO_TCP, IPPROTO_UDP, ProcEvent, SockEvent,
};
use thiserror::Error;

use super::{Comm, Event, Family, ProcChange, Proto, Record, unmap};
use crate::clock::Clock;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than its kind requires")]
    Short(usize),
    #[error("unknown event kind {0}")]
    Kind(u16),
    #[error("unknown protocol {0}")]
    Protocol(u8),
    #[error("unknown address family {0}")]
    Family(u16),
}

/// Copies a `T` out of the start of `bytes`.
fn copy<T: aya::Pod>(bytes: &[u8]) -> Result<T, DecodeError> {
    if bytes.len() < size_of::<T>() {
        return Err(DecodeError::Short(bytes.len()));
    }
    // SAFETY: length checked; T is plain old data (aya::Pod), valid for any bits.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Decodes one record of any kind.
pub fn decode(bytes: &[u8], clock: &Clock) -> Result<Record, DecodeError> {
    let header: Header = copy(bytes)?;
    let kind = EventKind::from_u16(header.kind).ok_or(DecodeError::Kind(header.kind))?;
    if kind == EventKind::CloseStats {
        return Ok(Record::CloseStats(super::flow::CloseStats::from_raw(
            &copy(bytes)?,
            clock,
        )));
    }
    if kind == EventKind::ExecInfo {
        let r: sockmon_common::flow::ExecInfo = copy(bytes)?;
        return Ok(Record::ExecInfo(Box::new(super::flow::ExecCtx::from_raw(
            &r,
        ))));
    }
    if kind.is_process() {
        let r: ProcEvent = copy(bytes)?;
        Ok(Record::Proc(ProcChange {
            kind,
            time: clock.wall(r.header.ts_ns),
            pid: r.pid,
            actor: r.header.tgid,
            start_ns: r.start_ns,
            comm: Comm::from_kernel(&r.comm),
        }))
    } else {
        Ok(Record::Sock(from_raw(&copy(bytes)?, clock)?))
    }
}

/// Turns a raw record into an [`Event`].
pub fn from_raw(r: &SockEvent, clock: &Clock) -> Result<Event, DecodeError> {
    let kind = EventKind::from_u16(r.header.kind)
        .filter(|k| {
            !k.is_process()
                && !matches!(
                    k,
                    EventKind::CloseStats | EventKind::ExecInfo | EventKind::Flow
                )
        })
        .ok_or(DecodeError::Kind(r.header.kind))?;
    let proto = match r.protocol {
        IPPROTO_TCP => Proto::Tcp,
        IPPROTO_UDP => Proto::Udp,
        p => return Err(DecodeError::Protocol(p)),
    };
    let (src_ip, dst_ip) = match r.family {
        AF_INET => (ipv4(&r.src_addr), ipv4(&r.dst_addr)),
        AF_INET6 => (
            unmap(IpAddr::V6(Ipv6Addr::from(r.src_addr))),
            unmap(IpAddr::V6(Ipv6Addr::from(r.dst_addr))),
        ),
        f => return Err(DecodeError::Family(f)),
    };
    let (src_ip, dst_ip, family) = reconcile_family(src_ip, dst_ip, r.family);
    // For bind and listen there is no remote side, whatever the socket says.
    let (dst_ip, dst_port) = match kind {
        EventKind::Bind | EventKind::Listen => (unspecified(family), 0),
        _ => (dst_ip, r.dst_port),
    };
    Ok(Event {
        kind,
        time: clock.wall(r.header.ts_ns),
        proto,
        family,
        src: SocketAddr::new(src_ip, r.src_port),
        dst: SocketAddr::new(dst_ip, dst_port),
        pid: r.header.tgid,
        tid: r.header.tid,
        uid: r.uid,
        comm: Comm::from_kernel(&r.comm),
        process_comm: Comm::from_kernel(&r.leader_comm),
        start_ns: r.start_ns,
        netns: r.netns,
        inode: r.inode,
        cgroup_id: r.cgroup_id,
        error: (r.error < 0).then_some(-r.error),
        state: r.state,
        flags: r.header.flags,
        life: None,
        ctx: None,
        aux: r.aux,
    })
}

fn ipv4(a: &[u8; 16]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))
}

fn unspecified(family: Family) -> IpAddr {
    match family {
        Family::Ipv4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        Family::Ipv6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

/// An IPv6 socket talking IPv4 (mapped addresses) is reported as IPv4; the
/// unspecified side follows the other, so one event never mixes families.
pub fn reconcile_family(src: IpAddr, dst: IpAddr, af: u16) -> (IpAddr, IpAddr, Family) {
    if af == AF_INET {
        return (src, dst, Family::Ipv4);
    }
    match (src, dst) {
        (IpAddr::V4(_), IpAddr::V4(_)) => (src, dst, Family::Ipv4),
        (IpAddr::V4(_), IpAddr::V6(d)) if d.is_unspecified() => {
            (src, IpAddr::V4(Ipv4Addr::UNSPECIFIED), Family::Ipv4)
        }
        (IpAddr::V6(s), IpAddr::V4(_)) if s.is_unspecified() => {
            (IpAddr::V4(Ipv4Addr::UNSPECIFIED), dst, Family::Ipv4)
        }
        _ => (src, dst, Family::Ipv6),
    }
}

#[cfg(test)]
mod tests {
    use sockmon_common::Header;

    use super::*;

    fn record(kind: EventKind, family: u16) -> SockEvent {
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"curl");
        SockEvent {
            header: Header {
                ts_ns: 1_000,
                tgid: 1234,
                tid: 1236,
                kind: kind as u16,
                flags: 0,
                _pad: 0,
            },
            cgroup_id: 77,
            inode: 424242,
            netns: 4026531840,
            uid: 1000,
            error: 0,
            family,
            protocol: IPPROTO_TCP,
            state: 1,
            src_port: 40312,
            dst_port: 443,
            _pad: 0,
            src_addr: [0; 16],
            dst_addr: [0; 16],
            comm,
            leader_comm: *b"server\0\0\0\0\0\0\0\0\0\0",
            start_ns: 123_456_789_000,
            aux: 0,
        }
    }

    fn bytes<T>(r: &T) -> Vec<u8> {
        // SAFETY: the record types are plain old data.
        unsafe { std::slice::from_raw_parts((r as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    fn sock(bytes: &[u8], clock: &Clock) -> Result<Event, DecodeError> {
        match decode(bytes, clock)? {
            Record::Sock(e) => Ok(e),
            other => panic!("expected a socket event, got {other:?}"),
        }
    }

    #[test]
    fn decodes_an_ipv4_connect() {
        let mut r = record(EventKind::Connect, AF_INET);
        r.src_addr[..4].copy_from_slice(&[10, 0, 0, 5]);
        r.dst_addr[..4].copy_from_slice(&[93, 184, 216, 34]);
        let e = sock(&bytes(&r), &Clock::with_offset(5)).unwrap();
        assert_eq!(e.kind, EventKind::Connect);
        assert_eq!(e.proto, Proto::Tcp);
        assert_eq!(e.family, Family::Ipv4);
        assert_eq!(e.src, "10.0.0.5:40312".parse().unwrap());
        assert_eq!(e.dst, "93.184.216.34:443".parse().unwrap());
        assert_eq!((e.pid, e.tid, e.uid), (1234, 1236, 1000));
        assert_eq!(e.comm.as_bytes(), b"curl");
        assert_eq!(e.process_comm.as_bytes(), b"server");
        assert_eq!(e.start_ns, 123_456_789_000);
        assert_eq!((e.netns, e.inode, e.cgroup_id), (4026531840, 424242, 77));
        assert_eq!(e.time.0, 1_005);
        assert_eq!(e.error, None);
    }

    #[test]
    fn folds_ipv4_mapped_ipv6_to_ipv4() {
        let mut r = record(EventKind::Accept, AF_INET6);
        r.src_addr = Ipv6Addr::from([0, 0, 0, 0, 0, 0xffff, 0x7f00, 1]).octets();
        r.dst_addr = Ipv6Addr::from([0, 0, 0, 0, 0, 0xffff, 0x7f00, 2]).octets();
        let e = sock(&bytes(&r), &Clock::with_offset(0)).unwrap();
        assert_eq!(e.family, Family::Ipv4);
        assert_eq!(e.src, "127.0.0.1:40312".parse().unwrap());
        assert_eq!(e.dst, "127.0.0.2:443".parse().unwrap());
    }

    #[test]
    fn keeps_real_ipv6() {
        let mut r = record(EventKind::Connect, AF_INET6);
        r.src_addr = Ipv6Addr::LOCALHOST.octets();
        r.dst_addr = Ipv6Addr::LOCALHOST.octets();
        let e = sock(&bytes(&r), &Clock::with_offset(0)).unwrap();
        assert_eq!(e.family, Family::Ipv6);
        assert_eq!(e.src, "[::1]:40312".parse().unwrap());
    }

    #[test]
    fn bind_and_listen_have_no_remote_side() {
        let mut r = record(EventKind::Listen, AF_INET);
        r.dst_addr[..4].copy_from_slice(&[1, 2, 3, 4]);
        let e = sock(&bytes(&r), &Clock::with_offset(0)).unwrap();
        assert_eq!(e.dst, "0.0.0.0:0".parse().unwrap());
        let r6 = record(EventKind::Bind, AF_INET6);
        let e6 = sock(&bytes(&r6), &Clock::with_offset(0)).unwrap();
        assert_eq!(e6.dst, "[::]:0".parse().unwrap());
        assert_eq!(e6.family, Family::Ipv6);
    }

    #[test]
    fn a_failed_connect_carries_its_errno() {
        let mut r = record(EventKind::Connect, AF_INET);
        r.error = -libc::ECONNREFUSED;
        let e = sock(&bytes(&r), &Clock::with_offset(0)).unwrap();
        assert_eq!(e.error, Some(libc::ECONNREFUSED));
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(
            decode(&[0; 10], &Clock::with_offset(0)),
            Err(DecodeError::Short(10))
        );
        let mut r = record(EventKind::Bind, AF_INET);
        r.header.kind = 99;
        assert_eq!(
            decode(&bytes(&r), &Clock::with_offset(0)),
            Err(DecodeError::Kind(99))
        );
        let mut r = record(EventKind::Bind, AF_INET);
        r.protocol = 132;
        assert_eq!(
            decode(&bytes(&r), &Clock::with_offset(0)),
            Err(DecodeError::Protocol(132))
        );
        let mut r = record(EventKind::Bind, AF_INET);
        r.family = 1;
        assert_eq!(
            decode(&bytes(&r), &Clock::with_offset(0)),
            Err(DecodeError::Family(1))
        );
    }
}
