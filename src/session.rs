//! The login-session domain: ids, the state machine of DESIGN.md §4 and what each caller may
//! see. Pure: no I/O, the time is passed in.

use crate::token;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A login session's id, which is also the `scene` of its mini-program code: 22 characters of
/// `[A-Za-z0-9]` (131 random bits), well inside WeChat's 32-character scene limit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SceneId(String);

impl SceneId {
    pub const LEN: usize = 22;

    pub fn random() -> Self {
        Self(token::random_base62(Self::LEN))
    }

    /// Parses an id given by a client; anything that is not 1–32 ASCII letters or digits is refused.
    pub fn parse(raw: &str) -> Option<Self> {
        let ok = (1..=32).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_alphanumeric());
        ok.then(|| Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SceneId {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value).ok_or_else(|| format!("invalid scene id {value:?}"))
    }
}

impl From<SceneId> for String {
    fn from(value: SceneId) -> Self {
        value.0
    }
}

impl fmt::Display for SceneId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    Scanned,
    Confirmed,
    Redeemed,
    Cancelled,
    Expired,
    /// The connection's account hook refused the person (DESIGN §4).
    Denied,
}

impl Status {
    /// The browser has nothing more to wait for: it holds a ticket, or the session is over.
    pub fn is_final_for_browser(self) -> bool {
        self != Status::Pending && self != Status::Scanned
    }

    pub fn parse(raw: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(raw.to_owned())).ok()
    }

    /// The wire name (`pending`, `scanned`, …).
    pub fn name(self) -> String {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::String(name)) => name,
            _ => String::new(),
        }
    }
}

/// Who asked for the code: shown on the confirm screen so a person can spot a relayed code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientInfo {
    pub ip: String,
    pub user_agent: String,
}

/// The verified phone number, as WeChat reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Phone {
    pub phone_number: String,
    pub pure_phone_number: String,
    pub country_code: String,
}

/// Which way the person logged in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoginPath {
    /// Scanned the relay's mini-program code and confirmed in the mini-program.
    #[default]
    MiniProgram,
    /// Scanned WeChat's own QR on the website-app page (Open Platform `qrconnect`).
    Website,
}

/// The WeChat identity a session resolves to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    #[serde(default)]
    pub path: LoginPath,
    pub openid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unionid: Option<String>,
    pub appid: String,
    /// The tenant's own user id for this person, as its account hook named it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nickname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub avatar_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<Phone>,
}

/// A value sealed under the relay's master key (an identity): opaque to the domain, so a
/// session record read from the store shows nobody's openid, unionid or phone number.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Sealed(pub String);

/// The person who scanned; `scan_token_hash` proves later calls come from them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scanner {
    /// Who scanned (openid, unionid), sealed: the confirm opens it to ask WeChat for the phone.
    pub identity: Sealed,
    /// Tells a rescan by the same person without opening the seal.
    pub openid_hash: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nickname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub avatar_url: Option<String>,
    pub scan_token_hash: String,
}

/// The key tickets are derived with. A ticket reads `{session id}.{MAC(key, id, nonce)}`:
/// redemption finds the session without an index, the record keeps only the nonce and the
/// ticket's hash, and the relay derives the ticket again for the browser secret holder.
#[derive(Clone)]
pub struct TicketKey(String);

impl fmt::Debug for TicketKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TicketKey([redacted])")
    }
}

impl TicketKey {
    pub fn new(secret: String) -> Self {
        Self(secret)
    }

    fn derive(&self, id: &SceneId, nonce: &str) -> String {
        let mac = token::mac(
            self.0.as_bytes(),
            &[id.as_str().as_bytes(), b".", nonce.as_bytes()],
        );
        format!("{id}.{}", &token::hex(&mac)[..32])
    }
}

/// The one-time ticket the browser hands to its website backend (see [`TicketKey`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    pub nonce: String,
    pub hash: String,
    pub expires_at: u64,
}

impl Ticket {
    pub fn issue(id: &SceneId, now: u64, ttl_secs: u64, key: &TicketKey) -> Self {
        let nonce = token::random_base62(22);
        Self {
            hash: token::hash(key.derive(id, &nonce)),
            nonce,
            expires_at: now + ttl_secs,
        }
    }

    /// The ticket's text, for the browser that holds the session's secret.
    pub fn value(&self, id: &SceneId, key: &TicketKey) -> String {
        key.derive(id, &self.nonce)
    }

    /// The session id a ticket names, if the ticket is well formed.
    pub fn session_of(raw: &str) -> Option<SceneId> {
        let (id, secret) = raw.split_once('.')?;
        if secret.len() != 32 || !secret.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return None;
        }
        SceneId::parse(id)
    }
}

