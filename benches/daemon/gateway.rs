//! Part 6: the gateway (SPEC sections 10 and 11). One built-in worker that hub keeps loaded
//! (`state: loaded`) is reached three ways, in alternating rounds (direct, nginx, hub, direct,
//! ...): directly on its own port, through nginx `proxy_pass`, and through hub's own
//! `/v1/chat/completions` by its `model` name.
//!
//! 1. Small non-streaming chat completions under wrk (a Lua script makes them POSTs): requests
//!    per second and p50/p99 with status reads' threads and connections, then latency on one
//!    connection, where a proxy's added p50 is its own cost rather than queueing behind its
//!    lower throughput.
//! 2. 64 concurrent streams (`"stream": true`, 64 tokens each) in a loop: SSE data events
//!    (tokens) per second.
//! 3. A cold request: a `state: stopped` model, one streaming request through hub; its time to
//!    first token split into the worker's start and load (hub's status timestamps: the model's
//!    `worker.started_at`, its `ready` event and `memory.loaded_at`) and hub's own overhead, the
//!    rest. The model is stopped again between rounds.
//! 4. Thrash: two `state: running` models in a `max_loaded: 1` group, 100 clients each picking
//!    either at random for every small request: swaps (loads, counted from `/hub/events`) per
//!    second, requests answered, and requests lost (anything but 200, or a transport error).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use futures_util::StreamExt;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::daemon::Daemon;
use crate::harness::free_port;
use crate::status_reads::{MIN_ROUNDS, Nginx, Wrk, wrk_with};
use crate::support::{Samples, millis, ms, row, verdict};
use crate::worker::Worker;
use crate::{between, client, env_number, header, installed, time_at};

pub const PART: &str = "6 gateway";

/// SPEC section 10's targets: hub's requests (and tokens) per second at least nginx's, its added
/// p50 under 0.3 ms, and a cold request's overhead over the engine's start and load under 5 ms.
pub const HUB_PER_NGINX_TARGET: f64 = 1.0;
pub const ADDED_P50_TARGET_MS: f64 = 0.3;
pub const COLD_OVERHEAD_TARGET_MS: f64 = 5.0;

/// Concurrent streaming clients, and the tokens each stream asks for.
pub const STREAMS: usize = 64;
pub const STREAM_TOKENS: usize = 64;
/// Tokens of a small non-streaming completion.
pub const SMALL_TOKENS: usize = 8;
/// Concurrent clients of the thrash test.
pub const THRASH_CLIENTS: usize = 100;

/// The model kept loaded, the cold one, and the pair that shares one slot.
const WARM: &str = "m0000";
const COLD: &str = "m0001";
const PAIR: [&str; 2] = ["m0002", "m0003"];

fn hub_yaml(starting_port: u16) -> String {
    let mut yaml = header(starting_port);
    yaml.push_str("models:\n");
    for (name, state, group) in [
        (WARM, "loaded", ""),
        (COLD, "stopped", ""),
        (PAIR[0], "running", ", group: pair"),
        (PAIR[1], "running", ", group: pair"),
    ] {
        yaml.push_str(&format!(
            "  - {{name: {name}, model_path: models/{name}.txt, model_type: lm, state: {state}{group}}}\n"
        ));
    }
    yaml.push_str("groups:\n  - {name: pair, max_loaded: 1}\n");
    yaml
}

fn chat_body(model: &str, stream: bool, max_tokens: usize) -> String {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": max_tokens,
        "stream": stream,
    })
    .to_string()
}

/// The three ways to the same worker, in the order of each round.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Direct,
    Nginx,
    Hub,
}

const SIDES: [Side; 3] = [Side::Direct, Side::Nginx, Side::Hub];

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Direct => "direct",
            Side::Nginx => "nginx",
            Side::Hub => "hub",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A figure per side per round; `None` where that side failed.
type PerRound<T> = Vec<[Option<T>; 3]>;

/// The figures of `side` over the rounds it ran.
fn of<T>(rounds: &PerRound<T>, side: Side, figure: impl Fn(&T) -> f64) -> Samples {
    Samples::new(
        rounds
            .iter()
            .filter_map(|r| r[side.index()].as_ref().map(&figure))
            .collect(),
    )
}

