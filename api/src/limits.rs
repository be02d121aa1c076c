//! Limits on every door: sign-in, registration and refresh per client
//! address and per account; the anonymous collector per address and per
//! session; anonymous websocket connections per address and subscription
//! snapshots per connection; and a bound on concurrent password hashing
//! (argon2id takes 19 MiB each). Over a rate: `429` with `Retry-After`;
//! over the hashing bound: `503` with `Retry-After`. Every refusal is counted
//! in `shopstream_rate_limited_total{door}`.
//!
//! The client address is the peer's, or — only when the peer is one of the
//! configured trusted proxies — the right-most address in `X-Forwarded-For`
//! that is not itself a trusted proxy (as a load balancer appends it).

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    num::NonZeroU32,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{extract::FromRequestParts, http::HeaderMap, http::request::Parts};
use governor::{
    Quota, RateLimiter,
    clock::{Clock, DefaultClock},
    state::keyed::HashMapStateStore,
};

use crate::{AppState, error::ApiError};

/// The limits, as configured. A rate of 0 turns that limit off.
#[derive(Clone, Debug)]
pub struct LimitsConfig {
    /// Sign-ins, registrations and refreshes per client address per minute.
    pub auth_per_address_per_minute: u32,
    /// Sign-ins and refreshes per account (e-mail address) per minute.
    pub auth_per_account_per_minute: u32,
    /// Anonymous `POST /api/events` requests per client address per minute.
    pub collector_per_address_per_minute: u32,
    /// Anonymous `POST /api/events` requests per session per minute.
    pub collector_per_session_per_minute: u32,
    /// Anonymous websocket connections open at once per client address.
    pub ws_anonymous_per_address: usize,
    /// Subscriptions (each answered with a snapshot) per websocket
    /// connection per minute.
    pub ws_snapshots_per_minute: u32,
    /// Password hashes computed at once; more wait up to a second, then get
    /// `503`.
    pub hash_concurrency: usize,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<Cidr>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            auth_per_address_per_minute: 30,
            auth_per_account_per_minute: 10,
            collector_per_address_per_minute: 600,
            collector_per_session_per_minute: 120,
            ws_anonymous_per_address: 20,
            ws_snapshots_per_minute: 120,
            hash_concurrency: 4,
            trusted_proxies: Vec::new(),
        }
    }
}

/// A door with a rate limit, for metrics and messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Door {
    AuthAddress,
    AuthAccount,
    CollectorAddress,
    CollectorSession,
    WsConnections,
    WsSnapshots,
    Hashing,
}

impl Door {
    pub fn as_str(self) -> &'static str {
        match self {
            Door::AuthAddress => "auth_address",
            Door::AuthAccount => "auth_account",
            Door::CollectorAddress => "collector_address",
            Door::CollectorSession => "collector_session",
            Door::WsConnections => "ws_connections",
            Door::WsSnapshots => "ws_snapshots",
            Door::Hashing => "hashing",
        }
    }
}

type Keyed = RateLimiter<String, HashMapStateStore<String>, DefaultClock>;

/// One keyed rate limit (`None`: off).
struct Rate {
    door: Door,
    limiter: Option<Keyed>,
    checks: AtomicU64,
}

impl Rate {
    fn new(door: Door, per_minute: u32) -> Self {
        Self {
            door,
            limiter: NonZeroU32::new(per_minute)
                .map(|n| RateLimiter::hashmap(Quota::per_minute(n))),
            checks: AtomicU64::new(0),
        }
    }

    fn check(&self, key: &str) -> Result<(), ApiError> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        // Forget keys that are back to full capacity now and then, so the
        // map stays as small as the set of recent callers.
        if self.checks.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            limiter.retain_recent();
        }
        limiter.check_key(&key.to_owned()).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            refused(self.door, wait)
        })
    }
}

fn refused(door: Door, retry_after: Duration) -> ApiError {
    metrics::counter!("shopstream_rate_limited_total", "door" => door.as_str()).increment(1);
    ApiError::TooManyRequests {
        detail: format!("too many requests ({}); try again later", door.as_str()),
        retry_after,
    }
}