/// Why a transition was refused. Each maps to one client error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransitionError {
    Expired,
    Cancelled,
    Denied,
    AlreadyConfirmed,
    AlreadyRedeemed,
    /// Another WeChat user scanned this code first.
    Taken,
    NotScanned,
    BadScanToken,
    BadTicket,
    TicketExpired,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginSession {
    pub id: SceneId,
    pub connection: String,
    pub status: Status,
    pub created_at: u64,
    pub expires_at: u64,
    pub secret_hash: String,
    pub client: ClientInfo,
    pub scanner: Option<Scanner>,
    /// The confirmed person, sealed.
    pub identity: Option<Sealed>,
    pub ticket: Option<Ticket>,
    /// When the session reached a terminal status (or confirmed): records linger after it.
    pub finished_at: Option<u64>,
    /// Why it was cancelled, when WeChat (not a person) ended it: an error code.
    #[serde(default)]
    pub failure: Option<String>,
    /// Why the account hook denied the person, in the tenant's words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denial: Option<String>,
    /// When the last change was committed (Unix microseconds): push latency is measured from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_at_us: Option<u64>,
}

/// What the PC browser sees (GET, long-poll, WebSocket frames).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BrowserView {
    #[schema(value_type = String, pattern = "^[A-Za-z0-9]{22}$")]
    pub id: SceneId,
    pub status: Status,
    pub expires_at: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scanned: Option<ScannedBy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    /// With `cancelled`: the error that ended the login, when it was not a person's choice.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// With `denied`: the tenant's reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScannedBy {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nickname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub avatar_url: Option<String>,
}

impl LoginSession {
    /// A new pending session under `id` (the scene its code was made for); returns it with
    /// the raw browser secret, which only the browser keeps.
    pub fn start(
        id: SceneId,
        connection: &str,
        client: ClientInfo,
        now: u64,
        ttl_secs: u64,
    ) -> (Self, String) {
        let secret = token::random_base62(32);
        let session = Self {
            id,
            connection: connection.to_owned(),
            status: Status::Pending,
            created_at: now,
            expires_at: now + ttl_secs,
            secret_hash: token::hash(&secret),
            client,
            scanner: None,
            identity: None,
            ticket: None,
            finished_at: None,
            failure: None,
            denial: None,
            changed_at_us: None,
        };
        (session, secret)
    }

    pub fn verify_secret(&self, raw: &str) -> bool {
        token::matches_hash(raw, &self.secret_hash)
    }

    /// Moves a pending or scanned session past its deadline to `expired`. Returns whether it did.
    pub fn expire_if_due(&mut self, now: u64) -> bool {
        let due = matches!(self.status, Status::Pending | Status::Scanned) && now >= self.expires_at;
        if due {
            self.finish(Status::Expired, now);
        }
        due
    }

    /// How long a record must be kept: until its deadline, its ticket's, and a linger after the end.
    pub fn keep_until(&self, linger_secs: u64) -> u64 {
        let end = self.finished_at.unwrap_or(self.expires_at).max(self.expires_at);
        let ticket_end = self.ticket.as_ref().map_or(0, |t| t.expires_at);
        end.max(ticket_end) + linger_secs
    }

    /// Ok while the session still waits for a scan or a confirmation.
    pub fn ensure_waiting(&self) -> Result<(), TransitionError> {
        if self.status.is_final_for_browser() {
            Err(Self::refusal(self.status))
        } else {
            Ok(())
        }
    }

    /// The scan by `identity` (kept `sealed`). Idempotent for the same openid (a fresh scan
    /// token replaces the old one); another openid finds the session taken.
    pub fn scan(
        &mut self,
        identity: &Identity,
        sealed: Sealed,
        scan_token_hash: String,
    ) -> Result<(), TransitionError> {
        let openid_hash = token::hash(&identity.openid);
        match self.status {
            Status::Pending => {}
            Status::Scanned => {
                let same = self.scanner.as_ref().is_some_and(|s| {
                    token::constant_time_eq(s.openid_hash.as_bytes(), openid_hash.as_bytes())
                });
                if !same {
                    return Err(TransitionError::Taken);
                }
            }
            other => return Err(Self::refusal(other)),
        }
        self.status = Status::Scanned;
        self.scanner = Some(Scanner {
            identity: sealed,
            openid_hash,
            nickname: identity.nickname.clone(),
            avatar_url: identity.avatar_url.clone(),
            scan_token_hash,
        });
        Ok(())
    }

