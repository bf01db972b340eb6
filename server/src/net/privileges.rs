//! Dropping root: `user:` (and `group:`) in server.yaml. Started as root,
//! tamada binds its listeners, loads its plugins and opens its log files,
//! then becomes that user for good before it serves anything: groups from
//! the user's entries (`initgroups`), then `setgid`, then `setuid`. glibc
//! applies these to every thread of the process (plugins may already have
//! started threads), and the drop is checked: `setuid(0)` must then fail.

use std::ffi::{CStr, CString};

/// A user (and group) to run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    pub group: String,
}

/// Looks up `user` (and `group`, default the user's own).
pub fn lookup(user: &str, group: Option<&str>) -> Result<Account, String> {
    let c = CString::new(user).map_err(|_| format!("user: `{user}` is not a user name"))?;
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: an all-zero passwd is a valid value for the out parameter.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut res: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; `buf` outlives the use
    // of the strings `pw` points into (read below, before `buf` drops).
    let rc = unsafe {
        libc::getpwnam_r(
            c.as_ptr(),
            &mut pw,
            buf.as_mut_ptr() as *mut libc::c_char,
            buf.len(),
            &mut res,
        )
    };
    if rc != 0 || res.is_null() {
        return Err(format!("user: no user named `{user}` on this system"));
    }
    let (uid, mut gid) = (pw.pw_uid, pw.pw_gid);
    let mut group_name = group_name(gid).unwrap_or_else(|| gid.to_string());
    if let Some(g) = group {
        gid = group_id(g).ok_or_else(|| format!("group: no group named `{g}` on this system"))?;
        group_name = g.to_owned();
    }
    Ok(Account {
        name: user.to_owned(),
        uid,
        gid,
        group: group_name,
    })
}

fn group_id(name: &str) -> Option<libc::gid_t> {
    let c = CString::new(name).ok()?;
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: an all-zero group is a valid value for the out parameter.
    let mut gr: libc::group = unsafe { std::mem::zeroed() };
    let mut res: *mut libc::group = std::ptr::null_mut();
    // SAFETY: as in `lookup`.
    let rc = unsafe {
        libc::getgrnam_r(
            c.as_ptr(),
            &mut gr,
            buf.as_mut_ptr() as *mut libc::c_char,
            buf.len(),
            &mut res,
        )
    };
    (rc == 0 && !res.is_null()).then_some(gr.gr_gid)
}

fn group_name(gid: libc::gid_t) -> Option<String> {
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: an all-zero group is a valid value for the out parameter.
    let mut gr: libc::group = unsafe { std::mem::zeroed() };
    let mut res: *mut libc::group = std::ptr::null_mut();
    // SAFETY: as in `lookup`; the name is copied out before `buf` drops.
    let rc = unsafe {
        libc::getgrgid_r(
            gid,
            &mut gr,
            buf.as_mut_ptr() as *mut libc::c_char,
            buf.len(),
            &mut res,
        )
    };
    if rc != 0 || res.is_null() {
        return None;
    }
    // SAFETY: gr_name points into `buf`, NUL-terminated by getgrgid_r.
    Some(
        unsafe { CStr::from_ptr(gr.gr_name) }
            .to_string_lossy()
            .into_owned(),
    )
}

/// Whether the process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Becomes `a` for good: supplementary groups, group, user; then checks
/// that there is no way back.
pub fn drop_to(a: &Account) -> Result<(), String> {
    let name = CString::new(a.name.as_str()).map_err(|e| e.to_string())?;
    let err = |what: &str| format!("cannot {what}: {}", std::io::Error::last_os_error());
    // SAFETY: plain system calls with valid arguments; glibc applies them
    // to every thread of the process.
    unsafe {
        if libc::initgroups(name.as_ptr(), a.gid) != 0 {
            return Err(err(&format!("set the groups of `{}`", a.name)));
        }
        if libc::setgid(a.gid) != 0 {
            return Err(err(&format!("set group `{}`", a.group)));
        }
        if libc::setuid(a.uid) != 0 {
            return Err(err(&format!("become user `{}`", a.name)));
        }
        if a.uid != 0 && (libc::setuid(0) == 0 || libc::geteuid() == 0) {
            return Err("dropped privileges could be regained: refusing to serve".into());
        }
    }
    Ok(())
}

/// The groups `a` will have once dropped to: its group and the user's
/// supplementary ones (what `initgroups` gives).
pub fn groups(a: &Account) -> Vec<u32> {
    let Ok(name) = CString::new(a.name.as_str()) else {
        return vec![a.gid];
    };
    let mut n: libc::c_int = 64;
    loop {
        let mut v: Vec<libc::gid_t> = vec![0; n as usize];
        let want = n;
        // SAFETY: `name` is a valid C string, `v` has room for `n` ids and
        // `n` says so; glibc writes at most that many and sets `n`.
        let rc = unsafe { libc::getgrouplist(name.as_ptr(), a.gid, v.as_mut_ptr(), &mut n) };
        if rc >= 0 {
            v.truncate(n.max(0) as usize);
            return v;
        }
        if n <= want {
            // No larger size asked for: give up on the list.
            return vec![a.gid];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_finds_root_and_refuses_strangers() {
        let r = lookup("root", None).unwrap();
        assert_eq!((r.uid, r.gid), (0, 0));
        assert!(
            lookup("no-such-user-here", None)
                .unwrap_err()
                .contains("no user named")
        );
        assert!(
            lookup("root", Some("no-such-group"))
                .unwrap_err()
                .contains("no group named")
        );
    }
}
