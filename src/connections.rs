//! The live registry of connections (the tenants). Seeded from the config file at start, changed
//! through the admin API, and kept in the store, so every instance serves the same tenants: a
//! change made on one instance is announced on the store's event feed and re-read by all.
//!
//! What the store keeps: each connection's settings with its AppSecret and hook secret sealed
//! under the master key, its backend credentials as hashes, and its logo under the logo's
//! fingerprint. Config connections are written only when the store has none of that identifier:
//! after the first start, the store (and so the admin API) is the source of truth.

use crate::codes::PreparedLogo;
use crate::config::{
    ConfigError, Connection, ConnectionSettings, Connections, Credential, FieldError, Secret, Settings,
    WeChatApp, read_secret,
};
use crate::crypto::MasterKeys;
use crate::session::unix_now;
use crate::store::{SessionStore, StoreError};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

const RECORDS_KEY: &str = "connections";
const LOCK_KEY: &str = "connections-lock";
const RECORD_TTL_SECS: u64 = 100 * 365 * 24 * 3600;
const APP_SECRET: &str = "app-secret";
const HOOK_SECRET: &str = "hook-secret";

fn logo_key(fingerprint: &str) -> String {
    format!("connection-logo:{fingerprint}")
}

/// One connection as the store keeps it.
#[derive(Clone, Serialize, Deserialize)]
pub struct Record {
    /// Secrets and file paths are never serialized (see `ConnectionSettings`).
    pub settings: ConnectionSettings,
    app_secret: Option<String>,
    hook_secret: Option<String>,
    pub credentials: Vec<Credential>,
    /// The logo's fingerprint; its bytes are stored under it.
    pub logo: Option<String>,
    pub updated_at: u64,
}

#[derive(Debug)]
pub enum RegistryError {
    /// A setting is not acceptable (`422`, naming it).
    Invalid(FieldError),
    NotFound,
    Exists,
    /// Another change is being made; try again.
    Busy,
    Store(StoreError),
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryError::Invalid(e) => write!(f, "{e}"),
            RegistryError::NotFound => f.write_str("no such connection"),
            RegistryError::Exists => f.write_str("a connection with this identifier exists"),
            RegistryError::Busy => f.write_str("the connections are being changed by another call"),
            RegistryError::Store(e) => write!(f, "{e}"),
        }
    }
}

impl From<StoreError> for RegistryError {
    fn from(e: StoreError) -> Self {
        RegistryError::Store(e)
    }
}

impl From<FieldError> for RegistryError {
    fn from(e: FieldError) -> Self {
        RegistryError::Invalid(e)
    }
}

fn invalid(field: &str, message: impl Into<String>) -> RegistryError {
    RegistryError::Invalid(FieldError {
        field: field.to_owned(),
        message: message.into(),
    })
}

pub struct Registry {
    store: SessionStore,
    master: Arc<MasterKeys>,
    public_base_url: String,
    shared: Option<WeChatApp>,
    default: String,
    live: RwLock<Arc<Connections>>,
}

impl Registry {
    /// Writes the config's connections (`from_config`, already checked) that the store lacks,
    /// and loads them all.
    pub async fn start(
        settings: &Settings,
        from_config: Connections,
        store: SessionStore,
        master: Arc<MasterKeys>,
        public_base_url: &str,
    ) -> Result<Self, ConfigError> {
        let default = from_config
            .default_connection()
            .map(|c| c.identifier.clone())
            .unwrap_or_default();
        let registry = Self {
            store,
            master,
            public_base_url: public_base_url.to_owned(),
            shared: settings.shared_app()?,
            default,
            live: RwLock::new(Arc::new(from_config)),
        };
        let store_error = |e: RegistryError| ConfigError(format!("connections in the store: {e}"));
        // Usually every config connection is stored already: then nothing is locked or written.
        let stored = registry.read().await.map_err(|e| store_error(e.into()))?;
        if settings
            .connections
            .iter()
            .all(|c| stored.contains_key(&c.identifier))
        {
            registry.reload().await.map_err(|e| store_error(e.into()))?;
            return Ok(registry);
        }
        registry
            .change(|records, registry| {
                let mut logos = Vec::new();
                for c in &settings.connections {
                    if !records.contains_key(&c.identifier) {
                        let (record, mut logo) = registry.seed_record(c)?;
                        logos.append(&mut logo);
                        records.insert(c.identifier.clone(), record);
                    }
                }
                Ok(((), logos))
            })
            .await
            .map_err(store_error)?;
        Ok(registry)
    }

