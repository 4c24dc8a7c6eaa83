//! Abuse resistance: per-client and per-token rate limits (429 with `Retry-After`) and a
//! bounded audit of refused unauthenticated requests.
//!
//! * **Per-token limit** ([`crate::ServerConfig::rate_limit_per_min`], `serve
//!   --rate-limit-per-min N`, default 6 000): every authenticated request spends one unit of
//!   its token's bucket, which holds N and refills at N per minute (so a burst of N, then N per
//!   minute). Requests without a valid credential spend from a bucket of the same size per
//!   client address instead. Over it: `429 Too Many Requests` with `Retry-After`, before the
//!   handler runs (no database work, not audited one by one). Another token, or another
//!   address, is unaffected. Memory is bounded: at most [`MAX_TOKENS`] token buckets and
//!   [`MAX_CLIENTS`] address buckets; full (idle) buckets are dropped when the map is full,
//!   and beyond that new keys share one overflow bucket.
//! * **Rate limits**, per client address (token buckets): at most
//!   [`crate::ServerConfig::client_rate_per_s`] requests per second (bursts of twice that),
//!   and at most [`crate::ServerConfig::client_auth_failures_per_min`] refused
//!   authentications (401) per minute (bursts of as many). A client over either limit gets
//!   `429 Too Many Requests` with `Retry-After` (seconds) for every request until its bucket
//!   refills; nothing else is done for it (no database access).
//! * **Bounded audit**: the first refused unauthenticated request (401) of a client in a
//!   minute is audited at once (actor `anonymous@ADDRESS`, patient id truncated to
//!   [`crate::AUDIT_ID_MAX`] characters); the others of that minute, and its 429 answers, are
//!   counted and written as one aggregated record once the minute is over. A flood therefore
//!   costs at most two audit records per client and minute. At most [`MAX_CLIENTS`] clients
//!   are tracked; beyond that, new clients share one bucket and one aggregate (address
//!   `0.0.0.0`).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;

/// Clients tracked at most (rate-limit buckets and audit aggregates).
pub const MAX_CLIENTS: usize = 10_000;

/// Token buckets kept at most (per-token rate limit).
pub const MAX_TOKENS: usize = 100_000;

/// One token bucket per key: capacity `per_min`, refilled at `per_min` per minute.
#[derive(Debug)]
pub struct KeyedLimit<K> {
    per_min: f64,
    max_keys: usize,
    overflow: K,
    map: Mutex<Levels<K>>,
}

/// Bucket levels and when each was last updated; when the map was last pruned.
type Levels<K> = (HashMap<K, (f64, Instant)>, Option<Instant>);

impl<K: std::hash::Hash + Eq + Copy> KeyedLimit<K> {
    /// A limit of `per_min` requests per minute per key (bursts of as many; 0 or less: none),
    /// at most `max_keys` buckets (then new keys share the bucket of `overflow`).
    pub fn new(per_min: f64, max_keys: usize, overflow: K) -> KeyedLimit<K> {
        KeyedLimit {
            per_min,
            max_keys: max_keys.max(1),
            overflow,
            map: Mutex::new((HashMap::new(), None)),
        }
    }

    /// Spend one request of `key`'s bucket: `Err(seconds to wait)` when it is empty.
    pub fn admit(&self, key: K) -> Result<(), u64> {
        if self.per_min <= 0.0 {
            return Ok(());
        }
        let Ok(mut guard) = self.map.lock() else {
            return Ok(());
        };
        let (m, pruned) = &mut *guard;
        let now = Instant::now();
        let cap = self.per_min.max(1.0);
        let per_s = self.per_min / 60.0;
        let mut key = key;
        if !m.contains_key(&key) && m.len() >= self.max_keys {
            // A bucket refilled to capacity is the same as no bucket: drop those (at most once
            // a second, so a stream of new keys does not scan the map every time).
            if pruned.is_none_or(|p| now.duration_since(p).as_secs_f64() >= 1.0) {
                *pruned = Some(now);
                m.retain(|_, (level, at)| {
                    *level + now.duration_since(*at).as_secs_f64() * per_s < cap
                });
            }
            if m.len() >= self.max_keys {
                key = self.overflow;
            }
        }
        let (level, at) = m.entry(key).or_insert((cap, now));
        *level = (*level + now.duration_since(*at).as_secs_f64() * per_s).min(cap);
        *at = now;
        if *level < 1.0 {
            return Err(((1.0 - *level) / per_s).ceil().max(1.0) as u64);
        }
        *level -= 1.0;
        Ok(())
    }

    /// Buckets held (tests, bounds): at most `max_keys` plus the overflow bucket.
    pub fn len(&self) -> usize {
        self.map.lock().map(|m| m.0.len()).unwrap_or(0)
    }

