//! `GET /q/{id}`: where a `link` code leads. WeChat opens the mini-program for such links (the
//! "scan ordinary QR codes" rule); any other camera lands here and is told to use WeChat.

use actix_web::{HttpResponse, web};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/q/{id}", web::get().to(scan_with_wechat));
}

const PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Scan with WeChat</title>
<style>body{font-family:system-ui,sans-serif;max-width:28rem;margin:3rem auto;padding:0 1rem;text-align:center;color:#222}
h1{font-size:1.4rem}p{color:#555}</style></head>
<body><h1>Scan this code with WeChat</h1>
<p>This is a login code for a website on a computer. Open WeChat, tap <b>+</b> then <b>Scan</b>, and point it at the code on the computer's screen.</p>
<p lang="zh">请使用微信“扫一扫”扫描电脑屏幕上的二维码登录。</p></body></html>"#;

async fn scan_with_wechat() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "public, max-age=3600"))
        .insert_header((
            "Content-Security-Policy",
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
        ))
        .body(PAGE)
}
