//! The policy's cost per listen event, off the event path (the policy
//! thread's work): port facts, reading the owner from `/proc` (exe, cgroup,
//! stat, parent exe), judging a 50-rule policy, and the tracker. Prints ns
//! per listener. Run: `cargo run --release -p sockmon --example policy_cost`.

#![expect(
    unused_crate_dependencies,
    reason = "an example links every dependency of the package and uses a few"
)]

use std::{net::IpAddr, sync::Arc, time::Instant};

use sockmon::{
    event::Proto,
    policy::{
        self, Subject,
        alerts::{Opened, Tracker},
        ports::PortFacts,
    },
};

fn main() {
    let mut text = String::new();
    for i in 0..49 {
        text.push_str(&format!(
            "[[rule]]\nname = \"r{i}\"\nexe = \"/opt/app{i}/*\"\nport = {}\n",
            10000 + i
        ));
    }
    text.push_str("[[rule]]\nname = \"last\"\nexe = \"/nowhere\"\n");
    let (_, p) = policy::parse_file(std::path::Path::new("bench.toml"), &text).expect("policy");
    let me = std::process::id();
    let stat = std::fs::read(format!("/proc/{me}/stat")).expect("stat");
    let start = sockmon::procfs::start_ticks(&stat).expect("start");
    let netns = std::fs::metadata("/proc/self/ns/net")
        .map(|m| {
            use std::os::unix::fs::MetadataExt as _;
            m.ino() as u32
        })
        .unwrap_or(0);
    let ip: IpAddr = "0.0.0.0".parse().unwrap();
    let n = 20_000u64;
    let mut tracker = Tracker::default();
    let (mut t_facts, mut t_id, mut t_judge, mut t_track) = (0u128, 0u128, 0u128, 0u128);
    for i in 0..n {
        let port = (20000 + (i % 20000)) as u16;
        let a = Instant::now();
        let facts = PortFacts::of(netns, Some(me), ip, port);
        let b = Instant::now();
        let id = policy::identify(me, start, None, None).expect("identify");
        let c = Instant::now();
        let v = p.judge(&Subject {
            exe: id.exe.clone(),
            unit: id.unit.clone(),
            uid: 0,
            netns,
            proto: Some(Proto::Tcp),
            ip: Some(ip),
            port,
            parent_exe: id.parent_exe.clone(),
            ..Default::default()
        });
        let d = Instant::now();
        let _ = tracker.open(
            &Opened {
                inode: i + 1,
                netns,
                proto: Proto::Tcp,
                ip,
                port,
                exe: id.exe.as_deref().map(Arc::from),
                unit: id.unit.as_deref().map(Arc::from),
                verdict: &v,
            },
            p.grace,
        );
        tracker.close(i + 1);
        let e = Instant::now();
        std::hint::black_box(facts);
        t_facts += (b - a).as_nanos();
        t_id += (c - b).as_nanos();
        t_judge += (d - c).as_nanos();
        t_track += (e - d).as_nanos();
    }
    let per = |t: u128| t as f64 / n as f64;
    println!(
        "per listen event: port facts {:.0} ns, /proc identity {:.0} ns, judge (50 rules, no match) {:.0} ns, tracker {:.0} ns; total {:.1} µs",
        per(t_facts),
        per(t_id),
        per(t_judge),
        per(t_track),
        per(t_facts + t_id + t_judge + t_track) / 1000.0
    );
}
