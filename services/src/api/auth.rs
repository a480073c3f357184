//! Who may call the Order API: bearer tokens from a token file, each naming
//! a principal, the accounts it may act for and its roles.
//!
//! Owns: reading and checking the token file ([`TokenTable`]), swapping in a
//! new one on reload (SIGHUP, see `api::serve_bound`), turning an
//! `Authorization: Bearer ...` value into a [`Caller`] (401 otherwise), and
//! the two rules every handler applies after it: the account must be in the
//! caller's scope, and fundings and replenishments need the `ops` role (403).
//! REST and gRPC call the same functions, so they agree.
//! Must never: log, print, count or echo a token (not in a message, not in
//! `Debug`, not in /metrics), compare one with a data-dependent early exit
//! (tokens are compared in constant time with `subtle`), or keep serving an
//! old table's principals after a reload succeeded. A reload that fails
//! keeps the table in force: a typo must not lock everyone out or let
//! everyone in.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use codecs::AccountId;
use serde::Deserialize;
use subtle::ConstantTimeEq;
use tracing::{info, warn};

use super::error::{ErrorCode, Reject};

/// Shortest token accepted in a token file: 128 bits as hex, so a token
/// cannot be guessed within any request budget.
pub const TOKEN_BYTES_MIN: usize = 32;
/// Longest token accepted (and longest `Authorization` value looked up).
pub const TOKEN_BYTES_MAX: usize = 512;

/// A role a token may hold besides acting for its accounts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Fundings and replenishments: moving cash and stock in from outside.
    Ops,
}

impl Role {
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Ops => "ops",
        }
    }
}

/// The accounts a principal may act for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccountScope {
    /// Every account (a back office, a market maker's own gateway).
    All,
    /// Only these.
    Only(BTreeSet<AccountId>),
}

/// Whom a token stands for. Carries no token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub accounts: AccountScope,
    pub roles: BTreeSet<Role>,
}

/// Who is calling, once authenticated.
#[derive(Clone, Debug)]
pub enum Caller {
    /// Authentication is off (no token file): everything is allowed, as
    /// before tokens existed.
    Unauthenticated,
    Principal(Arc<Principal>),
}

impl Caller {
    /// 403 `account_forbidden` unless the caller may act for `account`.
    pub fn may_act_for(&self, account: AccountId) -> Result<(), Reject> {
        let Caller::Principal(principal) = self else {
            return Ok(());
        };
        match &principal.accounts {
            AccountScope::All => Ok(()),
            AccountScope::Only(accounts) if accounts.contains(&account) => Ok(()),
            AccountScope::Only(_) => Err(Reject::field(
                ErrorCode::AccountForbidden,
                "account",
                format!("this token may not act for account {}", account.0),
            )),
        }
    }

    /// 403 `role_required` unless the caller holds `role`.
    pub fn require(&self, role: Role) -> Result<(), Reject> {
        match self {
            Caller::Unauthenticated => Ok(()),
            Caller::Principal(principal) if principal.roles.contains(&role) => Ok(()),
            Caller::Principal(_) => Err(Reject::new(
                ErrorCode::RoleRequired,
                format!(
                    "this operation needs a token with the {} role",
                    role.as_str()
                ),
            )),
        }
    }
}

/// Who may read `/metrics` and `/reports/hdr` when tokens are on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricsAccess {
    /// Anyone who reaches the port (scrapers on a private network).
    #[default]
    Open,
    /// Any valid token.
    Token,
}

/// Where tokens come from and who may read metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthConfig {
    pub tokens_file: PathBuf,
    pub metrics: MetricsAccess,
}

/// Why a token file was refused. Never holds a token.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("reading the token file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the token file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("the token file {path}: entry {index} ({principal}): {reason}")]
    Invalid {
        path: PathBuf,
        index: usize,
        principal: String,
        reason: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    #[serde(default, rename = "token")]
    tokens: Vec<TokenEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    principal: String,
    token: String,
    #[serde(default)]
    accounts: Vec<u64>,
    #[serde(default)]
    all_accounts: bool,
    #[serde(default)]
    roles: Vec<Role>,
}

/// The tokens in force: each token's bytes and its principal.
pub struct TokenTable {
    entries: Vec<(Box<[u8]>, Arc<Principal>)>,
}

