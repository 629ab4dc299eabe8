//! Authentication: argon2id password hashes, a cache of recently verified credentials,
//! registration tokens, and the per-address limit on failed attempts.
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Verifies in the hash's own parameters; a malformed stored hash never matches.
pub fn verify_password(password: &str, hash: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// Checks that a hash given in an apply file is a PHC argon2 string.
pub fn valid_hash(hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| h.algorithm.as_str().starts_with("argon2"))
}

/// Spends the same time as a real verification, so unknown user names do not answer faster.
pub fn dummy_verify(password: &str) {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let h = DUMMY.get_or_init(|| hash_password("tether-dummy-password").unwrap_or_default());
    let _ = verify_password(password, h);
}

/// `Authorization: Basic base64(user:password)` → (user, password).
pub fn parse_basic(header: &str) -> Option<(String, String)> {
    use base64::Engine;
    let (scheme, rest) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

/// `Authorization: CMK-TOKEN <id>:<uuid4>` → (id, secret).
/// How a presented token names itself: Checkmk's numeric id, or (**ext**) the name of a
/// token managed by `apply`, whose id is not known when its file is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenRef {
    Id(i64),
    Name(String),
}

impl std::fmt::Display for TokenRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenRef::Id(id) => write!(f, "{id}"),
            TokenRef::Name(n) => f.write_str(n),
        }
    }
}

/// `CMK-TOKEN ID:SECRET` (or `NAME:SECRET`; names start with a letter).
pub fn parse_token(header: &str) -> Option<(TokenRef, String)> {
    let (scheme, rest) = header.trim().split_once(' ')?;
    if scheme != crate::wire::api::TOKEN_SCHEME {
        return None;
    }
    let (key, secret) = rest.trim().split_once(':')?;
    if secret.is_empty() || key.len() > 64 {
        return None;
    }
    let r = if let Ok(id) = key.parse::<i64>() {
        TokenRef::Id(id)
    } else if key.starts_with(|c: char| c.is_ascii_alphabetic())
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        TokenRef::Name(key.to_string())
    } else {
        return None;
    };
    Some((r, secret.to_string()))
}

pub fn token_digest(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

pub fn token_matches(secret: &str, stored: &[u8]) -> bool {
    token_digest(secret).ct_eq(stored).into()
}

/// Recently verified credentials, so argon2 (tens of ms by design) runs once per user and
/// password per TTL rather than once per request. Keyed by an HMAC under a per-process
/// random key, so the cache never holds anything that reveals a password. An entry only
/// counts while the user's stored hash is the one it was verified against: changing the
/// password or deleting the user invalidates it at once.
pub struct CredentialCache {
    key: ring::hmac::Key,
    ttl: Duration,
    entries: Mutex<HashMap<[u8; 32], (String, Instant)>>,
    /// Verifications running now, by tag, with the hash each runs against.
    inflight: Mutex<Verifying>,
}

/// Verifications running now: credential tag → (the hash it runs against, its answer).
type Verifying = HashMap<[u8; 32], (String, Arc<tokio::sync::OnceCell<bool>>)>;

/// Forgets an in-flight verification when its caller is done or gone (a cancelled request
/// must not leave it behind), unless a newer one took its place.
struct Inflight<'a> {
    map: &'a Mutex<Verifying>,
    tag: [u8; 32],
    cell: Arc<tokio::sync::OnceCell<bool>>,
}

impl Drop for Inflight<'_> {
    fn drop(&mut self) {
        if let Ok(mut map) = self.map.lock() {
            if map
                .get(&self.tag)
                .is_some_and(|(_, c)| Arc::ptr_eq(c, &self.cell))
            {
                map.remove(&self.tag);
            }
        }
    }
}

