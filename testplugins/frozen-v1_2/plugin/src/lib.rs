//! A plugin as a 1.2 build made it: written against the frozen 1.2 tables
//! only (no SDK conveniences that might change).
//!
//! As a handler (`frozen12`): `/tls` answers the TLS view, `/user` the
//! user an access rule named, `/offload` runs 100 ms of blocking work on a
//! thread of its own while the request waits on its loop, `/shared`
//! answers shared bytes, anything else its path.
//! As an access rule: `/deny` is answered 403, `/old` rewritten to `/new`,
//! `/user` given the user `ada`, `/slow` delayed 150 ms once.
//! As a filter: `X-Frozen12: filtered` on every answer, and `text/plain`
//! 200 bodies upper-cased as they stream.
use abi_stable::StableAbi;
use abi_stable::std_types::{ROption, RResult, RSlice, RSliceMut, RStr, RString, RVec};
use std::ffi::c_void;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::OnceLock;
use tamada_sdk::abi::*;

static HOST: OnceLock<&'static HostExtV1> = OnceLock::new();
static TLS: OnceLock<&'static HostTlsV1> = OnceLock::new();
static USER: OnceLock<&'static HostAccessV1> = OnceLock::new();

extern "C" fn init(_: &'static HostV1) {}

extern "C" fn create(_: RStr<'_>, _: &CreateCtxV1<'_>) -> RResult<Instance, RString> {
    RResult::ROk(Instance(std::ptr::null()))
}

fn text(status: u16, body: String) -> ResponseV1 {
    ResponseV1 {
        status,
        headers: RVec::from(vec![OwnedHeaderV1 {
            name: RString::from("content-type"),
            value: RVec::from(b"text/plain".to_vec()),
        }]),
        body: BodyV1::Bytes(RVec::from(body.into_bytes())),
    }
}

extern "C" fn handle(_: Instance, req: &RequestV1<'_>) -> HandleResultV1 {
    HandleResultV1::Respond(text(
        200,
        format!("frozen 1.2 plugin, 1.0 path: {}\n", req.path.as_str()),
    ))
}

extern "C" fn destroy(_: Instance) {}

extern "C" fn ext_create(_: RStr<'_>, _: &CreateCtxV1<'_>) -> RResult<Instance, OptionErrorV1> {
    RResult::ROk(Instance(std::ptr::null()))
}

extern "C" fn ext_init(host: &'static HostExtV1) {
    let _ = HOST.set(host);
}

extern "C" fn options_schema(_: RoleV1) -> RString {
    RString::new()
}

extern "C" fn traits(_: Instance) -> TraitsV1 {
    TraitsV1 {
        placement: PlacementV1::Inline,
    }
}

extern "C" fn drop_state(p: *mut c_void) {
    if !p.is_null() {
        // SAFETY: `p` is the Box this plugin leaked in `ext_handle`, given
        // back once.
        drop(unsafe { Box::from_raw(p as *mut UnixStream) });
    }
}

extern "C" fn tls_visit(ctx: *mut c_void, info: &TlsInfoV1<'_>) {
    // SAFETY: `ctx` is the `String` `ext_handle` passes for this call.
    let out = unsafe { &mut *(ctx as *mut String) };
    let sni = match &info.sni {
        ROption::RSome(s) => s.as_str().to_owned(),
        ROption::RNone => "-".into(),
    };
    *out = format!(
        "{} {} sni={sni}",
        info.version.as_str(),
        info.cipher.as_str()
    );
}

extern "C" fn user_visit(ctx: *mut c_void, name: RStr<'_>, auth_type: RStr<'_>) {
    // SAFETY: `ctx` is the `String` `ext_handle` passes for this call.
    let out = unsafe { &mut *(ctx as *mut String) };
    *out = format!("{} ({})", name.as_str(), auth_type.as_str());
}

// Shared bytes: a stream whose `read` this plugin's shared table names.
static SHARED_BYTES: &[u8] = b"frozen 1.2 shared bytes\n";

extern "C" fn shared_read(ctx: *mut c_void, mut buf: RSliceMut<'_, u8>) -> RResult<usize, RString> {
    // SAFETY: `ctx` is the `Box<usize>` (the read position) made in
    // `ext_handle`, used by one thread at a time until `shared_close`.
    let pos = unsafe { &mut *(ctx as *mut usize) };
    let rest = &SHARED_BYTES[*pos..];
    let n = rest.len().min(buf.len());
    buf.as_mut_slice()[..n].copy_from_slice(&rest[..n]);
    *pos += n;
    RResult::ROk(n)
}

extern "C" fn shared_bytes(ctx: *mut c_void) -> RSlice<'static, u8> {
    // SAFETY: as in `shared_read`.
    let pos = unsafe { *(ctx as *const usize) };
    RSlice::from_slice(&SHARED_BYTES[pos..])
}

