//! Roles, permissions and the registration permission checks (spec §5, plus the identity
//! lock). Permission names follow Checkmk's so operators recognise them.
use crate::receiver::store::sql::Connection;

use super::store::{self, Host, User};

pub const REGISTER_ANY_EXISTING: &str = "agent_registration.register_any_existing_host";
pub const REGISTER_MANAGED_EXISTING: &str = "agent_registration.register_managed_existing_host";
pub const REGISTER_ANY_NEW: &str = "agent_registration.register_any_new_host";
pub const REGISTER_NEW_IN_MANAGED_FOLDER: &str =
    "agent_registration.register_new_host_in_managed_folder";
/// **ext**: register a host again under another UUID while its registration is live.
pub const REREGISTER_HOST: &str = "agent_registration.reregister_host";
/// **ext**: approve or decline any held registration (new host or takeover).
pub const APPROVE_ANY: &str = "agent_registration.approve_any";
/// **ext**: approve or decline held registrations whose target folder the user is a contact of.
pub const APPROVE_IN_MANAGED_FOLDER: &str = "agent_registration.approve_in_managed_folder";
/// Read access to all hosts and folders.
pub const SEE_ALL_FOLDERS: &str = "wato.see_all_folders";
/// Write access to all hosts and folders.
pub const ALL_FOLDERS: &str = "wato.all_folders";
/// Modify existing hosts.
pub const EDIT_HOSTS: &str = "wato.edit_hosts";
/// Add & remove hosts.
pub const MANAGE_HOSTS: &str = "wato.manage_hosts";
/// Service discovery.
pub const SERVICES: &str = "wato.services";
/// Activate changes.
pub const ACTIVATE: &str = "wato.activate";

pub const ALL: &[&str] = &[
    REGISTER_ANY_EXISTING,
    REGISTER_MANAGED_EXISTING,
    REGISTER_ANY_NEW,
    REGISTER_NEW_IN_MANAGED_FOLDER,
    REREGISTER_HOST,
    APPROVE_ANY,
    APPROVE_IN_MANAGED_FOLDER,
    SEE_ALL_FOLDERS,
    ALL_FOLDERS,
    EDIT_HOSTS,
    MANAGE_HOSTS,
    SERVICES,
    ACTIVATE,
];

pub fn is_known(p: &str) -> bool {
    ALL.contains(&p)
}

/// Built-in roles, created by `init` and never changed by `apply`.
pub fn builtin_roles() -> Vec<(&'static str, Vec<&'static str>)> {
    vec![
        ("admin", ALL.to_vec()),
        (
            // Like Checkmk's: the registration permissions and nothing else.
            "agent_registration",
            vec![
                REGISTER_ANY_EXISTING,
                REGISTER_MANAGED_EXISTING,
                REGISTER_ANY_NEW,
                REGISTER_NEW_IN_MANAGED_FOLDER,
            ],
        ),
        (
            // The people who own hosts decide about new ones in their folders, and nothing else.
            "agent_approver",
            vec![APPROVE_IN_MANAGED_FOLDER],
        ),
        (
            // A normal user: works on what they are a contact of.
            "user",
            vec![
                REGISTER_MANAGED_EXISTING,
                REGISTER_NEW_IN_MANAGED_FOLDER,
                EDIT_HOSTS,
            ],
        ),
    ]
}

pub fn is_builtin(name: &str) -> bool {
    builtin_roles().iter().any(|(n, _)| *n == name)
}

/// A user with the permissions of their role resolved.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user: User,
    pub permissions: Vec<String>,
}

impl From<(User, Option<store::Role>)> for Principal {
    fn from((user, role): (User, Option<store::Role>)) -> Principal {
        Principal {
            user,
            permissions: role.map(|r| r.permissions).unwrap_or_default(),
        }
    }
}

