//! The simulator's `getwxacodeunlimit`: the checks WeChat makes of a request (scene, page,
//! version) and its sun code image.

use super::{SimError, SimState, Simulator, now, query, wechat_error};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;
use std::io::Cursor;

#[derive(Deserialize)]
struct CodeBody {
    scene: Option<Value>,
    page: Option<String>,
    check_path: Option<bool>,
    env_version: Option<String>,
    width: Option<u32>,
    is_hyaline: Option<bool>,
    line_color: Option<HashMap<String, Value>>,
}

const SCENE_PUNCTUATION: &str = "!#$&'()*+,/:;=?@-._~";

fn check_code_request(state: &SimState, appid: &str, body: &CodeBody) -> Result<String, SimError> {
    let scene = match &body.scene {
        Some(Value::String(s)) if !s.is_empty() && s.chars().count() <= 32 => s.clone(),
        _ => return Err((40169, "invalid length for scene, or the data is not json string")),
    };
    if !scene
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || SCENE_PUNCTUATION.contains(c))
    {
        return Err((40129, "invalid scene"));
    }
    if let Some(page) = &body.page {
        if page.contains("scancode_time") {
            return Err((85096, "not allow include scancode_time field"));
        }
        if page.starts_with('/') || page.contains('?') {
            return Err((41030, "invalid page"));
        }
        let published = state.apps.get(appid).and_then(|a| a.pages.as_ref());
        if body.check_path != Some(false) && published.is_some_and(|pages| !pages.iter().any(|p| p == page)) {
            return Err((41030, "invalid page"));
        }
    }
    if !matches!(
        body.env_version.as_deref(),
        None | Some("release" | "trial" | "develop")
    ) {
        return Err((40097, "invalid args"));
    }
    Ok(scene)
}

fn colour(line: &Option<HashMap<String, Value>>) -> [u8; 3] {
    let channel = |name: &str| {
        let value = line.as_ref().and_then(|l| l.get(name));
        let n = match value {
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => s.parse().ok(),
            _ => None,
        };
        n.unwrap_or(0).min(255) as u8
    };
    [channel("r"), channel("g"), channel("b")]
}

/// POST /wxa/getwxacodeunlimit: the image bytes (PNG, labelled image/jpeg as WeChat does), or
/// a JSON error.
pub(super) async fn handle(sim: web::Data<Simulator>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let caller = {
        let token = query(&req).get("access_token").cloned();
        sim.state().app_of_token(token.as_deref(), now()).ok()
    };
    let checked = sim
        .enter("getwxacodeunlimit", caller.as_deref())
        .await
        .and_then(|_| {
            let state = sim.state();
            let appid = state.app_of_token(query(&req).get("access_token").map(String::as_str), now())?;
            let body: CodeBody = serde_json::from_slice(&body).map_err(|_| (47001, "data format error"))?;
            let scene = check_code_request(&state, &appid, &body)?;
            Ok((scene, body))
        });
    let (scene, body) = match checked {
        Ok(ok) => ok,
        Err(e) => return wechat_error(e),
    };
    let width = body.width.unwrap_or(430).clamp(280, 1280);
    let image =
        sim.layouts
            .of(width)
            .draw(&scene, body.is_hyaline.unwrap_or(false), colour(&body.line_color));
    let mut png = Vec::new();
    if image
        .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
        .is_err()
    {
        return wechat_error((-1, "system error"));
    }
    HttpResponse::Ok().content_type("image/jpeg").body(png)
}