/// `a / b` (or `a - b`) of each round where both sides ran.
fn paired<T>(rounds: &PerRound<T>, a: Side, b: Side, combine: impl Fn(&T, &T) -> f64) -> Samples {
    Samples::new(
        rounds
            .iter()
            .filter_map(|r| Some(combine(r[a.index()].as_ref()?, r[b.index()].as_ref()?)))
            .collect(),
    )
}

/// `median (min-max)` with a unit-formatting function.
fn spread(samples: &Samples, format: impl Fn(f64) -> String) -> String {
    if samples.len() == 0 {
        return "n/a".to_string();
    }
    format!(
        "{} ({}-{})",
        format(samples.median()),
        format(samples.min()),
        format(samples.max())
    )
}

fn count(value: f64) -> String {
    format!("{value:.0}")
}

fn percent(value: f64) -> String {
    format!("{:.0}%", value * 100.0)
}

pub async fn gateway(seconds: u64, rounds: u64) -> anyhow::Result<()> {
    let threads = env_number("HUB_BENCH_WRK_THREADS", 1);
    let connections = env_number("HUB_BENCH_WRK_CONNECTIONS", 32);
    let tools = installed("wrk") && installed("nginx");
    println!(
        "gateway: direct, nginx proxy_pass and hub /v1 to one worker, {rounds} alternating rounds: wrk -t{threads} -c{connections} -d{seconds}s and -c1, {STREAMS} streams for {seconds} s; a cold request; thrash"
    );
    let port = free_port()?;
    let hub = Daemon::start(&hub_yaml(port), 4, &[])?;
    hub.converged(1, Duration::from_secs(30)).await?;
    let status = hub.status().await?;
    let worker_port = model(&status, WARM)?["worker"]["port"]
        .as_u64()
        .context("the loaded model has no worker port")?;
    let direct = format!("http://127.0.0.1:{worker_port}/v1/chat/completions");
    let through_hub = format!("{}/v1/chat/completions", hub.url);

    // Which sides can be measured: each answers one completion first, so a side that cannot
    // (hub before it has a gateway: 404) is reported once, not measured as a storm of errors.
    let mut failures: Vec<String> = Vec::new();
    let mut broken: [Option<String>; 3] = [None, None, None];
    let nginx = if tools {
        Some(proxy(worker_port)?)
    } else {
        broken[Side::Nginx.index()] = Some(
            "wrk or nginx is not installed (bench/run installs them: apt-get install nginx-light wrk)"
                .to_string(),
        );
        None
    };
    let urls = [
        direct.clone(),
        nginx
            .as_ref()
            .map(|n| n.url().to_string())
            .unwrap_or_default(),
        through_hub.clone(),
    ];
    for side in SIDES {
        if broken[side.index()].is_some() {
            continue;
        }
        let patience = if side == Side::Nginx { 10 } else { 1 };
        if let Err(e) = probe(&hub.http, &urls[side.index()], patience).await {
            broken[side.index()] = Some(format!("{e:#}"));
        }
    }
    for side in SIDES {
        if let Some(error) = &broken[side.index()] {
            println!("  {}: {error}", side.name());
        }
    }

    let enough = rounds >= MIN_ROUNDS;
    let shortfall = if enough {
        String::new()
    } else {
        format!(" (fewer than {MIN_ROUNDS} rounds: cannot pass)")
    };

    // 1. Small non-streaming completions under wrk, then on one connection.
    if tools {
        let script = tempfile::NamedTempFile::new()?;
        std::fs::write(
            script.path(),
            format!(
                "wrk.method = \"POST\"\nwrk.body = '{}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\n",
                chat_body(WARM, false, SMALL_TOKENS).replace(",\"stream\":false", "")
            ),
        )?;
        let latency_seconds = seconds.div_ceil(2).max(1);
        let mut loaded: PerRound<Wrk> = Vec::new();
        let mut single: PerRound<Wrk> = Vec::new();
        for round in 1..=rounds {
            println!("  non-streaming, round {round} of {rounds}");
            for (runs, connections, seconds) in [
                (&mut loaded, connections, seconds),
                (&mut single, 1, latency_seconds),
            ] {
                let mut this = [None, None, None];
                for side in SIDES {
                    if broken[side.index()].is_some() {
                        continue;
                    }
                    let url = &urls[side.index()];
                    let run = wrk_with(url, threads, connections, seconds, Some(script.path()));
                    let run = run.await;
                    if let Ok(run) = &run {
                        println!("    {} {}", side.name(), described(run, connections));
                    }
                    match run {
                        Ok(run) if run.errors.is_empty() => this[side.index()] = Some(run),
                        Ok(run) => {
                            broken[side.index()] =
                                Some(format!("wrk counted errors: {}", run.errors.join("; ")))
                        }
                        Err(e) => broken[side.index()] = Some(format!("{e:#}")),
                    }
                }
                runs.push(this);
            }
        }
        let ratio = paired(&loaded, Side::Hub, Side::Nginx, |h, n| h.rps / n.rps);
        let sides = SIDES
            .iter()
            .map(|&side| {
                format!(
                    "{} {}",
                    side.name(),
                    spread(&of(&loaded, side, |w| w.rps), count)
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let failed = failed_sides(&broken);
        row(
            PART,
            &format!(
                "non-streaming chat (-c{connections}): hub / nginx requests per second, median of {} rounds (min-max)",
                ratio.len()
            ),
            &format!("{}; {sides}{failed}{shortfall}", spread(&ratio, percent)),
            &format!(">= {:.0}%", HUB_PER_NGINX_TARGET * 100.0),
            verdict(enough && all_ran(&broken) && ratio.median() >= HUB_PER_NGINX_TARGET),
        );
        // Under load a proxy's p50 is mostly queueing behind its own throughput (Little's law:
        // p50 ~ connections / requests per second), so the target is judged on one connection
        // below; these are shown for completeness.
        let added_loaded = paired(&loaded, Side::Hub, Side::Direct, |h, d| h.p50_ms - d.p50_ms);
        let per_side = SIDES
            .iter()
            .map(|&side| {
                format!(
                    "{} {} / {}",
                    side.name(),
                    ms(of(&loaded, side, |w| w.p50_ms).median()),
                    ms(of(&loaded, side, |w| w.p99_ms).median())
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        row(
            PART,
            &format!(
                "non-streaming chat (-c{connections}): hub's added p50 over direct (min-max); p50 / p99 per side, medians of the rounds"
            ),
            &format!("{}; {per_side}", spread(&added_loaded, ms)),
            "-",
            "-",
        );
        let added = paired(&single, Side::Hub, Side::Direct, |h, d| h.p50_ms - d.p50_ms);
        let nginx_added = paired(&single, Side::Nginx, Side::Direct, |n, d| {
            n.p50_ms - d.p50_ms
        });
        row(
            PART,
            &format!(
                "non-streaming chat on one connection (-c1): hub's added p50 over direct, median of {} rounds (min-max)",
                added.len()
            ),
            &format!(
                "{}; nginx's {}; p50 direct {}, nginx {}, hub {}; p99 direct {}, nginx {}, hub {}{failed}{shortfall}",
                spread(&added, ms),
                spread(&nginx_added, ms),
                ms(of(&single, Side::Direct, |w| w.p50_ms).median()),
                ms(of(&single, Side::Nginx, |w| w.p50_ms).median()),
                ms(of(&single, Side::Hub, |w| w.p50_ms).median()),
                ms(of(&single, Side::Direct, |w| w.p99_ms).median()),
                ms(of(&single, Side::Nginx, |w| w.p99_ms).median()),
                ms(of(&single, Side::Hub, |w| w.p99_ms).median()),
            ),
            &format!("< {ADDED_P50_TARGET_MS} ms"),
            verdict(enough && all_ran(&broken) && added.median() < ADDED_P50_TARGET_MS),
        );
    } else {
        row(
            PART,
            "non-streaming chat: skipped",
            "wrk or nginx is not installed (bench/run installs them: apt-get install nginx-light wrk)",
            &format!(">= {:.0}% of nginx", HUB_PER_NGINX_TARGET * 100.0),
            "MISS",
        );
    }

    // 2. 64 concurrent streams.
    let streaming = client_without_timeout();
    let mut streamed: PerRound<f64> = Vec::new();
    for round in 1..=rounds {
        println!("  {STREAMS} streams, round {round} of {rounds}");
        let mut this = [None, None, None];
        for side in SIDES {
            if broken[side.index()].is_some() {
                continue;
            }
            match streams(&streaming, &urls[side.index()], seconds).await {
                Ok(tokens_per_second) => {
                    println!("    {} {tokens_per_second:.0} tokens/s", side.name());
                    this[side.index()] = Some(tokens_per_second);
                }
                Err(e) => broken[side.index()] = Some(format!("{e:#}")),
            }
        }
        streamed.push(this);
    }
    let ratio = paired(&streamed, Side::Hub, Side::Nginx, |h, n| h / n);
    let sides = SIDES
        .iter()
        .map(|&side| {
            format!(
                "{} {}",
                side.name(),
                spread(&of(&streamed, side, |t| *t), count)
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    row(
        PART,
        &format!(
            "{STREAMS} concurrent streams ({STREAM_TOKENS} tokens each, in a loop): hub / nginx tokens per second, median of {} rounds (min-max)",
            ratio.len()
        ),
        &format!(
            "{}; {sides}{}{shortfall}",
            spread(&ratio, percent),
            failed_sides(&broken)
        ),
        &format!(">= {:.0}%", HUB_PER_NGINX_TARGET * 100.0),
        verdict(enough && all_ran(&broken) && ratio.median() >= HUB_PER_NGINX_TARGET),
    );
    for side in SIDES {
        if let Some(error) = &broken[side.index()] {
            failures.push(format!("{}: {error}", side.name()));
        }
    }
    drop(nginx);

    // 3. A cold request.
    if let Err(e) = cold(&hub, rounds, &shortfall).await {
        row(
            PART,
            "cold request: hub's overhead over the worker's start and load",
            &format!("failed: {e:#}"),
            &format!("< {COLD_OVERHEAD_TARGET_MS} ms"),
            "MISS",
        );
        failures.push(format!("cold request: {e:#}"));
    }

    // 4. Thrash.
    let thrash_seconds = seconds.max(1);
    if let Err(e) = thrash(&hub, thrash_seconds).await {
        row(
            PART,
            &format!(
                "thrash: 2 models in a max_loaded: 1 group, {THRASH_CLIENTS} clients, {thrash_seconds} s"
            ),
            &format!("failed: {e:#}"),
            "0 lost",
            "MISS",
        );
        failures.push(format!("thrash: {e:#}"));
    }

    hub.shutdown().await?;
    if !failures.is_empty() {
        let failures: Vec<String> = failures.iter().map(|f| first_line(f)).collect();
        bail!("{}", failures.join("; "));
    }
    Ok(())
}

/// Whether every side ran every round: a ratio over the rounds before a side broke does not pass.
fn all_ran(broken: &[Option<String>; 3]) -> bool {
    broken.iter().all(Option::is_none)
}

/// `; hub failed: ...` for each side that could not be measured (its figures are missing).
fn failed_sides(broken: &[Option<String>; 3]) -> String {
    SIDES
        .iter()
        .filter_map(|&side| {
            let error = broken[side.index()].as_ref()?;
            Some(format!("; {} failed: {}", side.name(), first_line(error)))
        })
        .collect()
}

/// A wrk run in one line.
fn described(run: &Wrk, connections: u64) -> String {
    let errors = if run.errors.is_empty() {
        String::new()
    } else {
        format!(", errors: {}", run.errors.join("; "))
    };
    format!(
        "-c{connections}: {:.0} req/s, p50 {}, p99 {}{errors}",
        run.rps,
        ms(run.p50_ms),
        ms(run.p99_ms)
    )
}

fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    let mut short: String = line.chars().take(120).collect();
    if short.len() < line.len() {
        short.push('…');
    }
    short
}

fn model<'a>(status: &'a Value, name: &str) -> anyhow::Result<&'a Value> {
    status["models"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["name"] == name)
        .with_context(|| format!("model {name} is not in the status"))
}

fn client_without_timeout() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("a plain HTTP client always builds")
}

/// nginx in front of the worker, configured as a competent operator would for an OpenAI API:
/// one `upstream` with `keepalive 64` and HTTP/1.1 with an empty `Connection` header, so nginx
/// reuses its connections to the worker instead of opening one per request; `proxy_buffering
/// off`, so a stream reaches the client token by token (as hub's passthrough must) and small
/// answers are not copied through buffers; long read timeouts for long generations.
fn proxy(worker_port: u64) -> anyhow::Result<Nginx> {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let http = format!(
        "    upstream worker {{
        server 127.0.0.1:{worker_port};
        keepalive 64;
        keepalive_requests 1000000;
        keepalive_timeout 60s;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://worker;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host $host;
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 300s;
        }}
    }}
"
    );
    Nginx::run(
        dir,
        &http,
        format!("http://127.0.0.1:{port}/v1/chat/completions"),
    )
}

/// One small completion at `url` must answer 200 with a choice. Transport errors are retried for
/// `patience` seconds (nginx starting); any other answer fails at once.
async fn probe(http: &reqwest::Client, url: &str, patience: u64) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        match http
            .post(url)
            .header("content-type", "application/json")
            .body(chat_body(WARM, false, SMALL_TOKENS))
            .send()
            .await
        {
            Ok(response) => {
                let status = response.status();
                let text = response.text().await?;
                ensure!(
                    status.is_success(),
                    "{url} answered {status}: {}",
                    first_line(&text)
                );
                let answer: Value = serde_json::from_str(&text)
                    .with_context(|| format!("{url} answered no JSON: {}", first_line(&text)))?;
                ensure!(
                    answer["choices"][0]["message"]["content"].is_string(),
                    "{url} answered no completion: {}",
                    first_line(&text)
                );
                return Ok(());
            }
            Err(e) if started.elapsed() < Duration::from_secs(patience) => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(anyhow!(e).context(format!("{url} did not answer"))),
        }
    }
}

