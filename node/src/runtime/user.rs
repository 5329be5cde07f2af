//! Resolving Docker's `--user` (`name|uid[:group|gid]`) against an image's `/etc/passwd`
//! and `/etc/group`, as runc's `user.GetExecUser` does. Pure: the caller reads the files.

/// The identity a container's process runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedUser {
    /// User ID.
    pub uid: u32,
    /// Primary group ID.
    pub gid: u32,
    /// Supplementary groups: every group of `/etc/group` that lists the user by name.
    pub additional_gids: Vec<u32>,
    /// Home directory from `/etc/passwd` (`/` when the user has no entry).
    pub home: String,
}

/// Why a user specification cannot be resolved; texts as runc's.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UserError {
    /// A user name that `/etc/passwd` does not have.
    #[error("unable to find user {0}: no matching entries in passwd file")]
    NoSuchUser(String),
    /// A group name that `/etc/group` does not have.
    #[error("unable to find group {0}: no matching entries in group file")]
    NoSuchGroup(String),
    /// An empty name or a number out of range.
    #[error("invalid user specification {0:?}")]
    Invalid(String),
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

fn passwd_entries(passwd: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    passwd.lines().filter_map(|line| {
        let f: Vec<&str> = line.trim_end().split(':').collect();
        if f.len() < 6 || f[0].starts_with('#') {
            return None;
        }
        Some(PasswdEntry {
            name: f[0],
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: f[5],
        })
    })
}

fn group_entries(group: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    group.lines().filter_map(|line| {
        let f: Vec<&str> = line.trim_end().split(':').collect();
        if f.len() < 3 || f[0].starts_with('#') {
            return None;
        }
        let members = f
            .get(3)
            .map(|m| m.split(',').filter(|s| !s.is_empty()).collect())
            .unwrap_or_default();
        Some(GroupEntry {
            name: f[0],
            gid: f[2].parse().ok()?,
            members,
        })
    })
}

fn is_numeric(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Resolve `spec` (`""`, `name`, `uid`, `name:group`, `uid:gid`, ...) against the contents
/// of the image's `/etc/passwd` and `/etc/group` (`None` when the file does not exist).
///
/// An empty spec means root. A numeric user needs no passwd entry; a named one does.
/// Without a group the user's passwd group is used (0 if it has no entry).
pub fn resolve_user(
    spec: &str,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<ResolvedUser, UserError> {
    let passwd = passwd.unwrap_or("");
    let group = group.unwrap_or("");
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user_part = if user_part.is_empty() { "0" } else { user_part };

    let entry = if is_numeric(user_part) {
        let uid: u32 = user_part
            .parse()
            .map_err(|_| UserError::Invalid(spec.to_string()))?;
        passwd_entries(passwd).find(|e| e.uid == uid)
    } else {
        Some(
            passwd_entries(passwd)
                .find(|e| e.name == user_part)
                .ok_or_else(|| UserError::NoSuchUser(user_part.to_string()))?,
        )
    };
    let uid = match &entry {
        Some(e) => e.uid,
        None => user_part
            .parse()
            .map_err(|_| UserError::Invalid(spec.to_string()))?,
    };

    let gid = match group_part {
        None | Some("") => entry.as_ref().map(|e| e.gid).unwrap_or(0),
        Some(g) if is_numeric(g) => g
            .parse()
            .map_err(|_| UserError::Invalid(spec.to_string()))?,
        Some(g) => {
            group_entries(group)
                .find(|e| e.name == g)
                .ok_or_else(|| UserError::NoSuchGroup(g.to_string()))?
                .gid
        }
    };

    let mut additional_gids = Vec::new();
    if let Some(e) = &entry {
        for g in group_entries(group) {
            if g.members.contains(&e.name) && !additional_gids.contains(&g.gid) {
                additional_gids.push(g.gid);
            }
        }
    }

    let home = entry
        .as_ref()
        .map(|e| e.home)
        .filter(|h| !h.is_empty())
        .unwrap_or("/")
        .to_string();
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
        home,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        # comment\n\
        daemon:x:1:1:daemon:/usr/sbin:/bin/false\n\
        bad line\n\
        www:x:33:33:www:/var/www:/bin/false\n\
        nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
    const GROUP: &str = "root:x:0:\n\
        daemon:x:1:\n\
        www-data:x:33:\n\
        audio:x:29:www,daemon\n\
        video:x:44:www\n\
        users:x:100:\n";

    fn res(spec: &str) -> Result<ResolvedUser, UserError> {
        resolve_user(spec, Some(PASSWD), Some(GROUP))
    }

    #[test]
    fn empty_is_root() {
        let u = res("").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (0, 0, "/root"));
        assert!(u.additional_gids.is_empty());
    }

    #[test]
    fn names_resolve_with_their_groups() {
        let u = res("www").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (33, 33, "/var/www"));
        assert_eq!(u.additional_gids, vec![29, 44]);
        let u = res("www:users").unwrap();
        assert_eq!((u.uid, u.gid), (33, 100));
        let u = res("daemon:7").unwrap();
        assert_eq!((u.uid, u.gid), (1, 7));
    }

    #[test]
    fn numbers_need_no_entry() {
        let u = res("1234").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (1234, 0, "/"));
        let u = res("1234:5678").unwrap();
        assert_eq!((u.uid, u.gid), (1234, 5678));
        let u = res("33").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (33, 33, "/var/www"));
        let u = resolve_user("5:6", None, None).unwrap();
        assert_eq!((u.uid, u.gid), (5, 6));
    }

    #[test]
    fn unknown_names_are_errors() {
        assert_eq!(res("alice"), Err(UserError::NoSuchUser("alice".into())));
        assert_eq!(
            res("www:wheel").unwrap_err().to_string(),
            "unable to find group wheel: no matching entries in group file"
        );
        assert_eq!(
            resolve_user("root", None, None).unwrap_err().to_string(),
            "unable to find user root: no matching entries in passwd file"
        );
        assert!(matches!(res("99999999999"), Err(UserError::Invalid(_))));
    }
}
