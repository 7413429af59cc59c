//! Who the container's process runs as: an image's `User` (`name`, `uid`,
//! `name:group`, `uid:gid`, ...) resolved against the image's own
//! `/etc/passwd` and `/etc/group`, as containerd's client resolves it.

use std::io::Read;
use std::path::Path;

use rustix::fs::{Mode, OFlags, ResolveFlags};

use crate::{Error, Result};

/// Files bigger than this are not user databases.
const MAX_DB_BYTES: u64 = 4 << 20;

/// One line of `/etc/passwd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// One line of `/etc/group`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

/// The user and group databases of a root filesystem. Missing files are
/// empty databases; malformed lines are skipped, as libc does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserDb {
    pub users: Vec<PasswdEntry>,
    pub groups: Vec<GroupEntry>,
}

/// What `process.user` becomes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    /// The primary group first, then every other group listing the user.
    pub additional_gids: Vec<u32>,
}

impl UserDb {
    /// Parses the text of `/etc/passwd` and `/etc/group`.
    pub fn parse(passwd: &str, group: &str) -> UserDb {
        let users = passwd
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split(':').collect();
                match fields.as_slice() {
                    [name, _, uid, gid, ..] if !name.is_empty() => Some(PasswdEntry {
                        name: (*name).to_owned(),
                        uid: uid.parse().ok()?,
                        gid: gid.parse().ok()?,
                    }),
                    _ => None,
                }
            })
            .collect();
        let groups = group
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split(':').collect();
                match fields.as_slice() {
                    [name, _, gid, rest @ ..] if !name.is_empty() => Some(GroupEntry {
                        name: (*name).to_owned(),
                        gid: gid.parse().ok()?,
                        members: rest
                            .first()
                            .map(|list| {
                                list.split(',')
                                    .filter(|m| !m.is_empty())
                                    .map(str::to_owned)
                                    .collect()
                            })
                            .unwrap_or_default(),
                    }),
                    _ => None,
                }
            })
            .collect();
        UserDb { users, groups }
    }

    /// Reads `etc/passwd` and `etc/group` of the tree at `rootfs`. Paths
    /// resolve as if `rootfs` were `/`: a symlink in the image cannot make
    /// the host's files be read.
    pub fn from_rootfs(rootfs: &Path) -> Result<UserDb> {
        let passwd = read_in_root(rootfs, "etc/passwd")?;
        let group = read_in_root(rootfs, "etc/group")?;
        Ok(UserDb::parse(&passwd, &group))
    }

    /// Resolves an image's `User` value. Empty means root. Names must exist
    /// in the databases; a numeric uid need not (its group is then the one
    /// passwd gives it, else 0).
    pub fn resolve(&self, user: &str) -> Result<ResolvedUser> {
        let (user_part, group_part) = match user.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (user, None),
        };
        let invalid = || Error::invalid(format!("user {user:?}: expected user[:group]"));
        if user_part.is_empty() && !user.is_empty() {
            return Err(invalid());
        }
        let entry = if user_part.is_empty() {
            self.users.iter().find(|u| u.uid == 0)
        } else if let Ok(uid) = user_part.parse::<u32>() {
            self.users.iter().find(|u| u.uid == uid)
        } else {
            Some(
                self.users
                    .iter()
                    .find(|u| u.name == user_part)
                    .ok_or_else(|| {
                        Error::not_found(format!(
                            "user {user_part:?}: no such user in the image's /etc/passwd"
                        ))
                    })?,
            )
        };
        let uid = match (entry, user_part.parse::<u32>()) {
            (_, Ok(uid)) => uid,
            (Some(entry), Err(_)) => entry.uid,
            (None, Err(_)) => 0,
        };
        let gid = match group_part {
            None => entry.map_or(0, |e| e.gid),
            Some("") => return Err(invalid()),
            Some(group) => match group.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => self
                    .groups
                    .iter()
                    .find(|g| g.name == group)
                    .map(|g| g.gid)
                    .ok_or_else(|| {
                        Error::not_found(format!(
                            "group {group:?}: no such group in the image's /etc/group"
                        ))
                    })?,
            },
        };
        let mut additional_gids = vec![gid];
        if let Some(name) = entry.map(|e| e.name.as_str()) {
            for group in &self.groups {
                if group.name != name
                    && group.members.iter().any(|m| m == name)
                    && !additional_gids.contains(&group.gid)
                {
                    additional_gids.push(group.gid);
                }
            }
        }
        Ok(ResolvedUser {
            uid,
            gid,
            additional_gids,
        })
    }
}

/// The text of `path` inside `root`, resolved with `RESOLVE_IN_ROOT`; a
/// missing file is empty.
fn read_in_root(root: &Path, path: &str) -> Result<String> {
    let shown = || format!("{}/{path}", root.display());
    let dir = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::from(std::io::Error::from(e)).context(root.display()))?;
    // Non-blocking, and only a regular file is read: an image whose
    // /etc/passwd is a fifo must not hang the caller.
    let fd = match rustix::fs::openat2(
        &dir,
        path,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(String::new()),
        Err(e) => return Err(Error::from(std::io::Error::from(e)).context(shown())),
    };
    let stat = rustix::fs::fstat(&fd)
        .map_err(|e| Error::from(std::io::Error::from(e)).context(shown()))?;
    if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(Error::invalid(format!("{}: not a regular file", shown())));
    }
    let mut text = String::new();
    std::fs::File::from(fd)
        .take(MAX_DB_BYTES)
        .read_to_string(&mut text)
        .map_err(|e| Error::from(e).context(shown()))?;
    Ok(text)
}