/// [`STREAMS`] clients each running streaming completions at `url` back to back for `seconds`;
/// the SSE data events received (tokens, not counting `[DONE]`) per second. Any failed stream
/// fails the run.
async fn streams(http: &reqwest::Client, url: &str, seconds: u64) -> anyhow::Result<f64> {
    let body = chat_body(WARM, true, STREAM_TOKENS);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..STREAMS {
        let (http, url, body) = (http.clone(), url.to_string(), body.clone());
        tasks.spawn(async move {
            let mut tokens = 0u64;
            while Instant::now() < deadline {
                let (got, _) = stream_once(&http, &url, &body, None).await?;
                ensure!(
                    got == STREAM_TOKENS as u64,
                    "a stream ended after {got} of {STREAM_TOKENS} tokens"
                );
                tokens += got;
            }
            anyhow::Ok(tokens)
        });
    }
    let mut tokens = 0;
    while let Some(joined) = tasks.join_next().await {
        tokens += joined??;
    }
    Ok(tokens as f64 / started.elapsed().as_secs_f64())
}

/// One streaming completion: the tokens it brought and when the first arrived (from `sent`, or
/// from the call when `None`). Fails on a non-200 answer, a transport error, or a stream that
/// ends without `[DONE]`.
async fn stream_once(
    http: &reqwest::Client,
    url: &str,
    body: &str,
    sent: Option<Instant>,
) -> anyhow::Result<(u64, Option<Duration>)> {
    let sent = sent.unwrap_or_else(Instant::now);
    let response = http
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .with_context(|| format!("{url} did not answer"))?;
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        bail!("{url} answered {status}: {}", first_line(&text));
    }
    let mut chunks = response.bytes_stream();
    let mut pending: Vec<u8> = Vec::new();
    let mut tokens = 0u64;
    let mut first = None;
    while let Some(chunk) = chunks.next().await {
        pending.extend_from_slice(&chunk.with_context(|| format!("{url}: the stream broke"))?);
        // Whole events only: an event may arrive split across chunks.
        while let Some(end) = pending.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = pending.drain(..end + 2).collect();
            for line in event.split(|&b| b == b'\n') {
                let Some(data) = line.strip_prefix(b"data:") else {
                    continue;
                };
                if data.trim_ascii() == b"[DONE]" {
                    return Ok((tokens, first));
                }
                // A token is a chunk with content; the last chunk only says why it ended.
                if data.windows(9).any(|w| w == b"\"content\"") {
                    tokens += 1;
                    first.get_or_insert_with(|| sent.elapsed());
                }
            }
        }
    }
    bail!("{url}: the stream ended without [DONE] after {tokens} tokens")
}

