//! The dashboard in a real browser: Debian's Chromium, headless, driven through chromedriver
//! (WebDriver) by fantoccini. `.ci/run` installs both. Screenshots land in
//! `target/dashboard-screenshots/` for a person to look at.

mod common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::api::forward_auth;
use common::{Server, agent, create_user, json};
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

const EMAIL: &str = "owner@acme.test";
const PASSWORD: &str = "dashboard-pass-1";

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_chromedriver() -> (Driver, String) {
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver is not installed: apt-get install chromium chromium-driver (.ci/run does this)");
    let driver = Driver(child);
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while agent().get(&format!("{url}/status")).call().is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
    (driver, url)
}

async fn browser(webdriver: &str, profile: &std::path::Path, width: u32, height: u32) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            // Headless windows have a minimum width; device metrics give a true 375 px viewport.
            "mobileEmulation": {"deviceMetrics": {"width": width, "height": height, "pixelRatio": 1.0}},
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                format!("--user-data-dir={}", profile.display()),
                format!("--window-size={width},{height}"),
            ],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(webdriver)
        .await
        .expect("start a Chromium session")
}

fn screenshots() -> PathBuf {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/dashboard-screenshots"
    ));
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

async fn sign_in(c: &Client) {
    c.wait()
        .for_element(Locator::Id("email"))
        .await
        .expect("sign-in form");
    let email = c.find(Locator::Id("email")).await.expect("email");
    email.clear().await.expect("clear");
    email.send_keys(EMAIL).await.expect("type email");
    c.find(Locator::Id("password"))
        .await
        .expect("password")
        .send_keys(PASSWORD)
        .await
        .expect("type password");
    click(c, Locator::Id("sign-in-submit")).await;
    wait_visible(c, "#open-create").await;
}

