//! `understudy validate`: a pre-canary validation run. Replays recorded
//! requests (or bare request bodies) to stable and candidate, compares the
//! answers with the config's `[compare]` rules, judges the result with the
//! very judge and thresholds of the shadow gate, and reports.
//!
//! Its one job is the run: setup, the bounded replay loop (`--concurrency`,
//! `--rate`), Ctrl-C, the report files and the exit code — 0 pass, 1 fail
//! (a hold, too little evidence, fails the gate), 2 usage, config or file
//! errors. It never touches the proxy's data path (it uses the backends'
//! [`Upstream`] pools directly) and never prints progress unless stdout is
//! a terminal.

mod html;
mod input;
mod noise;
mod replay;
mod report;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use http::Uri;
use http::uri::PathAndQuery;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::compare::Comparator;
use crate::config::{self, Config};
use crate::rollout::judge::Thresholds;
use crate::upstream::Upstream;
use input::{Input, Mode};
use replay::{Tally, Target};
pub use report::{Report, RunInfo};

/// `understudy validate` arguments.
#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Config file: the backends, [compare] rules, [rollout] thresholds and
    /// shadow.max_body_bytes are used.
    #[arg(
        short,
        long,
        env = "UNDERSTUDY_CONFIG",
        default_value = "config/understudy.toml"
    )]
    pub config: PathBuf,
    /// JSONL file of recorded requests ([record]), or of bare JSON request
    /// bodies with --path.
    #[arg(long, value_name = "FILE")]
    pub requests: PathBuf,
    /// Read --requests as bare JSON request bodies, POSTed to this path
    /// (content-type application/json).
    #[arg(long, value_name = "PATH")]
    pub path: Option<String>,
    /// Stable backend URL, instead of the config's.
    #[arg(long, value_name = "URL")]
    pub stable: Option<String>,
    /// Candidate backend URL, instead of the config's.
    #[arg(long, value_name = "URL")]
    pub candidate: Option<String>,
    /// Requests in flight at once (each goes to both backends).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: u32,
    /// Highest rate of requests started per second (default: unlimited).
    #[arg(long, value_name = "PER_SECOND", value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Write a report: FILE.json (machine-readable) or FILE.html (one
    /// self-contained page). Repeat for both.
    #[arg(long, value_name = "FILE", value_parser = parse_report)]
    pub report: Vec<PathBuf>,
    /// Also send each request to stable a second time and compare stable
    /// with itself: the noise floor, its noisy fields, and the relative
    /// match gate (rollout.max_match_rate_drop). Doubles the load on stable.
    #[arg(long)]
    pub noise: bool,
}

fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!(
            "expected requests per second above 0, got {text:?}"
        )),
    }
}

fn parse_report(text: &str) -> Result<PathBuf, String> {
    match report_kind(Path::new(text)) {
        Some(_) => Ok(PathBuf::from(text)),
        None => Err(format!(
            "expected a file ending in .json or .html, got {text:?}"
        )),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReportKind {
    Json,
    Html,
}

fn report_kind(path: &Path) -> Option<ReportKind> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    match ext.as_str() {
        "json" => Some(ReportKind::Json),
        "html" | "htm" => Some(ReportKind::Html),
        _ => None,
    }
}

/// Runs `understudy validate` and maps the outcome to the exit code.
pub async fn run(args: ValidateArgs) -> ExitCode {
    let usage = |error: String| {
        eprintln!("error: {error}");
        ExitCode::from(2)
    };
    let setup = match Setup::new(&args).await {
        Ok(setup) => setup,
        Err(error) => return usage(error),
    };
    let thresholds = setup.thresholds.clone();
    let title = args
        .requests
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let limits = (args.concurrency as usize, args.rate);
    let (tally, info) = match replay_all(setup, limits, &args.requests).await {
        Ok(done) => done,
        Err(error) => return usage(error),
    };
    let report = Report::build(&tally, &thresholds, &info);
    print!("{}", report.summary());
    let mut code = if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    };
    for path in &args.report {
        let text = match report_kind(path) {
            Some(ReportKind::Html) => html::render(&report, &tally.window, &title),
            _ => report.to_json(),
        };
        if let Err(error) = std::fs::write(path, text) {
            eprintln!("error: cannot write report {}: {error}", path.display());
            code = ExitCode::from(2);
        }
    }
    code
}

/// The thresholds of the shadow gate (`[rollout]`, defaults when absent),
/// with no time minimum: a replay has no time dimension.
fn thresholds_of(rollout: Option<&config::Rollout>) -> Thresholds {
    Thresholds {
        interval: Duration::ZERO,
        ..rollout.map(Thresholds::from).unwrap_or_default()
    }
}

/// Everything a run needs, checked before the first request.
struct Setup {
    target: Arc<Target>,
    input: Input,
    keep_mismatches: usize,
    thresholds: Thresholds,
}

