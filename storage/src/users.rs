//! Users on the storage port: the profile item, a uniqueness marker per
//! e-mail address, and the refresh tokens each user holds.

use std::sync::Arc;

use domain::{Email, User, UserId};
use time::OffsetDateTime;

use crate::{
    Cond, Key, Query, SortRange, Store, StoreError, Table, TxOp, from_item, port::to_item,
};

fn profile(id: UserId) -> Key {
    Key::new(format!("user#{id}"), "profile")
}
fn email_marker(email: &Email) -> Key {
    Key::new(format!("email#{email}"), "email")
}
fn identity_marker(identity: &str) -> Key {
    Key::new(format!("identity#{identity}"), "identity")
}
fn refresh(id: UserId, token: &str) -> Key {
    Key::new(format!("user#{id}"), format!("refresh#{token}"))
}

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("a user with this e-mail address exists")]
    DuplicateEmail,
    #[error("a user signs in with this external identity already")]
    DuplicateIdentity,
    #[error("the user was changed by someone else")]
    VersionMismatch,
    #[error("no such user")]
    NotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Points from a unique attribute (an e-mail address, an external identity)
/// to the user holding it.
#[derive(serde::Serialize, serde::Deserialize)]
struct EmailMarker {
    user_id: UserId,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct RefreshToken {
    #[serde(with = "time::serde::rfc3339")]
    expires_at: OffsetDateTime,
    /// The id of the first token of the sign-in this one descends from.
    #[serde(default)]
    family: Option<String>,
    /// When that sign-in was.
    #[serde(default, with = "time::serde::rfc3339::option")]
    signed_in_at: Option<OffsetDateTime>,
    /// Spent: exchanged once already. Kept until it expires, so that a
    /// second use is seen as the theft it is.
    #[serde(default)]
    used: bool,
}

/// A revoked refresh-token family.
#[derive(serde::Serialize, serde::Deserialize)]
struct RevokedFamily {
    #[serde(with = "time::serde::rfc3339")]
    at: OffsetDateTime,
}

fn family_key(id: UserId, family: &str) -> Key {
    Key::new(format!("user#{id}"), format!("refresh-family#{family}"))
}

/// What exchanging a refresh token came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refreshed {
    /// Spent now; the new token joins `family`, the sign-in at
    /// `signed_in_at` (unknown for tokens stored before it was kept).
    Fresh {
        family: String,
        signed_in_at: Option<OffsetDateTime>,
    },
    /// Spent before: someone replayed it. Its whole family is revoked (every
    /// token issued since that sign-in stops working).
    Reused,
    /// Unknown, expired, or of a revoked family.
    Invalid,
}

#[derive(Clone, Debug)]
pub struct Users {
    store: Arc<dyn Store>,
}

