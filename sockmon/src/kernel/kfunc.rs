//! Hooking the kernel functions of the `kfunc` mode, per event kind: with
//! trampolines (fexit) where all of a kind's functions load, else with
//! kprobes, checking each function's parameters in the kernel's BTF first.
//!
//! Why per kind and by trying: kernels differ in what they allow
//! (trampolines, kprobes, or neither) and in which functions the compiler
//! kept (`inet_autobind` may be inlined away, `__inet_accept` exists only
//! since 6.8), and a kind that cannot be hooked is left to the socket layer
//! rather than failing the load. Nothing here reads the kernel's version.

use aya::{
    Btf, Ebpf,
    programs::{FExit, KProbe, Program},
};
use sockmon_common::kfunc_kinds;

use super::{
    btf,
    error::LoadError,
    programs::{Family, Hook, KIND_SOURCES, PROGRAMS, Signature, fail, program},
};

/// The environment variable that leaves event kinds to the socket layer
/// even where their kernel functions can be hooked (`bind,listen,...`): a
/// way around a hook that misbehaves on some kernel, and how the tests make
/// `auto` mix the two families on a kernel where all four kinds load.
pub const KFUNC_SKIP_ENV: &str = "SOCKMON_KFUNC_SKIP";

/// The `kfunc_kinds` named in [`KFUNC_SKIP_ENV`].
pub(super) fn kfunc_skip() -> Result<u64, LoadError> {
    let Ok(list) = std::env::var(KFUNC_SKIP_ENV) else {
        return Ok(0);
    };
    let mut bits = 0;
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let bit = KIND_SOURCES
            .iter()
            .find(|k| k.0 == name && k.3 != 0 && k.0 != "connect_result")
            .map(|k| k.3)
            .ok_or_else(|| LoadError::KfuncSkip(name.to_string()))?;
        bits |= bit;
    }
    Ok(bits)
}

/// The kinds the socket layer's shared `sock_ops` leaves to kernel-function
/// hooks by the `KFUNC_KINDS` global: one of these failing needs the object
/// loaded again. The others' socket-layer programs are simply attached.
pub(super) const GLOBAL_KINDS: u64 = kfunc_kinds::LISTEN | kfunc_kinds::CONNECT;

/// Kinds a pure `kfunc` load may leave to the socket layer (the mode stands
/// without them): their function can be inlined away by the compiler.
pub(super) const OPTIONAL_KINDS: u64 = kfunc_kinds::UDP_IMPLICIT_BIND;

/// Every `kfunc_kinds` bit, in the order they are tried.
pub(super) const KFUNC_KIND_BITS: [u64; 5] = [
    kfunc_kinds::BIND,
    kfunc_kinds::LISTEN,
    kfunc_kinds::CONNECT,
    kfunc_kinds::ACCEPT,
    kfunc_kinds::UDP_IMPLICIT_BIND,
];

/// How a kind's kernel functions are hooked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// fentry/fexit trampolines.
    Fexit,
    /// kprobes and kretprobes.
    Kprobe,
}

/// Which variants a load may use ([`KFUNC_VIA_ENV`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Via {
    /// Trampolines, else kprobes (the default).
    Any,
    Only(Variant),
}

/// The environment variable that restricts the `kfunc` mode's hooks to one
/// variant (`fexit` or `kprobe`): how the tests prove the kprobe variant on
/// a kernel where trampolines load too.
pub const KFUNC_VIA_ENV: &str = "SOCKMON_KFUNC_VIA";

pub(super) fn kfunc_via() -> Result<Via, LoadError> {
    match std::env::var(KFUNC_VIA_ENV).as_deref() {
        Err(_) | Ok("") => Ok(Via::Any),
        Ok("fexit") => Ok(Via::Only(Variant::Fexit)),
        Ok("kprobe") => Ok(Via::Only(Variant::Kprobe)),
        Ok(other) => Err(LoadError::KfuncVia(other.to_string())),
    }
}

/// Hooks the kernel functions of `kind`: with trampolines where they load,
/// else with kprobes. A variant that fails part-way is unloaded whole, so a
/// kind is never reported by two families.
pub(super) fn attach_kind(
    ebpf: &mut Ebpf,
    layout: &btf::Layout,
    btf: &Btf,
    kind: u64,
    via: Via,
) -> Result<Variant, LoadError> {
    let fexit = match via {
        Via::Only(Variant::Kprobe) => Err(LoadError::KfuncNotTried("kprobe")),
        _ => attach_variant(ebpf, layout, btf, kind, Variant::Fexit),
    };
    let Err(fexit_err) = fexit else {
        return Ok(Variant::Fexit);
    };
    if via == Via::Only(Variant::Fexit) || fexit_err.is_privileges() {
        return Err(fexit_err);
    }
    attach_variant(ebpf, layout, btf, kind, Variant::Kprobe)
        .map(|()| Variant::Kprobe)
        .map_err(|e| LoadError::KfuncVariants {
            fexit: fexit_err.to_string(),
            kprobe: e.to_string(),
        })
}

