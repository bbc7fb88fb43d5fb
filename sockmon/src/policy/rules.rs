//! The policy of allowed listeners: its TOML form, its compiled form, and
//! judging one listener against it.
//!
//! Rules are tried in order; the first whose keys all match decides (allow
//! or deny). Every key is optional; a rule without keys matches everything.
//! Before the user's rules come the built-in denies (an executable in a
//! world-writable directory, a `memfd:` or a deleted file), each of which
//! can be turned off. A listener no rule matches is `not_allowed`, unless
//! `default = "allow"`. Rules never name PIDs: they churn, and a rule keyed
//! on one would silently apply to the next process that gets it.

use std::{net::IpAddr, path::Path};

use globset::{Glob, GlobMatcher};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::ports::PortClass;
use crate::event::Proto;

/// The policy as written (in `config.toml`'s `[policy]` or a file of its own).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Judge listeners at all (a `[policy]` section turns it on unless `false`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// More rules, from this file (same format, top level), after the inline ones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<std::path::PathBuf>,
    /// What a listener no rule matches is: `alert` (not_allowed, the default) or `allow`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// Severity of `not_allowed` (default `warning`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    /// Seconds within which a program that reopens its port raises nothing new (default 10).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grace_s: Option<f64>,
    /// Send alerts to the journal: `auto` (when run by systemd), `on`, `off`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub journal: Option<String>,
    /// The built-in denies, each on unless turned off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub builtin: Option<BuiltinConfig>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rule: Vec<RuleConfig>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BuiltinConfig {
    /// Executables under /tmp, /dev/shm or /var/tmp.
    pub world_writable: bool,
    /// Executables run from a `memfd:` (fileless).
    pub memfd: bool,
    /// Executables whose file was deleted after they started.
    pub deleted: bool,
}

impl Default for BuiltinConfig {
    fn default() -> Self {
        Self {
            world_writable: true,
            memfd: true,
            deleted: true,
        }
    }
}

/// A port key: one port, or a range written `"8000-8100"`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum PortSpec {
    One(i64),
    Range(String),
}

/// One rule as written.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuleConfig {
    /// Shown in alerts and metrics (default `rule-N`, N from 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `allow` (default) or `deny`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// Of a deny: `info`, `warning` or `critical` (default `critical`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    /// Glob over the executable path (`/usr/sbin/*`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    /// Glob over the systemd unit (`nginx.service`, `user@1000:*`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Glob over the `.socket` unit that made the listener (socket activation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket_unit: Option<String>,
    /// User name or uid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<UserSpec>,
    /// Glob over the container (`docker:0123…`, `*` for any container).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Network namespace inode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netns: Option<u32>,
    /// `tcp` or `udp`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proto: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSpec>,
    /// `well_known`, `registered` or `dynamic`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port_class: Option<String>,
    /// An address (`127.0.0.1`, `::`) or a CIDR (`10.0.0.0/8`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Glob over the parent process's executable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_exe: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum UserSpec {
    Uid(i64),
    Name(String),
}

/// Alert severities, least to most.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        [Self::Info, Self::Warning, Self::Critical]
            .into_iter()
            .find(|v| v.name() == s)
    }

    /// The journal's PRIORITY (syslog levels: crit 2, warning 4, info 6).
    pub const fn priority(self) -> u8 {
        match self {
            Self::Info => 6,
            Self::Warning => 4,
            Self::Critical => 2,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Allow,
    Deny,
}

/// A compiled rule.
#[derive(Clone, Debug)]
pub struct Rule {
    pub name: String,
    pub action: Action,
    pub severity: Severity,
    exe: Option<GlobMatcher>,
    unit: Option<GlobMatcher>,
    socket_unit: Option<GlobMatcher>,
    uid: Option<u32>,
    container: Option<GlobMatcher>,
    netns: Option<u32>,
    proto: Option<Proto>,
    ports: Option<(u16, u16)>,
    port_class: Option<PortClass>,
    address: Option<IpNet>,
    parent_exe: Option<GlobMatcher>,
}

/// Everything a rule can look at about one listener. Built only once the
/// owner's executable and unit are known.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subject {
    pub exe: Option<String>,
    pub unit: Option<String>,
    pub socket_unit: Option<String>,
    pub uid: u32,
    pub container: Option<String>,
    pub netns: u32,
    pub proto: Option<Proto>,
    pub ip: Option<IpAddr>,
    pub port: u16,
    pub parent_exe: Option<String>,
}

