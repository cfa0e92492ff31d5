//! Who is asking: the result of authenticating a request, and what every
//! other service takes as its caller.

use crate::keys::{Op, Scope};
use crate::quota::Tier;
use crate::users::{Role, UserId};

/// How a principal proved who they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// A bearer access token (from a password or key-signature login).
    AccessToken,
    /// A browser session cookie (with its CSRF token for unsafe methods).
    Session,
    /// An API key, by its public id.
    ApiKey(String),
    /// An S3 access key, by its access key id.
    S3Key(String),
    /// The node's own bootstrap credential (the node token), acting as the
    /// admin it names.
    Bootstrap,
}

/// An authenticated caller: a user, their role, and the scope of the
/// credential they used.
///
/// A principal is only ever built by this crate (every field is read-only
/// outside it), from a credential it checked, so holding one is proof of
/// authentication at the time it was made. It is meant to live for one
/// request: revocation takes effect on the next request because the next
/// request authenticates again.
#[derive(Debug, Clone)]
pub struct Principal {
    pub(crate) user: UserId,
    pub(crate) name: String,
    pub(crate) role: Role,
    pub(crate) scope: Scope,
    pub(crate) via: Via,
    /// When the credential expires, for keys: a key minted by a key may not
    /// outlive it.
    pub(crate) expires_at: Option<u64>,
    /// The user's tier as it stood when the request authenticated (read
    /// with the credential, in the same query).
    pub(crate) tier: Tier,
    /// The permission epoch the credential was read under (see
    /// `perm_cache`): permission levels read under it may be reused.
    pub(crate) perm_epoch: i64,
}

impl Principal {
    /// The user.
    pub fn user(&self) -> UserId {
        self.user
    }

    /// The user's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The user's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// What the credential allows (everything, for a session or token).
    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// The user's tier, read when the request authenticated.
    pub fn tier(&self) -> &Tier {
        &self.tier
    }

    /// How the caller authenticated.
    pub fn via(&self) -> &Via {
        &self.via
    }

    /// Whether the caller may act as the node's administrator: the admin
    /// role *and* a credential whose scope includes `admin` (an admin's
    /// read-only backup key administers nothing).
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin && self.scope.ops.contains(Op::Admin)
    }

    /// Whether the credential is unscoped (a login's token or session, or
    /// a key with every operation on everything).
    pub fn is_unscoped(&self) -> bool {
        self.scope.covers(&Scope::full())
    }

    /// Whether the caller may change `user`'s account itself (password,
    /// login and encryption keys, sessions, deletion): the admin, or the
    /// user with an unscoped credential. A scoped key may not: adding a
    /// login key or setting a password would turn it into a full login.
    pub fn may_manage_account(&self, user: UserId) -> bool {
        self.is_admin() || (self.user == user && self.is_unscoped())
    }

    /// The audit log's name for this caller.
    pub(crate) fn actor(&self) -> (Option<i64>, String) {
        (Some(self.user.0), self.name.clone())
    }
}