impl CredentialCache {
    pub fn new(ttl: Duration) -> Self {
        let rng = ring::rand::SystemRandom::new();
        let key = ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng).unwrap_or_else(|_| {
            ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &rand::random::<[u8; 32]>())
        });
        CredentialCache {
            key,
            ttl,
            entries: Mutex::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
        }
    }

    fn tag(&self, user: &str, password: &str) -> [u8; 32] {
        let mut ctx = ring::hmac::Context::with_key(&self.key);
        ctx.update(user.as_bytes());
        ctx.update(&[0]);
        ctx.update(password.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }

    /// True when this credential was verified against exactly `current_hash` recently.
    fn hit_tag(&self, tag: &[u8; 32], current_hash: &str) -> bool {
        let Ok(map) = self.entries.lock() else {
            return false;
        };
        match map.get(tag) {
            Some((h, at)) => {
                at.elapsed() < self.ttl && h.as_bytes().ct_eq(current_hash.as_bytes()).into()
            }
            None => false,
        }
    }

    fn insert_tag(&self, tag: [u8; 32], verified_hash: &str) {
        if let Ok(mut map) = self.entries.lock() {
            if map.len() >= 10_000 {
                let ttl = self.ttl;
                map.retain(|_, (_, at)| at.elapsed() < ttl);
                if map.len() >= 10_000 {
                    map.clear();
                }
            }
            map.insert(tag, (verified_hash.to_string(), Instant::now()));
        }
    }

    /// Whether `password` was verified against exactly `hash` recently (no argon2).
    pub fn hit(&self, user: &str, password: &str, hash: &str) -> bool {
        self.hit_tag(&self.tag(user, password), hash)
    }

    /// Whether `password` is the user's, from the cache or else by `verify` (argon2). One
    /// verification per credential and hash runs at a time: requests that arrive meanwhile
    /// take its answer. Without that, a fleet enrolling with one automation user ran argon2
    /// once per concurrent request after every restart or expiry (tens of ms each).
    pub async fn verify<F>(&self, user: &str, password: &str, hash: &str, verify: F) -> bool
    where
        F: std::future::Future<Output = bool>,
    {
        let tag = self.tag(user, password);
        if self.hit_tag(&tag, hash) {
            return true;
        }
        let cell = match self.inflight.lock() {
            Ok(mut map) => match map.get(&tag) {
                Some((h, c)) if h == hash => Some(c.clone()),
                // Another hash (the password changed meanwhile): this one runs on its own.
                Some(_) => None,
                None => {
                    let c = Arc::new(tokio::sync::OnceCell::new());
                    map.insert(tag, (hash.to_string(), c.clone()));
                    Some(c)
                }
            },
            Err(_) => None,
        };
        // Dropped last, after the answer is cached, so later requests hit the cache.
        let inflight = cell.map(|cell| Inflight {
            map: &self.inflight,
            tag,
            cell,
        });
        let ok = match &inflight {
            Some(i) => *i.cell.get_or_init(|| verify).await,
            None => verify.await,
        };
        if ok {
            self.insert_tag(tag, hash);
        }
        ok
    }
}

/// The user each recent write request authenticated as, so a registration does not read
/// the user and role before its write job: the job reads them again in the round trip that
/// begins its batch and decides with those rows ([`crate::receiver::perms::Principal::confirm`]).
/// An entry therefore only saves a read; it never grants anything the database no longer
/// does. On PostgreSQL that read was a round trip of its own per request.
#[derive(Default)]
pub struct PrincipalCache {
    entries: Mutex<HashMap<String, crate::receiver::perms::Principal>>,
}

impl PrincipalCache {
    const MAX: usize = 4096;

    pub fn get(&self, user: &str) -> Option<crate::receiver::perms::Principal> {
        self.entries.lock().ok()?.get(user).cloned()
    }

    pub fn put(&self, p: crate::receiver::perms::Principal) {
        if let Ok(mut map) = self.entries.lock() {
            if map.len() >= Self::MAX {
                map.clear();
            }
            map.insert(p.user.name.clone(), p);
        }
    }

    pub fn forget(&self, user: &str) {
        if let Ok(mut map) = self.entries.lock() {
            map.remove(user);
        }
    }
}