/// A rule's verdict on a listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed { rule: String },
    Denied { rule: String, severity: Severity },
    NotAllowed { severity: Severity },
}

/// The compiled policy.
#[derive(Clone, Debug)]
pub struct Policy {
    pub rules: Vec<Rule>,
    pub builtin: BuiltinConfig,
    pub default_allow: bool,
    pub not_allowed_severity: Severity,
    pub grace: std::time::Duration,
    pub journal: JournalMode,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JournalMode {
    Auto,
    On,
    Off,
}

/// A policy key that does not compile: which rule (0-based, `None` for a
/// top-level key), which key, why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyError {
    pub rule: Option<usize>,
    pub key: &'static str,
    pub reason: String,
}

/// Names of the built-in denies, as alerts and metrics show them.
pub const BUILTIN_WORLD_WRITABLE: &str = "builtin:world-writable-exe";
pub const BUILTIN_MEMFD: &str = "builtin:memfd-exe";
pub const BUILTIN_DELETED: &str = "builtin:deleted-exe";

fn glob(
    rule: usize,
    key: &'static str,
    pat: &Option<String>,
) -> Result<Option<GlobMatcher>, KeyError> {
    pat.as_deref()
        .map(|p| {
            Glob::new(p)
                .map(|g| g.compile_matcher())
                .map_err(|e| KeyError {
                    rule: Some(rule),
                    key,
                    reason: format!("`{p}` is not a valid glob: {e}"),
                })
        })
        .transpose()
}

/// Resolves a user name through `/etc/passwd` (rules are compiled at load,
/// so a name that does not exist is an error then, not a silent no-match).
fn uid_of(name: &str) -> Option<u32> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == name).then_some(())?;
        f.nth(1)?.parse().ok()
    })
}

impl Rule {
    fn compile(i: usize, r: &RuleConfig) -> Result<Rule, KeyError> {
        let bad = |key: &'static str, reason: String| KeyError {
            rule: Some(i),
            key,
            reason,
        };
        let action = match r.action.as_deref() {
            None | Some("allow") => Action::Allow,
            Some("deny") => Action::Deny,
            Some(o) => return Err(bad("action", format!("`{o}` is not allow or deny"))),
        };
        let severity = match r.severity.as_deref() {
            None => Severity::Critical,
            Some(s) => Severity::from_name(s).ok_or_else(|| {
                bad(
                    "severity",
                    format!("`{s}` is not info, warning or critical"),
                )
            })?,
        };
        let uid = match &r.user {
            None => None,
            Some(UserSpec::Uid(u)) => {
                Some(u32::try_from(*u).map_err(|_| bad("user", format!("{u} is not a uid")))?)
            }
            Some(UserSpec::Name(n)) => Some(
                n.parse()
                    .ok()
                    .or_else(|| uid_of(n))
                    .ok_or_else(|| bad("user", format!("no user `{n}` in /etc/passwd")))?,
            ),
        };
        let proto = match r.proto.as_deref() {
            None => None,
            Some("tcp") => Some(Proto::Tcp),
            Some("udp") => Some(Proto::Udp),
            Some(o) => return Err(bad("proto", format!("`{o}` is not tcp or udp"))),
        };
        let ports = match &r.port {
            None => None,
            Some(p) => Some(parse_ports(p).map_err(|e| bad("port", e))?),
        };
        let port_class = match r.port_class.as_deref() {
            None => None,
            Some(c) => Some(PortClass::from_name(c).ok_or_else(|| {
                bad(
                    "port_class",
                    format!("`{c}` is not well_known, registered or dynamic"),
                )
            })?),
        };
        let address = match r.address.as_deref() {
            None => None,
            Some(a) => Some(
                parse_net(a)
                    .ok_or_else(|| bad("address", format!("`{a}` is not an address or a CIDR")))?,
            ),
        };
        let name = r.name.clone().unwrap_or_else(|| format!("rule-{}", i + 1));
        if name.is_empty() || name.len() > 64 || name.chars().any(|c| c.is_control()) {
            return Err(bad(
                "name",
                "must be 1 to 64 printable characters".to_string(),
            ));
        }
        Ok(Rule {
            name,
            action,
            severity,
            exe: glob(i, "exe", &r.exe)?,
            unit: glob(i, "unit", &r.unit)?,
            socket_unit: glob(i, "socket_unit", &r.socket_unit)?,
            uid,
            container: glob(i, "container", &r.container)?,
            netns: r.netns,
            proto,
            ports,
            port_class,
            address,
            parent_exe: glob(i, "parent_exe", &r.parent_exe)?,
        })
    }

    /// Whether every key of the rule matches `s`. A key about something `s`
    /// lacks (no unit, no container) does not match.
    pub fn matches(&self, s: &Subject) -> bool {
        let g = |m: &Option<GlobMatcher>, v: &Option<String>| match m {
            None => true,
            Some(m) => v.as_deref().is_some_and(|v| m.is_match(Path::new(v))),
        };
        g(&self.exe, &s.exe)
            && g(&self.unit, &s.unit)
            && g(&self.socket_unit, &s.socket_unit)
            && g(&self.container, &s.container)
            && g(&self.parent_exe, &s.parent_exe)
            && self.uid.is_none_or(|u| u == s.uid)
            && self.netns.is_none_or(|n| n == s.netns)
            && self.proto.is_none_or(|p| Some(p) == s.proto)
            && self
                .ports
                .is_none_or(|(lo, hi)| (lo..=hi).contains(&s.port))
            && self.port_class.is_none_or(|c| c == PortClass::of(s.port))
            && self
                .address
                .is_none_or(|n| s.ip.is_some_and(|ip| n.contains(&crate::event::unmap(ip))))
    }
}

