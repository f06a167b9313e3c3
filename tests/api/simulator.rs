//! The simulator answers as WeChat does: HTTP 200 with errcode bodies, token rotation rules,
//! single-use codes, scene and page checks.

use crate::helpers::{fetch_json, spawn_simulator};
use qrlogin_relay::sandbox::{SANDBOX_APP_SECRET, SANDBOX_APPID};
use serde_json::{Value, json};

struct Sim {
    base: String,
    http: reqwest::Client,
}

impl Sim {
    fn new() -> Self {
        Self {
            base: spawn_simulator(),
            http: reqwest::Client::new(),
        }
    }

    async fn post(&self, path: &str, body: &str) -> reqwest::Response {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "WeChat answers 200 even for errors");
        response
    }

    async fn post_json(&self, path: &str, body: Value) -> Value {
        self.post(path, &body.to_string()).await.json().await.unwrap()
    }

    async fn get_json(&self, path: &str) -> Value {
        fetch_json(self.http.get(format!("{}{path}", self.base))).await
    }

    async fn stable_token(&self, force: bool) -> String {
        let body = json!({ "grant_type": "client_credential", "appid": SANDBOX_APPID, "secret": SANDBOX_APP_SECRET, "force_refresh": force });
        let answer = self.post_json("/cgi-bin/stable_token", body).await;
        assert!(answer["expires_in"].as_u64().unwrap() > 300, "{answer}");
        answer["access_token"].as_str().unwrap().to_owned()
    }

    async fn code_errcode(&self, token: &str, body: &str) -> i64 {
        let response = self
            .post(&format!("/wxa/getwxacodeunlimit?access_token={token}"), body)
            .await;
        let answer: Value = response.json().await.unwrap();
        assert!(answer["errmsg"].as_str().unwrap().contains(" rid: "), "{answer}");
        answer["errcode"].as_i64().unwrap()
    }
}

fn errcode(answer: &Value) -> i64 {
    answer["errcode"].as_i64().unwrap_or(0)
}

