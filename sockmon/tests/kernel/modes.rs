//! Which hook family reports each event kind in the loaded attach mode
//! (`SOCKMON_TEST_ATTACH`), and `SOCKMON_KFUNC_SKIP`, which leaves kinds to
//! the socket layer where kernel-function hooks would report them.

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
    for kind in ["close", "udp_implicit_bind"] {
        assert_eq!(h.source(kind), "socket", "{kind}");
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