    fn seed_record(&self, c: &ConnectionSettings) -> Result<(Record, Vec<Vec<u8>>), RegistryError> {
        let field = |f: &str, e: String| invalid(f, format!("{f}: {e}"));
        let backend =
            read_secret(&c.backend_secret, &c.backend_secret_file).map_err(|e| field("backend_secret", e))?;
        let app_secret = match &c.appid {
            Some(_) => {
                Some(read_secret(&c.app_secret, &c.app_secret_file).map_err(|e| field("app_secret", e))?)
            }
            None => None,
        };
        let hook_secret = match &c.account_hook {
            Some(hook) => {
                Some(read_secret(&hook.secret, &hook.secret_file).map_err(|e| field("account_hook", e))?)
            }
            None => None,
        };
        let logo = match &c.logo {
            Some(path) => Some(std::fs::read(path).map_err(|e| field("logo", e.to_string()))?),
            None => None,
        };
        let mut settings = c.clone();
        settings.backend_secret = None;
        settings.backend_secret_file = None;
        settings.logo = None;
        self.record(
            settings,
            app_secret,
            hook_secret,
            vec![Credential::for_value(backend.expose(), unix_now())],
            logo,
        )
    }

    /// A record for `settings` (checked by resolving it), with its secrets sealed; returns the
    /// logo bytes to store beside it.
    fn record(
        &self,
        mut settings: ConnectionSettings,
        app_secret: Option<Secret>,
        hook_secret: Option<Secret>,
        credentials: Vec<Credential>,
        logo: Option<Vec<u8>>,
    ) -> Result<(Record, Vec<Vec<u8>>), RegistryError> {
        settings.app_secret = app_secret.clone();
        if let Some(hook) = &mut settings.account_hook {
            hook.secret = hook_secret.clone();
        }
        let prepared = match &logo {
            Some(bytes) => Some(Arc::new(
                PreparedLogo::prepare(bytes).map_err(|e| invalid("logo", format!("logo {e}")))?,
            )),
            None => None,
        };
        settings.resolve(&self.public_base_url, self.shared.as_ref(), prepared.clone())?;
        let seal = |context: &str, secret: &Option<Secret>| -> Result<Option<String>, RegistryError> {
            secret
                .as_ref()
                .map(|s| self.master.seal(context, s.expose().as_bytes()))
                .transpose()
                .map_err(|e| RegistryError::Store(StoreError(e.0)))
        };
        let record = Record {
            app_secret: seal(APP_SECRET, &app_secret)?,
            hook_secret: seal(HOOK_SECRET, &hook_secret)?,
            settings,
            credentials,
            logo: prepared.as_ref().map(|p| p.fingerprint.clone()),
            updated_at: unix_now(),
        };
        Ok((record, logo.into_iter().collect()))
    }