/// The limits in force, shared by every request.
pub struct Limits {
    pub config: LimitsConfig,
    auth_address: Rate,
    auth_account: Rate,
    collector_address: Rate,
    collector_session: Rate,
    hashing: tokio::sync::Semaphore,
    ws_open: Mutex<HashMap<IpAddr, usize>>,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("config", &self.config)
            .finish()
    }
}

impl Limits {
    pub fn new(config: LimitsConfig) -> Self {
        Self {
            auth_address: Rate::new(Door::AuthAddress, config.auth_per_address_per_minute),
            auth_account: Rate::new(Door::AuthAccount, config.auth_per_account_per_minute),
            collector_address: Rate::new(
                Door::CollectorAddress,
                config.collector_per_address_per_minute,
            ),
            collector_session: Rate::new(
                Door::CollectorSession,
                config.collector_per_session_per_minute,
            ),
            hashing: tokio::sync::Semaphore::new(config.hash_concurrency.max(1)),
            ws_open: Mutex::default(),
            config,
        }
    }

    /// A sign-in, registration or refresh from `address`.
    pub fn auth_address(&self, address: IpAddr) -> Result<(), ApiError> {
        self.auth_address.check(&address.to_string())
    }

    /// A sign-in or refresh for `account` (an e-mail address, any case, or
    /// a user id).
    pub fn auth_account(&self, account: &str) -> Result<(), ApiError> {
        self.auth_account.check(&account.to_lowercase())
    }

    /// An anonymous collector request from `address`, for `session`.
    pub fn collector(&self, address: IpAddr, session: Option<&str>) -> Result<(), ApiError> {
        self.collector_address.check(&address.to_string())?;
        if let Some(s) = session {
            self.collector_session.check(s)?;
        }
        Ok(())
    }

    /// A place to compute one password hash: waits up to a second for one,
    /// then refuses with `503`, so a flood of sign-ins cannot take the
    /// memory of unboundedly many hashes.
    pub async fn hashing(&self) -> Result<tokio::sync::SemaphorePermit<'_>, ApiError> {
        match tokio::time::timeout(Duration::from_secs(1), self.hashing.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => {
                metrics::counter!("shopstream_rate_limited_total", "door" => Door::Hashing.as_str())
                    .increment(1);
                Err(ApiError::Busy {
                    detail: "too many sign-ins at once; try again in a moment".into(),
                    retry_after: Duration::from_secs(1),
                })
            }
        }
    }

    /// An anonymous websocket connection from `address`: held while it is
    /// open.
    pub fn ws_open(self: &std::sync::Arc<Self>, address: IpAddr) -> Result<WsSlot, ApiError> {
        let max = self.config.ws_anonymous_per_address;
        let mut open = self.ws_open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(address).or_default();
        if max > 0 && *n >= max {
            return Err(refused(Door::WsConnections, Duration::from_secs(5)));
        }
        *n += 1;
        Ok(WsSlot {
            limits: self.clone(),
            address,
        })
    }

    /// A fresh rate limit for one connection's subscriptions (`None`: off).
    pub fn snapshots(&self) -> Option<governor::DefaultDirectRateLimiter> {
        NonZeroU32::new(self.config.ws_snapshots_per_minute)
            .map(|n| RateLimiter::direct(Quota::per_minute(n)))
    }

    /// Whether a connection's subscription may be answered now.
    pub fn snapshot(limiter: Option<&governor::DefaultDirectRateLimiter>) -> Result<(), ApiError> {
        match limiter.map(|l| l.check()) {
            Some(Err(not_until)) => Err(refused(
                Door::WsSnapshots,
                not_until.wait_time_from(DefaultClock::default().now()),
            )),
            _ => Ok(()),
        }
    }
}

/// An open anonymous websocket connection's place in its address's count,
/// given back when dropped.
#[derive(Debug)]
pub struct WsSlot {
    limits: std::sync::Arc<Limits>,
    address: IpAddr,
}

impl Drop for WsSlot {
    fn drop(&mut self) {
        let mut open = self
            .limits
            .ws_open
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.address) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.address);
            }
        }
    }
}

