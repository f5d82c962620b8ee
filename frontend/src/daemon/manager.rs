//! The management daemon: the main thread, as kHTTPd's manager was. It owns the configuration, the
//! control socket and the signals, and starts and stops the main daemons.
//!
//! kHTTPd's `start`, `stop` and `unload` map to `khttpd-ctl start|stop|unload`; its sysctl knobs to
//! `get`/`set`. What it lacked is added: `stop` drains in-flight responses within `--grace` instead of
//! leaving workers running, `reload` re-reads the config file and refuses an invalid one, SIGTERM and
//! SIGINT unload gracefully, SIGHUP reloads and SIGUSR1 reopens the access log.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot};

use crate::config::args::Args;
use crate::config::knobs::{self, Settings};
use crate::config::Config;
use crate::control::protocol::{default_socket_path, Reply, Request};
use crate::control::server;
use crate::daemon::main_daemon::{self, Daemons};
use crate::daemon::state::{Runtime, Shared};
use crate::logging::access_log::AccessLog;

/// Why the server could not start (the binary prints it and exits non-zero).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The listeners.
    #[error("{0}")]
    Bind(#[from] main_daemon::BindError),
    /// The control socket.
    #[error("control socket {0}: {1}")]
    Control(PathBuf, std::io::Error),
    /// The access log.
    #[error("access log: {0}")]
    AccessLog(std::io::Error),
    /// The admin listener.
    #[error("--admin-listen {0}: {1}")]
    Admin(SocketAddr, std::io::Error),
    /// Dropping privileges with --user.
    #[error("--user: {0}")]
    User(String),
    /// Anything else at start.
    #[error("{0}")]
    Other(std::io::Error),
}

/// The management daemon's own state.
struct Manager {
    settings: Settings,
    args: Args,
    shared: Arc<Shared>,
    daemons: Option<Daemons>,
    /// Where the main daemons listen: fixed at the first bind so `start` reuses a port 0 picked then.
    listen: SocketAddr,
    /// Where HTTPS listens, fixed the same way.
    tls_listen: Option<SocketAddr>,
    threads: usize,
    started: Instant,
    control_path: PathBuf,
    /// Listening sockets from socket activation, reused (as copies) at every start.
    inherited: Option<crate::daemon::service_manager::Inherited>,
    /// One sample of the counters a second, the last 11: rates and percentiles over 10 s.
    samples: std::collections::VecDeque<Sample>,
    /// Gives memory back once a crowd of clients has left.
    crowd: crate::daemon::memory::Crowd,
}

/// The request total and latency histograms over all main daemons at one moment.
#[derive(Debug, Clone)]
struct Sample {
    at: Instant,
    requests: u64,
    front: crate::daemon::latency::Snapshot,
    backend: crate::daemon::latency::Snapshot,
    upstream: crate::daemon::latency::Snapshot,
}

/// How many one-second samples are kept: 10 s of differences.
const SAMPLES: usize = 11;

/// Runs the server until `unload` or SIGTERM/SIGINT. Prints `listening on ADDR` once listening.
pub fn run(settings: Settings, args: Args, config: Config) -> Result<(), StartError> {
    let log = AccessLog::start(
        config.access_log.clone(),
        config.log_format.clone(),
        args.log_queue,
    )
    .map_err(StartError::AccessLog)?;
    let threads = config.threads;
    let listen = config.listen;
    let tls_listen = config.tls.as_ref().map(|t| t.addr);
    if let Some(tls) = &config.tls {
        tls.log_warnings();
    }
    let admin_addr = config.admin_listen;
    let shared = Shared::new(Runtime::new(config, None), log.clone(), threads);
    let control_path = args.control.clone().unwrap_or_else(default_socket_path);
    let mut m = Manager {
        settings,
        args,
        shared,
        daemons: None,
        listen,
        tls_listen,
        threads,
        inherited: crate::daemon::service_manager::Inherited::from_env()
            .map_err(StartError::Other)?,
        samples: std::collections::VecDeque::with_capacity(SAMPLES),
        crowd: crate::daemon::memory::Crowd::default(),
        started: Instant::now(),
        control_path,
    };
    // Bind everything that may need root first, then drop to --user.
    let listeners = if m.args.stopped {
        None
    } else {
        Some(m.bind()?)
    };
    let control = server::bind(&m.control_path)
        .map_err(|e| StartError::Control(m.control_path.clone(), e))?;
    let admin = match admin_addr {
        Some(addr) => {
            let l = TcpListener::bind(addr).map_err(|e| StartError::Admin(addr, e))?;
            l.set_nonblocking(true)
                .map_err(|e| StartError::Admin(addr, e))?;
            Some(l)
        }
        None => None,
    };
    if let Some(user) = m.args.user.clone() {
        crate::daemon::privileges::drop_to(&user).map_err(StartError::User)?;
    }
    // The manager's own runtime and signal handlers need descriptors too: take them before the
    // main daemons open the doors, or a flood of clients could leave none for them.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StartError::Other)?;
    let served = rt.block_on(m.serve(control, listeners, admin));
    log.flush_and_stop(Duration::from_secs(5));
    served
}