/// The cold request, over `rounds` rounds: the stopped model is asked for through hub, its first
/// token timed, and the model stopped again.
async fn cold(hub: &Daemon, rounds: u64, shortfall: &str) -> anyhow::Result<()> {
    let url = format!("{}/v1/chat/completions", hub.url);
    let body = chat_body(COLD, true, STREAM_TOKENS);
    let model_path = hub.dir.path().join(format!("models/{COLD}.txt"));
    let mut ttft = Vec::new();
    let mut start_and_load = Vec::new();
    let mut starts = Vec::new();
    let mut loads = Vec::new();
    let mut before_spawn = Vec::new();
    let mut after_load = Vec::new();
    let mut overhead = Vec::new();
    let mut engine = Vec::new();
    for round in 1..=rounds {
        println!("  cold request, round {round} of {rounds}");
        stop_cold(hub).await?;
        // The engine's own start and load, the same file, started directly: what hub's
        // timestamps should show, plus hub's health-check and load-call latency.
        engine.push(engine_start_and_load(&model_path).await?);
        let sent_at = OffsetDateTime::now_utc();
        let sent = Instant::now();
        let (tokens, first) = stream_once(&hub.http, &url, &body, Some(sent)).await?;
        let first = millis(first.context("the cold request's stream brought no token")?);
        ensure!(tokens > 0, "the cold request brought no token");
        let (status, _) = hub
            .wait_for(
                "the cold model's loaded_at",
                Duration::from_secs(10),
                Duration::from_millis(5),
                |s| {
                    model(s, COLD).is_ok_and(|m| {
                        time_at(&m["memory"]["loaded_at"]).is_ok_and(|t| t >= sent_at)
                    })
                },
            )
            .await?;
        let m = model(&status, COLD)?;
        let started_at = time_at(&m["worker"]["started_at"])?;
        let loaded_at = time_at(&m["memory"]["loaded_at"])?;
        ensure!(
            started_at >= sent_at,
            "the cold model's worker started at {started_at}, before the request ({sent_at}): it was not stopped"
        );
        let worker = between(started_at, loaded_at);
        // The `ready` event splits the worker's time into start and load.
        if let Some(ready) = ready_event(hub, sent_at).await? {
            starts.push(between(started_at, ready));
            loads.push(between(ready, loaded_at));
        }
        ttft.push(first);
        start_and_load.push(worker);
        before_spawn.push(between(sent_at, started_at));
        after_load.push(first - between(sent_at, loaded_at));
        overhead.push(first - worker);
        if std::env::var_os("HUB_BENCH_VERBOSE").is_some() {
            eprintln!(
                "cold: ttft {first:.2} ms, worker start + load {worker:.2} ms, overhead {:.2} ms",
                first - worker
            );
        }
    }
    stop_cold(hub).await?;
    let ttft = Samples::new(ttft);
    let overhead = Samples::new(overhead);
    let enough = rounds >= MIN_ROUNDS;
    row(
        PART,
        &format!(
            "cold request (stopped model, streaming): hub's overhead = TTFT - (worker start + load), median of {} rounds (min-max)",
            overhead.len()
        ),
        &format!(
            "{}; TTFT {}, worker start + load {} (start {}, load {}); hub before the spawn {}, after the load {}{shortfall}",
            spread(&overhead, ms),
            spread(&ttft, ms),
            ms(Samples::new(start_and_load).median()),
            ms(Samples::new(starts).median()),
            ms(Samples::new(loads).median()),
            ms(Samples::new(before_spawn).median()),
            ms(Samples::new(after_load).median()),
        ),
        &format!("< {COLD_OVERHEAD_TARGET_MS} ms"),
        verdict(enough && overhead.median() < COLD_OVERHEAD_TARGET_MS),
    );
    let engine = Samples::new(engine);
    row(
        PART,
        "cold request: the engine's own start + load (the worker started directly, health polled every 1 ms); TTFT beyond it",
        &format!(
            "{}; TTFT - that {}",
            spread(&engine, ms),
            ms(ttft.median() - engine.median())
        ),
        "-",
        "-",
    );
    Ok(())
}

