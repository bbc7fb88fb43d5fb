//! The hand-written sock_diag dump (`sockmon::snapshot::diag`) against the
//! maintained crates (`netlink-packet-sock-diag` with `netlink-sys`), on the
//! dump a snapshot makes: every TCP socket of IPv4 in this namespace, read
//! into rows (tuple, state, inode).
//!
//! Run: `cargo bench -p sockmon --bench sockdiag_dump [-- PAIRS]` (as root
//! or not: a dump of one's own namespace needs no privilege). It opens
//! PAIRS loopback connections (default 10000: 20000 connected sockets and
//! a listener), then times both readers, interleaved, over 15 rounds and
//! prints the medians. Both must find the same sockets. The result is
//! written in ARCHITECTURE.md ("Hand-written parts, and why").

#![expect(
    unused_crate_dependencies,
    reason = "a bench links every dependency of the package and uses a few"
)]

use std::{
    collections::BTreeSet,
    net::{TcpListener, TcpStream},
    time::{Duration, Instant},
};

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::{
    SockDiagMessage,
    constants::{AF_INET, IPPROTO_TCP},
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};
use sockmon::{
    event::Proto,
    snapshot::{SockRow, diag::DiagSocket},
};

fn main() {
    let asked: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000);
    // As many as the descriptor limit allows (two sockets a pair).
    let pairs = asked.min(raise_nofile(asked * 2 + 64).saturating_sub(64) / 2);
    let listener = TcpListener::bind("127.0.0.1:0").expect("listener");
    let mut held = Vec::with_capacity(pairs * 2);
    for _ in 0..pairs {
        let c = TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
        let (a, _) = listener.accept().expect("accept");
        held.push(c);
        held.push(a);
    }
    let rounds = 15;
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let (mut ours_found, mut theirs_found) = (BTreeSet::new(), BTreeSet::new());
    for round in 0..rounds {
        // Interleaved, and the order swapped each round.
        for first in [round % 2 == 0, round % 2 == 1] {
            if first {
                let t = Instant::now();
                let rows = hand_written();
                ours.push(t.elapsed());
                ours_found = rows.iter().map(|r| r.inode).collect();
            } else {
                let t = Instant::now();
                let inodes = with_crate();
                theirs.push(t.elapsed());
                theirs_found = inodes;
            }
        }
    }
    let mine: BTreeSet<u64> = held.iter().map(inode_of).collect();
    assert!(
        mine.is_subset(&ours_found) && mine.is_subset(&theirs_found),
        "both readers see every socket this process holds"
    );
    let (a, b) = (median(&mut ours), median(&mut theirs));
    println!(
        "{} TCP/IPv4 sockets in this namespace (this process holds {}), {rounds} rounds",
        ours_found.len(),
        mine.len() + 1
    );
    println!("  sockmon::snapshot::diag        median {:>9.2} ms", ms(a));
    println!(
        "  netlink-packet-sock-diag 0.4   median {:>9.2} ms   ({:.2}x)",
        ms(b),
        ms(b) / ms(a)
    );
    drop(held);
}

fn hand_written() -> Vec<SockRow> {
    let mut rows = Vec::new();
    let mut s = DiagSocket::open().expect("sock_diag");
    s.dump(libc::AF_INET as u16, Proto::Tcp, 0, &mut rows)
        .expect("dump");
    rows
}

/// The crate's example, reading each answer into its typed message and
/// keeping what a row keeps.
fn with_crate() -> BTreeSet<u64> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG).expect("socket");
    socket.bind_auto().expect("bind");
    socket.connect(&SocketAddr::new(0, 0)).expect("connect");
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut packet = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family: AF_INET,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::all(),
            socket_id: SocketId::new_v4(),
        })
        .into(),
    );
    packet.finalize();
    let mut buf = vec![0; packet.header.length as usize];
    packet.serialize(&mut buf[..]);
    socket.send(&buf[..], 0).expect("send");
    let mut inodes = BTreeSet::new();
    let mut receive = vec![0u8; 32 * 1024];
    loop {
        let size = socket.recv(&mut &mut receive[..], 0).expect("recv");
        let mut offset = 0;
        while offset < size {
            let msg = <NetlinkMessage<SockDiagMessage>>::deserialize(&receive[offset..size])
                .expect("a message");
            match msg.payload {
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                    let row = (
                        r.header.socket_id.source_address,
                        r.header.socket_id.source_port,
                        r.header.socket_id.destination_address,
                        r.header.socket_id.destination_port,
                        r.header.state,
                        r.header.inode,
                    );
                    inodes.insert(u64::from(row.5));
                }
                NetlinkPayload::Done(_) => return inodes,
                NetlinkPayload::Error(e) => panic!("sock_diag: {e:?}"),
                _ => {}
            }
            if msg.header.length == 0 {
                break;
            }
            offset += msg.header.length as usize;
        }
    }
}

fn inode_of(s: &TcpStream) -> u64 {
    use std::os::fd::AsRawFd as _;
    let link = std::fs::read_link(format!("/proc/self/fd/{}", s.as_raw_fd())).unwrap();
    let text = link.to_string_lossy();
    text.trim_start_matches("socket:[")
        .trim_end_matches(']')
        .parse()
        .unwrap()
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Raises the soft descriptor limit towards `n` (at most the hard limit);
/// returns the limit in force.
fn raise_nofile(n: usize) -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid struct; failures only limit the sockets.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = (n as libc::rlim_t).min(lim.rlim_max);
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur as usize
}