/// Shows principals only: a table in a log line must not leak a token.
impl fmt::Debug for TokenTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|(_, p)| &p.name))
            .finish()
    }
}

impl TokenTable {
    /// Reads and checks a token file (see docs/SECURITY.md for its form).
    pub fn load(path: &Path) -> Result<TokenTable, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses a token file's text; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<TokenTable, AuthError> {
        // toml's message quotes the offending line, which may hold a token:
        // keep only its first line (the position and the reason).
        let file: TokenFile = toml::from_str(text).map_err(|e| AuthError::Parse {
            path: path.to_path_buf(),
            message: format!(
                "{} (at byte {:?})",
                e.message(),
                e.span().map(|span| span.start)
            ),
        })?;
        let mut seen = HashSet::new();
        let mut entries = Vec::with_capacity(file.tokens.len());
        for (index, entry) in file.tokens.into_iter().enumerate() {
            let invalid = |reason: &str| AuthError::Invalid {
                path: path.to_path_buf(),
                index,
                principal: entry.principal.clone(),
                reason: reason.to_string(),
            };
            if entry.principal.trim().is_empty() {
                return Err(invalid("principal is empty"));
            }
            if !(TOKEN_BYTES_MIN..=TOKEN_BYTES_MAX).contains(&entry.token.len()) {
                return Err(invalid(&format!(
                    "token must be {TOKEN_BYTES_MIN} to {TOKEN_BYTES_MAX} bytes"
                )));
            }
            // What an HTTP header and gRPC metadata carry unchanged.
            if !entry.token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(invalid("token must be printable ASCII without spaces"));
            }
            if !seen.insert(entry.token.clone()) {
                return Err(invalid("token repeats an earlier entry's token"));
            }
            let accounts = match (entry.all_accounts, entry.accounts.is_empty()) {
                (true, true) => AccountScope::All,
                (true, false) => {
                    return Err(invalid("give accounts or all_accounts = true, not both"))
                }
                (false, _) => {
                    AccountScope::Only(entry.accounts.iter().copied().map(AccountId).collect())
                }
            };
            let principal = Principal {
                name: entry.principal,
                accounts,
                roles: entry.roles.into_iter().collect(),
            };
            entries.push((
                entry.token.into_bytes().into_boxed_slice(),
                Arc::new(principal),
            ));
        }
        Ok(TokenTable { entries })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The principal of `token`. Every entry is compared, each in constant
    /// time, so the time taken says nothing about which entry (if any)
    /// matched or how much of a guess was right.
    fn principal_of(&self, token: &[u8]) -> Option<Arc<Principal>> {
        let mut found = None;
        for (known, principal) in &self.entries {
            if bool::from(known.as_ref().ct_eq(token)) {
                found = Some(Arc::clone(principal));
            }
        }
        found
    }
}

/// The API's authenticator: off, or a token table that a reload replaces.
#[derive(Clone, Debug)]
pub struct Auth {
    inner: Option<Arc<AuthInner>>,
}

#[derive(Debug)]
struct AuthInner {
    config: AuthConfig,
    // Read on every request, written on reload only; never held across an
    // await. The API is off the shards' data path.
    table: RwLock<Arc<TokenTable>>,
}

impl Auth {
    /// Authentication off: every caller may do everything.
    pub fn off() -> Self {
        Auth { inner: None }
    }

    /// Loads the token file named in `config`.
    pub fn load(config: AuthConfig) -> Result<Self, AuthError> {
        let table = TokenTable::load(&config.tokens_file)?;
        warn_if_others_may_read(&config.tokens_file);
        info!(
            tokens_file = %config.tokens_file.display(),
            tokens = table.len(),
            "order API: bearer tokens loaded"
        );
        Ok(Auth {
            inner: Some(Arc::new(AuthInner {
                config,
                table: RwLock::new(Arc::new(table)),
            })),
        })
    }

    pub fn is_on(&self) -> bool {
        self.inner.is_some()
    }

    /// The token file, when authentication is on.
    pub fn tokens_file(&self) -> Option<&Path> {
        self.inner
            .as_deref()
            .map(|i| i.config.tokens_file.as_path())
    }

