//! The dashboard: plain server-rendered HTML with inline SVG (no JavaScript build).
//!
//! * `GET /` — login form (paste a token) or, when logged in, the patient list with the
//!   latest glucose and risk flags (`LOW RISK` when P(<70) ≥ 0.2 within the forecast horizon,
//!   `HIGH RISK` when P(>250) ≥ 0.2).
//! * `GET /login[?next=/ui/patients/ID]` — the login form (a `token` in the URL is ignored:
//!   tokens never travel in URLs, where logs and histories keep them).
//! * `POST /login` (form fields `token`, `next`) — sets the `medtwin_token` cookie (HttpOnly,
//!   SameSite=Strict, 12 h; `Secure` when [`crate::ServerConfig::secure_cookies`], i.e. served
//!   behind a TLS proxy) when the token is valid, then redirects to `next` when it is a
//!   same-site path ([`same_site_path`]), else to `/`.
//! * `GET /ui/patients/{id}` — CGM history (last 24 h), the forecast cone (50/80/95 % bands
//!   and median), calibrated parameters, and a what-if form (`POST /ui/patients/{id}/whatif`).
//!
//! The dashboard enforces the API's roles: a device token sees no patient data on any page
//! (403), a clinician only assigned patients (403 otherwise), an unknown patient is a 404.
//! Every patient page and what-if is audited like the API. Every dashboard answer carries a
//! Content-Security-Policy without scripts or inline styles ([`CSP`]; the stylesheet is
//! `GET /ui/style.css`), `X-Frame-Options: DENY`, `X-Content-Type-Options: nosniff`,
//! `Referrer-Policy: no-referrer` and `Cache-Control: no-store` ([`html_headers`]).

use axum::extract::{Form, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use crate::api::{twin_info, visible_patients, whatif_for};
use crate::live::{BandPoint, BolusSpec, ForecastDoc, MealSpec, PlanSpec, WhatifRequest};
use crate::{audit, authenticate, check_access, Access, AppState, COOKIE};

/// Dashboard routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/login", get(login_get).post(login_post))
        .route("/logout", get(logout))
        .route("/ui/patients/{id}", get(patient_page))
        .route("/ui/patients/{id}/whatif", post(whatif_form))
        .route("/ui/style.css", get(style_css))
        .layer(axum::middleware::map_response(html_headers))
}

/// HTML-escape text.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The dashboard's stylesheet (`GET /ui/style.css`): no inline styles or scripts, so the
/// Content-Security-Policy can forbid both.
pub const STYLE_CSS: &str = "body{font-family:sans-serif;margin:2em;max-width:1000px}table{border-collapse:collapse}\
td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#eee}td.l{text-align:left}\
.flag-low{color:#fff;background:#c00;padding:2px 6px}.flag-high{color:#000;background:#fc0;padding:2px 6px}\
.muted{color:#777}\n";

/// Content-Security-Policy of every dashboard page: only this site's own stylesheet, images
/// and form targets; no scripts at all; never framed.
pub const CSP: &str = "default-src 'self'; script-src 'none'; style-src 'self'; img-src 'self'; \
object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Headers of every dashboard answer (pages, redirects, errors): CSP, no framing, no MIME
/// sniffing, no referrer, no caching (pages show patient data).
pub async fn html_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    for (k, v) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        h.insert(k, header::HeaderValue::from_static(v));
    }
    r
}

async fn style_css() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        STYLE_CSS,
    )
        .into_response()
}

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t} — medtwin</title>\
<link rel=\"stylesheet\" href=\"/ui/style.css\"></head><body><h1>{t}</h1>{body}\
<p class=\"muted\">medtwin — research software, not a medical device. <a href=\"/logout\">log out</a></p></body></html>",
        t = esc(title)
    ))
}

fn login_page(msg: &str) -> Response {
    login_form(msg, None)
}

/// The login form; `next` (a same-site path) travels in a hidden field.
fn login_form(msg: &str, next: Option<&str>) -> Response {
    let next = next
        .filter(|n| same_site_path(n))
        .map(|n| format!("<input type=\"hidden\" name=\"next\" value=\"{}\">", esc(n)))
        .unwrap_or_default();
    page(
        "medtwin login",
        &format!(
            "<p>{}</p><form method=\"post\" action=\"/login\">{next}<label>Token <input name=\"token\" type=\"password\" size=\"70\" autocomplete=\"off\"></label> <button type=\"submit\">Log in</button></form>",
            esc(msg)
        ),
    )
    .into_response()
}

