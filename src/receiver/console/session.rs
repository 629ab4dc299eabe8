//! Server-side console sessions in memory: random ids in a `Secure; HttpOnly; SameSite=Strict`
//! cookie, a CSRF token per session, an idle timeout and an absolute lifetime. A restart ends
//! every session (people log in again), which keeps nothing secret on disk.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use subtle::ConstantTimeEq;

/// Bounds memory: anyone may open a login form, and each form holds a session.
const MAX_SESSIONS: usize = 10_000;
/// A login form (anonymous session) expires sooner than a logged-in session may idle.
const LOGIN_FORM_LIFETIME: Duration = Duration::from_secs(30 * 60);
/// However active, a session ends after this long and asks for the password again.
const MAX_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// A one-time message shown on the next page (after a redirect).
#[derive(Debug, Clone)]
pub struct Flash {
    pub error: bool,
    pub text: String,
}

#[derive(Debug, Clone)]
pub struct Session {
    /// None: a login form that has not logged in yet.
    pub user: Option<String>,
    /// The password hash the user logged in with: a changed password ends the session.
    pub pw_hash: String,
    pub csrf: String,
    created: Instant,
    last_seen: Instant,
    pub flash: Option<Flash>,
}

/// What a lookup found for a presented cookie.
pub enum Lookup {
    Found(Session),
    /// A cookie was presented but its session is unknown or timed out.
    Ended,
    NoCookie,
}

pub struct Sessions {
    idle: Duration,
    map: Mutex<HashMap<String, Session>>,
}

/// 256 random bits, URL-safe base64: session ids and CSRF tokens.
pub fn random_token() -> String {
    let mut b = [0u8; 32];
    let rng = ring::rand::SystemRandom::new();
    if ring::rand::SecureRandom::fill(&rng, &mut b).is_err() {
        // The OS generator failing is not recoverable in any better way; rand's is also seeded
        // from the OS and cryptographically secure.
        b = rand::random();
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// Constant-time comparison of a submitted CSRF token with the session's.
pub fn csrf_ok(s: &Session, submitted: &str) -> bool {
    !submitted.is_empty() && bool::from(s.csrf.as_bytes().ct_eq(submitted.as_bytes()))
}

impl Sessions {
    pub fn new(idle: Duration) -> Self {
        Sessions {
            idle,
            map: Mutex::new(HashMap::new()),
        }
    }

    fn expired(&self, s: &Session) -> bool {
        let limit = if s.user.is_some() {
            self.idle
        } else {
            LOGIN_FORM_LIFETIME.min(self.idle.max(Duration::from_secs(60)))
        };
        s.last_seen.elapsed() > limit || s.created.elapsed() > MAX_LIFETIME
    }

    /// Looks the id up and counts this request as activity.
    pub fn touch(&self, id: Option<&str>) -> Lookup {
        let Some(id) = id else {
            return Lookup::NoCookie;
        };
        let Ok(mut map) = self.map.lock() else {
            return Lookup::Ended;
        };
        match map.get_mut(id) {
            Some(s) if !self.expired(s) => {
                s.last_seen = Instant::now();
                Lookup::Found(s.clone())
            }
            Some(_) => {
                map.remove(id);
                Lookup::Ended
            }
            None => Lookup::Ended,
        }
    }

    /// Starts a session and returns its id (always a new one: logging in never keeps the id
    /// of the login form, so a planted id cannot become someone's session).
    pub fn create(&self, user: Option<String>, pw_hash: String) -> (String, Session) {
        let now = Instant::now();
        let s = Session {
            user,
            pw_hash,
            csrf: random_token(),
            created: now,
            last_seen: now,
            flash: None,
        };
        let id = random_token();
        if let Ok(mut map) = self.map.lock() {
            if map.len() >= MAX_SESSIONS {
                map.retain(|_, s| !self.expired(s));
            }
            if map.len() >= MAX_SESSIONS {
                // Still full: login forms go first (oldest first); logged-in people stay.
                let victim = map
                    .iter()
                    .filter(|(_, s)| s.user.is_none())
                    .min_by_key(|(_, s)| s.last_seen)
                    .or_else(|| map.iter().min_by_key(|(_, s)| s.last_seen))
                    .map(|(k, _)| k.clone());
                if let Some(k) = victim {
                    map.remove(&k);
                }
            }
            map.insert(id.clone(), s.clone());
        }
        (id, s)
    }

    pub fn remove(&self, id: &str) {
        if let Ok(mut map) = self.map.lock() {
            map.remove(id);
        }
    }

    pub fn set_flash(&self, id: &str, error: bool, text: impl Into<String>) {
        if let Ok(mut map) = self.map.lock() {
            if let Some(s) = map.get_mut(id) {
                s.flash = Some(Flash {
                    error,
                    text: text.into(),
                });
            }
        }
    }

    /// The pending message, shown once.
    pub fn take_flash(&self, id: &str) -> Option<Flash> {
        self.map
            .lock()
            .ok()
            .and_then(|mut m| m.get_mut(id).and_then(|s| s.flash.take()))
    }
}

/// The session cookie's name; `__Host-` makes browsers insist on Secure, Path=/ and no Domain,
/// so no other host can plant it. The site name keeps sites on one machine apart.
pub fn cookie_name(site: &str) -> String {
    format!("__Host-tether-console-{site}")
}

/// `Set-Cookie` for a session id (None: delete it).
pub fn set_cookie(site: &str, id: Option<&str>) -> String {
    let mut c = cookie::Cookie::build((cookie_name(site), id.unwrap_or("").to_string()))
        .path("/")
        .secure(true)
        .http_only(true)
        .same_site(cookie::SameSite::Strict);
    if id.is_none() {
        c = c.max_age(cookie::time::Duration::ZERO);
    }
    c.build().to_string()
}

/// The session id from the request's `Cookie` headers.
pub fn cookie_id(headers: &axum::http::HeaderMap, site: &str) -> Option<String> {
    let name = cookie_name(site);
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| cookie::Cookie::split_parse(v.to_string()))
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_string())
        .filter(|v| !v.is_empty() && v.len() <= 64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_random_and_sessions_expire() {
        assert_ne!(random_token(), random_token());
        let s = Sessions::new(Duration::ZERO);
        let (id, sess) = s.create(Some("u".into()), "h".into());
        assert!(csrf_ok(&sess, &sess.csrf));
        assert!(!csrf_ok(&sess, ""));
        std::thread::sleep(Duration::from_millis(5));
        assert!(matches!(s.touch(Some(&id)), Lookup::Ended));
        assert!(matches!(s.touch(None), Lookup::NoCookie));
    }

    #[test]
    fn cookie_flags() {
        let c = set_cookie("s1", Some("abc"));
        for flag in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
            assert!(c.contains(flag), "{c}");
        }
        assert!(set_cookie("s1", None).contains("Max-Age=0"));
    }
}