fn parse_ports(p: &PortSpec) -> Result<(u16, u16), String> {
    let one = |v: i64| u16::try_from(v).map_err(|_| format!("{v} is not a port (0-65535)"));
    match p {
        PortSpec::One(v) => one(*v).map(|v| (v, v)),
        PortSpec::Range(s) => {
            let (a, b) = s.split_once('-').unwrap_or((s, s));
            let parse = |t: &str| {
                t.trim()
                    .parse::<i64>()
                    .map_err(|_| format!("`{s}` is not a port or a range like \"8000-8100\""))
                    .and_then(one)
            };
            let (a, b) = (parse(a)?, parse(b)?);
            if a > b {
                return Err(format!("`{s}`: the range is empty"));
            }
            Ok((a, b))
        }
    }
}

fn parse_net(a: &str) -> Option<IpNet> {
    a.parse::<IpNet>()
        .ok()
        .or_else(|| a.parse::<IpAddr>().ok().map(IpNet::from))
        .map(|n| match n {
            IpNet::V6(v6) => match v6.addr().to_ipv4_mapped() {
                Some(v4) => IpNet::V4(
                    ipnet::Ipv4Net::new(v4, v6.prefix_len().saturating_sub(96)).unwrap_or_default(),
                ),
                None => IpNet::V6(v6),
            },
            v4 => v4,
        })
}