impl Setup {
    async fn new(args: &ValidateArgs) -> Result<Setup, String> {
        let config = Config::load(&args.config).map_err(|e| e.to_string())?;
        let stable = with_url(&config.stable, args.stable.as_deref(), "--stable")?;
        let candidate = match (&config.candidate, args.candidate.as_deref()) {
            (Some(c), url) => with_url(c, url, "--candidate")?,
            (None, Some(url)) => {
                with_url(&config.stable, Some(url), "--candidate").map(|b| config::Backend {
                    name: "candidate",
                    ..b
                })?
            }
            (None, None) => {
                return Err(format!(
                    "{}: no candidate to validate: add [backends.candidate] or pass --candidate URL",
                    args.config.display()
                ));
            }
        };
        let mode = match &args.path {
            None => Mode::Recorded,
            Some(path) if path.starts_with('/') => Mode::Bodies(
                PathAndQuery::try_from(path.as_str())
                    .map_err(|e| format!("--path {path:?} is not a valid path: {e}"))?,
            ),
            Some(path) => return Err(format!("--path must start with '/', got {path:?}")),
        };
        let comparator = Comparator::new(&config.compare.spec).map_err(|e| e.to_string())?;
        let target = Target {
            stable: Upstream::new(&stable).map_err(|e| e.to_string())?,
            candidate: Upstream::new(&candidate).map_err(|e| e.to_string())?,
            comparator,
            max_body_bytes: config.shadow.max_body_bytes,
            noise: args
                .noise
                .then(|| crate::stats::noise_fields::FieldDiff::new(&config.compare.spec)),
        };
        Ok(Setup {
            target: Arc::new(target),
            input: Input::open(&args.requests, mode).await?,
            keep_mismatches: config.compare.keep_mismatches,
            thresholds: thresholds_of(config.rollout.as_ref()),
        })
    }
}

/// The backend with its URL replaced by `url` (checked like the config's).
fn with_url(
    backend: &config::Backend,
    url: Option<&str>,
    flag: &str,
) -> Result<config::Backend, String> {
    let Some(url) = url else {
        return Ok(backend.clone());
    };
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("{flag}: expected a URL like http://HOST:PORT, got {url:?} ({e})"))?;
    let ok = matches!(uri.scheme_str(), Some("http" | "https"))
        && uri.authority().is_some()
        && matches!(uri.path(), "" | "/")
        && uri.query().is_none();
    if !ok {
        return Err(format!(
            "{flag}: expected http(s)://HOST:PORT without a path, got {url:?}"
        ));
    }
    Ok(config::Backend {
        url: uri,
        ..backend.clone()
    })
}

/// Replays every request, `concurrency` at a time and at most `rate` per
/// second, until the input ends or Ctrl-C. An I/O error reading the input
/// ends the run with that error.
async fn replay_all(
    setup: Setup,
    (concurrency, rate): (usize, Option<f64>),
    requests: &Path,
) -> Result<(Tally, RunInfo), String> {
    let Setup {
        target,
        mut input,
        keep_mismatches,
        ..
    } = setup;
    // Registered now, before the first request, so an early Ctrl-C is
    // never the default "die without a report".
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| format!("cannot handle Ctrl-C: {e}"))?;
    let interrupt = CancellationToken::new();
    let watcher = {
        let interrupt = interrupt.clone();
        tokio::spawn(async move {
            if sigint.recv().await.is_some() {
                interrupt.cancel();
            }
        })
    };
    let mut progress = Progress::new(requests).await;
    let mut ticker = rate.map(|r| {
        let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / r));
        t.set_missed_tick_behavior(MissedTickBehavior::Delay);
        t
    });
    let started = Instant::now();
    let mut tally = Tally::new(keep_mismatches);
    let mut running = JoinSet::new();
    let mut exhausted = false;
    let result = 'run: loop {
        while !exhausted && running.len() < concurrency && !interrupt.is_cancelled() {
            if let Some(ticker) = ticker.as_mut() {
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = interrupt.cancelled() => break,
                }
            }
            match input.next().await {
                Ok(Some(request)) => {
                    running.spawn(replay::exchange(target.clone(), request));
                }
                Ok(None) => exhausted = true,
                Err(error) => break 'run Err(error),
            }
        }
        if interrupt.is_cancelled() || running.is_empty() {
            break Ok(());
        }
        tokio::select! {
            joined = running.join_next() => {
                if let Some(Ok(exchange)) = joined {
                    tally.add(exchange);
                }
            }
            _ = interrupt.cancelled() => {}
        }
        progress.show(&tally, input.skipped);
    };
    // Requests still in flight at Ctrl-C are abandoned, not counted.
    running.abort_all();
    watcher.abort();
    progress.clear();
    result.map(|()| {
        let info = RunInfo {
            skipped_lines: input.skipped,
            interrupted: interrupt.is_cancelled(),
            elapsed: started.elapsed(),
        };
        (tally, info)
    })
}

/// The progress line, shown only when stdout is a terminal.
struct Progress {
    total: Option<u64>,
    last: Option<Instant>,
    enabled: bool,
}

impl Progress {
    async fn new(requests: &Path) -> Progress {
        let enabled = std::io::stdout().is_terminal();
        Progress {
            total: if enabled {
                input::count_lines(requests).await
            } else {
                None
            },
            last: None,
            enabled,
        }
    }

    /// Redraws at most ten times a second.
    fn show(&mut self, tally: &Tally, skipped: u64) {
        if !self.enabled
            || self
                .last
                .is_some_and(|t| t.elapsed() < Duration::from_millis(100))
        {
            return;
        }
        self.last = Some(Instant::now());
        let w = &tally.window;
        let done = tally.replayed;
        let of = self.total.map(|t| format!("/{t}")).unwrap_or_default();
        let rate = crate::units::pct_or_dash(w.match_rate());
        let (se, ce) = (w.stable.serve.errors(), w.candidate.serve.errors());
        let mut out = std::io::stdout().lock();
        let _ = write!(
            out,
            "\r\x1b[2Kreplayed {done}{of}  match {rate}  errors stable {se} candidate {ce}  skipped {skipped}"
        );
        let _ = out.flush();
    }

    fn clear(&self) {
        if self.enabled && self.last.is_some() {
            let mut out = std::io::stdout().lock();
            let _ = write!(out, "\r\x1b[2K");
            let _ = out.flush();
        }
    }
}