/// One copy of the inherited sockets per main daemon (they share the kernel's queue); a TLS port
/// configured without a second inherited socket is bound here as usual.
fn inherited_listeners(
    inherited: &crate::daemon::service_manager::Inherited,
    cfg: &Config,
) -> Result<Vec<main_daemon::Listeners>, main_daemon::BindError> {
    let addr = inherited.plain.local_addr().unwrap_or(cfg.listen);
    let mut tls: Vec<Option<TcpListener>> = match (&cfg.tls, &inherited.tls) {
        (Some(_), Some(t)) => (0..cfg.threads)
            .map(|_| t.try_clone().map(Some))
            .collect::<Result<_, _>>()
            .map_err(|e| main_daemon::BindError::Other(addr, e))?,
        (Some(t), None) => main_daemon::bind_group(t.addr, cfg)?
            .into_iter()
            .map(Some)
            .collect(),
        (None, _) => Vec::new(),
    };
    tls.resize_with(cfg.threads, || None);
    tls.into_iter()
        .map(|tls| {
            let plain = inherited
                .plain
                .try_clone()
                .map_err(|e| main_daemon::BindError::Other(addr, e))?;
            Ok(main_daemon::Listeners { plain, tls })
        })
        .collect()
}

impl Manager {
    fn config(&self) -> Arc<Config> {
        self.shared.config()
    }

    fn bind(&mut self) -> Result<Vec<main_daemon::Listeners>, main_daemon::BindError> {
        let mut cfg = (*self.config()).clone();
        cfg.listen = self.listen;
        cfg.threads = self.threads;
        // The TLS port is fixed at the first bind like the plain one; the certificates are not.
        cfg.tls = match (&cfg.tls, self.tls_listen) {
            (Some(t), Some(addr)) => Some(Arc::new(crate::conn::tls::Tls {
                addr,
                server: Arc::clone(&t.server),
                certs: t.certs.clone(),
                warnings: Vec::new(),
            })),
            _ => None,
        };
        let listeners = match &self.inherited {
            Some(inherited) => inherited_listeners(inherited, &cfg)?,
            None => main_daemon::bind(&cfg)?,
        };
        if let Some(addr) = listeners.first().and_then(|l| l.plain.local_addr().ok()) {
            self.listen = addr;
        }
        if let Some(addr) = listeners
            .first()
            .and_then(|l| l.tls.as_ref())
            .and_then(|l| l.local_addr().ok())
        {
            self.tls_listen = Some(addr);
            self.shared
                .tls_port
                .store(addr.port(), std::sync::atomic::Ordering::Relaxed);
        }
        Ok(listeners)
    }

    fn start_with(&mut self, listeners: Vec<main_daemon::Listeners>) -> std::io::Result<()> {
        self.daemons = Some(main_daemon::start(listeners, self.shared.clone())?);
        self.shared
            .serving
            .store(true, std::sync::atomic::Ordering::Relaxed);
        // Scripts and tests wait for this exact line.
        println!("listening on {}", self.listen);
        if let Some(tls) = self.tls_listen {
            println!("listening for TLS on {tls}");
        }
        use std::io::Write;
        let _ = std::io::stdout().flush();
        tracing::info!(addr = %self.listen, daemons = self.threads, "main daemons started");
        Ok(())
    }