    /// Checks the scan token against a scanned session, before any work is done for the confirm.
    pub fn check_scanner(&self, raw_scan_token: &str) -> Result<&Scanner, TransitionError> {
        let scanner = match self.status {
            Status::Pending => return Err(TransitionError::NotScanned),
            Status::Scanned => self.scanner.as_ref().ok_or(TransitionError::NotScanned)?,
            other => return Err(Self::refusal(other)),
        };
        if !token::matches_hash(raw_scan_token, &scanner.scan_token_hash) {
            return Err(TransitionError::BadScanToken);
        }
        Ok(scanner)
    }

    /// The scanner confirms: the session carries the identity (sealed) and a new ticket.
    pub fn confirm(
        &mut self,
        raw_scan_token: &str,
        identity: &Identity,
        sealed: Sealed,
        ticket: Ticket,
        now: u64,
    ) -> Result<(), TransitionError> {
        let scanner = self.check_scanner(raw_scan_token)?;
        if !token::matches_hash(&identity.openid, &scanner.openid_hash) {
            return Err(TransitionError::BadScanToken);
        }
        self.identity = Some(sealed);
        self.ticket = Some(ticket);
        self.status = Status::Confirmed;
        self.finished_at = Some(now);
        Ok(())
    }

    /// Confirmation by a path with no scan step (the website app): pending → confirmed.
    pub fn confirm_directly(
        &mut self,
        identity: Sealed,
        ticket: Ticket,
        now: u64,
    ) -> Result<(), TransitionError> {
        if self.status != Status::Pending {
            return Err(Self::refusal(self.status));
        }
        self.identity = Some(identity);
        self.ticket = Some(ticket);
        self.status = Status::Confirmed;
        self.finished_at = Some(now);
        Ok(())
    }

    /// The account hook refused the person: the session ends `denied`, with the tenant's reason
    /// (trimmed to 200 characters, no control characters) for the phone and the browser.
    pub fn deny(&mut self, reason: &str, now: u64) -> Result<(), TransitionError> {
        self.ensure_waiting()?;
        let reason: String = reason.chars().filter(|c| !c.is_control()).take(200).collect();
        self.denial = Some(reason);
        self.finish(Status::Denied, now);
        Ok(())
    }

    /// The scanner declines on the phone.
    pub fn cancel_by_scanner(&mut self, raw_scan_token: &str, now: u64) -> Result<(), TransitionError> {
        self.check_scanner(raw_scan_token)?;
        self.finish(Status::Cancelled, now);
        Ok(())
    }

    /// The login failed on WeChat's side (a denied authorization, a refused code): the session
    /// ends `cancelled`, carrying `error` for the browser.
    pub fn fail(&mut self, error: &str, now: u64) -> Result<(), TransitionError> {
        self.ensure_waiting()?;
        self.failure = Some(error.to_owned());
        self.finish(Status::Cancelled, now);
        Ok(())
    }

    /// The browser gives up (the page was closed or refreshed). Cancelling twice is harmless.
    pub fn cancel_by_browser(&mut self, now: u64) -> Result<(), TransitionError> {
        match self.status {
            Status::Pending | Status::Scanned => {
                self.finish(Status::Cancelled, now);
                Ok(())
            }
            Status::Cancelled => Ok(()),
            other => Err(Self::refusal(other)),
        }
    }

    /// The website backend redeems the ticket: once, before it expires. Returns the sealed person.
    pub fn redeem(&mut self, raw_ticket: &str, now: u64) -> Result<Sealed, TransitionError> {
        let ticket = self.ticket.as_ref().ok_or(TransitionError::BadTicket)?;
        if !token::matches_hash(raw_ticket, &ticket.hash) {
            return Err(TransitionError::BadTicket);
        }
        match self.status {
            Status::Confirmed => {}
            Status::Redeemed => return Err(TransitionError::AlreadyRedeemed),
            other => return Err(Self::refusal(other)),
        }
        if now >= ticket.expires_at {
            return Err(TransitionError::TicketExpired);
        }
        let identity = self.identity.clone().ok_or(TransitionError::BadTicket)?;
        self.status = Status::Redeemed;
        Ok(identity)
    }

    /// What the browser sees; the ticket, once confirmed, is derived with `key`.
    pub fn browser_view(&self, key: &TicketKey) -> BrowserView {
        let scanned = self.scanner.as_ref().map(|s| ScannedBy {
            nickname: s.nickname.clone(),
            avatar_url: s.avatar_url.clone(),
        });
        let ticket = (self.status == Status::Confirmed)
            .then(|| self.ticket.as_ref().map(|t| t.value(&self.id, key)))
            .flatten();
        BrowserView {
            id: self.id.clone(),
            status: self.status,
            expires_at: self.expires_at,
            scanned,
            ticket,
            error: self.failure.clone(),
            reason: self.denial.clone(),
        }
    }