impl Principal {
    /// The user `name` with their role's permissions (none if the role is gone).
    pub fn lookup(
        c: &Connection,
        name: &str,
    ) -> crate::receiver::store::sql::Result<Option<Principal>> {
        Ok(store::get_user_and_role(c, name)?.map(Principal::from))
    }
    /// [`Principal::lookup`] for a request, awaited on the server's runtime.
    pub async fn lookup_shared(
        db: &store::Db,
        name: &str,
    ) -> Result<Option<Principal>, store::DbError> {
        Ok(store::get_user_and_role_shared(db, name)
            .await?
            .map(Principal::from))
    }

    /// Who `seen` (the user as read when their password was verified) is now, in a write
    /// job's transaction: `rows` are that job's prefetched [`store::user_and_role_queries`]
    /// (None: read them here). None when the user is gone or their password changed since,
    /// so the request must authenticate again; otherwise the current role and groups, so a
    /// permission change counts for every write that commits after it.
    pub fn confirm(
        c: &Connection,
        rows: Option<Vec<Vec<crate::receiver::store::sql::Row>>>,
        seen: &Principal,
    ) -> crate::receiver::store::sql::Result<Option<Principal>> {
        let now = match rows {
            Some(rows) => store::user_and_role(rows)?.map(Principal::from),
            None => Principal::lookup(c, &seen.user.name)?,
        };
        Ok(now.filter(|p| {
            p.user.pw_hash == seen.user.pw_hash && p.user.pw_version == seen.user.pw_version
        }))
    }

    pub fn has(&self, p: &str) -> bool {
        self.permissions.iter().any(|x| x == p)
    }
    fn in_any(&self, groups: &[String]) -> bool {
        self.user.contact_groups.iter().any(|g| groups.contains(g))
    }
}

fn contact_of_folder(
    c: &Connection,
    p: &Principal,
    folder: &str,
) -> crate::receiver::store::sql::Result<bool> {
    Ok(p.in_any(&store::folder_groups_effective(c, folder)?))
}

/// Spec §5: may `p` register the existing host `h`?
pub fn may_register_existing(
    c: &Connection,
    p: &Principal,
    h: &Host,
) -> crate::receiver::store::sql::Result<bool> {
    if p.has(REGISTER_ANY_EXISTING) {
        return Ok(true);
    }
    let host_groups = store::host_groups_effective(c, h)?;
    let contact = p.in_any(&host_groups);
    if p.has(REGISTER_MANAGED_EXISTING) && contact {
        return Ok(true);
    }
    // Normal folder permissions: read and write access to the host.
    let folder_contact = contact_of_folder(c, p, &h.folder)?;
    let read = p.has(SEE_ALL_FOLDERS) || p.has(ALL_FOLDERS) || folder_contact || contact;
    let write = p.has(EDIT_HOSTS) && (p.has(ALL_FOLDERS) || folder_contact);
    Ok(read && write)
}

/// May `p` create a new host in `folder` through registration?
pub fn may_register_new(
    c: &Connection,
    p: &Principal,
    folder: &str,
) -> crate::receiver::store::sql::Result<bool> {
    if p.has(REGISTER_ANY_NEW) {
        return Ok(true);
    }
    let folder_contact = contact_of_folder(c, p, folder)?;
    if p.has(REGISTER_NEW_IN_MANAGED_FOLDER) && folder_contact {
        return Ok(true);
    }
    let write_folder = p.has(ALL_FOLDERS) || folder_contact;
    Ok(write_folder && p.has(MANAGE_HOSTS) && p.has(SERVICES) && p.has(ACTIVATE))
}

/// May `p` decide on a held registration whose target folder is `folder`?
pub fn may_approve(
    c: &Connection,
    p: &Principal,
    folder: &str,
) -> crate::receiver::store::sql::Result<bool> {
    if p.has(APPROVE_ANY) {
        return Ok(true);
    }
    Ok(p.has(APPROVE_IN_MANAGED_FOLDER) && contact_of_folder(c, p, folder)?)
}
