//! The standard OpenID Connect face (authorization code flow) over the same login sessions,
//! hosted page and ID tokens: each connection is a client (`client_id` = its identifier,
//! `client_secret` = one of its backend credentials, `redirect_uris` = its callback URLs).
//!
//! `/oauth2/authorize` checks the client and redirect URI (an unknown one gets an error page,
//! never a redirect), then sends the browser to the hosted page, which hands its ticket to `/oauth2/finish`
//! in the same browser (bound by a cookie); that turns the ticket into a single-use code for the
//! client. `/oauth2/token` trades the code (client authentication, PKCE) for an ID token and an
//! access token for `/oauth2/userinfo`.

use super::AppState;
use super::hosted::{self, PageError};
use crate::config::Connection;
use crate::error::ApiError;
use crate::id_token::{self, IdTokenClaims};
use crate::markup::escape_html;
use crate::oidc::{self, Access, ClientAuth, Grant, PendingAuthorization};
use crate::session::{Ticket, unix_now};
use crate::token;
use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine;
use serde_json::{Value, json};
use sha2::Digest;
use std::collections::HashMap;
use std::sync::Arc;

/// How long an authorization request waits for its login (the hosted page renews codes).
const REQUEST_TTL_SECS: u64 = 600;
const MAX_PARAM_LEN: usize = 512;
const FINISH_PATH: &str = "/oauth2/finish";
const SUPPORTED_SCOPES: [&str; 3] = ["openid", "phone", "profile"];

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/.well-known/openid-configuration", web::get().to(discovery))
        .route("/oauth2/authorize", web::get().to(authorize))
        .route(FINISH_PATH, web::get().to(finish))
        .route("/oauth2/token", web::post().to(token_endpoint))
        .route("/oauth2/userinfo", web::get().to(userinfo))
        .route("/oauth2/userinfo", web::post().to(userinfo));
}

/// OIDC Discovery 1.0: only what is supported.
async fn discovery(state: web::Data<AppState>) -> HttpResponse {
    let base = &state.public_base_url;
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .json(json!({
            "issuer": base,
            "authorization_endpoint": format!("{base}/oauth2/authorize"),
            "token_endpoint": format!("{base}/oauth2/token"),
            "userinfo_endpoint": format!("{base}/oauth2/userinfo"),
            "jwks_uri": format!("{base}/.well-known/jwks.json"),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query", "form_post"],
            "grant_types_supported": ["authorization_code"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["ES256"],
            "scopes_supported": SUPPORTED_SCOPES,
            "claims_supported": [
                "sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "amr", "at_hash",
                "phone_number", "phone_number_verified", "nickname", "picture", "openid", "unionid"
            ],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "ui_locales_supported": ["zh-CN", "en"],
            "claims_parameter_supported": false,
            "request_parameter_supported": false,
            "request_uri_parameter_supported": false,
            "authorization_response_iss_parameter_supported": true,
        }))
}

type Query = web::Query<HashMap<String, String>>;

/// `GET /oauth2/authorize`.
async fn authorize(state: web::Data<AppState>, req: HttpRequest, query: Query) -> HttpResponse {
    let get = |name: &str| query.get(name).map(String::as_str);
    let lang = hosted::language(get("ui_locales").and_then(|l| l.split(' ').next()), &req);
    // Until the client and its redirect URI are known good, errors stay on the relay's page.
    let connection = match get("client_id").map(|id| state.connection(Some(id))) {
        Some(Ok(connection)) => connection,
        _ => return hosted::error_page(PageError::bad("Unknown client_id."), lang),
    };
    let Some(redirect_uri) = get("redirect_uri").filter(|uri| connection.allows_callback(uri)) else {
        return hosted::error_page(
            PageError::bad("This redirect_uri is not registered for this client; nobody is sent there."),
            lang,
        );
    };
    let response_mode = get("response_mode");
    let back = Back {
        redirect_uri,
        state: get("state"),
        form_post: response_mode == Some("form_post"),
        issuer: &state.public_base_url,
    };
    if !matches!(response_mode, None | Some("query" | "form_post")) {
        return back.error("invalid_request", "response_mode must be query or form_post.");
    }
    match check_request(&connection, &get) {
        Ok(request) => start(&state, &connection, request, &back, lang).await,
        Err((error, description)) => back.error(error, description),
    }
}

/// The parts of an authorization request that matter after the redirect URI is trusted.
struct Checked {
    scope: String,
    nonce: Option<String>,
    code_challenge: Option<String>,
}

fn check_request<'a>(
    connection: &Connection,
    get: &impl Fn(&str) -> Option<&'a str>,
) -> Result<Checked, (&'static str, &'static str)> {
    if ["state", "nonce", "code_challenge", "scope"]
        .iter()
        .any(|name| get(name).is_some_and(|v| v.len() > MAX_PARAM_LEN))
    {
        return Err(("invalid_request", "A parameter is longer than 512 characters."));
    }
    match get("response_type") {
        Some("code") => {}
        None => return Err(("invalid_request", "response_type is missing.")),
        Some(_) => {
            return Err((
                "unsupported_response_type",
                "Only response_type=code is supported.",
            ));
        }
    }
    let asked = get("scope").unwrap_or_default();
    if !oidc::has_scope(asked, "openid") {
        return Err(("invalid_scope", "The scope must include openid."));
    }
    // Scopes this provider does not know are ignored (OIDC Core 3.1.2.1).
    let scope = SUPPORTED_SCOPES
        .iter()
        .filter(|s| oidc::has_scope(asked, s))
        .copied()
        .collect::<Vec<_>>()
        .join(" ");
    let code_challenge = match (get("code_challenge"), get("code_challenge_method")) {
        (Some(challenge), Some("S256")) if oidc::is_s256_challenge(challenge) => Some(challenge.to_owned()),
        (Some(_), Some("S256")) => {
            return Err(("invalid_request", "code_challenge is not an S256 challenge."));
        }
        (Some(_), _) => return Err(("invalid_request", "code_challenge_method must be S256.")),
        (None, Some(_)) => return Err(("invalid_request", "code_challenge_method without code_challenge.")),
        (None, None) if connection.public_client => {
            return Err((
                "invalid_request",
                "This client is public: PKCE (S256) is required.",
            ));
        }
        (None, None) => None,
    };
    Ok(Checked {
        scope,
        nonce: get("nonce").map(str::to_owned),
        code_challenge,
    })
}