/// Percent-decode `s` once (`%XY` with two hex digits; other `%` kept); `None` when the result
/// is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Whether `next` is a safe redirect target: a same-site path. It must be printable ASCII
/// and, as received and after each round of percent-decoding (until stable), start with a
/// single `/`, not `//` or `/\`, and hold no control character (tab, CR, LF, NUL, DEL…)
/// and no backslash. Browsers drop tabs and newlines and read `\` as `/`, so `/\t/evil`
/// or `/\\evil` would otherwise leave the site.
pub fn same_site_path(next: &str) -> bool {
    if next.is_empty() || !next.bytes().all(|c| (0x21..0x7f).contains(&c)) {
        return false;
    }
    let ok = |p: &str| {
        p.starts_with('/')
            && !p.starts_with("//")
            && !p.contains('\\')
            && !p.chars().any(|c| c.is_control())
    };
    let mut cur = next.to_string();
    for _ in 0..8 {
        if !ok(&cur) {
            return false;
        }
        match percent_decode(&cur) {
            Some(d) if d == cur => return true,
            Some(d) => cur = d,
            None => return false,
        }
    }
    false
}

/// Query of `GET /login` (any other field, a `token` included, is ignored).
#[derive(Deserialize)]
struct LoginQuery {
    /// Local path to go to after logging in.
    next: Option<String>,
}

/// Form of the login.
#[derive(Deserialize)]
struct LoginForm {
    token: String,
    /// Local path to go to after logging in (default `/`).
    next: Option<String>,
}

async fn login(state: &AppState, token: &str, next: Option<&str>) -> Response {
    // Only same-site paths: no open redirect.
    let next = next.filter(|n| same_site_path(n)).unwrap_or("/");
    match state.store.authenticate_token(token.trim()).await {
        Ok(Some(_)) => (
            StatusCode::SEE_OTHER,
            [
                (header::LOCATION, next.to_string()),
                (
                    header::SET_COOKIE,
                    format!(
                        "{COOKIE}={}; Path=/; Max-Age=43200; HttpOnly; SameSite=Strict{}",
                        token.trim(),
                        if state.cfg.secure_cookies {
                            "; Secure"
                        } else {
                            ""
                        }
                    ),
                ),
            ],
        )
            .into_response(),
        _ => {
            let mut r = login_page("Unknown token.");
            *r.status_mut() = StatusCode::UNAUTHORIZED;
            r
        }
    }
}

async fn login_get(Query(q): Query<LoginQuery>) -> Response {
    login_form(
        "Paste a clinician or admin token to log in.",
        q.next.as_deref(),
    )
}

async fn login_post(State(state): State<AppState>, Form(f): Form<LoginForm>) -> Response {
    login(&state, &f.token, f.next.as_deref()).await
}

async fn logout(State(state): State<AppState>) -> Response {
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/".to_string()),
            (
                header::SET_COOKIE,
                format!(
                    "{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict{}",
                    if state.cfg.secure_cookies {
                        "; Secure"
                    } else {
                        ""
                    }
                ),
            ),
        ],
    )
        .into_response()
}

async fn index(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Ok(who) = authenticate(&state, &headers).await else {
        return login_page("Paste a clinician or admin token to log in.");
    };
    if let Err(e) = check_read_any(&who) {
        audit(
            &state,
            Some(&who),
            "GET / (dashboard)",
            None,
            e.status,
            &e.reason,
        )
        .await;
        return forbidden_page(&e);
    }
    let list = match visible_patients(&state, &who).await {
        Ok(l) => l,
        Err(e) => return e.into_response(),
    };
    audit(
        &state,
        Some(&who),
        "GET / (dashboard)",
        None,
        StatusCode::OK,
        "",
    )
    .await;
    let mut rows = String::new();
    for p in &list {
        let mut flags = String::new();
        if p.p_below_70.is_some_and(|x| x >= 0.2) {
            flags.push_str(&format!(
                "<span class=\"flag-low\">LOW RISK {:.0}%</span> ",
                100.0 * p.p_below_70.unwrap_or(0.0)
            ));
        }
        if p.p_above_250.is_some_and(|x| x >= 0.2) {
            flags.push_str(&format!(
                "<span class=\"flag-high\">HIGH RISK {:.0}%</span>",
                100.0 * p.p_above_250.unwrap_or(0.0)
            ));
        }
        rows.push_str(&format!(
            "<tr><td class=\"l\"><a class=\"patient-link\" href=\"/ui/patients/{id}\">{id}</a></td><td>{g}</td><td>{gt}</td><td>{n}</td><td>{tw}</td><td>{pl}</td><td>{ph}</td><td class=\"l\">{flags}</td></tr>",
            id = esc(&p.id),
            g = p.latest_glucose_mg_dl.map(|v| format!("{v:.0}")).unwrap_or_else(|| "–".into()),
            gt = esc(p.latest_glucose_time.as_deref().unwrap_or("–")),
            n = p.n_cgm,
            tw = esc(&p.twin_status),
            pl = p.p_below_70.map(|v| format!("{v:.2}")).unwrap_or_else(|| "–".into()),
            ph = p.p_above_250.map(|v| format!("{v:.2}")).unwrap_or_else(|| "–".into()),
        ));
    }
    page(
        "Patients",
        &format!(
            "<p>Logged in as {}.</p><table id=\"patients\"><tr><th>patient</th><th>latest mg/dL</th><th>at</th><th>CGM readings</th><th>twin</th><th>P(&lt;70)</th><th>P(&gt;250)</th><th>flags</th></tr>{rows}</table>",
            esc(&who.actor())
        ),
    )
    .into_response()
}

