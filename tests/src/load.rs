//! Load and leak helpers: an upstream that checks every token as it arrives
//! and keeps only the `jti`s (16 bytes each, so a million requests fit in a
//! few tens of MiB), a closed-loop POST client over a fixed number of
//! connections, and process figures (RSS) read from `/proc`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use echo_upstream::EchoServer;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

/// What a [`JtiUpstream`] has counted so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Requests received.
    pub requests: u64,
    /// Requests without exactly one token header.
    pub not_one_token: u64,
    /// Tokens that failed verification or whose `jti` is not 32 hex digits.
    pub bad_tokens: u64,
    /// `jti`s seen before.
    pub duplicate_jti: u64,
    /// Distinct `jti`s.
    pub distinct_jti: u64,
    /// The first few problems, for the failure message (never a whole token).
    pub problems: Vec<String>,
}

#[derive(Default)]
struct Record {
    tally: Tally,
    jtis: HashSet<u128>,
}

/// The echo upstream, checking each request's token with the `jsonwebtoken`
/// crate when it arrives and storing only its `jti` (as a `u128`).
pub struct JtiUpstream {
    server: Option<EchoServer>,
    runtime: Option<tokio::runtime::Runtime>,
    addr: SocketAddr,
    record: Arc<Mutex<Record>>,
}

impl JtiUpstream {
    /// Starts one on `127.0.0.1:0` that expects tokens in `header`, signed
    /// with `key`, on every request.
    pub fn start(header: &str, key: &[u8]) -> JtiUpstream {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let record = Arc::new(Mutex::new(Record::default()));
        let rec = Arc::clone(&record);
        let header = header.to_owned();
        let key = DecodingKey::from_secret(key);
        let mut validation = Validation::new(Algorithm::HS512);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_aud = false;
        let server = runtime
            .block_on(EchoServer::start(Some(Arc::new(
                move |_peer, parts: &hyper::http::request::Parts| {
                    let tokens: Vec<_> = parts.headers.get_all(header.as_str()).iter().collect();
                    let jti = match tokens.as_slice() {
                        [one] => one
                            .to_str()
                            .ok()
                            .and_then(|t| jsonwebtoken::decode::<Value>(t, &key, &validation).ok())
                            .and_then(|d| {
                                let jti = d.claims["jti"].as_str()?.to_owned();
                                (jti.len() == 32)
                                    .then(|| u128::from_str_radix(&jti, 16).ok())
                                    .flatten()
                            })
                            .ok_or("bad token"),
                        _ => Err("not exactly one token"),
                    };
                    let mut r = rec.lock().unwrap();
                    r.tally.requests += 1;
                    match jti {
                        Ok(jti) => {
                            if !r.jtis.insert(jti) {
                                r.tally.duplicate_jti += 1;
                                if r.tally.problems.len() < 10 {
                                    r.tally
                                        .problems
                                        .push(format!("duplicate jti {jti:032x} on {}", parts.uri));
                                }
                            }
                        }
                        Err(why) => {
                            if tokens.len() == 1 {
                                r.tally.bad_tokens += 1;
                            } else {
                                r.tally.not_one_token += 1;
                            }
                            if r.tally.problems.len() < 10 {
                                r.tally.problems.push(format!(
                                    "{why} ({} token headers) on {} {}",
                                    tokens.len(),
                                    parts.method,
                                    parts.uri
                                ));
                            }
                        }
                    }
                    r.tally.distinct_jti = r.jtis.len() as u64;
                },
            ))))
            .unwrap();
        JtiUpstream {
            addr: server.addr(),
            server: Some(server),
            runtime: Some(runtime),
            record,
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The counts so far.
    pub fn tally(&self) -> Tally {
        self.record.lock().unwrap().tally.clone()
    }
}

impl Drop for JtiUpstream {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            let _guard = rt.enter();
            drop(self.server.take());
            rt.shutdown_background();
        }
    }
}