    /// No bucket held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

tokio::task_local! {
    /// The address of the client whose request the current task serves.
    pub static CLIENT: IpAddr;
    /// Who the current request authenticated as (or why not): found once by the middleware,
    /// reused by [`crate::authenticate`].
    pub static AUTH: Result<medtwin_store::Principal, crate::ApiError>;
}

/// The client address of the request being served, if known.
pub fn current_client() -> Option<IpAddr> {
    CLIENT.try_with(|c| *c).ok()
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    requests: f64,
    failures: f64,
    at: Instant,
}

#[derive(Debug, Clone, Default)]
struct Aggregate {
    minute: i64,
    counted: u64,
    limited: u64,
    first_action: String,
}

/// Rate-limit buckets and refused-request aggregates.
#[derive(Debug)]
pub struct Guard {
    rate_per_s: f64,
    failures_per_min: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
    refused: Mutex<Refused>,
    /// Per-token buckets (authenticated requests).
    pub per_token: KeyedLimit<i64>,
    /// Per-address buckets of requests without a valid credential.
    pub per_anonymous: KeyedLimit<IpAddr>,
}

/// The current minute's aggregate per client, and finished ones waiting to be written.
#[derive(Debug, Default)]
struct Refused {
    current: HashMap<IpAddr, Aggregate>,
    finished: Vec<(IpAddr, Aggregate)>,
}

const OVERFLOW: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

fn minute_now() -> i64 {
    medtwin_store::now_ms().div_euclid(60_000)
}

impl Guard {
    /// A guard with these limits (requests per second; refused authentications per minute;
    /// 0 or less: no limit), and no per-token limit (see [`Guard::with_token_limit`]).
    pub fn new(rate_per_s: f64, failures_per_min: f64) -> Guard {
        Guard {
            rate_per_s,
            failures_per_min,
            buckets: Mutex::new(HashMap::new()),
            refused: Mutex::new(Refused::default()),
            per_token: KeyedLimit::new(0.0, MAX_TOKENS, -1),
            per_anonymous: KeyedLimit::new(0.0, MAX_CLIENTS, OVERFLOW),
        }
    }

    /// The per-token limit: `per_min` requests per minute per token (bursts of as many), and
    /// as many per client address for requests without a valid credential (0: none).
    pub fn with_token_limit(mut self, per_min: f64) -> Guard {
        self.per_token = KeyedLimit::new(per_min, MAX_TOKENS, -1);
        self.per_anonymous = KeyedLimit::new(per_min, MAX_CLIENTS, OVERFLOW);
        self
    }

    fn burst(&self) -> (f64, f64) {
        (2.0 * self.rate_per_s, self.failures_per_min.max(1.0))
    }

    /// Admit a request of `ip`: `Err(seconds to wait)` when it is over a limit.
    pub fn admit(&self, ip: IpAddr) -> Result<(), u64> {
        let (burst, fburst) = self.burst();
        let Ok(mut m) = self.buckets.lock() else {
            return Ok(());
        };
        let now = Instant::now();
        if m.len() >= MAX_CLIENTS && !m.contains_key(&ip) {
            m.retain(|_, b| now.duration_since(b.at).as_secs() < 120);
        }
        let key = if m.len() >= MAX_CLIENTS && !m.contains_key(&ip) {
            OVERFLOW
        } else {
            ip
        };
        let b = m.entry(key).or_insert(Bucket {
            requests: burst,
            failures: fburst,
            at: now,
        });
        let dt = now.duration_since(b.at).as_secs_f64();
        b.at = now;
        b.requests = (b.requests + dt * self.rate_per_s).min(burst);
        b.failures = (b.failures + dt * self.failures_per_min / 60.0).min(fburst);
        let mut wait = 0.0f64;
        if self.failures_per_min > 0.0 && b.failures < 1.0 {
            wait = wait.max((1.0 - b.failures) * 60.0 / self.failures_per_min);
        }
        if self.rate_per_s > 0.0 && b.requests < 1.0 {
            wait = wait.max((1.0 - b.requests) / self.rate_per_s);
        }
        if wait > 0.0 {
            return Err(wait.ceil().max(1.0) as u64);
        }
        if self.rate_per_s > 0.0 {
            b.requests -= 1.0;
        }
        Ok(())
    }

    /// Count a refused authentication (401) of `ip`.
    pub fn failed(&self, ip: IpAddr) {
        if self.failures_per_min <= 0.0 {
            return;
        }
        if let Ok(mut m) = self.buckets.lock() {
            let key = if m.contains_key(&ip) { ip } else { OVERFLOW };
            if let Some(b) = m.get_mut(&key) {
                b.failures -= 1.0;
            }
        }
    }

    /// Note a refused unauthenticated request of `ip` (`limited`: a 429). Returns `true` when
    /// it is to be audited at once (the client's first 401 this minute); otherwise it is
    /// counted into the minute's aggregate.
    pub fn note_refused(&self, ip: IpAddr, action: &str, limited: bool) -> bool {
        let Ok(mut r) = self.refused.lock() else {
            return true;
        };
        let r = &mut *r;
        let key = if r.current.len() >= MAX_CLIENTS && !r.current.contains_key(&ip) {
            OVERFLOW
        } else {
            ip
        };
        let minute = minute_now();
        if let Some(a) = r.current.get_mut(&key) {
            if a.minute == minute {
                if limited {
                    a.limited += 1;
                } else {
                    a.counted += 1;
                }
                if a.first_action.is_empty() {
                    a.first_action = action.chars().take(100).collect();
                }
                return false;
            }
        }
        let fresh = Aggregate {
            minute,
            counted: 0,
            limited: u64::from(limited),
            first_action: String::new(),
        };
        if let Some(old) = r.current.insert(key, fresh) {
            if old.counted + old.limited > 0 {
                r.finished.push((key, old));
            }
        }
        !limited
    }

