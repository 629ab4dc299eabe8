//! Users, roles and contact groups.
use crate::receiver::store::sql::{params, Connection, OptionalExtension};

use super::*;

// ---------- users ----------

pub enum PasswordInput {
    Plain(String),
    Hash(String),
    /// Keep the current password (apply without a password for an existing user).
    Keep,
}

pub fn put_user(
    c: &Connection,
    name: &str,
    role: &str,
    groups: &[String],
    password: PasswordInput,
) -> Result<bool> {
    validate_name("user", name)?;
    if store::get_role(c, role)?.is_none() {
        return Err(Error::new(
            ErrorCode::NotFound,
            format!("role {role:?} does not exist"),
        ));
    }
    let groups = normalize_groups(c, groups)?;
    let existing = store::get_user(c, name)?;
    let new_hash = match (&password, &existing) {
        (PasswordInput::Plain(p), Some(u))
            if crate::receiver::auth::verify_password(p, &u.pw_hash) =>
        {
            None
        }
        (PasswordInput::Plain(p), _) => {
            if p.is_empty() {
                return Err(Error::usage("the password is empty"));
            }
            Some(crate::receiver::auth::hash_password(p).map_err(Error::internal)?)
        }
        (PasswordInput::Hash(h), Some(u)) if *h == u.pw_hash => None,
        (PasswordInput::Hash(h), _) => {
            if !crate::receiver::auth::valid_hash(h) {
                return Err(Error::usage("password_hash is not an argon2 PHC string"));
            }
            Some(h.clone())
        }
        (PasswordInput::Keep, Some(_)) => None,
        (PasswordInput::Keep, None) => {
            return Err(Error::usage(format!("user {name:?} needs a password")))
        }
    };
    match existing {
        None => {
            c.execute(
                "INSERT INTO users(name, role, pw_hash, contact_groups) VALUES(?1,?2,?3,?4)",
                params![
                    name,
                    role,
                    new_hash.unwrap_or_default(),
                    store::to_json(&groups)
                ],
            )?;
            Ok(true)
        }
        Some(u) => {
            let mut changed = false;
            if u.role != role || u.contact_groups != groups {
                c.execute(
                    "UPDATE users SET role=?2, contact_groups=?3 WHERE name=?1",
                    params![name, role, store::to_json(&groups)],
                )?;
                changed = true;
            }
            if let Some(h) = new_hash {
                c.execute(
                    "UPDATE users SET pw_hash=?2, pw_version=pw_version+1 WHERE name=?1",
                    params![name, h],
                )?;
                changed = true;
            }
            Ok(changed)
        }
    }
}

pub fn set_password(c: &Connection, name: &str, password: &str) -> Result<bool> {
    let u = store::get_user(c, name)?
        .ok_or_else(|| Error::new(ErrorCode::NotFound, format!("user {name:?} does not exist")))?;
    put_user(
        c,
        name,
        &u.role,
        &u.contact_groups,
        PasswordInput::Plain(password.to_string()),
    )
}

pub fn del_user(c: &Connection, name: &str) -> Result<bool> {
    Ok(c.execute("DELETE FROM users WHERE name=?1", [name])? > 0)
}

pub fn users(c: &Connection) -> Result<Vec<User>> {
    Ok(store::list_users(c)?)
}

// ---------- roles ----------

pub fn put_role(c: &Connection, name: &str, permissions: &[String]) -> Result<bool> {
    validate_name("role", name)?;
    if perms::is_builtin(name) {
        return Err(Error::usage(format!(
            "role {name:?} is built in and cannot be changed"
        )));
    }
    let mut ps: Vec<String> = Vec::new();
    for p in permissions {
        if !perms::is_known(p) {
            return Err(Error::usage(format!(
                "unknown permission {p:?}; known: {}",
                perms::ALL.join(", ")
            )));
        }
        if !ps.contains(p) {
            ps.push(p.clone());
        }
    }
    ps.sort();
    match store::get_role(c, name)? {
        Some(r) if r.permissions == ps => Ok(false),
        _ => {
            c.execute(
                "INSERT INTO roles(name, builtin, permissions) VALUES(?1,0,?2)
                 ON CONFLICT(name) DO UPDATE SET permissions=excluded.permissions",
                params![name, store::to_json(&ps)],
            )?;
            Ok(true)
        }
    }
}

pub fn del_role(c: &Connection, name: &str) -> Result<bool> {
    if perms::is_builtin(name) {
        return Err(Error::usage(format!(
            "role {name:?} is built in and cannot be deleted"
        )));
    }
    let users: i64 = c.query_row("SELECT COUNT(*) FROM users WHERE role=?1", [name], |r| {
        r.get(0)
    })?;
    if users > 0 {
        return Err(Error::new(
            ErrorCode::Conflict,
            format!("role {name:?} is still assigned to {users} user(s)"),
        ));
    }
    Ok(c.execute("DELETE FROM roles WHERE name=?1", [name])? > 0)
}

pub fn roles(c: &Connection) -> Result<Vec<Role>> {
    Ok(store::list_roles(c)?)
}

// ---------- contact groups ----------

pub fn put_group(c: &Connection, name: &str, alias: &str) -> Result<bool> {
    validate_name("contact group", name)?;
    let cur: Option<String> = c
        .query_row(
            "SELECT alias FROM contact_groups WHERE name=?1",
            [name],
            |r| r.get(0),
        )
        .optional()?;
    if cur.as_deref() == Some(alias) {
        return Ok(false);
    }
    c.execute(
        "INSERT INTO contact_groups(name, alias) VALUES(?1,?2)
         ON CONFLICT(name) DO UPDATE SET alias=excluded.alias",
        params![name, alias],
    )?;
    Ok(true)
}

pub fn del_group(c: &Connection, name: &str) -> Result<bool> {
    let like = format!("%\"{name}\"%");
    let used: i64 = c.query_row(
        "SELECT (SELECT COUNT(*) FROM users WHERE contact_groups LIKE ?1)
              + (SELECT COUNT(*) FROM hosts WHERE contact_groups LIKE ?1)
              + (SELECT COUNT(*) FROM folders WHERE contact_groups LIKE ?1)",
        [&like],
        |r| r.get(0),
    )?;
    if used > 0 {
        return Err(Error::new(
            ErrorCode::Conflict,
            format!(
                "contact group {name:?} is still in use by {used} user(s), host(s) or folder(s)"
            ),
        ));
    }
    Ok(c.execute("DELETE FROM contact_groups WHERE name=?1", [name])? > 0)
}
