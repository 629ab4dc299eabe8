//! Validation of names and identifiers that cross the wire or land in paths.
use uuid::Uuid;

use super::WireError;

/// A connection UUID: lowercase, hyphenated, version 4 (spec §1).
pub fn parse_uuid_v4(s: &str) -> Result<Uuid, WireError> {
    let bad = || WireError::InvalidUuid(s.chars().take(64).collect());
    if s.len() != 36 || s.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(bad());
    }
    let uuid = Uuid::try_parse(s).map_err(|_| bad())?;
    if uuid.get_version_num() != 4 || uuid.hyphenated().to_string() != s {
        return Err(bad());
    }
    Ok(uuid)
}

/// True when `s` parses as any UUID: such a CN marks an agent certificate, which must never
/// pose as a site or receiver certificate (spec §2, §3).
pub fn looks_like_uuid(s: &str) -> bool {
    Uuid::try_parse(s).is_ok()
}

/// Host names end up in paths, SQL and certificates: allow only what Checkmk host names
/// use in practice, and nothing that could traverse a path.
pub fn validate_host_name(s: &str) -> Result<(), WireError> {
    let err = |why| {
        Err(WireError::InvalidHostName(
            s.chars().take(80).collect(),
            why,
        ))
    };
    if s.is_empty() {
        return err("empty");
    }
    if s.len() > 253 {
        return err("longer than 253 characters");
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        return err("only letters, digits, '.', '-' and '_' are allowed");
    }
    if s.starts_with(['.', '-']) || s.contains("..") {
        return err("must not start with '.' or '-' or contain '..'");
    }
    Ok(())
}

pub fn validate_site_name(s: &str) -> Result<(), WireError> {
    if s.is_empty() || s.len() > 64 || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(WireError::InvalidSiteName(s.chars().take(80).collect()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_rules() {
        assert!(parse_uuid_v4("1b4e28ba-2fa1-4d2b-883f-0016d3cca427").is_ok());
        assert!(parse_uuid_v4("1B4E28BA-2FA1-4D2B-883F-0016D3CCA427").is_err());
        assert!(parse_uuid_v4("1b4e28ba2fa14d2b883f0016d3cca427").is_err());
        assert!(parse_uuid_v4("1b4e28ba-2fa1-1d2b-883f-0016d3cca427").is_err());
        assert!(parse_uuid_v4("../etc/passwd").is_err());
    }

    #[test]
    fn host_rules() {
        assert!(validate_host_name("web-01.example.com").is_ok());
        assert!(validate_host_name("a_b").is_ok());
        for bad in [
            "", "../x", "a/b", "a b", ".hidden", "-x", "a..b", "a\\b", "é",
        ] {
            assert!(validate_host_name(bad).is_err(), "{bad}");
        }
    }
}