/// Stores the request, binds it to this browser and sends it to the hosted login page.
async fn start(
    state: &AppState,
    connection: &Arc<Connection>,
    request: Checked,
    back: &Back<'_>,
    lang: &str,
) -> HttpResponse {
    let request_id = token::random_base62(32);
    let binding = token::random_base62(32);
    let pending = PendingAuthorization {
        client_id: connection.identifier.clone(),
        redirect_uri: back.redirect_uri.to_owned(),
        state: back.state.map(str::to_owned),
        nonce: request.nonce,
        code_challenge: request.code_challenge,
        scope: request.scope,
        form_post: back.form_post,
        binding_hash: token::hash(&binding),
    };
    let stored = state
        .store
        .put_record(&oidc::pending_key(&request_id), &pending, REQUEST_TTL_SECS)
        .await;
    if stored.is_err() {
        return back.error(
            "temporarily_unavailable",
            "The login service is briefly unavailable.",
        );
    }
    // The hosted page at a stable address (`/login?…`), so the website path can come back to
    // it from WeChat's page and resume.
    let login = format!(
        "/login?{}",
        serde_urlencoded::to_string([
            ("connection", connection.identifier.as_str()),
            ("redirect_uri", &finish_url(state)),
            ("state", &request_id),
            ("lang", lang),
        ])
        .unwrap_or_default()
    );
    let cookie = Cookie::build(binding_cookie(&request_id), binding)
        .path(FINISH_PATH)
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(state.public_base_url.starts_with("https://"))
        .max_age(actix_web::cookie::time::Duration::seconds(
            REQUEST_TTL_SECS as i64,
        ))
        .finish();
    HttpResponse::Found()
        .insert_header((header::LOCATION, login))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .cookie(cookie)
        .finish()
}

/// Where the hosted page hands an OIDC login back.
pub(crate) fn finish_url(state: &AppState) -> String {
    format!("{}{FINISH_PATH}", state.public_base_url)
}

fn binding_cookie(request_id: &str) -> String {
    format!("qrlogin-oidc-{}", &token::hash(request_id)[..16])
}

