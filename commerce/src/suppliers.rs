//! Suppliers as records of their own: who they are and how their low-stock
//! alerts reach them (contact e-mail, webhook URL). Admins manage them;
//! supplier users name theirs by `supplier_id`, as products do.
//!
//! Kept in the users table, one partition (`supplier` / `{id}`): a shop
//! has hundreds of suppliers, not millions.

use base64::Engine;
use domain::{
    Email,
    product::SUPPLIER_LEN,
    validate::{FieldReader, Len, ValidationErrors},
};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use storage::{Cond, Key, Query, Store, StoreError, Table, from_item, to_item};

const PK: &str = "supplier";
const NAME_LEN: Len = Len { min: 1, max: 200 };
const URL_LEN: Len = Len { min: 1, max: 2048 };

/// A supplier as stored, with the secret its webhooks are signed with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Supplier {
    pub id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// HMAC-SHA256 key of the webhook signatures (base64url). Shown once,
    /// when made; never in a listing.
    #[serde(default)]
    pub webhook_secret: String,
    pub version: u64,
}

/// What the API shows of a supplier.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SupplierView {
    pub id: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contact_email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// Only in the answer that makes the secret (create, rotate): keep it to
    /// check the `Shopstream-Signature` of the webhooks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,
    pub version: u64,
}

impl Supplier {
    pub fn view(&self, with_secret: bool) -> SupplierView {
        SupplierView {
            id: self.id.clone(),
            name: self.name.clone(),
            contact_email: self.contact_email.clone(),
            webhook_url: self.webhook_url.clone(),
            webhook_secret: with_secret.then(|| self.webhook_secret.clone()),
            version: self.version,
        }
    }
}

/// A create or replace body, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SupplierDraft {
    /// Only in a create body.
    pub id: Option<String>,
    pub name: String,
    pub contact_email: Option<String>,
    pub webhook_url: Option<String>,
}

impl SupplierDraft {
    /// `id` (create only), `name`; `contact_email`, `webhook_url` optional.
    /// A webhook URL must be `https://` unless `allow_http`.
    pub fn parse(
        body: &serde_json::Value,
        create: bool,
        allow_http: bool,
    ) -> Result<Self, ValidationErrors> {
        let mut r = FieldReader::new(body)?;
        let id = if create {
            r.string("id", true, SUPPLIER_LEN)
        } else {
            None
        };
        let name = r.string("name", true, NAME_LEN);
        let contact_email = r
            .string("contact_email", false, Len { min: 1, max: 254 })
            .and_then(|s| match Email::parse(&s) {
                Ok(e) => Some(e.as_str().to_owned()),
                Err(e) => {
                    r.errors.push("contact_email", e.to_string());
                    None
                }
            });
        let webhook_url = r.string("webhook_url", false, URL_LEN).and_then(|s| {
            match check_webhook_url(&s, allow_http) {
                Ok(()) => Some(s),
                Err(why) => {
                    r.errors.push("webhook_url", why);
                    None
                }
            }
        });
        r.deny_unknown();
        let errors = r.errors;
        match name {
            Some(name) if errors.is_empty() && (id.is_some() || !create) => Ok(Self {
                id,
                name,
                contact_email,
                webhook_url,
            }),
            _ => Err(errors),
        }
    }
}

/// An absolute `https://` URL with a host name (not an address), no
/// credentials and no fragment (`http://` and addresses too when
/// `allow_http`, for tests and private networks).
pub fn check_webhook_url(s: &str, allow_http: bool) -> Result<(), String> {
    let url = reqwest::Url::parse(s).map_err(|e| format!("must be an absolute URL ({e})"))?;
    match url.scheme() {
        "https" => {}
        "http" if allow_http => {}
        "http" => return Err("must be an https:// URL".into()),
        other => return Err(format!("must be an https:// URL, not {other}:")),
    }
    let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
        return Err("must name a host".into());
    };
    // An address would let a webhook reach the shop's own network
    // (metadata endpoints, internal services) by its number.
    let address = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .is_ok();
    if address && !allow_http {
        return Err("must name a host, not an address".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials".into());
    }
    if url.fragment().is_some() {
        return Err("must not have a #fragment".into());
    }
    Ok(())
}

fn key(id: &str) -> Key {
    Key::new(PK, id)
}

fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Why a supplier write was refused.
#[derive(Debug, thiserror::Error)]
pub enum SupplierError {
    #[error("no such supplier")]
    NotFound,
    #[error("a supplier with this id exists")]
    Exists,
    #[error("the supplier changed meanwhile (version {current})")]
    VersionMismatch { current: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The supplier records in a store.
#[derive(Clone, Debug)]
pub struct Suppliers {
    pub store: std::sync::Arc<dyn Store>,
}

impl Suppliers {
    pub async fn get(&self, id: &str) -> Result<Option<Supplier>, StoreError> {
        match self.store.get(Table::Users, &key(id)).await? {
            Some(item) => Ok(Some(from_item(item)?)),
            None => Ok(None),
        }
    }

    /// Every supplier, in id order.
    pub async fn list(&self) -> Result<Vec<Supplier>, StoreError> {
        let mut out = Vec::new();
        let mut query = Query {
            limit: storage::MAX_PAGE,
            ..Query::default()
        };
        loop {
            let page = self.store.query(Table::Users, PK, &query).await?;
            for item in page.items {
                out.push(from_item(item)?);
            }
            match page.cursor {
                Some(c) => query.cursor = Some(c),
                None => return Ok(out),
            }
        }
    }

    pub async fn create(&self, draft: SupplierDraft) -> Result<Supplier, SupplierError> {
        let id = draft.id.clone().unwrap_or_default();
        let supplier = Supplier {
            id: id.clone(),
            name: draft.name,
            contact_email: draft.contact_email,
            webhook_url: draft.webhook_url,
            webhook_secret: new_secret(),
            version: 1,
        };
        match self
            .store
            .put(
                Table::Users,
                to_item(&key(&id), &supplier)?,
                Some(Cond::NotExists),
            )
            .await
        {
            Ok(()) => Ok(supplier),
            Err(StoreError::ConditionFailed) => Err(SupplierError::Exists),
            Err(e) => Err(e.into()),
        }
    }

    /// Replaces name, contact and webhook URL (the secret stays), if the
    /// stored version is `if_version` (when given).
    pub async fn replace(
        &self,
        id: &str,
        draft: SupplierDraft,
        if_version: Option<u64>,
    ) -> Result<Supplier, SupplierError> {
        self.change(id, if_version, |s| {
            s.name = draft.name.clone();
            s.contact_email = draft.contact_email.clone();
            s.webhook_url = draft.webhook_url.clone();
        })
        .await
    }

    /// A new webhook secret; the old one stops working at once.
    pub async fn rotate_secret(&self, id: &str) -> Result<Supplier, SupplierError> {
        self.change(id, None, |s| s.webhook_secret = new_secret())
            .await
    }

    async fn change(
        &self,
        id: &str,
        if_version: Option<u64>,
        edit: impl Fn(&mut Supplier),
    ) -> Result<Supplier, SupplierError> {
        loop {
            let mut s = self.get(id).await?.ok_or(SupplierError::NotFound)?;
            if let Some(v) = if_version
                && v != s.version
            {
                return Err(SupplierError::VersionMismatch { current: s.version });
            }
            let read = s.version;
            edit(&mut s);
            s.version = read + 1;
            match self
                .store
                .put(
                    Table::Users,
                    to_item(&key(id), &s)?,
                    Some(Cond::eq("version", read as i64)),
                )
                .await
            {
                Ok(()) => return Ok(s),
                // Changed meanwhile: read again (or report the mismatch).
                Err(StoreError::ConditionFailed) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Deletes the record; its products and alerts keep their
    /// `supplier_id` (alerts are then delivered nowhere, and counted).
    pub async fn delete(&self, id: &str) -> Result<(), SupplierError> {
        match self
            .store
            .delete(Table::Users, &key(id), Some(Cond::Exists))
            .await
        {
            Ok(_) => Ok(()),
            Err(StoreError::ConditionFailed) => Err(SupplierError::NotFound),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_draft_names_every_field_at_fault() {
        let e = SupplierDraft::parse(
            &json!({"id": "", "contact_email": "nope", "webhook_url": "ftp://x.example", "extra": 1}),
            true,
            false,
        )
        .unwrap_err();
        let fields: Vec<&str> = e.fields().collect();
        for f in ["id", "name", "contact_email", "webhook_url", "extra"] {
            assert!(fields.contains(&f), "{f} missing from {fields:?}");
        }
    }

    #[test]
    fn webhook_urls_are_https_unless_allowed() {
        assert!(check_webhook_url("https://hooks.example/a?b=1", false).is_ok());
        assert_eq!(
            check_webhook_url("http://127.0.0.1:9/x", false).unwrap_err(),
            "must be an https:// URL"
        );
        assert!(check_webhook_url("http://127.0.0.1:9/x", true).is_ok());
        assert_eq!(
            check_webhook_url("https://169.254.169.254/latest", false).unwrap_err(),
            "must name a host, not an address"
        );
        assert!(check_webhook_url("https://[::1]/x", false).is_err());
        assert!(check_webhook_url("https://user:pw@hooks.example/", false).is_err());
        assert!(check_webhook_url("https://hooks.example/#x", false).is_err());
        assert!(check_webhook_url("hooks.example/x", false).is_err());
    }

    #[test]
    fn a_good_draft_is_kept_trimmed_and_lower_cased() {
        let d = SupplierDraft::parse(
            &json!({"id": " acme ", "name": "Acme", "contact_email": "Stock@ACME.example"}),
            true,
            false,
        )
        .unwrap();
        assert_eq!(d.id.as_deref(), Some("acme"));
        assert_eq!(d.contact_email.as_deref(), Some("stock@acme.example"));
        assert_eq!(d.webhook_url, None);
    }
}
