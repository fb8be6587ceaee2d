//! htpasswd credentials (`basicauth`'s `htpasswd.file` and `htpasswd.inline`, and the store's
//! `auth.basic`): one `user:password-hash` per line. Supported hashes: bcrypt (`$2a$`, `$2b$`,
//! `$2y$`, as `htpasswd -B` writes) and plain text. Other htpasswd schemes (`$apr1$` MD5,
//! `{SHA}`, `{SSHA}`, `$5$`/`$6$` crypt) are refused when the file is read, naming the line.
//!
//! bcrypt is slow on purpose (tens of milliseconds at the usual cost); a password that verified
//! once is remembered by its SHA-256, so later requests of that user cost a hash, not a bcrypt.

use std::collections::HashMap;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use super::constant_time_eq;

/// Parsed htpasswd entries.
pub struct Htpasswd {
    users: HashMap<String, Hash>,
    /// Users whose bcrypt password verified, with the SHA-256 of that password.
    verified: Mutex<HashMap<String, [u8; 32]>>,
}

enum Hash {
    Bcrypt(String),
    Plain(String),
}

impl Htpasswd {
    /// Parses htpasswd text; `origin` names it in errors. Later lines win, so inline entries
    /// read after the file override it (as upstream).
    pub fn parse(sources: &[(&str, String)]) -> Result<Htpasswd, String> {
        let mut users = HashMap::new();
        for (origin, text) in sources {
            for (number, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let (user, hash) = line.split_once(':').ok_or_else(|| {
                    format!("{origin} line {}: expected user:password-hash", number + 1)
                })?;
                let hash = if ["$2a$", "$2b$", "$2y$", "$2x$"]
                    .iter()
                    .any(|p| hash.starts_with(p))
                {
                    Hash::Bcrypt(hash.to_string())
                } else if ["$apr1$", "{SHA}", "{SSHA}", "$5$", "$6$", "$1$"]
                    .iter()
                    .any(|p| hash.starts_with(p))
                {
                    return Err(format!(
                        "{origin} line {}: user {user:?} has a hash scheme that is not \
                         supported; use bcrypt (htpasswd -B) or a plain-text password",
                        number + 1
                    ));
                } else {
                    Hash::Plain(hash.to_string())
                };
                users.insert(user.to_string(), hash);
            }
        }
        Ok(Htpasswd {
            users,
            verified: Mutex::new(HashMap::new()),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Whether `password` is `user`'s.
    pub fn matches(&self, user: &str, password: &str) -> bool {
        match self.users.get(user) {
            None => false,
            Some(Hash::Plain(expected)) => {
                constant_time_eq(expected.as_bytes(), password.as_bytes())
            }
            Some(Hash::Bcrypt(hash)) => {
                let digest: [u8; 32] = Sha256::digest(password.as_bytes()).into();
                let known = self
                    .verified
                    .lock()
                    .ok()
                    .and_then(|cache| cache.get(user).copied());
                if let Some(known) = known {
                    if constant_time_eq(&known, &digest) {
                        return true;
                    }
                }
                let ok = bcrypt::verify(password, hash).unwrap_or(false);
                if ok {
                    if let Ok(mut cache) = self.verified.lock() {
                        cache.insert(user.to_string(), digest);
                    }
                }
                ok
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bcrypt_and_plain_entries_verify_and_inline_overrides_the_file() {
        let hash = bcrypt::hash("b-secret", 4).unwrap();
        let file = format!("# users\nalice:{hash}\nbob:old\n");
        let htpasswd = Htpasswd::parse(&[
            ("htpasswd::file", file),
            ("htpasswd::inline", "bob:new".into()),
        ])
        .unwrap();
        assert!(htpasswd.matches("alice", "b-secret"));
        // Second time from the cache; a wrong password still fails.
        assert!(htpasswd.matches("alice", "b-secret"));
        assert!(!htpasswd.matches("alice", "b-secre"));
        assert!(htpasswd.matches("bob", "new"));
        assert!(!htpasswd.matches("bob", "old"));
        assert!(!htpasswd.matches("carol", ""));
    }

    #[test]
    fn unsupported_schemes_and_bad_lines_name_the_line() {
        let err = Htpasswd::parse(&[("htpasswd::inline", "a:x\nb:$apr1$xyz$abc".into())])
            .err()
            .unwrap();
        assert!(err.contains("line 2") && err.contains("bcrypt"), "{err}");
        let err = Htpasswd::parse(&[("htpasswd::file", "nocolon".into())])
            .err()
            .unwrap();
        assert!(
            err.contains("line 1") && err.contains("user:password-hash"),
            "{err}"
        );
    }
}