async fn wait_visible(c: &Client, css: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(el) = c.find(Locator::Css(css)).await
            && el.is_displayed().await.unwrap_or(false)
        {
            return;
        }
        assert!(Instant::now() < deadline, "{css} never became visible");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends one key to whatever has the focus.
async fn press(c: &Client, key: Key) {
    c.active_element()
        .await
        .expect("focus")
        .send_keys(&char::from(key).to_string())
        .await
        .unwrap_or_else(|e| panic!("pressing {key:?}: {e}"));
}

/// Finds one element and clicks it, failing the test if either step fails.
async fn click(c: &Client, locator: Locator<'_>) {
    let what = format!("{locator:?}");
    c.find(locator)
        .await
        .unwrap_or_else(|e| panic!("find {what}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {what}: {e}"));
}

/// The text of one element, failing the test if it cannot be read.
async fn text_of(c: &Client, locator: Locator<'_>) -> String {
    let what = format!("{locator:?}");
    c.find(locator)
        .await
        .unwrap_or_else(|e| panic!("find {what}: {e}"))
        .text()
        .await
        .unwrap_or_else(|e| panic!("text of {what}: {e}"))
}

async fn wait_until(c: &Client, script: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if c.execute(script, vec![])
            .await
            .ok()
            .and_then(|v| v.as_bool())
            == Some(true)
        {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_use_and_revoke_a_key_in_the_browser() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    // Scripts make the directory; only `serve` creates a missing one.
    std::fs::create_dir(&data).expect("mkdir data");
    json(
        &data,
        &["team", "create", "--name", "Acme", "--id", "team_a"],
    );
    json(
        &data,
        &[
            "project", "create", "--team", "team_a", "--name", "Web shop", "--id", "proj_web",
        ],
    );
    json(
        &data,
        &[
            "project",
            "create",
            "--team",
            "team_a",
            "--name",
            "Mobile",
            "--id",
            "proj_mobile",
        ],
    );
    create_user(&data, EMAIL, PASSWORD, "team_a", "owner");
    let server = Server::start(&data, &[]);
    let (_driver, webdriver) = start_chromedriver();
    let shots = screenshots();

    let c = browser(&webdriver, &dir.path().join("profile"), 1440, 1000).await;
    c.goto(&server.url("/")).await.expect("open the dashboard");
    sign_in(&c).await;
    wait_visible(&c, "#keys-empty").await;
    assert!(
        text_of(&c, Locator::Id("keys-empty"))
            .await
            .contains("No API keys yet")
    );

    // Create a project-scoped key with two scopes and an expiry.
    click(&c, Locator::Id("open-create")).await;
    wait_visible(&c, "#key-name").await;
    // Errors appear next to the field they belong to: one caught in the page, one from the API.
    click(&c, Locator::Id("create-submit")).await;
    wait_visible(&c, "#key-name-error").await;
    c.find(Locator::Id("key-name"))
        .await
        .expect("name")
        .send_keys("Web shop backend")
        .await
        .expect("type");
    c.execute(
        "document.getElementById('key-expires').value = arguments[0]",
        vec![json!("2001-01-01")],
    )
    .await
    .expect("date");
    click(&c, Locator::Id("create-submit")).await;
    wait_visible(&c, "#key-expires-error").await;
    let why = text_of(&c, Locator::Id("key-expires-error")).await;
    assert!(why.contains("future"), "{why}");
    click(&c, Locator::Css("#key-project option[value='proj_web']")).await;
    for scope in ["customers:read", "products:read"] {
        click(
            &c,
            Locator::Css(&format!("#key-scopes input[value='{scope}']")),
        )
        .await;
    }
    c.execute(
        "document.getElementById('key-expires').value = arguments[0]",
        vec![json!("2099-12-31")],
    )
    .await
    .expect("date");
    // A rate limit: a bad number is caught next to the field, a good one is kept.
    let rate = c.find(Locator::Id("key-rate-limit")).await.expect("rate");
    rate.send_keys("0").await.expect("type");
    click(&c, Locator::Id("create-submit")).await;
    wait_visible(&c, "#key-rate-error").await;
    rate.clear().await.expect("clear");
    rate.send_keys("5000").await.expect("type");
    click(&c, Locator::Css("#key-rate-window option[value='86400']")).await;
    click(&c, Locator::Id("create-submit")).await;
    wait_visible(&c, "#secret-value").await;
    let raw = c
        .find(Locator::Id("secret-value"))
        .await
        .expect("secret")
        .prop("value")
        .await
        .expect("value")
        .expect("a key");
    assert!(raw.starts_with("bs_") && raw.len() == 51, "{raw}");
    std::fs::write(
        shots.join("one-time-key-dialog.png"),
        c.screenshot().await.expect("screenshot"),
    )
    .expect("save");

    // The key works where its scopes allow and nowhere else.
    let base = "/api/billstack/teams/team_a/projects";
    assert_eq!(
        forward_auth(&server, &raw, "GET", &format!("{base}/proj_web/customers")).0,
        200
    );
    assert_eq!(
        forward_auth(&server, &raw, "GET", &format!("{base}/proj_web/prices/p1")).0,
        200
    );
    assert_eq!(
        forward_auth(&server, &raw, "POST", &format!("{base}/proj_web/customers")).0,
        403
    );
    assert_eq!(
        forward_auth(
            &server,
            &raw,
            "GET",
            &format!("{base}/proj_mobile/customers")
        )
        .0,
        403
    );

    // Closing the dialog removes the key from the page.
    click(&c, Locator::Id("secret-done")).await;
    wait_until(
        &c,
        "return !document.getElementById('secret-dialog').open",
        "the dialog to close",
    )
    .await;
    assert_eq!(
        c.find(Locator::Id("secret-value"))
            .await
            .expect("secret")
            .prop("value")
            .await
            .expect("value")
            .as_deref(),
        Some("")
    );
    let html = c.source().await.expect("source");
    assert!(
        !html.contains(&raw[3..]),
        "the raw key is gone from the page"
    );
    let row = text_of(&c, Locator::Css("#keys-body tr")).await;
    for expected in [
        "Web shop backend",
        "5,000 / day",
        &raw[..7],
        "Web shop",
        "customers:read",
        "products:read",
        "Never",
    ] {
        assert!(row.contains(expected), "row {row:?} lacks {expected:?}");
    }
    // After a reload the row's chart shows the four requests made above (two allowed, two
    // refused), and the use is the key's last one.
    c.refresh().await.expect("reload");
    wait_until(
        &c,
        "const f = document.querySelector('#keys-body [data-usage-for]'); \
         return f !== null && f.dataset.total === '4' \
           && f.querySelectorAll('rect.allowed').length === 1 \
           && f.querySelectorAll('rect.denied').length === 1",
        "the usage chart",
    )
    .await;
    let row = text_of(&c, Locator::Css("#keys-body tr")).await;
    assert!(!row.contains("Never\n4"), "last used is set: {row:?}");
    std::fs::write(
        shots.join("key-list.png"),
        c.screenshot().await.expect("screenshot"),
    )
    .expect("save");

    // Rotate it with no grace period: the new key is shown once, the old one stops at once,
    // and the one row left has the new key's prefix.
    click(&c, Locator::Css("#keys-body button.rotate")).await;
    wait_visible(&c, "#rotate-confirm").await;
    assert_eq!(
        text_of(&c, Locator::Id("rotate-name")).await,
        "Web shop backend"
    );
    c.execute(
        "document.getElementById('rotate-grace').value = '0'",
        vec![],
    )
    .await
    .expect("no grace period");
    click(&c, Locator::Id("rotate-confirm")).await;
    wait_until(
        &c,
        "return document.getElementById('secret-dialog').open \
         && document.getElementById('secret-value').value.startsWith('bs_')",
        "the new key to be shown",
    )
    .await;
    let rotated = c
        .find(Locator::Id("secret-value"))
        .await
        .expect("secret")
        .prop("value")
        .await
        .expect("value")
        .expect("a key");
    assert!(rotated.len() == 51 && rotated != raw, "{rotated}");
    click(&c, Locator::Id("secret-done")).await;
    wait_until(
        &c,
        &format!(
            "const rows = document.querySelectorAll('#keys-body tr'); \
             return rows.length === 1 && rows[0].textContent.includes('{}')",
            &rotated[..7]
        ),
        "the list to show only the new key",
    )
    .await;
    assert_eq!(
        forward_auth(&server, &raw, "GET", &format!("{base}/proj_web/customers")).0,
        401
    );
    assert_eq!(
        forward_auth(
            &server,
            &rotated,
            "GET",
            &format!("{base}/proj_web/customers")
        )
        .0,
        200
    );
    let raw = rotated;

    // Revoke it in the page: confirmation names the key, the row disappears, the key stops.
    click(&c, Locator::Css("#keys-body button.revoke")).await;
    wait_visible(&c, "#revoke-confirm").await;
    assert_eq!(
        text_of(&c, Locator::Id("revoke-name")).await,
        "Web shop backend"
    );
    click(&c, Locator::Id("revoke-confirm")).await;
    wait_until(
        &c,
        "return document.querySelectorAll('#keys-body tr').length === 0",
        "the row to disappear",
    )
    .await;
    assert_eq!(
        forward_auth(&server, &raw, "GET", &format!("{base}/proj_web/customers")).0,
        401
    );

    // The owner uploads a policy in the policy panel: a refused one shows why, an accepted one
    // replaces the scope list, and reset brings the default back.
    let upload = |path: &'static str| {
        let c = c.clone();
        async move {
            c.find(Locator::Id("policy-file"))
                .await
                .expect("file input")
                .send_keys(path)
                .await
                .expect("choose file");
            click(&c, Locator::Id("policy-upload")).await;
        }
    };
    upload(billstack_test_artifacts::WRONG_WORLD).await;
    wait_visible(&c, "#policy-error").await;
    let why = text_of(&c, Locator::Id("policy-error")).await;
    assert!(
        why.contains("does not export the billstack:policy world"),
        "{why}"
    );
    upload(billstack_test_artifacts::ENV_SNOOP).await;
    wait_until(
        &c,
        "return document.getElementById('policy-name').textContent === 'env-snoop'",
        "the new policy",
    )
    .await;
    assert_eq!(
        text_of(&c, Locator::Id("policy-source")).await,
        "Uploaded by this team"
    );
    wait_until(
        &c,
        "return document.querySelectorAll('#key-scopes input').length === 1",
        "the new scope list",
    )
    .await;
    std::fs::write(
        shots.join("policy-panel.png"),
        c.screenshot().await.expect("screenshot"),
    )
    .expect("save");
    click(&c, Locator::Id("policy-reset")).await;
    wait_until(
        &c,
        "return document.getElementById('policy-name').textContent === 'billstack-default-scopes'",
        "the default policy",
    )
    .await;

    // The owner's audit log lists what was just done, newest first.
    wait_until(
        &c,
        "const rows = [...document.querySelectorAll('#audit-body tr')].map((r) => r.dataset.action); \
         return rows.slice(0, 2).join() === 'policy.reset,policy.uploaded' \
           && rows.includes('key.revoked') && rows.includes('key.rotated') \
           && rows.includes('auth.signed_in')",
        "the audit log to show the session's changes",
    )
    .await;
    assert_eq!(
        text_of(&c, Locator::Css("#audit-body tr:first-child .audit-action")).await,
        "Policy reset to default"
    );

    // A session that ends mid-edit sends the person to sign-in and keeps what they typed.
    click(&c, Locator::Id("open-create")).await;
    wait_visible(&c, "#key-name").await;
    c.find(Locator::Id("key-name"))
        .await
        .expect("name")
        .send_keys("draft key")
        .await
        .expect("type");
    let session = c
        .get_named_cookie("billstack_session")
        .await
        .expect("session cookie");
    let res = agent()
        .post(&server.url("/api/auth/logout"))
        .header("Cookie", &format!("billstack_session={}", session.value()))
        .header("Origin", &server.base)
        .send_empty()
        .expect("logout behind the page's back");
    assert_eq!(res.status(), 204);
    click(&c, Locator::Id("create-submit")).await;
    wait_visible(&c, "#sign-in-form").await;
    sign_in(&c).await;
    wait_visible(&c, "#key-name").await;
    assert_eq!(
        c.find(Locator::Id("key-name"))
            .await
            .expect("name")
            .prop("value")
            .await
            .expect("value")
            .as_deref(),
        Some("draft key")
    );

    // Keyboard alone: Escape closes the dialog; Tab reaches "Create API Key"; Enter opens it,
    // typing fills the focused name field, Enter submits, and the one-time key dialog's Done
    // button is reachable and closes it.
    press(&c, Key::Escape).await;
    wait_until(
        &c,
        "return !document.getElementById('create-dialog').open",
        "Escape to close the dialog",
    )
    .await;
    c.execute("document.activeElement.blur()", vec![])
        .await
        .expect("blur");
    let mut reached = false;
    for _ in 0..12 {
        press(&c, Key::Tab).await;
        let id = c
            .execute("return document.activeElement.id", vec![])
            .await
            .expect("id");
        if id == json!("open-create") {
            reached = true;
            break;
        }
    }
    assert!(reached, "Tab never reached Create API Key");
    press(&c, Key::Enter).await;
    wait_until(
        &c,
        "return document.activeElement.id === 'key-name'",
        "focus in the name field",
    )
    .await;
    c.execute("document.getElementById('key-name').value = ''", vec![])
        .await
        .expect("clear draft");
    let focused = c.active_element().await.expect("focus");
    focused.send_keys("keyboard key").await.expect("type");
    focused
        .send_keys(&char::from(Key::Enter).to_string())
        .await
        .expect("submit");
    wait_until(
        &c,
        "return document.getElementById('secret-dialog').open",
        "the one-time key",
    )
    .await;
    let mut done = false;
    for _ in 0..6 {
        let id = c
            .execute("return document.activeElement.id", vec![])
            .await
            .expect("id");
        if id == json!("secret-done") {
            press(&c, Key::Enter).await;
            done = true;
            break;
        }
        press(&c, Key::Tab).await;
    }
    assert!(done, "Tab never reached Done");
    wait_until(
        &c,
        "return !document.getElementById('secret-dialog').open",
        "Done to close",
    )
    .await;
    wait_until(&c, "return [...document.querySelectorAll('#keys-body .key-name')].some(td => td.textContent === 'keyboard key')", "the new row").await;
    c.close().await.expect("close the browser");

    // Readable on a phone.
    let phone = browser(&webdriver, &dir.path().join("profile-phone"), 375, 812).await;
    phone.goto(&server.url("/")).await.expect("open");
    sign_in(&phone).await;
    let overflow: bool = phone
        .execute(
            "return document.documentElement.scrollWidth > window.innerWidth + 1",
            vec![],
        )
        .await
        .expect("measure")
        .as_bool()
        .expect("bool");
    assert!(!overflow, "the page scrolls sideways at 375 px");
    std::fs::write(
        shots.join("phone-375px.png"),
        phone.screenshot().await.expect("screenshot"),
    )
    .expect("save");
    phone.close().await.expect("close");
}
