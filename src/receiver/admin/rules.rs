//! Auto-registration rules for new hosts.
use crate::receiver::store::sql::{params, Connection};
use serde::{Deserialize, Serialize};

use super::*;

// ---------- rules ----------

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    /// Labels the agent must send, all of them, with these values ("*": any value).
    #[serde(default, rename = "match")]
    pub match_labels: BTreeMap<String, String>,
    /// `create`, `decline` or `hold`.
    pub action: String,
    /// Target folder of `create`; for `hold`, where the host would be created on approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<String>,
    /// Label holding the new host's name (default `cmk/hostname`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname_label: Option<String>,
    /// Reason given to the agent on `decline`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Connection mode of created hosts: `pull` (default) or `push`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

pub const DEFAULT_HOSTNAME_LABEL: &str = "cmk/hostname";

impl Rule {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k).is_some_and(|x| v == "*" || x == v))
    }
}

pub fn normalize_rule(c: &Connection, r: &Rule) -> Result<Rule> {
    validate_name("rule", &r.name)?;
    let mut r = r.clone();
    match r.action.as_str() {
        "create" => {
            let f = normalize_folder(r.folder.as_deref().unwrap_or("/"))?;
            if store::get_folder(c, &f)?.is_none() {
                return Err(Error::new(
                    ErrorCode::NotFound,
                    format!("folder {f:?} does not exist"),
                ));
            }
            r.folder = Some(f);
            r.reason = None;
            if let Some(m) = &r.mode {
                let m = crate::wire::api::ConnectionMode::parse(m)
                    .ok_or_else(|| Error::usage(format!("invalid mode {m:?}: use pull or push")))?;
                r.mode = Some(m.as_str().to_string());
            }
        }
        "decline" => {
            r.folder = None;
            r.hostname_label = None;
            r.mode = None;
            if r.reason.is_none() {
                r.reason = Some(format!("Declined by rule {}", r.name));
            }
        }
        "hold" => {
            // Optional: the folder the host would be created in on approval, which decides
            // whose scope (token folder, approvers) covers it.
            if let Some(f) = &r.folder {
                let f = normalize_folder(f)?;
                if store::get_folder(c, &f)?.is_none() {
                    return Err(Error::new(
                        ErrorCode::NotFound,
                        format!("folder {f:?} does not exist"),
                    ));
                }
                r.folder = Some(f);
            }
            r.reason = None;
            r.mode = None;
        }
        a => {
            return Err(Error::usage(format!(
                "invalid rule action {a:?}: use create, decline or hold"
            )))
        }
    }
    Ok(r)
}

pub fn rules(c: &Connection) -> Result<Vec<Rule>> {
    let mut st = c.prepare(
        "SELECT name, match_labels, action, folder, hostname_label, reason, mode FROM rules ORDER BY position, name",
    )?;
    let rows = st.query_map([], |r| {
        Ok(Rule {
            name: r.get(0)?,
            match_labels: serde_json::from_str(&r.get::<_, String>(1)?).unwrap_or_default(),
            action: r.get(2)?,
            folder: r.get(3)?,
            hostname_label: r.get(4)?,
            reason: r.get(5)?,
            mode: r.get(6)?,
        })
    })?;
    Ok(rows.collect::<crate::receiver::store::sql::Result<_>>()?)
}

/// Replaces the whole ordered rule list; unchanged → false.
pub fn set_rules(c: &Connection, new: &[Rule]) -> Result<bool> {
    let mut norm = Vec::new();
    for r in new {
        let n = normalize_rule(c, r)?;
        if norm.iter().any(|x: &Rule| x.name == n.name) {
            return Err(Error::usage(format!("rule {:?} appears twice", n.name)));
        }
        norm.push(n);
    }
    if rules(c)? == norm {
        return Ok(false);
    }
    c.execute("DELETE FROM rules", [])?;
    for (i, r) in norm.iter().enumerate() {
        c.execute(
            "INSERT INTO rules(name, position, match_labels, action, folder, hostname_label, reason, mode)
             VALUES(?1,?2,?3,?4,?5,?6,?7,?8)",
            params![
                r.name,
                i as i64,
                store::to_json(&r.match_labels),
                r.action,
                r.folder,
                r.hostname_label,
                r.reason,
                r.mode
            ],
        )?;
    }
    Ok(true)
}

/// Adds or replaces one rule; `position` None keeps an existing rule's place or appends.
pub fn put_rule(c: &Connection, rule: &Rule, position: Option<usize>) -> Result<bool> {
    let mut all = rules(c)?;
    let cur = all.iter().position(|r| r.name == rule.name);
    let at = match (position, cur) {
        (Some(p), _) => p,
        (None, Some(i)) => i,
        (None, None) => all.len(),
    };
    if let Some(i) = cur {
        all.remove(i);
    }
    let at = at.min(all.len());
    all.insert(at, rule.clone());
    set_rules(c, &all)
}

pub fn del_rule(c: &Connection, name: &str) -> Result<bool> {
    let mut all = rules(c)?;
    let before = all.len();
    all.retain(|r| r.name != name);
    if all.len() == before {
        return Ok(false);
    }
    set_rules(c, &all)
}