    /// The connections in force.
    pub fn snapshot(&self) -> Arc<Connections> {
        self.live
            .read()
            .map(|l| l.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    pub fn get(&self, identifier: &str) -> Option<Arc<Connection>> {
        self.snapshot().get(identifier).cloned()
    }

    pub fn default_connection(&self) -> Option<Arc<Connection>> {
        self.snapshot().default_connection().cloned()
    }

    pub fn any_allows_origin(&self, origin: &str) -> bool {
        self.snapshot().any_allows_origin(origin)
    }

    pub fn any_accepts_credential(&self, raw: &str) -> bool {
        self.snapshot().any_accepts_credential(raw)
    }

    /// Re-reads every connection from the store (after an announcement, or a lost feed).
    pub async fn reload(&self) -> Result<(), StoreError> {
        let records = self.read().await?;
        let current = self.snapshot();
        let mut by_id = HashMap::new();
        for (id, record) in records {
            match self.resolve(&record, current.get(&id)).await {
                Ok(connection) => {
                    by_id.insert(id, Arc::new(connection));
                }
                Err(e) => tracing::error!(connection = %id, error = %e, "a stored connection cannot be used"),
            }
        }
        let next = Arc::new(Connections::new(by_id, self.default.clone()));
        match self.live.write() {
            Ok(mut live) => *live = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
        Ok(())
    }

    async fn resolve(
        &self,
        record: &Record,
        current: Option<&Arc<Connection>>,
    ) -> Result<Connection, String> {
        let mut settings = record.settings.clone();
        let (app_secret, hook_secret) = self.secrets(record).map_err(|e| e.to_string())?;
        settings.app_secret = app_secret;
        if let Some(hook) = &mut settings.account_hook {
            hook.secret = hook_secret;
        }
        // A logo is prepared once per fingerprint, not at every re-read.
        let logo = match (&record.logo, current) {
            (Some(f), Some(c)) if &c.logo.fingerprint == f => Some(c.logo.clone()),
            (Some(f), _) => {
                let bytes = self
                    .store
                    .get_value(&logo_key(f))
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or("its logo is missing from the store")?;
                Some(Arc::new(PreparedLogo::prepare(&bytes).map_err(|e| e.0)?))
            }
            (None, _) => None,
        };
        let mut connection = settings
            .resolve(&self.public_base_url, self.shared.as_ref(), logo)
            .map_err(|e| e.message)?;
        connection.credentials = record.credentials.clone();
        Ok(connection)
    }

    async fn read(&self) -> Result<Records, StoreError> {
        match self.store.get_value(RECORDS_KEY).await? {
            Some(raw) => {
                serde_json::from_slice(&raw).map_err(|e| StoreError(format!("connection records: {e}")))
            }
            None => Ok(BTreeMap::new()),
        }
    }

    /// The stored records, for the admin API.
    pub async fn records(&self) -> Result<Records, StoreError> {
        self.read().await
    }

    /// Applies `edit` to the records under the registry lock, stores them and the logo bytes
    /// `edit` hands back beside its result, tells every instance, and re-reads them here.
    pub async fn change<T>(
        &self,
        edit: impl FnOnce(&mut Records, &Self) -> Edited<T>,
    ) -> Result<T, RegistryError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        let lock = loop {
            if let Some(lock) = self.store.try_lock(LOCK_KEY, 5_000).await? {
                break lock;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(RegistryError::Busy);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let result = self.change_locked(edit).await;
        self.store.unlock(lock).await?;
        let outcome = result?;
        self.store.announce_connections_changed().await?;
        self.reload().await?;
        Ok(outcome)
    }

    async fn change_locked<T>(
        &self,
        edit: impl FnOnce(&mut Records, &Self) -> Edited<T>,
    ) -> Result<T, RegistryError> {
        let mut records = self.read().await?;
        let (outcome, logos) = edit(&mut records, self)?;
        for bytes in &logos {
            let fingerprint = crate::token::hash(bytes)[..16].to_owned();
            self.store
                .put_value(&logo_key(&fingerprint), bytes, RECORD_TTL_SECS)
                .await?;
        }
        let raw = serde_json::to_vec(&records).map_err(|e| StoreError(e.to_string()))?;
        self.store.put_value(RECORDS_KEY, &raw, RECORD_TTL_SECS).await?;
        Ok(outcome)
    }
}

/// The records by identifier.
pub type Records = BTreeMap<String, Record>;

/// What an edit of the records hands back: its result, and the logo bytes to store.
pub type Edited<T> = Result<(T, Vec<Vec<u8>>), RegistryError>;

/// The fields the admin API never takes: files on the relay's disk, and credentials (issued by
/// the relay, never chosen).
const NOT_OVER_THE_API: [&str; 4] = ["app_secret_file", "backend_secret", "backend_secret_file", "logo"];

impl Registry {
    /// The secrets a record holds, opened (to check a changed record before storing it).
    fn secrets(&self, record: &Record) -> Result<(Option<Secret>, Option<Secret>), RegistryError> {
        let open = |context: &str, sealed: &Option<String>| -> Result<Option<Secret>, RegistryError> {
            sealed
                .as_ref()
                .map(|s| {
                    self.master
                        .open(context, s)
                        .map(|plain| Secret::new(String::from_utf8_lossy(&plain).into_owned()))
                })
                .transpose()
                .map_err(|e| RegistryError::Store(StoreError(e.0)))
        };
        Ok((
            open(APP_SECRET, &record.app_secret)?,
            open(HOOK_SECRET, &record.hook_secret)?,
        ))
    }

    /// The companion rule, against the stored connections.
    fn check_companion(records: &Records, settings: &ConnectionSettings) -> Result<(), RegistryError> {
        crate::config::check_companion(settings, |id| records.get(id).map(|r| r.settings.kind))
            .map_err(RegistryError::Invalid)
    }

    /// A new connection from the admin API, with its first backend credential (shown once).
    pub async fn create(&self, body: serde_json::Value) -> Result<(Record, Secret), RegistryError> {
        let settings = parse_settings(body)?;
        let app_secret = settings.app_secret.clone();
        let hook_secret = settings.account_hook.as_ref().and_then(|h| h.secret.clone());
        let (record, raw) = self
            .change(|records, registry| {
                if records.contains_key(&settings.identifier) {
                    return Err(RegistryError::Exists);
                }
                Self::check_companion(records, &settings)?;
                let (credential, raw) = Credential::issue(unix_now());
                let (record, logos) =
                    registry.record(settings, app_secret, hook_secret, vec![credential], None)?;
                records.insert(record.settings.identifier.clone(), record.clone());
                Ok(((record, raw), logos))
            })
            .await?;
        Ok((record, raw))
    }

    /// Changes some fields (a JSON merge: what the body names is replaced, the rest kept). The
    /// identifier cannot change; secrets are replaced only when given.
    pub async fn update(&self, identifier: &str, patch: serde_json::Value) -> Result<Record, RegistryError> {
        let serde_json::Value::Object(patch) = patch else {
            return Err(invalid("body", "send a JSON object of the fields to change"));
        };
        if patch.get("identifier").is_some_and(|v| v != identifier) {
            return Err(invalid("identifier", "identifier cannot change"));
        }
        let record = self
            .change(|records, registry| {
                let current = records.get(identifier).ok_or(RegistryError::NotFound)?;
                let mut merged = serde_json::to_value(&current.settings)
                    .map_err(|e| RegistryError::Store(StoreError(e.to_string())))?;
                if let Some(fields) = merged.as_object_mut() {
                    fields.extend(patch.clone());
                }
                let settings = parse_settings(merged)?;
                Self::check_companion(records, &settings)?;
                let (old_app, old_hook) = registry.secrets(current)?;
                let app_secret = settings.app_secret.clone().or(old_app);
                let hook_secret = settings
                    .account_hook
                    .as_ref()
                    .and_then(|h| h.secret.clone())
                    .or(old_hook);
                let logo = current.logo.clone();
                let (mut record, logos) = registry.record(
                    settings,
                    app_secret,
                    hook_secret,
                    current.credentials.clone(),
                    None,
                )?;
                record.logo = logo;
                records.insert(identifier.to_owned(), record.clone());
                Ok((record, logos))
            })
            .await?;
        Ok(record)
    }

    pub async fn delete(&self, identifier: &str) -> Result<(), RegistryError> {
        self.change(|records, _| {
            records.remove(identifier).ok_or(RegistryError::NotFound)?;
            // A mini-program connection that offered it as a tab no longer does.
            for record in records.values_mut() {
                if record.settings.companion.as_deref() == Some(identifier) {
                    record.settings.companion = None;
                }
            }
            Ok(((), Vec::new()))
        })
        .await?;
        Ok(())
    }

    /// A new logo (checked as at config time: PNG, JPEG or WebP, ≤ 2 MB, ≤ 4096 px).
    pub async fn set_logo(&self, identifier: &str, bytes: Vec<u8>) -> Result<Record, RegistryError> {
        let prepared = PreparedLogo::prepare(&bytes).map_err(|e| invalid("logo", format!("logo {e}")))?;
        let record = self
            .change(|records, _| {
                let record = records.get_mut(identifier).ok_or(RegistryError::NotFound)?;
                record.logo = Some(prepared.fingerprint.clone());
                record.updated_at = unix_now();
                Ok((record.clone(), vec![bytes]))
            })
            .await?;
        Ok(record)
    }

    pub async fn issue_credential(&self, identifier: &str) -> Result<(Credential, Secret), RegistryError> {
        let issued = self
            .change(|records, _| {
                let record = records.get_mut(identifier).ok_or(RegistryError::NotFound)?;
                let (credential, raw) = Credential::issue(unix_now());
                record.credentials.push(credential.clone());
                Ok(((credential, raw), Vec::new()))
            })
            .await?;
        Ok(issued)
    }

    pub async fn revoke_credential(&self, identifier: &str, credential: &str) -> Result<(), RegistryError> {
        self.change(|records, _| {
            let record = records.get_mut(identifier).ok_or(RegistryError::NotFound)?;
            let before = record.credentials.len();
            record.credentials.retain(|c| c.id != credential);
            if record.credentials.len() == before {
                return Err(RegistryError::NotFound);
            }
            Ok(((), Vec::new()))
        })
        .await?;
        Ok(())
    }
}

/// Connection settings from an admin API body: the config's shape, secrets inline, no files.
fn parse_settings(body: serde_json::Value) -> Result<ConnectionSettings, RegistryError> {
    if let Some(fields) = body.as_object() {
        for field in NOT_OVER_THE_API {
            if fields.get(field).is_some_and(|v| !v.is_null()) {
                return Err(invalid(
                    field,
                    format!(
                        "{field} is not taken over the admin API (credentials are issued at …/credentials, logos uploaded at …/logo)"
                    ),
                ));
            }
        }
        if fields
            .get("account_hook")
            .and_then(|h| h.get("secret_file"))
            .is_some_and(|v| !v.is_null())
        {
            return Err(invalid(
                "account_hook.secret_file",
                "account_hook.secret_file is not taken over the admin API",
            ));
        }
    }
    serde_json::from_value(body).map_err(|e| {
        let message = e.to_string();
        let field = message.split('`').nth(1).unwrap_or("body").to_owned();
        RegistryError::Invalid(FieldError { field, message })
    })
}
