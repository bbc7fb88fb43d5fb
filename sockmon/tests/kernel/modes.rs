//! Which hook family reports each event kind in the loaded attach mode
//! (`SOCKMON_TEST_ATTACH`); `SOCKMON_KFUNC_SKIP`, which leaves kinds to the
//! socket layer where kernel-function hooks would report them; and
//! `SOCKMON_KFUNC_VIA`, which restricts those hooks to one variant.

use sockmon::kernel::AttachMode;

use crate::harness::harness;

#[test]
fn each_kind_is_reported_by_the_family_the_mode_says() {
    let h = harness();
    let skip = std::env::var("SOCKMON_KFUNC_SKIP").unwrap_or_default();
    let skipped: Vec<&str> = skip.split(',').filter(|k| !k.is_empty()).collect();
    let asked = std::env::var("SOCKMON_TEST_ATTACH").unwrap_or_else(|_| "auto".into());
    for kind in ["bind", "listen", "connect", "accept"] {
        let want = match h.mode() {
            AttachMode::Syscalls => "syscalls",
            AttachMode::Socket => "socket",
            AttachMode::Kfunc if skipped.contains(&kind) => "socket",
            AttachMode::Kfunc => "kfunc",
            AttachMode::Auto => unreachable!("a loaded mode is concrete"),
        };
        assert_eq!(h.source(kind), want, "{kind} in {}", h.mode().name());
    }
    assert_eq!(
        h.source("connect_result"),
        match h.source("connect") {
            "kfunc" => "kfunc",
            _ => "socket",
        }
    );
    assert_eq!(h.source("close"), "socket");
    // `inet_autobind` may be inlined away on some kernel: then the socket
    // layer's send hook reports implicit binds in `kfunc` too.
    let implicit = h.source("udp_implicit_bind");
    if h.mode() == AttachMode::Kfunc && !skipped.contains(&"udp_implicit_bind") {
        assert!(
            ["kfunc", "kprobe", "socket"].contains(&implicit),
            "{implicit}"
        );
    } else {
        assert_eq!(implicit, "socket");
    }
    // The variant of every kind kernel-function hooks report.
    let via = std::env::var("SOCKMON_KFUNC_VIA").unwrap_or_default();
    for kind in [
        "bind",
        "listen",
        "connect",
        "accept",
        "connect_result",
        "udp_implicit_bind",
    ] {
        let hook = h.hook(kind);
        match via.as_str() {
            "kprobe" if h.source(kind) == "kfunc" => assert_eq!(hook, "kprobe", "{kind}"),
            "fexit" if h.source(kind) == "kfunc" => assert_eq!(hook, "kfunc", "{kind}"),
            _ => {}
        }
    }
    if via == "kprobe" && asked == "kfunc" {
        // The kprobe variant for every core kind.
        for kind in ["bind", "listen", "connect", "accept"] {
            assert_eq!(h.hook(kind), "kprobe", "{kind}");
        }
    }
    match asked.as_str() {
        // A pure mode loads as itself or not at all.
        "kfunc" | "socket" | "syscalls" => assert_eq!(h.mode().name(), asked),
        // `auto` never takes the syscall tracepoints where the socket layer loads
        // (it does on every kernel the tests run on).
        _ => assert_ne!(h.mode(), AttachMode::Syscalls),
    }
    if !skipped.is_empty() && asked == "auto" && h.mode() == AttachMode::Kfunc {
        // A mixed load: some kinds still use kernel-function hooks.
        assert!(
            ["bind", "listen", "connect", "accept"]
                .iter()
                .any(|k| h.source(k) == "kfunc")
        );
    }
}
