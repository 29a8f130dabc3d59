//! WASI preview 1 as Envoy offers it, through wasmtime-wasi's preview1 adapter: the host clock,
//! the host random source, `vm_config`-style environment variables, stdout/stderr into the host
//! log (info / error, one record per write, as Envoy logs them), `proc_exit`; no arguments, no
//! files, no network.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use rand::SeedableRng as _;
use rand::rngs::StdRng;
use tokio::io::AsyncWrite;
use wasmtime::{Caller, Linker};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtxBuilder};

use crate::abi::Level;
use crate::hostcalls::memory;
use crate::state::clock::HostClock;
use crate::state::log::{LogSink, LogSource};
use crate::state::{HostState, Random, Shared};

/// Adds the `wasi_snapshot_preview1` functions.
///
/// # Errors
/// When a function is already defined in `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p1::add_to_linker_sync(linker, |state: &mut HostState| &mut state.wasi)?;
    // wasmtime-wasi writes only the first buffer of a stdout write (WASI allows a short
    // write); Envoy logs all of them as one line, and so does this one.
    linker.allow_shadowing(true);
    let r = linker
        .func_wrap("wasi_snapshot_preview1", "fd_write", fd_write)
        .map(drop);
    linker.allow_shadowing(false);
    r
}

/// WASI errno `badf`: the guest has no file but stdout and stderr.
const ERRNO_BADF: u32 = 8;

/// `fd_write` as Envoy has it: stdout (info) and stderr (error) each write one log record of all
/// its buffers, one trailing newline dropped; any other descriptor is `badf`.
fn fd_write(
    mut caller: Caller<'_, HostState>,
    fd: u32,
    iovs: u32,
    iovs_len: u32,
    nwritten: u32,
) -> wasmtime::Result<u32> {
    let (level, source) = match fd {
        1 => (Level::Info, LogSource::Stdout),
        2 => (Level::Error, LogSource::Stderr),
        _ => return Ok(ERRNO_BADF),
    };
    let table = memory::read(&mut caller, iovs, iovs_len.saturating_mul(8))?;
    let mut data = Vec::new();
    for iov in table.chunks_exact(8) {
        let word = |i: usize| u32::from_le_bytes([iov[i], iov[i + 1], iov[i + 2], iov[i + 3]]);
        data.extend_from_slice(&memory::read(&mut caller, word(0), word(4))?);
    }
    let written = u32::try_from(data.len()).unwrap_or(u32::MAX);
    let text = data.strip_suffix(b"\n").unwrap_or(&data);
    let text = String::from_utf8_lossy(text).into_owned();
    caller.data().shared.logs.log(level, source, text);
    memory::write_u32(&mut caller, nwritten, written)?;
    Ok(0)
}

/// The WASI context of the `vm_index`-th VM of a host.
pub(crate) fn context(shared: &Shared, vm_index: u64) -> WasiP1Ctx {
    let mut builder = WasiCtxBuilder::new();
    builder
        .envs(&shared.plugin.env)
        .wall_clock(WallClock(shared.clock.clone()))
        .monotonic_clock(MonotonicClock(shared.clock.clone()))
        .stdout(LogStream::new(
            shared.logs.clone(),
            Level::Info,
            LogSource::Stdout,
        ))
        .stderr(LogStream::new(
            shared.logs.clone(),
            Level::Error,
            LogSource::Stderr,
        ))
        .allow_blocking_current_thread(true);
    if let Random::Seeded(seed) = shared.plugin.random {
        let seed = seed.wrapping_add(vm_index);
        builder.secure_random(StdRng::seed_from_u64(seed));
        builder.insecure_random(StdRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15));
        builder.insecure_random_seed(u128::from(seed));
    }
    builder.build_p1()
}

struct WallClock(HostClock);

impl HostWallClock for WallClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }

    fn now(&self) -> Duration {
        Duration::from_nanos(self.0.unix_nanos())
    }
}

struct MonotonicClock(HostClock);

impl HostMonotonicClock for MonotonicClock {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        self.0.monotonic_nanos()
    }
}

/// Guest stdout or stderr: each write (one `fd_write`) becomes one log record, newlines inside
/// it kept and one trailing newline dropped, as Envoy logs it.
#[derive(Clone)]
struct LogStream {
    logs: LogSink,
    level: Level,
    source: LogSource,
}

impl LogStream {
    fn new(logs: LogSink, level: Level, source: LogSource) -> Self {
        Self {
            logs,
            level,
            source,
        }
    }

    fn push(&self, data: &[u8]) {
        let data = data.strip_suffix(b"\n").unwrap_or(data);
        self.logs
            .log(self.level, self.source, String::from_utf8_lossy(data));
    }
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for LogStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
