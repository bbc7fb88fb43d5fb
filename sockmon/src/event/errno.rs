//! Errno names for the errors socket syscalls return.
//!
//! The JSON schema reports errors by name (`ECONNREFUSED`), which is what
//! people search for; the table covers every errno `bind`, `listen`,
//! `connect` and `accept` document, plus the common generic ones. Anything
//! else is reported as `E<number>`.

/// The symbolic name of a positive errno value.
pub fn name(errno: i32) -> std::borrow::Cow<'static, str> {
    let n = match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::ENOSPC => "ENOSPC",
        libc::EPIPE => "EPIPE",
        libc::ENOTSOCK => "ENOTSOCK",
        libc::EDESTADDRREQ => "EDESTADDRREQ",
        libc::EPROTOTYPE => "EPROTOTYPE",
        libc::ENOPROTOOPT => "ENOPROTOOPT",
        libc::EPROTONOSUPPORT => "EPROTONOSUPPORT",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::EADDRINUSE => "EADDRINUSE",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        libc::ENETDOWN => "ENETDOWN",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::ENETRESET => "ENETRESET",
        libc::ECONNABORTED => "ECONNABORTED",
        libc::ECONNRESET => "ECONNRESET",
        libc::ENOBUFS => "ENOBUFS",
        libc::EISCONN => "EISCONN",
        libc::ENOTCONN => "ENOTCONN",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::EHOSTDOWN => "EHOSTDOWN",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::EALREADY => "EALREADY",
        libc::EINPROGRESS => "EINPROGRESS",
        libc::EPROTO => "EPROTO",
        libc::ERESTART => "ERESTART",
        512 => "ERESTARTSYS",
        513 => "ERESTARTNOINTR",
        514 => "ERESTARTNOHAND",
        516 => "ERESTART_RESTARTBLOCK",
        _ => return std::borrow::Cow::Owned(format!("E{errno}")),
    };
    std::borrow::Cow::Borrowed(n)
}

/// The errno value of a name [`name`] produced (`ECONNREFUSED` → 111).
pub fn number(name: &str) -> Option<i32> {
    if let Some(n) = name.strip_prefix('E').and_then(|d| d.parse().ok()) {
        return Some(n);
    }
    (1..4096).find(|n| self::name(*n) == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_connect_errors() {
        assert_eq!(name(libc::ECONNREFUSED), "ECONNREFUSED");
        assert_eq!(name(libc::EINPROGRESS), "EINPROGRESS");
        assert_eq!(name(libc::EADDRINUSE), "EADDRINUSE");
    }

    #[test]
    fn unknown_errno_is_numbered() {
        assert_eq!(name(4095), "E4095");
    }

    #[test]
    fn names_map_back_to_numbers() {
        assert_eq!(number("ECONNREFUSED"), Some(libc::ECONNREFUSED));
        assert_eq!(number("E4095"), Some(4095));
        assert_eq!(number("EBOGUS"), None);
    }
}