/// Stops the cold model (an imperative stop, which agrees with its `state: stopped`) and waits
/// until its worker is gone.
async fn stop_cold(hub: &Daemon) -> anyhow::Result<()> {
    hub.http
        .post(format!("{}/hub/models/{COLD}/stop", hub.url))
        .header(hub::api::CLIENT_HEADER, "bench")
        .send()
        .await?;
    hub.wait_for(
        "the cold model stopped",
        Duration::from_secs(30),
        Duration::from_millis(5),
        |s| {
            model(s, COLD)
                .is_ok_and(|m| m["worker"]["phase"] == "stopped" && m["worker"]["pid"].is_null())
        },
    )
    .await?;
    Ok(())
}

/// The time of the cold model's latest `ready` phase event at or after `since`, if it has one.
async fn ready_event(
    hub: &Daemon,
    since: OffsetDateTime,
) -> anyhow::Result<Option<OffsetDateTime>> {
    let detail: Value = hub
        .http
        .get(format!("{}/hub/models/{COLD}", hub.url))
        .send()
        .await?
        .json()
        .await?;
    Ok(detail["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["kind"] == "phase" && e["message"] == "ready")
        .filter_map(|e| time_at(&e["time"]).ok())
        .rfind(|t| *t >= since))
}

/// Spawn to healthy plus one `POST /load`, of a worker started here on `model_path`.
async fn engine_start_and_load(model_path: &Path) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let http = client();
    let port = free_port()?;
    let started = Instant::now();
    let mut worker = Worker::spawn(model_path, port, dir.path())?;
    worker.wait_healthy(&http, port).await?;
    let response = http
        .post(format!("http://127.0.0.1:{port}/load"))
        .send()
        .await?;
    ensure!(
        response.status().is_success(),
        "the worker's load answered {}",
        response.status()
    );
    let elapsed = millis(started.elapsed());
    worker.stop();
    Ok(elapsed)
}