    /// Reads the token file again and puts it in force; on error the table
    /// in force stays. Returns how many tokens are now in force.
    pub fn reload(&self) -> Result<usize, AuthError> {
        let Some(inner) = &self.inner else {
            return Ok(0);
        };
        let table = Arc::new(TokenTable::load(&inner.config.tokens_file)?);
        let count = table.len();
        *inner.table.write().unwrap_or_else(|p| p.into_inner()) = table;
        Ok(count)
    }

    /// The caller behind an `Authorization` value: 401 `unauthenticated`
    /// when tokens are on and it is absent, not `Bearer <token>`, or not a
    /// token in force.
    pub fn authenticate(&self, authorization: Option<&[u8]>) -> Result<Caller, Reject> {
        let Some(inner) = &self.inner else {
            return Ok(Caller::Unauthenticated);
        };
        let Some(value) = authorization else {
            return Err(unauthenticated("send Authorization: Bearer <token>"));
        };
        let token = bearer_token(value)
            .ok_or_else(|| unauthenticated("the Authorization value must be Bearer <token>"))?;
        let table = Arc::clone(&inner.table.read().unwrap_or_else(|p| p.into_inner()));
        table
            .principal_of(token)
            .map(Caller::Principal)
            .ok_or_else(|| unauthenticated("the bearer token is not valid"))
    }

    /// Whether `/metrics` and `/reports/hdr` need a token.
    pub fn metrics_need_token(&self) -> bool {
        self.inner
            .as_deref()
            .is_some_and(|i| i.config.metrics == MetricsAccess::Token)
    }
}