/// `GET /oauth2/finish?ticket&state` (or `?error=access_denied&state`): the hosted page's
/// result, in the browser that asked; the client gets a code or the refusal.
async fn finish(state: web::Data<AppState>, req: HttpRequest, query: Query) -> HttpResponse {
    let lang = hosted::language(None, &req);
    let request_id = query.get("state").map(String::as_str).unwrap_or_default();
    let pending = state
        .store
        .take_record::<PendingAuthorization>(&oidc::pending_key(request_id))
        .await;
    let Ok(Some(pending)) = pending else {
        return hosted::error_page(
            PageError::bad(
                "This login request has expired or was already used: start again from the website.",
            ),
            lang,
        );
    };
    let bound = req
        .cookie(&binding_cookie(request_id))
        .is_some_and(|c| token::matches_hash(c.value(), &pending.binding_hash));
    if !bound {
        return hosted::error_page(
            PageError::bad("This login was started in another browser: start again from the website."),
            lang,
        );
    }
    let back = Back {
        redirect_uri: &pending.redirect_uri,
        state: pending.state.as_deref(),
        form_post: pending.form_post,
        issuer: &state.public_base_url,
    };
    let Some(ticket) = query.get("ticket") else {
        return back.error(
            "access_denied",
            "The person declined, or the website refused them.",
        );
    };
    match grant(&state, &pending, ticket).await {
        Ok(code) => back.answer(&[("code", &code)]),
        Err(e) if e.status.is_server_error() => back.error("temporarily_unavailable", &e.message),
        Err(e) => back.error("access_denied", &e.message),
    }
}

/// Redeems the hosted page's ticket and stores a single-use code for the client, for as long
/// as a ticket lives (`ticket_ttl_secs`, 60 s).
async fn grant(state: &AppState, pending: &PendingAuthorization, ticket: &str) -> Result<String, ApiError> {
    let invalid = || ApiError::bad_request("invalid_ticket", "This login's ticket is not valid.");
    let id = Ticket::session_of(ticket).ok_or_else(invalid)?;
    let current = state.store.get(&id).await?.ok_or_else(invalid)?;
    // The client's own login, or one through its companion (the other tab of its page).
    let client = state.connection(Some(&pending.client_id))?;
    let session_connection = Some(current.session.connection.as_str());
    if session_connection != Some(client.identifier.as_str())
        && session_connection != client.companion.as_deref()
    {
        return Err(invalid());
    }
    let now = unix_now();
    let (stored, identity) = state
        .store
        .update_from(current, |s| s.redeem(ticket, now))
        .await?;
    state.record(&stored.session);
    let code = token::random_base62(43);
    let grant = Grant {
        client_id: pending.client_id.clone(),
        redirect_uri: pending.redirect_uri.clone(),
        nonce: pending.nonce.clone(),
        code_challenge: pending.code_challenge.clone(),
        scope: pending.scope.clone(),
        identity,
        auth_time: stored.session.finished_at.unwrap_or(now),
    };
    state
        .store
        .put_record(&oidc::grant_key(&code), &grant, state.ticket_ttl_secs)
        .await?;
    Ok(code)
}

/// The way back to the client: its redirect URI, by query or form post.
struct Back<'a> {
    redirect_uri: &'a str,
    state: Option<&'a str>,
    form_post: bool,
    issuer: &'a str,
}

impl Back<'_> {
    fn error(&self, error: &str, description: &str) -> HttpResponse {
        self.answer(&[("error", error), ("error_description", description)])
    }

    /// `params`, plus `state` and `iss` (RFC 9207), to the client.
    fn answer(&self, params: &[(&str, &str)]) -> HttpResponse {
        let mut all: Vec<(&str, &str)> = params.to_vec();
        if let Some(state) = self.state {
            all.push(("state", state));
        }
        all.push(("iss", self.issuer));
        if self.form_post {
            return form_post(self.redirect_uri, &all);
        }
        let query = serde_urlencoded::to_string(&all).unwrap_or_default();
        let separator = if self.redirect_uri.contains('?') { '&' } else { '?' };
        HttpResponse::Found()
            .insert_header((
                header::LOCATION,
                format!("{}{separator}{query}", self.redirect_uri),
            ))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .insert_header((header::REFERRER_POLICY, "no-referrer"))
            .finish()
    }
}