/// Device tokens may only upload: no dashboard page shows them patient data.
fn check_read_any(who: &crate::Principal) -> Result<(), crate::ApiError> {
    if who.role == crate::Role::Device {
        return Err(crate::ApiError::forbidden(
            "a device token may only upload data (ingest-only); log in with a clinician or admin token",
        ));
    }
    Ok(())
}

fn forbidden_page(e: &crate::ApiError) -> Response {
    (
        e.status,
        page("Forbidden", &format!("<p>{}</p>", esc(&e.reason))),
    )
        .into_response()
}

/// Authenticate a patient page request and check the token may read `id`, which must exist:
/// 401 (login page), 403, 404 (audited), or the principal.
async fn gate_page(
    state: &AppState,
    headers: &HeaderMap,
    action: &str,
    id: &str,
) -> Result<crate::Principal, Response> {
    let Ok(who) = authenticate(state, headers).await else {
        audit(state, None, action, Some(id), StatusCode::UNAUTHORIZED, "").await;
        let mut r = login_page("Log in first.");
        *r.status_mut() = StatusCode::UNAUTHORIZED;
        return Err(r);
    };
    let checked = match check_access(&who, id, Access::Read) {
        Err(e) => Err(e),
        Ok(()) => match state.store.patient_exists(id).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(crate::ApiError::not_found(format!(
                "unknown patient `{id}`"
            ))),
            Err(e) => Err(e.into()),
        },
    };
    if let Err(e) = checked {
        audit(state, Some(&who), action, Some(id), e.status, &e.reason).await;
        let title = if e.status == StatusCode::NOT_FOUND {
            "Not found"
        } else {
            "Forbidden"
        };
        return Err((e.status, page(title, &format!("<p>{}</p>", esc(&e.reason)))).into_response());
    }
    Ok(who)
}