fn attach_variant(
    ebpf: &mut Ebpf,
    layout: &btf::Layout,
    btf: &Btf,
    kind: u64,
    variant: Variant,
) -> Result<(), LoadError> {
    let mine = PROGRAMS.iter().filter(|(_, _, f)| match (variant, *f) {
        (Variant::Fexit, Family::Kfunc(k)) | (Variant::Kprobe, Family::Kprobe(k)) => k == kind,
        _ => false,
    });
    let mut loaded = Vec::new();
    for &(name, hook, _) in mine {
        let r = load_hook(ebpf, layout, btf, name, hook);
        loaded.push(name);
        if let Err(e) = r {
            for n in loaded {
                unload(ebpf, n);
            }
            return Err(e);
        }
    }
    Ok(())
}

fn load_hook(
    ebpf: &mut Ebpf,
    layout: &btf::Layout,
    btf: &Btf,
    name: &'static str,
    hook: Hook,
) -> Result<(), LoadError> {
    match hook {
        Hook::FExit(sig) => {
            check_signature(layout, &sig)?;
            let p: &mut FExit = program(ebpf, name)?;
            p.load(sig.function, btf).map_err(fail(name))?;
            p.attach().map_err(fail(name))?;
        }
        Hook::KProbe(sig) => {
            check_signature(layout, &sig)?;
            let p: &mut KProbe = program(ebpf, name)?;
            p.load().map_err(fail(name))?;
            p.attach(sig.function, 0).map_err(fail(name))?;
        }
        Hook::KRetProbe(function) => {
            let p: &mut KProbe = program(ebpf, name)?;
            p.load().map_err(fail(name))?;
            p.attach(function, 0).map_err(fail(name))?;
        }
        _ => unreachable!("only kernel-function hooks are attached per kind"),
    }
    Ok(())
}

/// Detaches and unloads a kernel-function hook of a variant that failed.
fn unload(ebpf: &mut Ebpf, name: &'static str) {
    let Some(p) = ebpf.program_mut(name) else {
        return;
    };
    let _ = match p {
        Program::FExit(p) => p.unload(),
        Program::KProbe(p) => p.unload(),
        _ => Ok(()),
    };
}

/// Refuses a kernel function whose parameters are not what its hook reads
/// (they changed across kernels: `inet_csk_accept` since 6.10, for one).
pub(super) fn check_signature(layout: &btf::Layout, sig: &Signature) -> Result<(), LoadError> {
    let (params, ret) = layout.function_signature(sig.function)?;
    let shape_ok = ret == sig.ret
        && params.len() >= sig.params.len()
        && (!sig.exact || params.len() == sig.params.len())
        && params
            .iter()
            .zip(sig.params)
            .all(|(have, want)| have == want);
    if shape_ok {
        Ok(())
    } else {
        Err(LoadError::Signature {
            function: sig.function,
            found: format!("{ret} ({})", params.join(", ")),
            expected: format!(
                "{} ({}{})",
                sig.ret,
                sig.params.join(", "),
                if sig.exact { "" } else { ", ..." }
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shapes of this kernel's functions come from its BTF: the ones
    /// the hooks read match, a different shape or a missing function is
    /// refused with what was found.
    #[test]
    fn signatures_are_checked_against_this_kernels_btf() {
        let layout = btf::Layout::from_file(btf::VMLINUX_BTF).unwrap();
        for (name, hook, _) in PROGRAMS {
            if let Hook::FExit(sig) = hook
                && sig.function != "inet_autobind"
            {
                // inet_autobind may be inlined away: optional.
                check_signature(&layout, &sig).unwrap_or_else(|e| panic!("{name}: {e}"));
            }
        }
        let wrong = Signature {
            function: "inet_bind",
            params: &["struct sock *", "struct sockaddr *", "int"],
            exact: true,
            ret: "int",
        };
        let e = check_signature(&layout, &wrong).unwrap_err();
        assert!(
            matches!(&e, LoadError::Signature { found, .. } if found.starts_with("int (struct socket *, struct sockaddr *, int")),
            "{e}"
        );
        let missing = Signature {
            function: "no_such_function_here",
            ..wrong
        };
        assert!(matches!(
            check_signature(&layout, &missing),
            Err(LoadError::Btf(btf::BtfError::NoFunction(_)))
        ));
    }

    /// The errors name the environment variables (their text spells them).
    #[test]
    fn the_errors_name_the_variables() {
        assert!(LoadError::KfuncSkipped.to_string().contains(KFUNC_SKIP_ENV));
        assert!(
            LoadError::KfuncVia("x".into())
                .to_string()
                .contains(KFUNC_VIA_ENV)
        );
    }
}