    async fn stop(&mut self) -> bool {
        self.shared
            .serving
            .store(false, std::sync::atomic::Ordering::Relaxed);
        let Some(d) = self.daemons.take() else {
            return false;
        };
        // Joining blocks until the daemons have drained; keep the manager's runtime free meanwhile.
        let _ = tokio::task::spawn_blocking(move || d.stop()).await;
        tracing::info!("main daemons stopped");
        true
    }

    async fn serve(
        &mut self,
        control: std::os::unix::net::UnixListener,
        listeners: Option<Vec<main_daemon::Listeners>>,
        admin: Option<TcpListener>,
    ) -> Result<(), StartError> {
        let (tx, mut rx) = mpsc::channel::<(Request, oneshot::Sender<Reply>)>(16);
        let (admin_done_tx, admin_done_rx) = oneshot::channel::<()>();
        let admin_task = match admin {
            Some(l) => {
                let addr = l.local_addr().map_err(StartError::Other)?;
                let l = tokio::net::TcpListener::from_std(l).map_err(StartError::Other)?;
                let tx = tx.clone();
                // The same snapshot as `khttpd-ctl status`, asked of this loop.
                let snapshot: crate::control::admin::Snapshot = Arc::new(move || {
                    let tx = tx.clone();
                    Box::pin(async move {
                        let (reply_tx, reply_rx) = oneshot::channel();
                        tx.send((Request::Status, reply_tx)).await.ok()?;
                        reply_rx.await.ok()?.data
                    })
                });
                println!("admin: http://{addr}/metrics and /healthz");
                let shared = self.shared.clone();
                Some(tokio::spawn(crate::control::admin::serve(
                    l,
                    shared,
                    snapshot,
                    async move {
                        let _ = admin_done_rx.await;
                    },
                )))
            }
            None => None,
        };
        let handler = server::handler(move |req| {
            let tx = tx.clone();
            async move {
                let (reply_tx, reply_rx) = oneshot::channel();
                if tx.send((req, reply_tx)).await.is_err() {
                    return Reply::error("khttpd-front is shutting down");
                }
                reply_rx
                    .await
                    .unwrap_or_else(|_| Reply::error("khttpd-front is shutting down"))
            }
        });
        let (done_tx, done_rx) = oneshot::channel::<()>();
        let server = tokio::spawn(server::serve(control, handler, async move {
            let _ = done_rx.await;
        }));
        let signals = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
            signal(SignalKind::user_defined1()),
        );
        let (Ok(mut term), Ok(mut int), Ok(mut hup), Ok(mut usr1)) = signals else {
            return Err(StartError::Other(std::io::Error::other(
                "cannot install signal handlers",
            )));
        };
        if let Some(l) = listeners {
            self.start_with(l).map_err(StartError::Other)?;
            crate::daemon::service_manager::ready(&format!("listening on {}", self.listen));
        } else {
            tracing::info!(control = %self.control_path.display(), "started stopped; `khttpd-ctl start` opens the listeners");
            crate::daemon::service_manager::ready(
                "stopped; `khttpd-ctl start` opens the listeners",
            );
        }
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if self.samples.len() == SAMPLES {
                        self.samples.pop_front();
                    }
                    let now = self.sample();
                    self.samples.push_back(now);
                    // Blocking for a few milliseconds at most; this thread serves no client.
                    self.crowd.tick(self.shared.open.get());
                }
                Some((req, reply)) = rx.recv() => {
                    let unload = req == Request::Unload;
                    if unload {
                        crate::daemon::service_manager::stopping();
                    }
                    let answer = self.handle(req).await;
                    let _ = reply.send(answer);
                    if unload {
                        break;
                    }
                }
                _ = term.recv() => {
                    tracing::info!("SIGTERM: unloading");
                    crate::daemon::service_manager::stopping();
                    self.stop().await;
                    break;
                }
                _ = int.recv() => {
                    tracing::info!("SIGINT: unloading");
                    crate::daemon::service_manager::stopping();
                    self.stop().await;
                    break;
                }
                _ = hup.recv() => {
                    let r = self.reload();
                    tracing::info!(ok = r.ok, "SIGHUP: {}", r.message);
                }
                _ = usr1.recv() => {
                    self.shared.access_log.reopen();
                    tracing::info!("SIGUSR1: access log reopened");
                }
            }
        }
        let _ = done_tx.send(());
        let _ = admin_done_tx.send(());
        let _ = server.await;
        if let Some(t) = admin_task {
            let _ = t.await;
        }
        Ok(())
    }

    async fn handle(&mut self, req: Request) -> Reply {
        match req {
            Request::Status => {
                Reply::ok(format!("khttpd-front {}", self.state_name())).with_data(self.status())
            }
            Request::Stop => {
                if self.stop().await {
                    Reply::ok("stopped: listeners closed, in-flight requests finished")
                } else {
                    Reply::ok("already stopped")
                }
            }
            Request::Start => {
                if self.daemons.is_some() {
                    return Reply::ok(format!("already running on {}", self.listen));
                }
                match self.bind() {
                    Ok(l) => match self.start_with(l) {
                        Ok(()) => Reply::ok(format!("started: listening on {}", self.listen)),
                        Err(e) => Reply::error(e.to_string()),
                    },
                    Err(e) => Reply::error(e.to_string()),
                }
            }
            Request::Unload => {
                self.stop().await;
                Reply::ok("unloaded")
            }
            Request::Reload => self.reload(),
            Request::ReopenLogs => {
                self.shared.access_log.reopen();
                Reply::ok("access log reopened")
            }
            Request::Flush => {
                let held = self.shared.verifier.stats().entries;
                self.shared.verifier.flush();
                Reply::ok(format!(
                    "{held} verification verdicts dropped: every static URL is asked of the backend again"
                ))
            }
            Request::Get { key } => match knobs::get(&self.in_effect(), key.as_deref()) {
                Ok(v) => Reply::ok(render_knobs(&v)).with_data(v),
                Err(e) => Reply::error(e),
            },
            Request::Set { key, value } => match self.settings.with_set(&key, &value) {
                Ok((settings, args, config)) => match self.apply(&args, config) {
                    Ok(()) => {
                        self.settings = settings;
                        self.args = args;
                        Reply::ok(format!("{key} = {value}"))
                    }
                    Err(e) => Reply::error(e),
                },
                Err(e) => Reply::error(e),
            },
        }
    }

    /// The settings as they are in force: a reload re-reads the file, but the listeners (port,
    /// TLS port, bind address) and the main daemons stay as they were bound until a restart, so
    /// `get` shows those, not the file's new values.
    fn in_effect(&self) -> Args {
        let mut a = self.args.clone();
        a.port = self.listen.port();
        a.bind = self.listen.ip();
        a.threads = self.threads;
        if let Some(tls) = self.tls_listen {
            a.tls_port = Some(tls.port());
        }
        a
    }

    /// A reload, announced to the service manager (`RELOADING=1`, then `READY=1` whatever the
    /// outcome: a refused reload leaves the old configuration serving).
    fn reload(&mut self) -> Reply {
        crate::daemon::service_manager::reloading();
        let reply = self.reload_now();
        crate::daemon::service_manager::ready(&reply.message);
        reply
    }

    fn reload_now(&mut self) -> Reply {
        let fresh = self.settings.without_overrides();
        let (args, config) = match fresh.load() {
            Ok(v) => v,
            Err(e) => {
                return Reply::error(format!(
                    "refused, still serving the previous configuration: {e}"
                ))
            }
        };
        let mut notes = Vec::new();
        let tls_addr = |c: &Config| c.tls.as_ref().map(|t| t.addr);
        if config.listen != self.config().listen
            || config.threads != self.threads
            || tls_addr(&config) != tls_addr(&self.config())
        {
            notes.push(" (port, tls-port, bind and threads change at the next restart)");
        }
        match self.apply(&args, config) {
            Ok(()) => {
                self.settings = fresh;
                self.args = args;
                Reply::ok(format!("reloaded{}", notes.concat()))
            }
            Err(e) => Reply::error(format!(
                "refused, still serving the previous configuration: {e}"
            )),
        }
    }

    /// Swaps in a validated configuration; the access log follows first, since it can still fail.
    fn apply(&mut self, _args: &Args, config: Config) -> Result<(), String> {
        let log = &self.shared.access_log;
        if log.target() != config.access_log {
            log.set_target(config.access_log.clone())
                .map_err(|e| format!("access log {}: {e}", config.access_log))?;
        }
        log.set_format(config.log_format.clone());
        if let Some(tls) = &config.tls {
            tls.log_warnings();
        }
        let next = Runtime::new(config, Some(&self.shared.current.load()));
        self.shared.current.store(Arc::new(next));
        Ok(())
    }

    fn state_name(&self) -> &'static str {
        if self.daemons.is_some() {
            "running"
        } else {
            "stopped"
        }
    }

    /// The counters now, summed over the main daemons.
    fn sample(&self) -> Sample {
        let mut s = Sample {
            at: Instant::now(),
            requests: 0,
            front: crate::daemon::latency::Snapshot::default(),
            backend: crate::daemon::latency::Snapshot::default(),
            upstream: crate::daemon::latency::Snapshot::default(),
        };
        for d in &self.shared.stats {
            s.requests += d.static_requests.load(Relaxed)
                + d.backend_requests.load(Relaxed)
                + d.error_requests.load(Relaxed);
            s.front.add(&d.latency_front.snapshot());
            s.backend.add(&d.latency_backend.snapshot());
            s.upstream.add(&d.upstream_head.snapshot());
        }
        s
    }

    /// Rate and percentiles since the oldest kept sample (up to 10 s ago).
    fn recent(&self, now: &Sample) -> Value {
        let Some(then) = self.samples.front() else {
            return Value::Null;
        };
        let secs = now.at.duration_since(then.at).as_secs_f64();
        let round = |v: Option<f64>| v.map(|x| (x * 1000.0).round() / 1000.0);
        let (front, backend, upstream) = (
            now.front.since(&then.front),
            now.backend.since(&then.backend),
            now.upstream.since(&then.upstream),
        );
        json!({
            "seconds": (secs * 10.0).round() / 10.0,
            "requests_per_sec": if secs > 0.0 {
                ((now.requests - then.requests) as f64 / secs * 10.0).round() / 10.0
            } else {
                0.0
            },
            "front_p50_ms": round(front.quantile_ms(0.5)),
            "front_p99_ms": round(front.quantile_ms(0.99)),
            "backend_p50_ms": round(backend.quantile_ms(0.5)),
            "backend_p99_ms": round(backend.quantile_ms(0.99)),
            "upstream_p50_ms": round(upstream.quantile_ms(0.5)),
            "upstream_p99_ms": round(upstream.quantile_ms(0.99)),
        })
    }

    fn status(&self) -> Value {
        let cfg = self.config();
        let now = self.sample();
        let log = self.shared.access_log.stats();
        let mut daemons = Vec::new();
        let mut totals = [0u64; 13];
        for (i, s) in self.shared.stats.iter().enumerate() {
            let row = [
                s.connections.load(Relaxed).max(0) as u64,
                s.waiting().max(0) as u64,
                s.sending.load(Relaxed).max(0) as u64,
                s.userspace.load(Relaxed).max(0) as u64,
                s.static_requests.load(Relaxed),
                s.backend_requests.load(Relaxed),
                s.error_requests.load(Relaxed),
                s.status_class[4].load(Relaxed),
                s.status_class[5].load(Relaxed),
                s.bytes_out.load(Relaxed),
                s.status_class[2].load(Relaxed),
                s.status_class[3].load(Relaxed),
                s.backend_errors.load(Relaxed),
            ];
            for (t, v) in totals.iter_mut().zip(row) {
                *t += v;
            }
            daemons.push(json!({
                "daemon": i,
                "connections": row[0],
                "waiting": row[1],
                "sending": row[2],
                "userspace": row[3],
                "logging": log.depth,
                "static": row[4],
                "backend": row[5],
                "errors": row[6],
                "backend_errors": row[12],
                "2xx": row[10],
                "3xx": row[11],
                "4xx": row[7],
                "5xx": row[8],
                "bytes_out": row[9],
                "offload": share(row[4], row[4] + row[5] + row[6]),
            }));
        }
        let uptime = self.started.elapsed().as_secs();
        let c = self.shared.cache.stats();
        let cache = json!({
            "hits": c.hits, "misses": c.misses, "evictions": c.evictions, "bytes": c.bytes,
            "capacity": c.capacity, "entries": c.entries, "compressions": c.compressions,
            "compression_ms": c.compression_time_ms, "not_worth": c.negative,
            "compressions_deferred": c.compress_deferred,
        });
        json!({
            "state": self.state_name(),
            "version": env!("CARGO_PKG_VERSION"),
            "last_10s": self.recent(&now),
            "latency": {
                "bounds_us": crate::daemon::latency::BOUNDS_US,
                "front": now.front,
                "backend": now.backend,
                "upstream": now.upstream,
            },
            "uptime": format!("{}h {}m {}s", uptime / 3600, uptime / 60 % 60, uptime % 60),
            "uptime_secs": uptime,
            "pid": std::process::id(),
            "listen": self.listen.to_string(),
            "tls_listen": self.tls_listen.map(|a| a.to_string()),
            "documentroot": cfg.root.display().to_string(),
            "connections": self.shared.open.get(),
            "maxconnect": cfg.maxconnect,
            "daemons": daemons,
            "totals": {
                "static": totals[4], "backend": totals[5], "errors": totals[6],
                "backend_errors": totals[12], "2xx": totals[10], "3xx": totals[11],
                "4xx": totals[7], "5xx": totals[8], "bytes_out": totals[9],
                "offload": share(totals[4], totals[4] + totals[5] + totals[6]),
            },
            "verify": self.shared.verifier.stats(),
            "uploads": self.shared.uploads.counts(),
            "answers": self.shared.current.load().upstreams.as_ref().map(|u| {
                let c = u.spool();
                json!({
                    "buffered": c.buffered, "to_disk": c.to_disk, "streamed": c.streamed,
                    "paused": c.paused, "temp_files": c.temp_files, "temp_bytes": c.temp_bytes,
                    "memory": c.memory,
                })
            }),
            "backends": self.shared.current.load().upstreams.as_ref().map(|u| u.snapshot()).unwrap_or_default()
                .into_iter().map(|b| json!({
                    "backend": b.addr.to_string(), "healthy": b.healthy, "buffering": b.buffering, "requests": b.requests,
                    "in_flight": b.in_flight, "retries": b.retries, "refused": b.refused, "reset": b.reset,
                    "timeouts": b.timeouts, "bad_responses": b.bad_responses, "queue_full": b.queue_full,
                    "idle_pooled": b.idle_pooled, "discarded": b.discarded,
                })).collect::<Vec<_>>(),
            "cache": cache,
            "access_log": {
                "target": cfg.access_log.to_string(),
                "format": cfg.log_format.to_string(),
                "written": log.written, "dropped": log.dropped, "queue": log.depth, "errors": log.errors,
            },
        })
    }
}

/// `part / whole` rounded to a thousandth, 0 for no requests: the share the front answered itself.
fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    (part as f64 / whole as f64 * 1000.0).round() / 1000.0
}

fn render_knobs(v: &Value) -> String {
    let Some(map) = v.as_object() else {
        return v.to_string();
    };
    map.iter()
        .map(|(k, v)| match v {
            Value::String(s) => format!("{k} = {s}"),
            Value::Array(a) => format!(
                "{k} = {}",
                a.iter()
                    .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            Value::Null => format!("{k} ="),
            other => format!("{k} = {other}"),
        })
        .collect::<Vec<_>>()
        .join("\n")
}