/// Tokens are secrets: a file that other users may read hands them out.
/// A warning, not a refusal, so a deployment whose secrets volume has its
/// own access control (a Kubernetes Secret is mounted 0644 by default)
/// still starts.
#[cfg(unix)]
fn warn_if_others_may_read(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(metadata) = std::fs::metadata(path) {
        let mode = metadata.permissions().mode();
        if mode & 0o077 != 0 {
            warn!(
                tokens_file = %path.display(),
                mode = format!("{:o}", mode & 0o777),
                "order API: the token file is readable by other users; chmod 600 it"
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_others_may_read(_: &Path) {}

fn unauthenticated(message: &str) -> Reject {
    Reject::new(ErrorCode::Unauthenticated, message)
}

/// The token of `Bearer <token>` (the scheme is case-insensitive, RFC 7235).
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer ";
    if value.len() <= SCHEME.len() || value.len() > SCHEME.len() + TOKEN_BYTES_MAX {
        return None;
    }
    let (scheme, token) = value.split_at(SCHEME.len());
    scheme
        .eq_ignore_ascii_case(SCHEME)
        .then(|| token.trim_ascii())
        .filter(|token| !token.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn table(text: &str) -> Result<TokenTable, AuthError> {
        TokenTable::parse(text, Path::new("tokens.toml"))
    }

    #[test]
    fn a_token_file_maps_tokens_to_principals() -> Result<(), AuthError> {
        let t = table(&format!(
            "[[token]]\nprincipal = \"desk\"\ntoken = \"{A}\"\naccounts = [7, 8]\n\n\
             [[token]]\nprincipal = \"ops\"\ntoken = \"{B}\"\nall_accounts = true\nroles = [\"ops\"]\n"
        ))?;
        let desk = t.principal_of(A.as_bytes()).expect("desk");
        assert_eq!(desk.name, "desk");
        assert_eq!(
            desk.accounts,
            AccountScope::Only([AccountId(7), AccountId(8)].into())
        );
        assert!(desk.roles.is_empty());
        let ops = t.principal_of(B.as_bytes()).expect("ops");
        assert_eq!(ops.accounts, AccountScope::All);
        assert!(ops.roles.contains(&Role::Ops));
        assert!(t.principal_of(b"nope").is_none());
        assert!(t.principal_of(&A.as_bytes()[1..]).is_none());
        // Debug shows principals, never tokens.
        let shown = format!("{t:?}");
        assert!(!shown.contains(A) && shown.contains("desk"), "{shown}");
        Ok(())
    }

    #[test]
    fn bad_token_files_are_refused_without_echoing_tokens() {
        for (text, needle) in [
            ("[[token]]\nprincipal = \"x\"\ntoken = \"short\"\n", "32 to 512"),
            (
                &format!("[[token]]\nprincipal = \"\"\ntoken = \"{A}\"\n") as &str,
                "principal is empty",
            ),
            (
                &format!("[[token]]\nprincipal = \"x\"\ntoken = \"{A}\"\n[[token]]\nprincipal = \"y\"\ntoken = \"{A}\"\n"),
                "repeats",
            ),
            (
                &format!("[[token]]\nprincipal = \"x\"\ntoken = \"{A} x\"\n"),
                "printable",
            ),
            (
                &format!("[[token]]\nprincipal = \"x\"\ntoken = \"{A}\"\naccounts = [1]\nall_accounts = true\n"),
                "not both",
            ),
            (
                &format!("[[token]]\nprincipal = \"x\"\ntoken = \"{A}\"\nroles = [\"admin\"]\n"),
                "unknown variant",
            ),
            (
                &format!("[[token]]\nprincipal = \"x\"\ntokn = \"{A}\"\n"),
                "unknown field",
            ),
        ] {
            let error = table(text).expect_err(text).to_string();
            assert!(error.contains(needle), "{error}");
            assert!(!error.contains(A), "{error}");
        }
    }

    #[test]
    fn bearer_values() {
        assert_eq!(bearer_token(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"bearer  abc "), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"Basic abc"), None);
        assert_eq!(bearer_token(b"Bearer "), None);
        assert_eq!(bearer_token(b"Bearer    "), None);
        assert_eq!(bearer_token(b"abc"), None);
    }

    #[test]
    fn scope_and_roles() {
        let principal = |accounts, roles: &[Role]| {
            Caller::Principal(Arc::new(Principal {
                name: "p".into(),
                accounts,
                roles: roles.iter().copied().collect(),
            }))
        };
        let desk = principal(AccountScope::Only([AccountId(7)].into()), &[]);
        assert!(desk.may_act_for(AccountId(7)).is_ok());
        let refused = desk.may_act_for(AccountId(8)).expect_err("outside");
        assert_eq!(refused.code, ErrorCode::AccountForbidden);
        assert_eq!(
            desk.require(Role::Ops).expect_err("no role").code,
            ErrorCode::RoleRequired
        );
        let ops = principal(AccountScope::All, &[Role::Ops]);
        assert!(ops.may_act_for(AccountId(u64::MAX)).is_ok());
        assert!(ops.require(Role::Ops).is_ok());
        assert!(Caller::Unauthenticated.may_act_for(AccountId(1)).is_ok());
        assert!(Caller::Unauthenticated.require(Role::Ops).is_ok());
    }

    #[test]
    fn auth_off_lets_everyone_in_and_on_needs_a_known_token(
    ) -> Result<(), Box<dyn std::error::Error>> {
        assert!(matches!(
            Auth::off().authenticate(None),
            Ok(Caller::Unauthenticated)
        ));
        let dir = std::env::temp_dir().join(format!("tf-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("tokens.toml");
        std::fs::write(
            &path,
            format!("[[token]]\nprincipal = \"desk\"\ntoken = \"{A}\"\naccounts = [7]\n"),
        )?;
        let auth = Auth::load(AuthConfig {
            tokens_file: path.clone(),
            metrics: MetricsAccess::Token,
        })?;
        assert!(auth.metrics_need_token());
        for value in [None, Some(&b"Bearer nope"[..]), Some(B.as_bytes())] {
            let refused = auth.authenticate(value).expect_err("refused");
            assert_eq!(refused.code, ErrorCode::Unauthenticated);
        }
        let bearer_a = format!("Bearer {A}");
        assert!(auth.authenticate(Some(bearer_a.as_bytes())).is_ok());
        // Rotation: B replaces A.
        std::fs::write(
            &path,
            format!("[[token]]\nprincipal = \"desk\"\ntoken = \"{B}\"\naccounts = [7]\n"),
        )?;
        assert_eq!(auth.reload()?, 1);
        assert!(auth.authenticate(Some(bearer_a.as_bytes())).is_err());
        let bearer_b = format!("Bearer {B}");
        assert!(auth.authenticate(Some(bearer_b.as_bytes())).is_ok());
        // A broken file keeps B in force.
        std::fs::write(&path, "[[token]\n")?;
        assert!(auth.reload().is_err());
        assert!(auth.authenticate(Some(bearer_b.as_bytes())).is_ok());
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