/// The glucose chart: CGM history `(ms, mg/dL)` and a forecast cone, as inline SVG
/// (`id="glucose-chart"`; 70 and 180 mg/dL lines).
pub fn chart_svg(cgm: &[(i64, f64)], bands: &[BandPoint]) -> String {
    let (w, h, l, r, t, b) = (900.0, 360.0, 50.0, 10.0, 10.0, 30.0);
    let band_t: Vec<(i64, &BandPoint)> = bands
        .iter()
        .filter_map(|p| {
            p.time
                .parse::<jiff::Timestamp>()
                .ok()
                .map(|ts| (ts.as_millisecond(), p))
        })
        .collect();
    let t0 = cgm
        .iter()
        .map(|c| c.0)
        .chain(band_t.iter().map(|x| x.0))
        .min()
        .unwrap_or(0);
    let t1 = cgm
        .iter()
        .map(|c| c.0)
        .chain(band_t.iter().map(|x| x.0))
        .max()
        .unwrap_or(1)
        .max(t0 + 1);
    let (g0, g1) = (40.0, 400.0);
    let x = |ms: i64| l + (ms - t0) as f64 / (t1 - t0) as f64 * (w - l - r);
    let y = |g: f64| t + (1.0 - (g.clamp(g0, g1) - g0) / (g1 - g0)) * (h - t - b);
    let mut s = format!("<svg id=\"glucose-chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"CGM history and forecast\">");
    s.push_str(&format!(
        "<rect x=\"{l}\" y=\"{t}\" width=\"{}\" height=\"{}\" fill=\"#fafafa\" stroke=\"#999\"/>",
        w - l - r,
        h - t - b
    ));
    s.push_str(&format!(
        "<rect x=\"{l}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"#e8f5e9\"/>",
        y(180.0),
        w - l - r,
        y(70.0) - y(180.0)
    ));
    for g in [70.0, 180.0, 250.0] {
        s.push_str(&format!("<line x1=\"{l}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#bbb\" stroke-dasharray=\"4\"/><text x=\"5\" y=\"{:.1}\" font-size=\"11\">{g}</text>", w - r, y(g) + 4.0, y = y(g)));
    }
    type Pick = fn(&BandPoint) -> f64;
    let bands_def: [(Pick, Pick, &str); 3] = [
        (|p| p.lo95, |p| p.hi95, "#bbdefb"),
        (|p| p.lo80, |p| p.hi80, "#90caf9"),
        (|p| p.lo50, |p| p.hi50, "#64b5f6"),
    ];
    for (lo, hi, fill) in bands_def {
        if band_t.is_empty() {
            break;
        }
        let mut pts: Vec<String> = band_t
            .iter()
            .map(|(ms, p)| format!("{:.1},{:.1}", x(*ms), y(hi(p))))
            .collect();
        pts.extend(
            band_t
                .iter()
                .rev()
                .map(|(ms, p)| format!("{:.1},{:.1}", x(*ms), y(lo(p)))),
        );
        s.push_str(&format!(
            "<polygon class=\"forecast-band\" points=\"{}\" fill=\"{fill}\" stroke=\"none\"/>",
            pts.join(" ")
        ));
    }
    if !band_t.is_empty() {
        let pts: Vec<String> = band_t
            .iter()
            .map(|(ms, p)| format!("{:.1},{:.1}", x(*ms), y(p.median)))
            .collect();
        s.push_str(&format!("<polyline class=\"forecast-median\" points=\"{}\" fill=\"none\" stroke=\"#0d47a1\" stroke-width=\"2\"/>", pts.join(" ")));
    }
    for (ms, g) in cgm {
        s.push_str(&format!(
            "<circle class=\"cgm\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"2\" fill=\"#333\"/>",
            x(*ms),
            y(*g)
        ));
    }
    let fmt = |ms: i64| {
        jiff::Timestamp::from_millisecond(ms)
            .map(|t| t.strftime("%m-%d %H:%M").to_string())
            .unwrap_or_default()
    };
    s.push_str(&format!("<text x=\"{l}\" y=\"{}\" font-size=\"11\">{} UTC</text><text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\">{} UTC</text>", h - 8.0, fmt(t0), w - r, h - 8.0, fmt(t1)));
    s.push_str("</svg>");
    s
}

/// Render a patient's page; `extra` is inserted after the what-if form (results).
async fn render_patient(
    state: &AppState,
    id: &str,
    extra: &str,
) -> Result<Response, crate::ApiError> {
    let latest = state.store.latest_cgm(id, 288).await?;
    let fc = state
        .live
        .current_forecast(&state.store, &state.cfg, id)
        .await
        .map_err(crate::ApiError::internal)?;
    let doc: Option<ForecastDoc> = fc.and_then(|f| serde_json::from_str(&f).ok());
    let last_ms = latest
        .first()
        .map(|d| d.entry.time.as_millisecond())
        .unwrap_or(0);
    let cgm: Vec<(i64, f64)> = latest
        .iter()
        .rev()
        .map(|d| (d.entry.time.as_millisecond(), d.entry.value))
        .filter(|(t, _)| *t >= last_ms - 86_400_000)
        .collect();
    let bands = doc.as_ref().map(|d| d.bands.clone()).unwrap_or_default();
    let info = twin_info(state, id).await?;
    let mut params = String::new();
    for p in &info.parameters {
        params.push_str(&format!(
            "<tr><td class=\"l\">{} <span class=\"muted\">({}; {})</span></td><td>{:.4}</td><td>{:.4}</td><td>{:.4}–{:.4}</td></tr>",
            esc(&p.name),
            esc(&p.description),
            esc(&p.unit), p.calibration_map, p.posterior_mean, p.p10, p.p90
        ));
    }
    let fc_text = match &doc {
        Some(d) => format!(
            "<p id=\"forecast-summary\">Forecast from data up to {} ({} min): P(&lt;70) = {:.3}, P(&gt;250) = {:.3}.</p>",
            esc(&d.data_time), d.horizon_min, d.p_below_70, d.p_above_250
        ),
        None => format!("<p id=\"forecast-summary\">No forecast yet (twin {}: {}).</p>", esc(&info.status), esc(&info.message)),
    };
    let body = format!(
        "<p><a href=\"/\">← patients</a></p><h2>CGM (last 24 h) and forecast</h2>{chart}{fc_text}\
<h2>Calibrated parameters</h2><p>MAP of the first-day calibration and the particle filter's posterior now; twin {status}, version {ver}{rmse}.</p>\
<table id=\"parameters\"><tr><th>parameter</th><th>calibration MAP</th><th>posterior mean now</th><th>10–90 %</th></tr>{params}</table>\
<h2>What if</h2><form id=\"whatif\" method=\"post\" action=\"/ui/patients/{eid}/whatif\">\
<label>meal carbs (g) <input name=\"carbs_g\" value=\"60\" size=\"5\"></label> \
<label>bolus (U) <input name=\"bolus_u\" value=\"6\" size=\"5\"></label> \
<label>at (min from now) <input name=\"at_min\" value=\"0\" size=\"5\"></label> \
<button type=\"submit\">Compare with no action</button></form>{extra}",
        chart = chart_svg(&cgm, &bands),
        status = esc(&info.status),
        ver = info.version,
        rmse = info.calibration_rmse_mg_dl.map(|r| format!(", calibration RMSE {r:.1} mg/dL")).unwrap_or_default(),
        eid = esc(id),
    );
    Ok(page(&format!("Patient {id}"), &body).into_response())
}