/// What a [`post_load`] run saw from the client side.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Requests sent and answered with 2xx.
    pub ok: u64,
    /// Answers that were not 2xx, as `(status, count)`.
    pub non_2xx: Vec<(u16, u64)>,
    /// Requests that got no answer (connection errors, timeouts).
    pub errors: u64,
    /// Requests not sent because the deadline passed.
    pub not_sent: u64,
    /// Connections opened (at least `connections`; more after errors).
    pub connections_opened: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl LoadReport {
    /// Requests per second over the run.
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Sends `total` POSTs (a small JSON body each, path `/soak/<n>`) to `addr`
/// over `connections` persistent HTTP/1.1 connections, each waiting for its
/// answer before the next (closed loop). Stops sending at `deadline`. Each
/// exchange has 30 s; a failed connection is replaced.
pub fn post_load(
    addr: SocketAddr,
    connections: usize,
    total: u64,
    deadline: Instant,
) -> LoadReport {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let next = Arc::new(AtomicU64::new(0));
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let opened = Arc::new(AtomicU64::new(0));
    let statuses: Arc<Mutex<Vec<(u16, u64)>>> = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let deadline = tokio::time::Instant::from_std(deadline);
    rt.block_on(async {
        let mut tasks = Vec::with_capacity(connections);
        for _ in 0..connections {
            let (next, ok, errors, opened, statuses) = (
                Arc::clone(&next),
                Arc::clone(&ok),
                Arc::clone(&errors),
                Arc::clone(&opened),
                Arc::clone(&statuses),
            );
            tasks.push(tokio::spawn(async move {
                let mut sender = None;
                loop {
                    if tokio::time::Instant::now() >= deadline {
                        return;
                    }
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        return;
                    }
                    let outcome = tokio::time::timeout(Duration::from_secs(30), async {
                        if sender.is_none() {
                            let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
                            stream.set_nodelay(true).ok()?;
                            let (s, conn) =
                                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                                    .await
                                    .ok()?;
                            tokio::spawn(conn);
                            opened.fetch_add(1, Ordering::Relaxed);
                            sender = Some(s);
                        }
                        let s = sender.as_mut()?;
                        s.ready().await.ok()?;
                        let req = hyper::Request::post(format!("/soak/{n}"))
                            .header("host", "127.0.0.1")
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(format!(r#"{{"n":{n}}}"#))))
                            .unwrap();
                        let resp = s.send_request(req).await.ok()?;
                        let status = resp.status().as_u16();
                        resp.into_body().collect().await.ok()?;
                        Some(status)
                    })
                    .await;
                    match outcome {
                        Ok(Some(s)) if (200..300).contains(&s) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Some(s)) => {
                            let mut st = statuses.lock().unwrap();
                            match st.iter_mut().find(|(code, _)| *code == s) {
                                Some((_, c)) => *c += 1,
                                None => st.push((s, 1)),
                            }
                        }
                        _ => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            sender = None;
                        }
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    rt.shutdown_background();
    let sent = next.load(Ordering::Relaxed).min(total);
    let ok = ok.load(Ordering::Relaxed);
    let errors = errors.load(Ordering::Relaxed);
    let non_2xx = statuses.lock().unwrap().clone();
    let non_2xx_count: u64 = non_2xx.iter().map(|(_, c)| c).sum();
    debug_assert_eq!(sent, ok + errors + non_2xx_count);
    LoadReport {
        ok,
        non_2xx,
        errors,
        not_sent: total - sent,
        connections_opened: opened.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
    }
}

/// Resident set size of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    proc_status(pid, "VmRSS:")
}

/// Threads of process `pid`.
pub fn threads(pid: u32) -> u64 {
    proc_status(pid, "Threads:")
}

/// Open file descriptors of process `pid` (sockets included).
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(Iterator::count)
        .unwrap_or(0)
}

fn proc_status(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// A size from the environment (`name`), else `default`; `_` separators allowed.
pub fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .replace('_', "")
            .parse()
            .unwrap_or_else(|e| panic!("{name}={v:?}: {e}")),
        _ => default,
    }
}