impl Users {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// Stores a new user; refuses an e-mail address already registered, or
    /// an external identity already linked to a user.
    pub async fn create(&self, user: &User) -> Result<(), UserError> {
        let mut ops = vec![
            TxOp::Put {
                table: Table::Users,
                item: to_item(
                    &email_marker(&user.email),
                    &EmailMarker { user_id: user.id },
                )?,
                cond: Some(Cond::NotExists),
            },
            TxOp::Put {
                table: Table::Users,
                item: to_item(&profile(user.id), user)?,
                cond: Some(Cond::NotExists),
            },
        ];
        if let Some(identity) = &user.identity {
            ops.push(TxOp::Put {
                table: Table::Users,
                item: to_item(
                    &identity_marker(identity),
                    &EmailMarker { user_id: user.id },
                )?,
                cond: Some(Cond::NotExists),
            });
        }
        match self.store.transact(ops).await {
            Ok(()) => Ok(()),
            Err(StoreError::TransactionCanceled { failed }) if failed.contains(&0) => {
                Err(UserError::DuplicateEmail)
            }
            Err(StoreError::TransactionCanceled { failed }) if failed.contains(&2) => {
                Err(UserError::DuplicateIdentity)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The user an external identity signs in as.
    pub async fn find_by_identity(&self, identity: &str) -> Result<Option<User>, StoreError> {
        let Some(marker) = self
            .store
            .get(Table::Users, &identity_marker(identity))
            .await?
        else {
            return Ok(None);
        };
        let marker: EmailMarker = from_item(marker)?;
        self.get(marker.user_id).await
    }

    pub async fn get(&self, id: UserId) -> Result<Option<User>, StoreError> {
        self.store
            .get(Table::Users, &profile(id))
            .await?
            .map(from_item)
            .transpose()
    }

    pub async fn find_by_email(&self, email: &Email) -> Result<Option<User>, StoreError> {
        let Some(marker) = self.store.get(Table::Users, &email_marker(email)).await? else {
            return Ok(None);
        };
        let marker: EmailMarker = from_item(marker)?;
        self.get(marker.user_id).await
    }

    /// Writes `user` (whose version is one more than `expected_version`) if the
    /// stored user is still at `expected_version`.
    pub async fn update(&self, user: &User, expected_version: u64) -> Result<(), UserError> {
        let item = to_item(&profile(user.id), user)?;
        match self
            .store
            .put(
                Table::Users,
                item,
                Some(Cond::eq("version", expected_version)),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(StoreError::ConditionFailed) => Err(UserError::VersionMismatch),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes the user, their e-mail and identity markers and every refresh
    /// token they hold.
    pub async fn delete(&self, user: &User) -> Result<(), UserError> {
        let mut ops = vec![
            TxOp::Delete {
                table: Table::Users,
                key: profile(user.id),
                cond: Some(Cond::Exists),
            },
            TxOp::Delete {
                table: Table::Users,
                key: email_marker(&user.email),
                cond: Some(Cond::eq("user_id", user.id.to_string())),
            },
        ];
        if let Some(identity) = &user.identity {
            ops.push(TxOp::Delete {
                table: Table::Users,
                key: identity_marker(identity),
                cond: Some(Cond::eq("user_id", user.id.to_string())),
            });
        }
        match self.store.transact(ops).await {
            Ok(()) => {}
            Err(StoreError::TransactionCanceled { .. }) => return Err(UserError::NotFound),
            Err(e) => return Err(e.into()),
        }
        let pk = format!("user#{}", user.id);
        let mut query = Query {
            range: SortRange::BeginsWith("refresh#".into()),
            limit: 100,
            ..Query::default()
        };
        loop {
            let page = self.store.query(Table::Users, &pk, &query).await?;
            for item in &page.items {
                self.store
                    .delete(Table::Users, &Key::of(item)?, None)
                    .await?;
            }
            match page.cursor {
                Some(c) => query.cursor = Some(c),
                None => return Ok(()),
            }
        }
    }

    /// Remembers a refresh token id until it expires or is used: a token
    /// of the sign-in `family`, made at `signed_in_at`.
    pub async fn store_refresh(
        &self,
        user: UserId,
        token_id: &str,
        family: &str,
        signed_in_at: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let token = RefreshToken {
            expires_at,
            family: Some(family.to_owned()),
            signed_in_at: Some(signed_in_at),
            used: false,
        };
        let item = to_item(&refresh(user, token_id), &token)?;
        self.store
            .put(Table::Users, item, Some(Cond::NotExists))
            .await
    }

    /// Exchanges a refresh token, as OAuth 2.0 rotation with reuse detection
    /// asks (RFC 9700 §4.14.2): a token works once; a token used a second
    /// time revokes its whole family.
    pub async fn consume_refresh(
        &self,
        user: UserId,
        token_id: &str,
        now: OffsetDateTime,
    ) -> Result<Refreshed, StoreError> {
        let key = refresh(user, token_id);
        let unspent = Cond::And(vec![
            Cond::Exists,
            Cond::Or(vec![
                Cond::HasNot("used".into()),
                Cond::Eq("used".into(), crate::Value::Bool(false)),
            ]),
        ]);
        let spent = self
            .store
            .update(
                Table::Users,
                &key,
                vec![crate::Update::set("used", true)],
                Some(unspent),
            )
            .await;
        match spent {
            Ok(item) => {
                let t: RefreshToken = from_item(item)?;
                let family = t.family.unwrap_or_else(|| token_id.to_owned());
                let revoked = self
                    .store
                    .get(Table::Users, &family_key(user, &family))
                    .await?
                    .is_some();
                Ok(if t.expires_at <= now || revoked {
                    Refreshed::Invalid
                } else {
                    Refreshed::Fresh {
                        family,
                        signed_in_at: t.signed_in_at,
                    }
                })
            }
            Err(StoreError::ConditionFailed) => {
                let Some(item) = self.store.get(Table::Users, &key).await? else {
                    return Ok(Refreshed::Invalid);
                };
                let t: RefreshToken = from_item(item)?;
                let family = t.family.unwrap_or_else(|| token_id.to_owned());
                let revoked = to_item(&family_key(user, &family), &RevokedFamily { at: now })?;
                self.store.put(Table::Users, revoked, None).await?;
                Ok(Refreshed::Reused)
            }
            Err(e) => Err(e),
        }
    }
}
