//! The records console over HTTP as a browser speaks to it: no redirects followed, every
//! status kept, a session cookie sent back by hand.

use super::PASSWORD;

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .max_redirects(0)
        .http_status_as_error(false)
        .build()
        .into()
}

pub struct Page {
    pub status: u16,
    pub location: String,
    pub set_cookie: String,
    pub csp: String,
    pub body: String,
}

pub fn page(mut r: ureq::http::Response<ureq::Body>) -> Page {
    let header = |name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let (location, set_cookie, csp) = (
        header("location"),
        header("set-cookie"),
        header("content-security-policy"),
    );
    Page {
        status: r.status().as_u16(),
        location,
        set_cookie,
        csp,
        body: r.body_mut().read_to_string().unwrap(),
    }
}

pub fn get(addr: &str, path: &str, cookie: Option<&str>) -> Page {
    let mut req = agent().get(format!("http://{addr}{path}"));
    if let Some(c) = cookie {
        req = req.header("Cookie", c);
    }
    page(req.call().unwrap())
}

pub fn post(
    addr: &str,
    path: &str,
    cookie: Option<&str>,
    origin: Option<&str>,
    form: &[(&str, &str)],
) -> Page {
    let mut req = agent().post(format!("http://{addr}{path}"));
    if let Some(c) = cookie {
        req = req.header("Cookie", c);
    }
    if let Some(o) = origin {
        req = req.header("Origin", o);
    }
    page(req.send_form(form.iter().copied()).unwrap())
}

/// Signs in; the cookie to send back (`name=value`).
pub fn sign_in(addr: &str, user: &str) -> String {
    let p = post(
        addr,
        "/console/sign-in",
        None,
        Some(&format!("http://{addr}")),
        &[("user", user), ("password", PASSWORD)],
    );
    assert_eq!(p.status, 303, "{}", p.body);
    assert_eq!(p.location, "/console/worklist");
    p.set_cookie.split(';').next().unwrap().to_string()
}

/// The CSRF token in a page's forms.
pub fn csrf(body: &str) -> String {
    let at = body
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF token")
        + 19;
    body[at..at + 64].to_string()
}