extern "C" fn shared_close(ctx: *mut c_void, _: bool) {
    // SAFETY: as in `shared_read`; close is the last call.
    drop(unsafe { Box::from_raw(ctx as *mut usize) });
}

static SHARED: SharedV1 = SharedV1 {
    read: shared_read,
    bytes: shared_bytes,
};

extern "C" fn ext_handle(_: Instance, req: &RequestV1<'_>, ex: &ExchangeV1) -> HandleExtV1 {
    let answer = |s: String| HandleExtV1::V1(HandleResultV1::Respond(text(200, s)));
    match req.path.as_str() {
        "/tls" => {
            let mut out = String::from("no TLS");
            if let Some(t) = TLS.get() {
                (t.tls)(
                    TlsVisitV1 { func: tls_visit },
                    &mut out as *mut String as *mut c_void,
                );
            }
            answer(format!("frozen 1.2 tls: {out}\n"))
        }
        "/user" => {
            let mut out = String::from("nobody");
            if let Some(u) = USER.get() {
                (u.user)(
                    UserVisitV1 { func: user_visit },
                    &mut out as *mut String as *mut c_void,
                );
            }
            answer(format!("frozen 1.2 user: {out}\n"))
        }
        "/shared" => HandleExtV1::V1(HandleResultV1::Respond(ResponseV1 {
            status: 200,
            headers: RVec::from(vec![OwnedHeaderV1 {
                name: RString::from("content-type"),
                value: RVec::from(b"application/octet-stream".to_vec()),
            }]),
            body: BodyV1::Stream(StreamV1 {
                ctx: Box::into_raw(Box::new(0usize)) as *mut c_void,
                read: shared_read,
                close: shared_close,
            }),
        })),
        // Blocking work on a thread of the plugin's own; the request waits
        // on its loop for the thread's byte, holding no server thread.
        "/offload" if ex.state.is_null() => {
            if !ex.inline {
                std::thread::sleep(std::time::Duration::from_millis(100));
                return answer("frozen 1.2 offload: done in place\n".into());
            }
            let (ours, mut theirs) = UnixStream::pair().expect("socketpair");
            ours.set_nonblocking(true).expect("non-blocking");
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(100));
                let _ = theirs.write_all(b"done");
            });
            let fd = ours.as_raw_fd();
            HandleExtV1::Wait(WaitV1 {
                fd,
                interest: WAIT_READ,
                timeout_ms: 5000,
                state: Box::into_raw(Box::new(ours)) as *mut c_void,
                drop_state,
            })
        }
        "/offload" => {
            // SAFETY: the state this plugin leaked in the call before,
            // given back by the host once.
            let mut sock = unsafe { Box::from_raw(ex.state as *mut UnixStream) };
            let mut buf = [0u8; 8];
            let n = sock.read(&mut buf).unwrap_or(0);
            answer(format!(
                "frozen 1.2 offload: {} after the wait\n",
                String::from_utf8_lossy(&buf[..n])
            ))
        }
        path => {
            let sdk = HOST
                .get()
                .map(|h| format!("{}.{}", h.sdk_major, h.sdk_minor))
                .unwrap_or_default();
            // The filter's request side ran before this handler.
            let edited = req
                .headers
                .iter()
                .any(|h| h.name.as_str().eq_ignore_ascii_case("x-frozen12-request"));
            answer(format!(
                "frozen 1.2 plugin: {path} server SDK {sdk} request-edited {edited}\n"
            ))
        }
    }
}

// ---- the access table

extern "C" fn access_create(_: RStr<'_>, _: &CreateCtxV1<'_>) -> RResult<Instance, OptionErrorV1> {
    RResult::ROk(Instance(std::ptr::null()))
}

extern "C" fn access_schema() -> RString {
    RString::new()
}

extern "C" fn access_traits(_: Instance) -> TraitsV1 {
    TraitsV1 {
        placement: PlacementV1::Inline,
    }
}

extern "C" fn access_check(
    _: Instance,
    req: &RequestV1<'_>,
    call: &AccessCallV1,
) -> AccessResultV1 {
    match req.path.as_str() {
        "/deny" => AccessResultV1::Answer(text(403, "frozen 1.2 access: denied\n".into())),
        "/old" => AccessResultV1::Rewrite(RString::from("/new")),
        "/user" => AccessResultV1::User(AccessUserV1 {
            name: RString::from("ada"),
            auth_type: RString::from("Fixture"),
        }),
        "/slow" if !call.delayed => AccessResultV1::Delay(150),
        _ => AccessResultV1::Pass,
    }
}