/// An address range: `10.0.0.0/8`, `2001:db8::/32`, or one address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(a) & mask == u32::from(b) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(a) & mask == u128::from(b) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for Cidr {
    type Err = domain::Invalid;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| domain::Invalid::new(format!("{s:?} is not an address or range")))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| {
                domain::Invalid::new(format!("{s:?}: the prefix must be 0 to {max}"))
            })?,
            None => max,
        };
        Ok(Self { addr, prefix })
    }
}

/// The client's address: the peer's, or from `X-Forwarded-For` when the
/// peer is a trusted proxy.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|a| a.trim().parse().ok())
        .collect();
    // Right to left: the first hop that is not one of ours is the client.
    forwarded
        .iter()
        .rev()
        .copied()
        .find(|ip| !is_trusted(*ip))
        .or_else(|| forwarded.first().copied())
        .unwrap_or(peer)
}

/// The calling client's address (see [`client_ip`]).
#[derive(Clone, Copy, Debug)]
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
        Ok(Self(client_ip(
            peer,
            &parts.headers,
            &state.limits.config.trusted_proxies,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<Cidr> = ["10.0.0.0/8", "fd00::/8"]
            .iter()
            .map(|c| c.parse().unwrap())
            .collect();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // From anyone else, the header is ignored.
        assert_eq!(
            client_ip(ip("203.0.113.9"), &headers(&["198.51.100.1"]), &trusted),
            ip("203.0.113.9")
        );
        // From our proxy: the right-most address that is not a proxy of
        // ours (what the client wrote to the left is not believed).
        assert_eq!(
            client_ip(
                ip("10.1.2.3"),
                &headers(&["1.1.1.1, 198.51.100.7", "10.9.9.9"]),
                &trusted
            ),
            ip("198.51.100.7")
        );
        assert_eq!(
            client_ip(ip("10.1.2.3"), &headers(&[]), &trusted),
            ip("10.1.2.3")
        );
        assert_eq!(
            client_ip(ip("fd00::1"), &headers(&["2001:db8::5"]), &trusted),
            ip("2001:db8::5")
        );
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nonsense".parse::<Cidr>().is_err());
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains(ip("8.8.8.8")));
    }

    #[tokio::test]
    async fn rates_refuse_with_a_retry_after_and_hashing_is_bounded() {
        let limits = Limits::new(LimitsConfig {
            auth_per_address_per_minute: 3,
            auth_per_account_per_minute: 2,
            hash_concurrency: 1,
            ..LimitsConfig::default()
        });
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let auth = |ip: IpAddr, account: Option<&str>| {
            limits.auth_address(ip)?;
            account.map_or(Ok(()), |a| limits.auth_account(a))
        };
        assert!(auth(a, Some("x@example.com")).is_ok());
        assert!(auth(a, Some("X@example.com")).is_ok());
        // The account's third try in the minute, from another address.
        match auth(b, Some("x@example.com")) {
            Err(ApiError::TooManyRequests { retry_after, .. }) => {
                assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(60));
            }
            other => panic!("{other:?}"),
        }
        // The address's fourth.
        assert!(auth(a, None).is_ok());
        assert!(matches!(
            auth(a, None),
            Err(ApiError::TooManyRequests { .. })
        ));
        let held = limits.hashing().await.unwrap();
        assert!(matches!(limits.hashing().await, Err(ApiError::Busy { .. })));
        drop(held);
        assert!(limits.hashing().await.is_ok());
    }

    #[test]
    fn anonymous_websockets_are_counted_per_address() {
        let limits = std::sync::Arc::new(Limits::new(LimitsConfig {
            ws_anonymous_per_address: 2,
            ..LimitsConfig::default()
        }));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let first = limits.ws_open(a).unwrap();
        let _second = limits.ws_open(a).unwrap();
        assert!(limits.ws_open(a).is_err());
        assert!(limits.ws_open("192.0.2.2".parse().unwrap()).is_ok());
        drop(first);
        assert!(limits.ws_open(a).is_ok());
    }
}