async fn patient_page(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let action = "GET /ui/patients/{id}";
    let who = match gate_page(&state, &headers, action, &id).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let r = render_patient(&state, &id, "").await;
    let status = r.as_ref().map(|r| r.status()).unwrap_or_else(|e| e.status);
    audit(&state, Some(&who), action, Some(&id), status, "").await;
    r.unwrap_or_else(|e| e.into_response())
}

#[derive(Deserialize)]
struct WhatifForm {
    carbs_g: String,
    bolus_u: String,
    at_min: String,
}

async fn whatif_form(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(f): Form<WhatifForm>,
) -> Response {
    let action = "POST /ui/patients/{id}/whatif";
    let who = match gate_page(&state, &headers, action, &id).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let num = |s: &str, what: &str| {
        s.trim()
            .parse::<f64>()
            .map_err(|_| format!("{what}: `{}` is not a number", s.trim()))
    };
    let parsed = (|| {
        Ok::<_, String>((
            num(&f.carbs_g, "carbs")?,
            num(&f.bolus_u, "bolus")?,
            num(&f.at_min, "at")?,
        ))
    })();
    let extra = match parsed {
        Err(m) => format!("<p class=\"flag-low\">{}</p>", esc(&m)),
        Ok((c, u, at)) => {
            let req = WhatifRequest {
                horizon_min: 240,
                plans: vec![
                    PlanSpec {
                        name: "no action".into(),
                        ..PlanSpec::default()
                    },
                    PlanSpec {
                        name: format!("{c} g + {u} U at {at} min"),
                        meals: vec![MealSpec {
                            at_min: at,
                            carbs_g: c,
                        }],
                        boluses: vec![BolusSpec {
                            at_min: at,
                            units: u,
                        }],
                        basal: vec![],
                    },
                ],
            };
            match whatif_for(&state, &id, req).await {
                Ok(r) => {
                    let mut t = String::from("<table id=\"whatif-result\"><tr><th>plan</th><th>P(&lt;70)</th><th>P(&lt;54)</th><th>P(&gt;250)</th><th>expected TIR %</th></tr>");
                    for o in &r.outcomes {
                        t.push_str(&format!("<tr><td class=\"l\">{}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{:.1}</td></tr>", esc(&o.name), o.p_below_70, o.p_below_54, o.p_above_250, o.expected_tir_pct));
                    }
                    t + "</table>"
                }
                Err(e) => format!("<p class=\"flag-low\">{}</p>", esc(&e.reason)),
            }
        }
    };
    let r = render_patient(&state, &id, &extra).await;
    let status = r.as_ref().map(|r| r.status()).unwrap_or_else(|e| e.status);
    audit(&state, Some(&who), action, Some(&id), status, "").await;
    r.unwrap_or_else(|e| e.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_same_site_paths_are_redirect_targets() {
        for good in ["/", "/ui/patients/p1", "/ui/patients/p%2D1?x=1", "/a%20b"] {
            assert!(same_site_path(good), "{good}");
        }
        for bad in [
            "",
            "//evil.example",
            "/\\evil.example",
            "/\t/evil.example",
            "/%09/evil.example",
            "/%2509/evil.example",
            "/%2F/evil.example",
            "%2F%2Fevil.example",
            "/%5Cevil.example",
            "/%255Cevil.example",
            "/%0d%0aSet-Cookie:x",
            "/%00",
            "/%7F",
            "/%ff",
            "https://evil.example",
            "/caf\u{e9}",
            "/a b",
        ] {
            assert!(!same_site_path(bad), "{bad}");
        }
    }
}