extern "C" fn access_finish(_: Instance, _: &RequestV1<'_>) {}

extern "C" fn access_finishes(_: Instance) -> bool {
    false
}

static ACCESS: AccessV1 = AccessV1 {
    create: access_create,
    options_schema: access_schema,
    traits: access_traits,
    check: access_check,
    finish: access_finish,
    finishes: access_finishes,
    destroy,
};

// ---- the filter table

extern "C" fn filter_request(_: Instance, _: &RequestV1<'_>, edits: &mut RVec<HeaderEditV1>) {
    edits.push(HeaderEditV1 {
        name: RString::from("x-frozen12-request"),
        value: ROption::RSome(RVec::from(b"1".to_vec())),
    });
}

extern "C" fn upper_data(
    _: *mut c_void,
    input: RSlice<'_, u8>,
    _flush: bool,
    out: &mut RVec<u8>,
) -> RResult<(), RString> {
    for b in input.as_slice() {
        out.push(b.to_ascii_uppercase());
    }
    RResult::ROk(())
}

extern "C" fn upper_finish(_: *mut c_void, _: &mut RVec<u8>) -> RResult<(), RString> {
    RResult::ROk(())
}

extern "C" fn upper_drop(_: *mut c_void) {}

extern "C" fn filter_response(
    _: Instance,
    _: &RequestV1<'_>,
    head: &mut FilterHeadV1,
) -> FilterResultV1 {
    head.headers.push(OwnedHeaderV1 {
        name: RString::from("x-frozen12"),
        value: RVec::from(b"filtered".to_vec()),
    });
    let text = head.headers.iter().any(|h| {
        h.name.as_str().eq_ignore_ascii_case("content-type")
            && h.value.as_slice().starts_with(b"text/plain")
    });
    if head.status == 200 && text && head.body.kind != 0 {
        return FilterResultV1::Transform(BodyFilterV1 {
            ctx: std::ptr::null_mut(),
            data: upper_data,
            finish: upper_finish,
            drop: upper_drop,
        });
    }
    FilterResultV1::Keep
}

static FILTER: FilterV1 = FilterV1 {
    create: access_create,
    options_schema: access_schema,
    request: filter_request,
    response: filter_response,
    destroy,
};

// ---- the tables

static TABLE: PluginV1 = PluginV1 {
    name: RStr::from_str("frozen12"),
    version: RStr::from_str("1.2.0"),
    init,
    create,
    handle,
    destroy,
};

static EXT: ExtV1 = ExtV1 {
    unwinds: true,
    roles: ROLE_HANDLER,
    create: ext_create,
    init: ext_init,
    options_schema,
    traits,
    handle: ext_handle,
};

extern "C" fn tls_init(host: &'static HostTlsV1) {
    let _ = TLS.set(host);
}

extern "C" fn user_init(host: &'static HostAccessV1) {
    let _ = USER.set(host);
}

#[unsafe(no_mangle)]
pub extern "C" fn tamada_plugin_header() -> PluginHeader {
    PluginHeader {
        magic: MAGIC,
        sdk_major: 1,
        sdk_minor: 2,
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn tamada_plugin_v1() -> PluginDeclV1 {
    PluginDeclV1 {
        layout: <PluginV1 as StableAbi>::LAYOUT,
        table: &TABLE,
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn tamada_plugin_ext_v1() -> ExtDeclV1 {
    ExtDeclV1 {
        layout: <ExtV1 as StableAbi>::LAYOUT,
        table: &EXT,
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn tamada_plugin_tls_v1() -> TlsDeclV1 {
    TlsDeclV1 {
        layout: <HostTlsV1 as StableAbi>::LAYOUT,
        init: tls_init,
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn tamada_plugin_user_v1() -> UserDeclV1 {
    UserDeclV1 {
        layout: <HostAccessV1 as StableAbi>::LAYOUT,
        init: user_init,
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn tamada_plugin_access_v1() -> AccessDeclV1 {
    AccessDeclV1 {
        layout: <AccessV1 as StableAbi>::LAYOUT,
        table: &ACCESS,
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn tamada_plugin_filter_v1() -> FilterDeclV1 {
    FilterDeclV1 {
        layout: <FilterV1 as StableAbi>::LAYOUT,
        table: &FILTER,
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn tamada_plugin_shared_v1() -> SharedDeclV1 {
    SharedDeclV1 {
        layout: <SharedV1 as StableAbi>::LAYOUT,
        table: &SHARED,
    }
}