/// OAuth 2.0 Form Post Response Mode: a page that posts `params` to the client at once.
fn form_post(redirect_uri: &str, params: &[(&str, &str)]) -> HttpResponse {
    const SUBMIT: &str = "document.forms[0].submit()";
    // The one inline script, allowed by its hash.
    let script_hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(SUBMIT));
    let fields: String = params
        .iter()
        .map(|(name, value)| {
            format!(
                r#"<input type="hidden" name="{}" value="{}">"#,
                escape_html(name),
                escape_html(value)
            )
        })
        .collect();
    let origin = crate::config::origin_of(redirect_uri).unwrap_or("'none'");
    let body = format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><title>…</title></head><body><form method="post" action="{}">{fields}<noscript><button type="submit">Continue</button></noscript></form><script>{SUBMIT}</script></body></html>"#,
        escape_html(redirect_uri)
    );
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            format!("default-src 'none'; script-src 'sha256-{script_hash}'; form-action {origin}; frame-ancestors 'none'; base-uri 'none'"),
        ))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .body(body)
}

/// An RFC 6749 §5.2 error from the token endpoint.
fn token_error(status: StatusCode, error: &str, description: &str) -> HttpResponse {
    let mut response = HttpResponse::build(status);
    response
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"));
    if status == StatusCode::UNAUTHORIZED {
        response.insert_header((header::WWW_AUTHENTICATE, r#"Basic realm="qrlogin-relay""#));
    }
    response.json(oidc::error_body(error, description))
}

fn invalid_request(description: &str) -> HttpResponse {
    token_error(StatusCode::BAD_REQUEST, "invalid_request", description)
}

fn invalid_client() -> HttpResponse {
    token_error(
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        "Client authentication failed.",
    )
}

fn invalid_grant(description: &str) -> HttpResponse {
    token_error(StatusCode::BAD_REQUEST, "invalid_grant", description)
}

fn unavailable() -> HttpResponse {
    token_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
        "The login service is briefly unavailable; try again.",
    )
}

/// `POST /oauth2/token` (`application/x-www-form-urlencoded`).
async fn token_endpoint(state: web::Data<AppState>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let form_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim()
                .to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
    if !form_type {
        return invalid_request("Send the request as application/x-www-form-urlencoded.");
    }
    let Ok(pairs) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body) else {
        return invalid_request("The form body is not valid.");
    };
    let mut form: HashMap<&str, &str> = HashMap::new();
    for (name, value) in &pairs {
        if form.insert(name, value).is_some() {
            return invalid_request("A parameter is repeated.");
        }
    }
    match form.get("grant_type") {
        Some(&"authorization_code") => {}
        Some(_) => {
            return token_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "Only grant_type=authorization_code is supported.",
            );
        }
        None => return invalid_request("grant_type is missing."),
    }
    let auth = match client_auth(&req, &form) {
        Ok(Some(auth)) => auth,
        Ok(None) => return invalid_client(),
        Err(description) => return invalid_request(description),
    };
    let connection = match authenticate(&state, &auth) {
        Some(connection) => connection,
        None => return invalid_client(),
    };
    super::cors::concerns(&req, &connection);
    let Some(code) = form.get("code") else {
        return invalid_request("code is missing.");
    };
    let Ok(grant) = state.store.take_record::<Grant>(&oidc::grant_key(code)).await else {
        return unavailable();
    };
    let Some(grant) = grant else {
        return invalid_grant("The code is not valid: unknown, expired or already used.");
    };
    if grant.client_id != connection.identifier {
        return invalid_grant("The code was issued to another client.");
    }
    if form.get("redirect_uri") != Some(&grant.redirect_uri.as_str()) {
        return invalid_grant("redirect_uri differs from the authorization request's.");
    }
    let verifier = form.get("code_verifier");
    let pkce_ok = match (&grant.code_challenge, verifier) {
        (Some(challenge), Some(verifier)) => oidc::pkce_matches(verifier, challenge),
        (Some(_), None) | (None, Some(_)) => false,
        (None, None) => true,
    };
    if !pkce_ok {
        return invalid_grant("The PKCE code_verifier does not match the code_challenge.");
    }
    match issue_tokens(&state, &connection, &grant).await {
        Ok(body) => HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .insert_header((header::PRAGMA, "no-cache"))
            .json(body),
        Err(_) => unavailable(),
    }
}

