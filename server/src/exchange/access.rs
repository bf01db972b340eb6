//! The access phase: a vhost's `access:` rules, run in file order before
//! routing for every request whose path they match (whichever route then
//! serves it). A rule passes (perhaps naming the user it authenticated),
//! answers (301, 401, 403, 429...), or rewrites the path, after which the
//! rules run again from the first for the new path; rewrites count with
//! internal redirects against [`MAX_REDIRECTS`].
//! Consecutive `satisfy: any` rules of one path are a group that one
//! passing rule satisfies; when none passes, the last one's answer goes.
//!
//! It runs twice at most per request: on the loop as soon as the head is
//! read (`proto/h1/answer.rs`), so that a refused upload is refused before
//! its body is read, and from `route::dispatch` for what is left (a rule
//! that deferred to the pool, the rules of a rewritten path).

use crate::exchange::Exchange;
use crate::exchange::body::empty_reader;
use crate::exchange::response::drop_response;
use crate::exchange::view;
use crate::plugins::host;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;
use tamada_sdk::abi::{AccessResultV1, ResponseV1};

/// Most rewrites and internal redirects one request may take.
pub const MAX_REDIRECTS: u8 = 10;

/// The longest delay a rule may ask for at once.
const MAX_DELAY: Duration = Duration::from_secs(60);

/// How far the access phase got.
pub enum Verdict {
    /// Every rule that matches passed: routing goes on.
    Route,
    /// Send this answer.
    Answer(ResponseV1),
    /// (Loop only) the next rule must run on the pool.
    ToPool,
    /// A rule failed, or rewrites looped: 500 (`x.error` says why).
    Failed,
    /// (Loop only) the rule at `x.access_next` asked to be called again
    /// after this long: wait on [`timer`].
    Delay(Duration),
}

/// Whether rules are left to run for this exchange. ACME challenges
/// are exempt (a CA must reach them whatever protects the site), as the
/// health path is (the core answers it before any vhost).
pub fn pending(x: &Exchange) -> bool {
    x.access_next < x.vhost.access.len() && !x.path().starts_with(super::https::ACME_CHALLENGE)
}

/// Runs the rules from `x.access_next` on (`inline`: on an event loop).
pub fn run(x: &mut Exchange, inline: bool) -> Verdict {
    let vhost = x.vhost.clone();
    let _scope = crate::plugins::call::scope(&vhost, x.peer);
    // Rules run before routing: their view has no route.
    x.route = None;
    loop {
        let rules = &vhost.access;
        let Some(i) = (x.access_next..rules.len()).find(|&i| rules[i].matches(x.path())) else {
            x.access_next = rules.len();
            return Verdict::Route;
        };
        let rule = &rules[i];
        let reader = empty_reader();
        let headers = view::headers(&x.head);
        let req = view::request(x, &headers, &reader);
        let tls = view::tls(x);
        let delayed = x.access_woke;
        let (r, notes) = host::with_views(tls.as_ref(), x.user.as_ref(), view::version(x), || {
            host::collect_notes(|| rule.rule.check(&req, inline, delayed))
        });
        x.notes.extend(notes);
        x.access_woke = false;
        let in_group = rule.group_end > rule.group;
        match r {
            AccessResultV1::Pass => {
                if rule.rule.finishes {
                    x.access_passed.push(rule.rule.clone());
                }
                x.access_next = passed(rule, i);
            }
            AccessResultV1::User(u) => {
                if rule.rule.finishes {
                    x.access_passed.push(rule.rule.clone());
                }
                x.user = Some((u.name.into_string(), u.auth_type.into_string()));
                x.access_next = passed(rule, i);
            }
            // In a `satisfy: any` group, a refusal gives the next rule
            // of the group its chance; the last one's answer goes.
            AccessResultV1::Answer(resp) if in_group && i < rule.group_end => {
                drop_response(resp);
                x.access_next = i + 1;
            }
            AccessResultV1::Answer(resp) => {
                x.access_next = rules.len();
                return Verdict::Answer(resp);
            }
            AccessResultV1::Rewrite(to) => {
                if let Err(msg) = x.retarget(to.as_str(), rule.rule.tag, false) {
                    host::record_here(log::Level::Error, rule.rule.tag, &msg);
                    x.error = Some(msg);
                    x.access_next = rules.len();
                    return Verdict::Failed;
                }
            }
            AccessResultV1::Defer if inline => {
                x.access_next = i;
                return Verdict::ToPool;
            }
            AccessResultV1::Defer => {
                return fail(x, rule.rule.tag, "answered Defer on the pool");
            }
            AccessResultV1::Error(msg) => return fail(x, rule.rule.tag, msg.as_str()),
            AccessResultV1::Delay(ms) => {
                let d = Duration::from_millis(ms).min(MAX_DELAY);
                x.access_next = i;
                x.access_woke = true;
                if inline {
                    return Verdict::Delay(d);
                }
                // On the pool (after a deferral) the thread waits.
                std::thread::sleep(d);
            }
        }
    }
}

/// The index after a passing rule: past its group.
fn passed(rule: &crate::config::runtime::AccessRule, i: usize) -> usize {
    rule.group_end.max(i) + 1
}

/// A rule's error: logged, and the request answered 500.
fn fail(x: &mut Exchange, tag: &str, msg: &str) -> Verdict {
    let msg = format!(
        "access rule `{tag}` failed on {} {}: {msg}",
        x.head.method, x.head.target
    );
    host::record_here(log::Level::Error, tag, &msg);
    x.error = Some(msg);
    x.access_next = x.vhost.access.len();
    Verdict::Failed
}

/// A one-shot timer descriptor that turns readable after `d` (millisecond
/// resolution: the loop's own timers tick four times a second).
pub fn timer(d: Duration) -> std::io::Result<OwnedFd> {
    // SAFETY: timerfd_create takes constant flags and returns a new
    // descriptor or -1.
    let fd = unsafe {
        libc::timerfd_create(
            libc::CLOCK_MONOTONIC,
            libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned by nothing else.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let d = d.max(Duration::from_millis(1));
    let spec = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: libc::timespec {
            tv_sec: d.as_secs() as libc::time_t,
            tv_nsec: d.subsec_nanos() as libc::c_long,
        },
    };
    // SAFETY: `owned` is a valid timerfd, `spec` lives for the call, and
    // the old value is not asked for (null).
    let r = unsafe { libc::timerfd_settime(owned.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(owned)
}
