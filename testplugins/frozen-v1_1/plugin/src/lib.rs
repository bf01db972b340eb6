//! A plugin as a 1.1 build made it: written against the frozen 1.1 tables
//! only (no SDK conveniences that might change). It runs inline, waits on
//! the event loop for a socket a thread writes to, defers to the pool,
//! attaches a note, and refuses bad options with their path.
use abi_stable::StableAbi;
use abi_stable::std_types::{ROption, RResult, RStr, RString, RVec};
use std::ffi::c_void;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::OnceLock;
use tamada_sdk::abi::*;

static HOST: OnceLock<&'static HostExtV1> = OnceLock::new();

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
        format!("frozen 1.1 plugin, 1.0 path: {}\n", req.path.as_str()),
    ))
}

extern "C" fn destroy(_: Instance) {}

extern "C" fn ext_create(
    options: RStr<'_>,
    _: &CreateCtxV1<'_>,
) -> RResult<Instance, OptionErrorV1> {
    if options.as_str().contains("bad") {
        return RResult::RErr(OptionErrorV1 {
            path: RString::from("answer"),
            message: RString::from("answer: not a good one"),
        });
    }
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

extern "C" fn ext_handle(_: Instance, req: &RequestV1<'_>, ex: &ExchangeV1) -> HandleExtV1 {
    let host = HOST.get().copied();
    let path = req.path.as_str();
    if let Some(h) = host {
        (h.note)(RStr::from_str("frozen11"), RStr::from_str("noted"));
    }
    match path {
        "/wait" if ex.state.is_null() => {
            let can = host.is_some_and(|h| h.abilities & ABILITY_WAIT != 0);
            if !ex.inline || !can {
                return HandleExtV1::V1(HandleResultV1::Error(RString::from("cannot wait")));
            }
            let (ours, mut theirs) = UnixStream::pair().expect("socketpair");
            ours.set_nonblocking(true).expect("non-blocking");
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(100));
                let _ = theirs.write_all(b"ready");
                std::thread::sleep(std::time::Duration::from_millis(500));
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
        "/wait" => {
            // SAFETY: the state this plugin leaked in the call before,
            // given back by the host once.
            let mut sock = unsafe { Box::from_raw(ex.state as *mut UnixStream) };
            let mut buf = [0u8; 16];
            let got = match sock.read(&mut buf) {
                Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
                Err(e) => format!("error {e}"),
            };
            HandleExtV1::V1(HandleResultV1::Respond(text(
                200,
                format!(
                    "frozen 1.1 plugin: woke {} read {got} inline {}\n",
                    ex.woke, ex.inline
                ),
            )))
        }
        "/defer" if ex.inline => HandleExtV1::Defer,
        _ => {
            let sdk = host.map(|h| format!("{}.{}", h.sdk_major, h.sdk_minor));
            HandleExtV1::V1(HandleResultV1::Respond(text(
                200,
                format!(
                    "frozen 1.1 plugin: {} inline {} server SDK {}\n",
                    path,
                    ex.inline,
                    sdk.unwrap_or_default()
                ),
            )))
        }
    }
}

static TABLE: PluginV1 = PluginV1 {
    name: RStr::from_str("frozen11"),
    version: RStr::from_str("1.1.0"),
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

#[unsafe(no_mangle)]
pub extern "C" fn tamada_plugin_header() -> PluginHeader {
    PluginHeader {
        magic: MAGIC,
        sdk_major: 1,
        sdk_minor: 1,
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

// ROption is part of the frozen tables' vocabulary; named so an unused
// import does not hide a change.
#[allow(dead_code)]
fn _vocabulary(_: ROption<u8>) {}
