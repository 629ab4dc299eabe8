//! Users, roles and contact groups.
use serde::{Deserialize, Serialize};

use super::*;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct User {
    pub name: String,
    pub role: String,
    pub contact_groups: Vec<String>,
    #[serde(skip)]
    #[schemars(skip)]
    pub pw_hash: String,
    #[serde(skip)]
    #[schemars(skip)]
    pub pw_version: i64,
}

fn user_row(r: &sql::Row) -> sql::Result<User> {
    Ok(User {
        name: r.get(0)?,
        role: r.get(1)?,
        contact_groups: json_list(&r.get::<_, String>(2)?),
        pw_hash: r.get(3)?,
        pw_version: r.get(4)?,
    })
}

const USER_COLS: &str = "name, role, contact_groups, pw_hash, pw_version";

pub fn get_user(c: &Connection, name: &str) -> sql::Result<Option<User>> {
    c.query_row(
        &format!("SELECT {USER_COLS} FROM users WHERE name=?1"),
        [name],
        user_row,
    )
    .optional()
}

/// A user and their role (None if the role is gone), read in one round trip.
pub fn get_user_and_role(c: &Connection, name: &str) -> sql::Result<Option<(User, Option<Role>)>> {
    user_and_role(c.query_all(&user_and_role_queries(name))?)
}

/// [`get_user_and_role`] awaited on the server's runtime (see [`Db::query_all`]).
pub async fn get_user_and_role_shared(
    db: &Db,
    name: &str,
) -> Result<Option<(User, Option<Role>)>, DbError> {
    let rows = db.query_all(user_and_role_queries(name)).await?;
    Ok(user_and_role(rows)?)
}

/// The reads of [`get_user_and_role`], e.g. for a write job's [`Prefetch`].
pub fn user_and_role_queries(name: &str) -> Vec<(String, Vec<sql::Value>)> {
    let user_q = format!("SELECT {USER_COLS} FROM users WHERE name=?1");
    let role_q = "SELECT name, builtin, permissions FROM roles
                  WHERE name=(SELECT role FROM users WHERE name=?1)";
    vec![
        (user_q, vec![sql::Value::Text(name.into())]),
        (role_q.into(), vec![sql::Value::Text(name.into())]),
    ]
}

/// [`get_user_and_role`] from the rows of [`user_and_role_queries`].
pub fn user_and_role(rows: Vec<Vec<sql::Row>>) -> sql::Result<Option<(User, Option<Role>)>> {
    let mut rows = rows.into_iter();
    let (users, roles) = (
        rows.next().unwrap_or_default(),
        rows.next().unwrap_or_default(),
    );
    let Some(user) = users.first().map(user_row).transpose()? else {
        return Ok(None);
    };
    Ok(Some((user, roles.first().map(role_row).transpose()?)))
}

pub fn list_users(c: &Connection) -> sql::Result<Vec<User>> {
    let mut st = c.prepare(&format!("SELECT {USER_COLS} FROM users ORDER BY name"))?;
    let rows = st.query_map([], user_row)?;
    rows.collect()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Role {
    pub name: String,
    pub builtin: bool,
    pub permissions: Vec<String>,
}

fn role_row(r: &sql::Row) -> sql::Result<Role> {
    Ok(Role {
        name: r.get(0)?,
        builtin: r.get(1)?,
        permissions: json_list(&r.get::<_, String>(2)?),
    })
}

pub fn get_role(c: &Connection, name: &str) -> sql::Result<Option<Role>> {
    c.query_row(
        "SELECT name, builtin, permissions FROM roles WHERE name=?1",
        [name],
        role_row,
    )
    .optional()
}

pub fn list_roles(c: &Connection) -> sql::Result<Vec<Role>> {
    let mut st = c.prepare("SELECT name, builtin, permissions FROM roles ORDER BY name")?;
    let rows = st.query_map([], role_row)?;
    rows.collect()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Group {
    pub name: String,
    pub alias: String,
}

pub fn list_groups(c: &Connection) -> sql::Result<Vec<Group>> {
    let mut st = c.prepare("SELECT name, alias FROM contact_groups ORDER BY name")?;
    let rows = st.query_map([], |r| {
        Ok(Group {
            name: r.get(0)?,
            alias: r.get(1)?,
        })
    })?;
    rows.collect()
}

pub fn group_exists(c: &Connection, name: &str) -> sql::Result<bool> {
    Ok(
        c.query_row("SELECT 1 FROM contact_groups WHERE name=?1", [name], |_| {
            Ok(())
        })
        .optional()?
        .is_some(),
    )
}