    /// Take the aggregates of finished minutes (all when `all`).
    fn take_finished(&self, all: bool) -> Vec<(IpAddr, Aggregate)> {
        let minute = minute_now();
        let Ok(mut r) = self.refused.lock() else {
            return vec![];
        };
        let r = &mut *r;
        let mut out = std::mem::take(&mut r.finished);
        r.current.retain(|ip, a| {
            if all || a.minute < minute {
                if a.counted + a.limited > 0 {
                    out.push((*ip, a.clone()));
                }
                false
            } else {
                true
            }
        });
        out
    }

    /// Write the aggregated records of finished minutes (every one when `all`).
    pub async fn flush(&self, state: &AppState, all: bool) {
        for (ip, a) in self.take_finished(all) {
            let (minute, counted, limited, first) =
                (a.minute, a.counted, a.limited, a.first_action);
            let at = jiff::Timestamp::from_millisecond(minute * 60_000)
                .map(|t| t.strftime("%Y-%m-%dT%H:%MZ").to_string())
                .unwrap_or_default();
            let e = medtwin_store::AuditEntry {
                at_ms: medtwin_store::now_ms(),
                actor: format!("anonymous@{ip}"),
                action: "refused requests (aggregated)".into(),
                patient_id: None,
                outcome: if counted > 0 { 401 } else { 429 },
                detail: format!(
                    "{counted} further unauthenticated requests refused (401) and {limited} rate-limited (429) during the minute {at}; first: {first}"
                )
                .chars()
                .take(500)
                .collect(),
            };
            if let Err(err) = state.store.audit(&e).await {
                eprintln!("medtwin serve: audit write failed: {err}");
            }
        }
    }
}

/// The middleware: rate limits, and the client address for the audit of the request.
pub async fn middleware(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(OVERFLOW);
    if let Err(wait) = state.guard.admit(ip) {
        let action = format!("{} {}", req.method(), req.uri().path());
        state.guard.note_refused(ip, &action, true);
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, wait.to_string())],
            axum::Json(serde_json::json!({
                "error": format!("too many requests (or refused authentications) from this client; retry after {wait} s")
            })),
        )
            .into_response();
    }
    // Who is calling (once; handlers reuse it through AUTH): the token's bucket, or the
    // address's bucket for requests without a valid credential.
    let who = CLIENT
        .scope(ip, crate::authenticate_headers(&state, req.headers()))
        .await;
    let limited = match &who {
        Ok(p) => state
            .guard
            .per_token
            .admit(p.token_id)
            .err()
            .map(|w| (w, "this token")),
        Err(_) => state
            .guard
            .per_anonymous
            .admit(ip)
            .err()
            .map(|w| (w, "this client without a valid token")),
    };
    if let Some((wait, whose)) = limited {
        if who.is_err() {
            let action = format!("{} {}", req.method(), req.uri().path());
            state.guard.note_refused(ip, &action, true);
        }
        let per_min = state.cfg.rate_limit_per_min;
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, wait.to_string())],
            axum::Json(serde_json::json!({
                "error": format!("too many requests from {whose} (limit {per_min} per minute); retry after {wait} s")
            })),
        )
            .into_response();
    }
    let r = CLIENT.scope(ip, AUTH.scope(who, next.run(req))).await;
    if r.status() == StatusCode::UNAUTHORIZED {
        state.guard.failed(ip);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_limit_is_per_key_and_bounded() {
        let l = KeyedLimit::new(60.0, 1000, -1i64);
        for _ in 0..60 {
            assert!(l.admit(7).is_ok());
        }
        // Empty: wait about a second for the next one (60 per minute).
        assert_eq!(l.admit(7), Err(1));
        assert!(l.admit(8).is_ok());
        // Many distinct keys: never more than 1 000 buckets.
        for k in 0..50_000 {
            let _ = l.admit(100 + k);
        }
        assert!(l.len() <= 1001, "{}", l.len());
        // No limit at all.
        let off = KeyedLimit::new(0.0, 10, -1i64);
        assert!((0..10_000).all(|k| off.admit(k).is_ok()));
        assert!(off.is_empty());
    }

    #[test]
    fn full_buckets_are_dropped_when_the_map_is_full() {
        // 6 000 000 per minute: a bucket refills within milliseconds.
        let l = KeyedLimit::new(6_000_000.0, 100, -1i64);
        for k in 0..100 {
            l.admit(k).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        // The 100 buckets are full again: a new key evicts them instead of overflowing (the
        // first prune of this map, so not held back by the once-a-second rule).
        l.admit(1000).unwrap();
        assert_eq!(l.len(), 1);
    }
}