/// Two models in a `max_loaded: 1` group, [`THRASH_CLIENTS`] clients for `seconds`, each
/// request for either at random. Swaps are the pair's loads in that time, read from the event
/// stream; lost requests are any answer but 200, or a transport error.
async fn thrash(hub: &Daemon, seconds: u64) -> anyhow::Result<()> {
    println!("  thrash: {THRASH_CLIENTS} clients, {seconds} s, 2 models sharing one slot");
    let url = format!("{}/v1/chat/completions", hub.url);
    // One request first, so a hub without a gateway fails here, once.
    let http = client_without_timeout();
    let response = http
        .post(&url)
        .header("content-type", "application/json")
        .body(chat_body(PAIR[0], false, SMALL_TOKENS))
        .send()
        .await?;
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        bail!("{url} answered {status}: {}", first_line(&text));
    }
    response.bytes().await?;

    // Count the pair's loads from the event stream (subscribed before the clients start).
    let counting = Arc::new(AtomicBool::new(true));
    let swaps = Arc::new(AtomicU64::new(0));
    let lagged = Arc::new(AtomicU64::new(0));
    let events = http
        .get(format!("{}/hub/events", hub.url))
        .send()
        .await?
        .error_for_status()?;
    let counter = {
        let (counting, swaps, lagged) = (counting.clone(), swaps.clone(), lagged.clone());
        tokio::spawn(async move {
            let mut chunks = events.bytes_stream();
            let mut pending: Vec<u8> = Vec::new();
            while let Some(Ok(chunk)) = chunks.next().await {
                pending.extend_from_slice(&chunk);
                while let Some(end) = pending.windows(2).position(|w| w == b"\n\n") {
                    let event: Vec<u8> = pending.drain(..end + 2).collect();
                    if !counting.load(Ordering::Relaxed) {
                        continue;
                    }
                    let text = String::from_utf8_lossy(&event);
                    if text.lines().any(|l| l.trim() == "event: lagged") {
                        lagged.fetch_add(1, Ordering::Relaxed);
                    }
                    for data in text.lines().filter_map(|l| l.strip_prefix("data:")) {
                        let Ok(event) = serde_json::from_str::<Value>(data.trim()) else {
                            continue;
                        };
                        let ours = PAIR.iter().any(|p| event["model"] == *p);
                        let load = event["kind"] == "memory"
                            && event["message"]
                                .as_str()
                                .is_some_and(|m| m.starts_with("loaded"));
                        if ours && load {
                            swaps.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        })
    };

    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..THRASH_CLIENTS {
        let (http, url) = (http.clone(), url.clone());
        let mut random =
            0x9E37_79B9_7F4A_7C15u64 ^ (client as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        let bodies = PAIR.map(|p| chat_body(p, false, SMALL_TOKENS));
        tasks.spawn(async move {
            let mut answered = 0u64;
            let mut lost: BTreeMap<String, u64> = BTreeMap::new();
            while Instant::now() < deadline {
                // xorshift64
                random ^= random << 13;
                random ^= random >> 7;
                random ^= random << 17;
                let body = &bodies[(random >> 32) as usize % 2];
                let outcome = async {
                    let response = http
                        .post(&url)
                        .header("content-type", "application/json")
                        .timeout(Duration::from_secs(60))
                        .body(body.clone())
                        .send()
                        .await?;
                    let status = response.status();
                    response.bytes().await?;
                    anyhow::Ok(status)
                }
                .await;
                match outcome {
                    Ok(status) if status == reqwest::StatusCode::OK => answered += 1,
                    Ok(status) => *lost.entry(status.as_u16().to_string()).or_default() += 1,
                    Err(e) => {
                        let kind = e
                            .downcast_ref::<reqwest::Error>()
                            .map(|e| {
                                if e.is_timeout() {
                                    "timeout"
                                } else {
                                    "transport error"
                                }
                            })
                            .unwrap_or("error");
                        *lost.entry(kind.to_string()).or_default() += 1;
                    }
                }
            }
            (answered, lost)
        });
    }
    let mut answered = 0;
    let mut lost: BTreeMap<String, u64> = BTreeMap::new();
    while let Some(joined) = tasks.join_next().await {
        let (a, l) = joined?;
        answered += a;
        for (kind, n) in l {
            *lost.entry(kind).or_default() += n;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    // Events of the last swaps may still be on their way.
    tokio::time::sleep(Duration::from_millis(200)).await;
    counting.store(false, Ordering::Relaxed);
    counter.abort();
    let _ = counter.await;
    let swaps = swaps.load(Ordering::Relaxed);
    let lagged = lagged.load(Ordering::Relaxed);
    let lost_total: u64 = lost.values().sum();
    let lost_text = if lost.is_empty() {
        "0".to_string()
    } else {
        format!(
            "{lost_total} ({})",
            lost.iter()
                .map(|(kind, n)| format!("{kind}: {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    row(
        PART,
        &format!(
            "thrash: 2 models in a max_loaded: 1 group, {THRASH_CLIENTS} clients picking either at random, {seconds} s: swaps per second, answered, lost"
        ),
        &format!(
            "{:.1} swaps/s ({swaps} loads{}); {answered} answered ({:.0}/s); lost {lost_text}",
            swaps as f64 / elapsed,
            if lagged > 0 {
                format!(", the event stream lagged {lagged} times: more swaps than counted")
            } else {
                String::new()
            },
            answered as f64 / elapsed,
        ),
        "0 lost",
        verdict(lost_total == 0 && answered > 0),
    );
    Ok(())
}