#[tokio::test]
async fn stable_tokens_repeat_until_forced_and_forcing_is_rate_limited() {
    let sim = Sim::new();
    let first = sim.stable_token(false).await;
    assert_eq!(sim.stable_token(false).await, first);
    let forced = sim.stable_token(true).await;
    assert_ne!(forced, first);
    assert_eq!(
        sim.stable_token(true).await,
        forced,
        "a second force within 30 s does not refresh"
    );
    assert_eq!(
        sim.code_errcode(&first, r#"{"scene":"a"}"#).await,
        40001,
        "a forced refresh retires the old token"
    );

    let wrong = json!({ "grant_type": "client_credential", "appid": SANDBOX_APPID, "secret": "nope" });
    assert_eq!(
        errcode(&sim.post_json("/cgi-bin/stable_token", wrong).await),
        40125
    );
    let bad_appid = json!({ "grant_type": "client_credential", "appid": "wx12", "secret": "x" });
    assert_eq!(
        errcode(&sim.post_json("/cgi-bin/stable_token", bad_appid).await),
        40013
    );
    assert_eq!(
        errcode(
            &sim.post("/cgi-bin/stable_token", "appid=x")
                .await
                .json()
                .await
                .unwrap()
        ),
        47001
    );
}

#[tokio::test]
async fn plain_tokens_rotate_and_the_old_one_overlaps() {
    let sim = Sim::new();
    let path = format!(
        "/cgi-bin/token?grant_type=client_credential&appid={SANDBOX_APPID}&secret={SANDBOX_APP_SECRET}"
    );
    let first = sim.get_json(&path).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let second = sim.get_json(&path).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(first, second);
    let image = sim
        .post(
            &format!("/wxa/getwxacodeunlimit?access_token={first}"),
            r#"{"scene":"x"}"#,
        )
        .await;
    assert_eq!(
        image.headers()["content-type"],
        "image/jpeg",
        "the old token still works during the overlap"
    );
}

#[tokio::test]
async fn sun_code_requests_are_checked_like_wechat_does() {
    let sim = Sim::new();
    let token = sim.stable_token(false).await;
    assert_eq!(sim.code_errcode("", r#"{"scene":"a"}"#).await, 41001);
    assert_eq!(sim.code_errcode("made-up", r#"{"scene":"a"}"#).await, 40001);
    assert_eq!(sim.code_errcode(&token, "not json").await, 47001);
    assert_eq!(sim.code_errcode(&token, r#"{"scene":""}"#).await, 40169);
    assert_eq!(
        sim.code_errcode(&token, &json!({ "scene": "a".repeat(33) }).to_string())
            .await,
        40169
    );
    assert_eq!(sim.code_errcode(&token, r#"{"scene":"100%"}"#).await, 40129);
    assert_eq!(
        sim.code_errcode(&token, r#"{"scene":"a","page":"/pages/login/login"}"#)
            .await,
        41030
    );
    assert_eq!(
        sim.code_errcode(&token, r#"{"scene":"a","page":"pages/nope/nope"}"#)
            .await,
        41030
    );
    assert_eq!(
        sim.code_errcode(&token, r#"{"scene":"a","page":"pages/x?scancode_time=1"}"#)
            .await,
        85096
    );
    assert_eq!(
        sim.code_errcode(&token, r#"{"scene":"a","env_version":"beta"}"#)
            .await,
        40097
    );

    let ok = r#"{"scene":"a=1&b=2","page":"pages/nope/nope","check_path":false,"width":300,"line_color":{"r":"10","g":20,"b":"30"}}"#;
    let response = sim
        .post(&format!("/wxa/getwxacodeunlimit?access_token={token}"), ok)
        .await;
    assert_eq!(response.headers()["content-type"], "image/jpeg");
    let image = image::load_from_memory(&response.bytes().await.unwrap()).unwrap();
    assert_eq!((image.width(), image.height()), (300, 300));
}

#[tokio::test]
async fn login_and_phone_codes_work_once_for_their_own_app() {
    let sim = Sim::new();
    let mint = async |what: &str, body: Value| {
        sim.post_json(&format!("/_sim/{what}"), body).await["code"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let session = |code: &str| {
        format!(
            "/sns/jscode2session?appid={SANDBOX_APPID}&secret={SANDBOX_APP_SECRET}&js_code={code}&grant_type=authorization_code"
        )
    };
    let code = mint("login-code", json!({ "user": "rita" })).await;
    let answer = sim.get_json(&session(&code)).await;
    assert_eq!(answer["openid"].as_str().unwrap().len(), 28);
    assert!(answer["session_key"].is_string());
    assert_eq!(
        errcode(&sim.get_json(&session(&code)).await),
        40163,
        "code been used"
    );
    assert_eq!(errcode(&sim.get_json(&session("made-up")).await), 40029);
    let foreign = mint(
        "login-code",
        json!({ "user": "rita", "appid": "wx00112233445566aa" }),
    )
    .await;
    assert_eq!(
        errcode(&sim.get_json(&session(&foreign)).await),
        40029,
        "a code from another app"
    );

    let token = sim.stable_token(false).await;
    let phone_path = format!("/wxa/business/getuserphonenumber?access_token={token}");
    let phone = mint("phone-code", json!({ "user": "rita", "phone": "13912345678" })).await;
    let answer = sim
        .post_json(&phone_path, json!({ "code": phone, "openid": answer["openid"] }))
        .await;
    assert_eq!(answer["errcode"], 0);
    assert_eq!(answer["phone_info"]["purePhoneNumber"], "13912345678");
    assert_eq!(
        answer["phone_info"]["countryCode"], "86",
        "a string, as the real API sends"
    );
    assert_eq!(answer["phone_info"]["watermark"]["appid"], SANDBOX_APPID);
    assert_eq!(
        errcode(&sim.post_json(&phone_path, json!({ "code": phone })).await),
        40029,
        "used once"
    );

    let foreign_phone = mint(
        "phone-code",
        json!({ "user": "rita", "appid": "wx00112233445566aa" }),
    )
    .await;
    assert_eq!(
        errcode(&sim.post_json(&phone_path, json!({ "code": foreign_phone })).await),
        40013
    );
    let refused = sim
        .http
        .post(format!("{}/_sim/login-code", sim.base))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400, "control endpoints say what is wrong");
}

#[tokio::test]
async fn a_wrong_method_or_a_broken_redirect_uri_is_answered_as_wechat_does() {
    let sim = Sim::new();
    for (method, path, errcode) in [
        (reqwest::Method::GET, "/wxa/getwxacodeunlimit", 43002),
        (reqwest::Method::GET, "/wxa/business/getuserphonenumber", 43002),
        (reqwest::Method::POST, "/sns/jscode2session", 43001),
    ] {
        let response = sim
            .http
            .request(method, format!("{}{path}", sim.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::OK, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["errcode"], errcode, "{path}: {body}");
    }
    // A CR/LF in redirect_uri is an unusable link, not a server error.
    let response = sim
        .http
        .get(format!("{}/connect/qrconnect/scan", sim.base))
        .query(&[
            ("appid", "wxa5d0b0c0ffee0002"),
            ("redirect_uri", "https://shop.example/cb\r\nSet-Cookie: x=y"),
            ("response_type", "code"),
            ("scope", "snsapi_login"),
            ("state", "s"),
            ("user", "u"),
            ("action", "allow"),
        ])
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(response.headers().get("set-cookie").is_none());
}