/// Token bucket per source address, spent only by failed authentication: `burst` failures
/// at once, then `per_minute` more per minute. Successful logins are never slowed down.
pub struct FailureLimiter {
    burst: f64,
    per_sec: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl FailureLimiter {
    pub fn new(burst: u32, per_minute: u32) -> Self {
        FailureLimiter {
            burst: burst.max(1) as f64,
            per_sec: per_minute as f64 / 60.0,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn refill(&self, entry: &mut (f64, Instant)) {
        let el = entry.1.elapsed().as_secs_f64();
        entry.0 = (entry.0 + el * self.per_sec).min(self.burst);
        entry.1 = Instant::now();
    }

    /// May this address try to authenticate now?
    pub fn allowed(&self, ip: IpAddr) -> bool {
        let Ok(mut map) = self.buckets.lock() else {
            return true;
        };
        match map.get_mut(&ip) {
            Some(e) => {
                self.refill(e);
                e.0 >= 1.0
            }
            None => true,
        }
    }

    /// Records one failed attempt.
    pub fn failed(&self, ip: IpAddr) {
        let Ok(mut map) = self.buckets.lock() else {
            return;
        };
        if map.len() > 100_000 {
            // Bounded memory under a spray of addresses: forget the ones that have refilled.
            let burst = self.burst;
            let per_sec = self.per_sec;
            map.retain(|_, (t, at)| *t + at.elapsed().as_secs_f64() * per_sec < burst);
        }
        let e = map.entry(ip).or_insert((self.burst, Instant::now()));
        self.refill(e);
        e.0 = (e.0 - 1.0).max(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_and_token_parsing() {
        assert_eq!(
            parse_basic("Basic dXNlcjpwYXNzOndvcmQ="),
            Some(("user".into(), "pass:word".into()))
        );
        assert_eq!(parse_basic("Bearer x"), None);
        assert_eq!(
            parse_token("CMK-TOKEN 12:abc"),
            Some((TokenRef::Id(12), "abc".to_string()))
        );
        assert_eq!(
            parse_token("CMK-TOKEN fleet-web:abc"),
            Some((TokenRef::Name("fleet-web".into()), "abc".to_string()))
        );
        assert_eq!(parse_token("CMK-TOKEN -x:abc"), None);
        assert_eq!(parse_token("CMK-TOKEN 12:"), None);
        assert_eq!(parse_token("Basic 12:abc"), None);
    }

    #[test]
    fn limiter_counts_failures_only() {
        let l = FailureLimiter::new(2, 0);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(l.allowed(ip));
        l.failed(ip);
        assert!(l.allowed(ip));
        l.failed(ip);
        assert!(!l.allowed(ip));
    }

    /// A verification that counts its runs and answers `ok` after a short wait.
    async fn counted(runs: &std::sync::atomic::AtomicUsize, ok: bool) -> bool {
        runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
        ok
    }

    #[tokio::test]
    async fn cache_invalidates_on_hash_change() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        let c = CredentialCache::new(Duration::from_secs(60));
        let runs = AtomicUsize::new(0);
        assert!(c.verify("u", "p", "h1", counted(&runs, true)).await);
        assert!(c.verify("u", "p", "h1", counted(&runs, true)).await);
        assert_eq!(
            runs.load(SeqCst),
            1,
            "the second answer came from the cache"
        );
        assert!(!c.verify("u", "p", "h2", counted(&runs, false)).await);
        assert!(!c.verify("u", "q", "h1", counted(&runs, false)).await);
        assert_eq!(runs.load(SeqCst), 3);
    }

    #[tokio::test]
    async fn concurrent_requests_share_one_verification() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        let c = CredentialCache::new(Duration::from_secs(60));
        let runs = AtomicUsize::new(0);
        let all = (0..16).map(|_| c.verify("u", "p", "h", counted(&runs, true)));
        let answers = futures_util::future::join_all(all).await;
        assert!(answers.iter().all(|ok| *ok));
        assert_eq!(runs.load(SeqCst), 1);
        // A wrong password is shared by those waiting for it, and not cached.
        let all = (0..4).map(|_| c.verify("u", "x", "h", counted(&runs, false)));
        assert!(futures_util::future::join_all(all)
            .await
            .iter()
            .all(|ok| !*ok));
        assert_eq!(runs.load(SeqCst), 2);
        assert!(!c.verify("u", "x", "h", counted(&runs, false)).await);
        assert_eq!(runs.load(SeqCst), 3);
        assert!(c.inflight.lock().unwrap().is_empty());
    }
}