/// Client authentication: Basic, or `client_id` (+ `client_secret`) in the form. One method
/// only (RFC 6749 §2.3).
fn client_auth(req: &HttpRequest, form: &HashMap<&str, &str>) -> Result<Option<ClientAuth>, &'static str> {
    let basic = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|h| oidc::basic_credentials(h).ok_or("The Authorization header is not valid Basic credentials."))
        .transpose()?;
    let posted_id = form.get("client_id").map(|s| (*s).to_owned());
    let posted_secret = form.get("client_secret").map(|s| (*s).to_owned());
    Ok(match (basic, posted_id, posted_secret) {
        (Some(_), _, Some(_)) => return Err("Use one client authentication method, not two."),
        (Some((client_id, secret)), posted, None) => {
            if posted.is_some_and(|p| p != client_id) {
                return Err("client_id differs from the Basic credentials'.");
            }
            Some(ClientAuth::Secret { client_id, secret })
        }
        (None, Some(client_id), Some(secret)) => Some(ClientAuth::Secret { client_id, secret }),
        (None, Some(client_id), None) => Some(ClientAuth::None { client_id }),
        (None, None, _) => None,
    })
}

/// The client, if it proved who it is.
fn authenticate(state: &AppState, auth: &ClientAuth) -> Option<Arc<Connection>> {
    let (ClientAuth::Secret { client_id, .. } | ClientAuth::None { client_id }) = auth;
    let connection = state.connection(Some(client_id)).ok()?;
    let proven = match auth {
        ClientAuth::Secret { secret, .. } => connection.accepts_credential(secret),
        ClientAuth::None { .. } => connection.public_client,
    };
    proven.then_some(connection)
}

async fn issue_tokens(state: &AppState, connection: &Connection, grant: &Grant) -> Result<Value, ApiError> {
    let identity = state.open_identity(&grant.identity)?;
    let keys = state.keys.current().await?;
    let access_token = token::random_base62(43);
    let access = Access {
        client_id: grant.client_id.clone(),
        scope: grant.scope.clone(),
        identity: grant.identity.clone(),
    };
    state
        .store
        .put_record(
            &oidc::access_key(&access_token),
            &access,
            oidc::ACCESS_TOKEN_TTL_SECS,
        )
        .await?;
    let claims = IdTokenClaims {
        issuer: &state.public_base_url,
        connection: &connection.identifier,
        identity: &identity,
        auth_time: grant.auth_time,
        now: unix_now(),
        nonce: grant.nonce.as_deref(),
        access_token: Some(&access_token),
    };
    let id_token = id_token::sign(&claims, &keys).map_err(|e| {
        tracing::error!(error = %e, "cannot sign an ID token");
        ApiError::internal()
    })?;
    Ok(json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": oidc::ACCESS_TOKEN_TTL_SECS,
        "id_token": id_token,
        "scope": grant.scope,
    }))
}

/// `GET|POST /oauth2/userinfo` with the bearer access token: claims by scope.
async fn userinfo(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let invalid = || {
        HttpResponse::Unauthorized()
            .insert_header((header::WWW_AUTHENTICATE, r#"Bearer error="invalid_token""#))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .json(oidc::error_body(
                "invalid_token",
                "The access token is not valid.",
            ))
    };
    let Ok(token) = super::bearer(&req) else {
        return HttpResponse::Unauthorized()
            .insert_header((header::WWW_AUTHENTICATE, r#"Bearer realm="qrlogin-relay""#))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .json(oidc::error_body(
                "invalid_request",
                "Send Authorization: Bearer <access token>.",
            ));
    };
    let Ok(access) = state.store.get_record::<Access>(&oidc::access_key(token)).await else {
        return unavailable();
    };
    let Some(access) = access else {
        return invalid();
    };
    if let Ok(client) = state.connection(Some(&access.client_id)) {
        super::cors::concerns(&req, &client);
    }
    let (Ok(identity), Ok(keys)) = (state.open_identity(&access.identity), state.keys.current().await) else {
        return unavailable();
    };
    let mut claims = json!({
        "sub": id_token::subject(&keys.pairwise_salt, &access.client_id, &identity),
        "openid": identity.openid,
    });
    if let Some(unionid) = &identity.unionid {
        claims["unionid"] = json!(unionid);
    }
    if oidc::has_scope(&access.scope, "phone") {
        claims["phone_number"] = json!(identity.phone.as_ref().map(|p| &p.phone_number));
        claims["phone_number_verified"] = json!(identity.phone.is_some());
    }
    if oidc::has_scope(&access.scope, "profile") {
        if let Some(nickname) = &identity.nickname {
            claims["nickname"] = json!(nickname);
        }
        if let Some(picture) = &identity.avatar_url {
            claims["picture"] = json!(picture);
        }
    }
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(claims)
}