    /// The record as an event for waiting browsers: without the person (sealed or not).
    pub fn for_event(&self) -> Self {
        let mut event = self.clone();
        event.identity = None;
        if let Some(scanner) = &mut event.scanner {
            scanner.identity = Sealed::default();
        }
        event
    }

    fn finish(&mut self, status: Status, now: u64) {
        self.status = status;
        self.finished_at = Some(now);
    }

    fn refusal(status: Status) -> TransitionError {
        match status {
            Status::Expired => TransitionError::Expired,
            Status::Cancelled => TransitionError::Cancelled,
            Status::Denied => TransitionError::Denied,
            Status::Confirmed => TransitionError::AlreadyConfirmed,
            Status::Redeemed => TransitionError::AlreadyRedeemed,
            Status::Pending => TransitionError::NotScanned,
            Status::Scanned => TransitionError::Taken,
        }
    }
}

/// Seconds since the Unix epoch: the clock every caller of this module passes in.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> ClientInfo {
        ClientInfo {
            ip: "203.0.113.9".into(),
            user_agent: "test".into(),
        }
    }

    fn who(openid: &str) -> Identity {
        Identity {
            path: LoginPath::MiniProgram,
            openid: openid.into(),
            unionid: None,
            appid: "wx0000000000000001".into(),
            user_id: None,
            nickname: None,
            avatar_url: None,
            phone: None,
        }
    }

    fn key() -> TicketKey {
        TicketKey::new("ticket-key".into())
    }

    /// Stands in for the master key's seal, which lives outside this pure module.
    fn seal(openid: &str) -> Sealed {
        Sealed(format!("sealed:{openid}"))
    }

    fn scanned(now: u64) -> (LoginSession, String) {
        let (mut s, _) = LoginSession::start(SceneId::random(), "default", client(), now, 120);
        let scan_token = "scan-token".to_owned();
        s.scan(&who("o1"), seal("o1"), token::hash(&scan_token)).unwrap();
        (s, scan_token)
    }

    #[test]
    fn a_full_login_walks_pending_scanned_confirmed_redeemed() {
        let (mut s, secret) = LoginSession::start(SceneId::random(), "default", client(), 1000, 120);
        assert!(s.verify_secret(&secret));
        assert!(!s.verify_secret("nope"));
        assert_eq!(s.status, Status::Pending);
        s.scan(&who("o1"), seal("o1"), token::hash("t")).unwrap();
        assert_eq!(s.status, Status::Scanned);
        let ticket = Ticket::issue(&s.id, 1010, 60, &key());
        s.confirm("t", &who("o1"), seal("o1"), ticket.clone(), 1010)
            .unwrap();
        let value = ticket.value(&s.id, &key());
        assert_eq!(s.browser_view(&key()).ticket.as_deref(), Some(value.as_str()));
        assert_eq!(Ticket::session_of(&value), Some(s.id.clone()));
        let record = serde_json::to_string(&s).unwrap();
        assert!(!record.contains(&value) && !record.contains("\"o1\""), "{record}");
        let event = s.for_event();
        assert!(event.identity.is_none());
        assert_eq!(event.scanner.as_ref().unwrap().identity, Sealed::default());
        assert_eq!(
            event.browser_view(&key()),
            s.browser_view(&key()),
            "a browser needs no more"
        );
        assert_ne!(
            Ticket::issue(&s.id, 1010, 60, &TicketKey::new("another".into())).value(&s.id, &key()),
            value,
            "the ticket depends on the key"
        );
        assert_eq!(s.redeem(&value, 1020).unwrap(), seal("o1"));
        assert_eq!(s.status, Status::Redeemed);
        assert_eq!(
            s.browser_view(&key()).ticket,
            None,
            "a redeemed ticket is not shown again"
        );
        assert_eq!(s.redeem(&value, 1021), Err(TransitionError::AlreadyRedeemed));
    }

    #[test]
    fn rescan_by_the_same_openid_is_idempotent_and_another_openid_is_refused() {
        let (mut s, _) = scanned(1000);
        s.scan(&who("o1"), seal("o1"), token::hash("t2")).unwrap();
        assert!(s.check_scanner("t2").is_ok());
        assert!(
            s.check_scanner("scan-token").is_err(),
            "the new scan token replaces the old one"
        );
        assert_eq!(
            s.scan(&who("o2"), seal("o2"), token::hash("t3")),
            Err(TransitionError::Taken)
        );
    }

    #[test]
    fn confirm_needs_a_scan_and_the_scanners_token() {
        let (mut s, _) = LoginSession::start(SceneId::random(), "default", client(), 1000, 120);
        let t = Ticket::issue(&s.id, 1000, 60, &key());
        assert_eq!(
            s.confirm("x", &who("o1"), seal("o1"), t.clone(), 1000),
            Err(TransitionError::NotScanned)
        );
        let (mut s, token) = scanned(1000);
        assert_eq!(
            s.confirm("wrong", &who("o1"), seal("o1"), t.clone(), 1000),
            Err(TransitionError::BadScanToken)
        );
        assert_eq!(
            s.confirm(&token, &who("o2"), seal("o2"), t.clone(), 1000),
            Err(TransitionError::BadScanToken)
        );
        s.confirm(&token, &who("o1"), seal("o1"), t.clone(), 1000)
            .unwrap();
        assert_eq!(
            s.confirm(&token, &who("o1"), seal("o1"), t, 1000),
            Err(TransitionError::AlreadyConfirmed)
        );
    }

    #[test]
    fn sessions_expire_only_while_waiting() {
        let (mut s, _) = scanned(1000);
        assert!(!s.expire_if_due(1119));
        assert!(s.expire_if_due(1120));
        assert_eq!(s.status, Status::Expired);
        assert_eq!(s.cancel_by_browser(1121), Err(TransitionError::Expired));

        let (mut s, token) = scanned(1000);
        s.confirm(
            &token,
            &who("o1"),
            seal("o1"),
            Ticket::issue(&s.id, 1000, 60, &key()),
            1000,
        )
        .unwrap();
        assert!(
            !s.expire_if_due(5000),
            "a confirmed session does not expire; its ticket does"
        );
    }

    #[test]
    fn tickets_expire_and_wrong_tickets_are_refused() {
        let (mut s, token) = scanned(1000);
        let t = Ticket::issue(&s.id, 1000, 60, &key());
        s.confirm(&token, &who("o1"), seal("o1"), t.clone(), 1000)
            .unwrap();
        let forged = format!("{}.{}", s.id, "A".repeat(32));
        assert_eq!(s.redeem(&forged, 1001), Err(TransitionError::BadTicket));
        assert_eq!(
            s.redeem(&t.value(&s.id, &key()), 1060),
            Err(TransitionError::TicketExpired)
        );
        assert_eq!(s.status, Status::Confirmed);
    }

    #[test]
    fn cancels_come_from_the_scanner_or_the_browser() {
        let (mut s, token) = scanned(1000);
        assert_eq!(
            s.cancel_by_scanner("wrong", 1001),
            Err(TransitionError::BadScanToken)
        );
        s.cancel_by_scanner(&token, 1001).unwrap();
        assert_eq!(s.status, Status::Cancelled);
        assert_eq!(s.cancel_by_browser(1002), Ok(()));
        assert_eq!(
            s.scan(&who("o1"), seal("o1"), "h".into()),
            Err(TransitionError::Cancelled)
        );
    }

    #[test]
    fn a_denied_login_is_over_and_says_why() {
        let (mut s, token) = scanned(1000);
        s.deny("No account\u{7}for this person", 1001).unwrap();
        assert_eq!(s.status, Status::Denied);
        assert!(s.status.is_final_for_browser());
        let view = s.browser_view(&key());
        assert_eq!(view.reason.as_deref(), Some("No accountfor this person"));
        assert_eq!(
            s.confirm(
                &token,
                &who("o1"),
                seal("o1"),
                Ticket::issue(&s.id, 1001, 60, &key()),
                1001
            ),
            Err(TransitionError::Denied)
        );
        assert_eq!(s.deny("again", 1002), Err(TransitionError::Denied));
        assert!(!s.expire_if_due(5000));
    }

    #[test]
    fn scene_ids_are_random_alphanumeric_and_parse_strictly() {
        let id = SceneId::random();
        assert_eq!(id.as_str().len(), SceneId::LEN);
        assert_eq!(SceneId::parse(id.as_str()), Some(id));
        assert_eq!(SceneId::parse(""), None);
        assert_eq!(SceneId::parse("abc-def"), None);
        assert_eq!(SceneId::parse(&"a".repeat(33)), None);
        assert_eq!(Ticket::session_of("abc"), None);
        assert_eq!(Ticket::session_of("abc.short"), None);
    }
}