impl Policy {
    /// Compiles `cfg` (with the rules of its `file`, already read, appended).
    pub fn compile(cfg: &PolicyConfig) -> Result<Policy, KeyError> {
        let top = |key: &'static str, reason: String| KeyError {
            rule: None,
            key,
            reason,
        };
        let default_allow = match cfg.default.as_deref() {
            None | Some("alert") => false,
            Some("allow") => true,
            Some(o) => return Err(top("default", format!("`{o}` is not alert or allow"))),
        };
        let not_allowed_severity = match cfg.severity.as_deref() {
            None => Severity::Warning,
            Some(s) => Severity::from_name(s).ok_or_else(|| {
                top(
                    "severity",
                    format!("`{s}` is not info, warning or critical"),
                )
            })?,
        };
        let grace = cfg.grace_s.unwrap_or(10.0);
        if !(0.0..=86_400.0).contains(&grace) {
            return Err(top(
                "grace_s",
                format!("{grace} is not between 0 and 86400"),
            ));
        }
        let journal = match cfg.journal.as_deref() {
            None | Some("auto") => JournalMode::Auto,
            Some("on") => JournalMode::On,
            Some("off") => JournalMode::Off,
            Some(o) => return Err(top("journal", format!("`{o}` is not auto, on or off"))),
        };
        let rules = cfg
            .rule
            .iter()
            .enumerate()
            .map(|(i, r)| Rule::compile(i, r))
            .collect::<Result<Vec<_>, _>>()?;
        let mut names = std::collections::HashSet::new();
        for (i, r) in rules.iter().enumerate() {
            if !names.insert(r.name.as_str()) {
                return Err(KeyError {
                    rule: Some(i),
                    key: "name",
                    reason: format!("`{}` names another rule already", r.name),
                });
            }
        }
        Ok(Policy {
            rules,
            builtin: cfg.builtin.clone().unwrap_or_default(),
            default_allow,
            not_allowed_severity,
            grace: std::time::Duration::from_secs_f64(grace),
            journal,
        })
    }

    /// The first built-in deny `exe` hits, if any.
    pub fn builtin_deny(&self, exe: Option<&str>) -> Option<&'static str> {
        let exe = exe?;
        if self.builtin.memfd && exe.starts_with("/memfd:") {
            return Some(BUILTIN_MEMFD);
        }
        if self.builtin.world_writable
            && ["/tmp/", "/dev/shm/", "/var/tmp/"]
                .iter()
                .any(|d| exe.starts_with(d))
        {
            return Some(BUILTIN_WORLD_WRITABLE);
        }
        if self.builtin.deleted && exe.ends_with(" (deleted)") {
            return Some(BUILTIN_DELETED);
        }
        None
    }

    /// Judges one listener.
    pub fn judge(&self, s: &Subject) -> Verdict {
        if let Some(rule) = self.builtin_deny(s.exe.as_deref()) {
            return Verdict::Denied {
                rule: rule.to_string(),
                severity: Severity::Critical,
            };
        }
        for r in &self.rules {
            if r.matches(s) {
                return match r.action {
                    Action::Allow => Verdict::Allowed {
                        rule: r.name.clone(),
                    },
                    Action::Deny => Verdict::Denied {
                        rule: r.name.clone(),
                        severity: r.severity,
                    },
                };
            }
        }
        if self.default_allow {
            Verdict::Allowed {
                rule: "default".into(),
            }
        } else {
            Verdict::NotAllowed {
                severity: self.not_allowed_severity,
            }
        }
    }

    /// The names alerts can carry (bounded label values for metrics).
    pub fn rule_names(&self) -> Vec<String> {
        let mut v: Vec<String> = [BUILTIN_WORLD_WRITABLE, BUILTIN_MEMFD, BUILTIN_DELETED]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.extend(self.rules.iter().map(|r| r.name.clone()));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(text: &str) -> Result<Policy, KeyError> {
        let cfg: PolicyConfig = toml::from_str(text).unwrap();
        Policy::compile(&cfg)
    }

    fn subject(exe: &str, port: u16) -> Subject {
        Subject {
            exe: Some(exe.into()),
            unit: Some("web.service".into()),
            uid: 0,
            netns: 7,
            proto: Some(Proto::Tcp),
            ip: Some("127.0.0.1".parse().unwrap()),
            port,
            parent_exe: Some("/usr/lib/systemd/systemd".into()),
            ..Default::default()
        }
    }

    #[test]
    fn first_matching_rule_decides_and_all_keys_must_match() {
        let p = policy(
            r#"
[[rule]]
name = "no-web-high"
action = "deny"
severity = "warning"
exe = "/usr/bin/web*"
port_class = "dynamic"
[[rule]]
name = "web"
exe = "/usr/bin/web*"
unit = "web.service"
proto = "tcp"
port = "8000-8100"
address = "127.0.0.0/8"
parent_exe = "/usr/lib/systemd/*"
user = 0
netns = 7
"#,
        )
        .unwrap();
        assert_eq!(
            p.judge(&subject("/usr/bin/webd", 8080)),
            Verdict::Allowed { rule: "web".into() }
        );
        assert_eq!(
            p.judge(&subject("/usr/bin/webd", 50000)),
            Verdict::Denied {
                rule: "no-web-high".into(),
                severity: Severity::Warning
            }
        );
        let mut s = subject("/usr/bin/webd", 8080);
        s.ip = Some("10.0.0.1".parse().unwrap());
        assert_eq!(
            p.judge(&s),
            Verdict::NotAllowed {
                severity: Severity::Warning
            }
        );
        let mut s = subject("/usr/bin/webd", 8080);
        s.unit = None;
        assert!(matches!(p.judge(&s), Verdict::NotAllowed { .. }));
        let mut s = subject("/usr/bin/webd", 8080);
        s.netns = 8;
        assert!(matches!(p.judge(&s), Verdict::NotAllowed { .. }));
    }

    #[test]
    fn builtin_denies_come_first_and_can_be_turned_off() {
        let p = policy("[[rule]]\nname = \"all\"\n").unwrap();
        for (exe, rule) in [
            ("/tmp/x/backdoor", BUILTIN_WORLD_WRITABLE),
            ("/dev/shm/a", BUILTIN_WORLD_WRITABLE),
            ("/var/tmp/a", BUILTIN_WORLD_WRITABLE),
            ("/memfd:x (deleted)", BUILTIN_MEMFD),
            ("/usr/bin/gone (deleted)", BUILTIN_DELETED),
        ] {
            assert_eq!(
                p.judge(&subject(exe, 80)),
                Verdict::Denied {
                    rule: rule.into(),
                    severity: Severity::Critical
                },
                "{exe}"
            );
        }
        assert_eq!(
            p.judge(&subject("/usr/bin/ok", 80)),
            Verdict::Allowed { rule: "all".into() }
        );
        let p = policy(
            "[builtin]\nworld_writable = false\nmemfd = true\ndeleted = true\n[[rule]]\nname = \"all\"\n",
        )
        .unwrap();
        assert_eq!(
            p.judge(&subject("/tmp/x", 80)),
            Verdict::Allowed { rule: "all".into() }
        );
    }

    #[test]
    fn ipv6_and_mapped_addresses() {
        let p = policy("[[rule]]\naddress = \"::ffff:127.0.0.1\"\n[[rule]]\naddress = \"::\"\n")
            .unwrap();
        let mut s = subject("/x", 1);
        assert!(matches!(p.judge(&s), Verdict::Allowed { rule } if rule == "rule-1"));
        s.ip = Some("::".parse().unwrap());
        assert!(matches!(p.judge(&s), Verdict::Allowed { rule } if rule == "rule-2"));
        s.ip = Some("::1".parse().unwrap());
        assert!(matches!(p.judge(&s), Verdict::NotAllowed { .. }));
    }

    #[test]
    fn bad_keys_name_the_rule_and_key() {
        let e = |t: &str| policy(t).unwrap_err();
        let k = e("[[rule]]\n[[rule]]\nport = \"9-1\"\n");
        assert_eq!((k.rule, k.key), (Some(1), "port"));
        assert_eq!(e("[[rule]]\nport = 70000\n").key, "port");
        assert_eq!(e("[[rule]]\nexe = \"[\"\n").key, "exe");
        assert_eq!(e("[[rule]]\naddress = \"10.0.0.0/99\"\n").key, "address");
        assert_eq!(e("[[rule]]\nport_class = \"high\"\n").key, "port_class");
        assert_eq!(e("[[rule]]\nuser = \"no-such-user-here\"\n").key, "user");
        assert_eq!(e("[[rule]]\naction = \"maybe\"\n").key, "action");
        assert_eq!(
            e("[[rule]]\nname = \"a\"\n[[rule]]\nname = \"a\"\n").key,
            "name"
        );
        assert_eq!(e("default = \"deny\"\n").rule, None);
        assert_eq!(e("grace_s = -1\n").key, "grace_s");
        assert!(policy("[[rule]]\nuser = \"root\"\n").is_ok());
    }
}
