//! The dashboard in a real browser: Debian's Chromium, headless, driven through chromedriver
//! (WebDriver) by fantoccini. `.ci/run` installs both. Screenshots land in
//! `target/dashboard-screenshots/` for a person to look at. One browser at a time: the tests
//! take turns (`BROWSER`), so two Chromiums never share the two cores.
//!
//! `every_page_passes_axe_core` needs axe-core from npm (`npm ci` in `tests/axe`, which
//! `.ci/run` does), so plain `cargo test` skips it (`--ignored` runs it).

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::api::{forward_auth, login};
use common::{Server, agent, create_user, json};
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const EMAIL: &str = "owner@acme.test";
const PASSWORD: &str = "dashboard-pass-1";

/// Held by each test for as long as its browser runs.
static BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A chromedriver on a free port; `time_zone` (an IANA name) is the browser's zone.
fn start_chromedriver_in(time_zone: Option<&str>) -> (Driver, String) {
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let mut command = Command::new("chromedriver");
    command
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(zone) = time_zone {
        command.env("TZ", zone);
    }
    let child = command
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

fn start_chromedriver() -> (Driver, String) {
    start_chromedriver_in(None)
}

async fn browser(webdriver: &str, profile: &Path, width: u32, height: u32) -> Client {
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

async fn shot(c: &Client, name: &str) {
    std::fs::write(
        screenshots().join(format!("{name}.png")),
        c.screenshot().await.expect("screenshot"),
    )
    .expect("save");
}

/// A browser of `width`×`height` on the dashboard, signed in as the owner.
async fn signed_in(
    webdriver: &str,
    profile: &Path,
    width: u32,
    height: u32,
    server: &Server,
) -> Client {
    let c = browser(webdriver, profile, width, height).await;
    c.goto(&server.url("/")).await.expect("open the dashboard");
    sign_in(&c).await;
    c
}

async fn sign_in(c: &Client) {
    sign_in_as(c, EMAIL, PASSWORD).await;
}

async fn sign_in_as(c: &Client, email: &str, password: &str) {
    c.wait()
        .for_element(Locator::Id("email"))
        .await
        .expect("sign-in form");
    wait_visible(c, "#email").await;
    let field = c.find(Locator::Id("email")).await.expect("email");
    field.clear().await.expect("clear");
    field.send_keys(email).await.expect("type email");
    c.find(Locator::Id("password"))
        .await
        .expect("password")
        .send_keys(password)
        .await
        .expect("type password");
    click(c, Locator::Id("sign-in-submit")).await;
    wait_visible(c, "#app-view").await;
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

/// Runs `script` (a function body) in the page and returns its value.
async fn eval(c: &Client, script: &str) -> Value {
    c.execute(script, vec![])
        .await
        .unwrap_or_else(|e| panic!("{script}: {e}"))
}

/// Sets a form control's value as typing or choosing would (with its input and change events).
async fn set_value(c: &Client, id: &str, value: &str) {
    c.execute(
        "const el = document.getElementById(arguments[0]); el.value = arguments[1]; \
         el.dispatchEvent(new Event('input', {bubbles: true})); \
         el.dispatchEvent(new Event('change', {bubbles: true}));",
        vec![json!(id), json!(value)],
    )
    .await
    .unwrap_or_else(|e| panic!("set {id}: {e}"));
}

/// The focused element's id, or its aria-label when it has no id.
async fn focused(c: &Client) -> String {
    eval(
        c,
        "const a = document.activeElement; return a.id || a.getAttribute('aria-label') || a.tagName;",
    )
    .await
    .as_str()
    .unwrap_or_default()
    .to_string()
}

/// Presses Tab until the element with `id` has the focus (at most `limit` times).
async fn tab_to(c: &Client, id: &str, limit: usize) {
    for _ in 0..limit {
        if focused(c).await == id {
            return;
        }
        press(c, Key::Tab).await;
    }
    assert_eq!(focused(c).await, id, "Tab never reached #{id}");
}

/// Opens a Team Settings page by its tab, as a person would.
async fn open_page(c: &Client, page: &str) {
    click(c, Locator::Css(&format!(".tabs a[data-page='{page}']"))).await;
    wait_visible(c, &format!("#page-{page}")).await;
}

/// Whether the page scrolls sideways.
async fn scrolls_sideways(c: &Client) -> bool {
    eval(
        c,
        "return document.documentElement.scrollWidth > window.innerWidth + 1",
    )
    .await
    .as_bool()
    .expect("bool")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_use_and_revoke_a_key_in_the_browser() {
    let _turn = BROWSER.lock().await;
    let (dir, server) = acme();
    let (_driver, webdriver) = start_chromedriver();

    let c = signed_in(&webdriver, &dir.path().join("profile"), 1440, 1000, &server).await;
    wait_visible(&c, "#keys-empty").await;
    // After signing in, the focus is on the page's heading, not lost on <body>.
    wait_until(
        &c,
        "return document.activeElement.id === 'keys-title'",
        "focus on the heading",
    )
    .await;
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
    set_value(&c, "key-expiry", "custom").await;
    set_value(&c, "key-expires", "2001-01-01").await;
    click(&c, Locator::Id("create-submit")).await;
    wait_visible(&c, "#key-expires-error").await;
    let why = text_of(&c, Locator::Id("key-expires-error")).await;
    assert!(why.contains("past"), "{why}");
    set_value(&c, "key-project", "proj_web").await;
    for scope in ["customers:read", "products:read"] {
        click(
            &c,
            Locator::Css(&format!("#key-scopes input[value='{scope}']")),
        )
        .await;
    }
    set_value(&c, "key-expires", "2099-12-31").await;
    // A rate limit: a bad number is caught next to the field, a good one is kept.
    let rate = c.find(Locator::Id("key-rate-limit")).await.expect("rate");
    rate.send_keys("0").await.expect("type");
    click(&c, Locator::Id("create-submit")).await;
    wait_visible(&c, "#key-rate-error").await;
    rate.clear().await.expect("clear");
    rate.send_keys("5000").await.expect("type");
    set_value(&c, "key-rate-window", "86400").await;
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
    shot(&c, "one-time-key-dialog").await;

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

    // Closing the dialog without copying asks first; then the key leaves the page.
    click(&c, Locator::Id("secret-done")).await;
    wait_visible(&c, "#secret-confirm").await;
    assert!(
        text_of(&c, Locator::Id("secret-confirm"))
            .await
            .contains("Have you copied the key?")
    );
    click(&c, Locator::Id("secret-discard")).await;
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
    shot(&c, "key-list").await;

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
    // Copied: Done closes at once.
    click(&c, Locator::Id("secret-copy")).await;
    wait_until(
        &c,
        "return document.getElementById('secret-copied').textContent.includes('Copied')",
        "the copy",
    )
    .await;
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

    // The owner uploads a policy on the Policy page: a refused one shows why, an accepted one
    // replaces the scope list, and reset brings the default back.
    open_page(&c, "policy").await;
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
    shot(&c, "policy-panel").await;
    click(&c, Locator::Id("policy-reset")).await;
    wait_until(
        &c,
        "return document.getElementById('policy-name').textContent === 'billstack-default-scopes'",
        "the default policy",
    )
    .await;

    // The owner's audit log lists what was just done, newest first.
    open_page(&c, "audit").await;
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
    open_page(&c, "keys").await;
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
    // typing fills the focused name field, Enter submits; in the one-time key dialog, Done
    // asks "Have you copied the key?", Tab reaches "Close without copying", and the focus
    // goes back to the Create button.
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
    tab_to(&c, "open-create", 25).await;
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
    let focus = c.active_element().await.expect("focus");
    focus.send_keys("keyboard key").await.expect("type");
    focus
        .send_keys(&char::from(Key::Enter).to_string())
        .await
        .expect("submit");
    wait_until(
        &c,
        "return document.getElementById('secret-dialog').open",
        "the one-time key",
    )
    .await;
    tab_to(&c, "secret-done", 6).await;
    press(&c, Key::Enter).await;
    wait_until(
        &c,
        "return document.activeElement.id === 'secret-back'",
        "the question",
    )
    .await;
    press(&c, Key::Tab).await;
    assert_eq!(focused(&c).await, "secret-discard");
    press(&c, Key::Enter).await;
    wait_until(
        &c,
        "return !document.getElementById('secret-dialog').open \
           && document.activeElement.id === 'open-create'",
        "the dialog to close and the focus to return",
    )
    .await;
    wait_until(&c, "return [...document.querySelectorAll('#keys-body .key-name .name-text')].some(td => td.textContent === 'keyboard key')", "the new row").await;
    c.close().await.expect("close the browser");

    // Readable on a phone.
    let phone = signed_in(
        &webdriver,
        &dir.path().join("profile-phone"),
        375,
        812,
        &server,
    )
    .await;
    assert!(
        !scrolls_sideways(&phone).await,
        "the page scrolls sideways at 375 px"
    );
    shot(&phone, "phone-375px").await;
    phone.close().await.expect("close");
}

/// A server with team `team_a` (projects Web shop and Mobile) and its owner.
fn acme() -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("mkdir data");
    json(
        &data,
        &["team", "create", "--name", "Acme", "--id", "team_a"],
    );
    for (name, id) in [("Web shop", "proj_web"), ("Mobile", "proj_mobile")] {
        json(
            &data,
            &[
                "project", "create", "--team", "team_a", "--name", name, "--id", id,
            ],
        );
    }
    create_user(&data, EMAIL, PASSWORD, "team_a", "owner");
    let server = Server::start(&data, &[]);
    (dir, server)
}

const COLLEAGUE: &str = "colleague@acme.test";
const COLLEAGUE_PASSWORD: &str = "colleague-pass-1";

/// The "done when", in the browser: an owner invites a colleague, who accepts and
/// creates a key; the owner demotes, then removes them. Also: the role badge, the last owner,
/// and the password form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_invites_a_colleague_who_creates_a_key_then_is_demoted_and_removed() {
    let _turn = BROWSER.lock().await;
    let (dir, server) = acme();
    let (_driver, webdriver) = start_chromedriver();
    let owner = signed_in(&webdriver, &dir.path().join("owner"), 1440, 1000, &server).await;
    assert_eq!(text_of(&owner, Locator::Id("role-badge")).await, "Owner");

    // Invite: a new email gets a link, shown once like a raw key.
    open_page(&owner, "members").await;
    wait_until(
        &owner,
        "return document.querySelectorAll('#members-body tr').length === 1",
        "the owner's row",
    )
    .await;
    set_value(&owner, "member-email", "not an email").await;
    click(&owner, Locator::Id("member-add")).await;
    wait_visible(&owner, "#member-email-error").await;
    assert_eq!(
        eval(
            &owner,
            "return document.getElementById('member-email').getAttribute('aria-invalid')"
        )
        .await,
        "true"
    );
    set_value(&owner, "member-email", COLLEAGUE).await;
    set_value(&owner, "member-role", "owner").await;
    click(&owner, Locator::Id("member-add")).await;
    wait_until(
        &owner,
        "return document.getElementById('secret-dialog').open",
        "the invitation link",
    )
    .await;
    assert_eq!(
        text_of(&owner, Locator::Id("secret-title")).await,
        "Invitation link"
    );
    let link = owner
        .find(Locator::Id("secret-value"))
        .await
        .expect("link")
        .prop("value")
        .await
        .expect("value")
        .expect("a link");
    assert!(
        link.starts_with(&format!("{}/#invite=", server.base)),
        "{link}"
    );
    shot(&owner, "invitation-link-1440").await;
    click(&owner, Locator::Id("secret-done")).await;
    wait_visible(&owner, "#secret-confirm").await;
    assert!(
        text_of(&owner, Locator::Id("secret-confirm"))
            .await
            .contains("Have you copied the link?")
    );
    click(&owner, Locator::Id("secret-discard")).await;
    wait_until(
        &owner,
        "return !document.getElementById('secret-dialog').open",
        "the dialog to close",
    )
    .await;
    let token = link.split("#invite=").nth(1).expect("token").to_string();
    assert!(
        !owner.source().await.expect("source").contains(&token),
        "the link is gone from the page"
    );
    wait_until(
        &owner,
        &format!(
            "return document.getElementById('members-body').textContent.includes('{COLLEAGUE}')"
        ),
        "the colleague's row",
    )
    .await;

    // The colleague opens the link in their own browser and chooses a password.
    let colleague = browser(&webdriver, &dir.path().join("colleague"), 1440, 1000).await;
    colleague.goto(&link).await.expect("open the invitation");
    wait_visible(&colleague, "#invite-form").await;
    set_value(&colleague, "invite-password", "short").await;
    click(&colleague, Locator::Id("invite-submit")).await;
    wait_visible(&colleague, "#invite-error").await;
    set_value(&colleague, "invite-password", COLLEAGUE_PASSWORD).await;
    set_value(&colleague, "invite-password-again", "something-else-1").await;
    click(&colleague, Locator::Id("invite-submit")).await;
    wait_until(
        &colleague,
        "return document.getElementById('invite-error').textContent.includes('differ')",
        "the mismatch",
    )
    .await;
    set_value(&colleague, "invite-password-again", COLLEAGUE_PASSWORD).await;
    click(&colleague, Locator::Id("invite-submit")).await;
    wait_visible(&colleague, "#open-create").await;
    assert_eq!(
        eval(&colleague, "return location.hash").await,
        "#keys",
        "the spent token left the address bar"
    );
    assert_eq!(
        text_of(&colleague, Locator::Id("role-badge")).await,
        "Owner"
    );
    // The link works once.
    let again = agent()
        .post(&server.url("/api/auth/invitations/accept"))
        .send_json(json!({"token": token, "password": "another-pass-12"}));
    assert_eq!(again.map(|r| r.status().as_u16()).unwrap_or(0), 400);

    // They create a key with a 7-day preset: it works, and shows as expiring.
    click(&colleague, Locator::Id("open-create")).await;
    wait_visible(&colleague, "#key-name").await;
    set_value(&colleague, "key-name", "colleague key").await;
    set_value(&colleague, "key-expiry", "7").await;
    click(&colleague, Locator::Id("create-submit")).await;
    wait_until(
        &colleague,
        "return document.getElementById('secret-value').value.startsWith('bs_')",
        "the new key",
    )
    .await;
    let raw = colleague
        .find(Locator::Id("secret-value"))
        .await
        .expect("secret")
        .prop("value")
        .await
        .expect("value")
        .expect("key");
    click(&colleague, Locator::Id("secret-copy")).await;
    click(&colleague, Locator::Id("secret-done")).await;
    wait_until(
        &colleague,
        "const b = document.querySelector('#keys-body .badge'); return b !== null && b.textContent === 'Expiring'",
        "the key's row, expiring within 7 days",
    )
    .await;
    let customers = "/api/billstack/teams/team_a/projects/proj_web/customers";
    assert_eq!(forward_auth(&server, &raw, "GET", customers).0, 200);

    // The owner demotes them: the colleague's badge says Member, and the owner pages go.
    owner.refresh().await.expect("reload");
    wait_visible(&owner, "#page-members").await;
    wait_until(
        &owner,
        "return document.querySelectorAll('#members-body tr select').length === 2",
        "both members",
    )
    .await;
    let colleague_row = eval(
        &owner,
        &format!(
            "return [...document.querySelectorAll('#members-body tr')].find(r => r.textContent.includes('{COLLEAGUE}')).dataset.userId"
        ),
    )
    .await;
    let colleague_id = colleague_row.as_str().expect("user id").to_string();
    let role_select = format!("#members-body tr[data-user-id='{colleague_id}'] select");
    owner
        .execute(
            "const s = document.querySelector(arguments[0]); s.value = 'member'; \
             s.dispatchEvent(new Event('change', {bubbles: true}));",
            vec![json!(role_select)],
        )
        .await
        .expect("demote");
    let api = login(&server, (EMAIL, PASSWORD));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, members) = api.send("GET", "/api/billstack/teams/team_a/members", None);
        let role = members["members"]
            .as_array()
            .expect("members")
            .iter()
            .find(|m| m["email"] == COLLEAGUE)
            .map(|m| m["role"].clone());
        if role == Some(json!("member")) {
            break;
        }
        assert!(Instant::now() < deadline, "the demotion never landed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    colleague.refresh().await.expect("reload");
    wait_visible(&colleague, "#open-create").await;
    assert_eq!(
        text_of(&colleague, Locator::Id("role-badge")).await,
        "Member"
    );
    assert!(
        !colleague
            .find(Locator::Css(".tabs a[data-page='members']"))
            .await
            .expect("tab")
            .is_displayed()
            .await
            .expect("displayed"),
        "members see no Members page"
    );

    // The owner removes them, with the keyboard alone: Enter on Remove, the question opens on
    // Cancel, Tab reaches the confirmation, Enter confirms. The colleague's next request finds
    // no team.
    owner
        .execute(
            "document.querySelector(`#members-body tr[data-user-id='${arguments[0]}'] button.remove-member`).focus()",
            vec![json!(colleague_id)],
        )
        .await
        .expect("focus Remove");
    press(&owner, Key::Enter).await;
    wait_until(
        &owner,
        "return document.getElementById('confirm-dialog').open && document.activeElement.id === 'confirm-cancel'",
        "the question, on Cancel",
    )
    .await;
    assert!(
        text_of(&owner, Locator::Id("confirm-text"))
            .await
            .contains(COLLEAGUE)
    );
    press(&owner, Key::Tab).await;
    assert_eq!(focused(&owner).await, "confirm-ok");
    press(&owner, Key::Enter).await;
    wait_until(
        &owner,
        &format!(
            "return !document.getElementById('members-body').textContent.includes('{COLLEAGUE}')"
        ),
        "the row to go",
    )
    .await;
    colleague.refresh().await.expect("reload");
    wait_visible(&colleague, "#team-error").await;
    assert!(
        text_of(&colleague, Locator::Id("team-error"))
            .await
            .contains("not a member of any team")
    );
    // Their key is the team's, and keeps working.
    assert_eq!(forward_auth(&server, &raw, "GET", customers).0, 200);
    colleague.close().await.expect("close");

    // The last owner cannot demote themselves; the page says why and keeps the role.
    let me = eval(
        &owner,
        "return [...document.querySelectorAll('#members-body tr')][0].dataset.userId",
    )
    .await;
    owner
        .execute(
            "const s = document.querySelector(`#members-body tr[data-user-id='${arguments[0]}'] select`); \
             s.value = 'member'; s.dispatchEvent(new Event('change', {bubbles: true}));",
            vec![me],
        )
        .await
        .expect("demote self");
    wait_visible(&owner, "#members-error").await;
    assert!(
        text_of(&owner, Locator::Id("members-error"))
            .await
            .contains("at least one owner")
    );
    assert_eq!(text_of(&owner, Locator::Id("role-badge")).await, "Owner");

    // The password form: a wrong current password and a short new one are refused next to
    // their fields; a good change keeps this session and works at the next sign-in.
    click(&owner, Locator::Id("account-link")).await;
    wait_visible(&owner, "#password-form").await;
    set_value(&owner, "current-password", "not-my-password").await;
    set_value(&owner, "new-password", "a-new-password-1").await;
    click(&owner, Locator::Id("password-save")).await;
    wait_visible(&owner, "#current-password-error").await;
    set_value(&owner, "current-password", PASSWORD).await;
    set_value(&owner, "new-password", "short").await;
    click(&owner, Locator::Id("password-save")).await;
    wait_visible(&owner, "#new-password-error").await;
    set_value(&owner, "new-password", "a-new-password-1").await;
    click(&owner, Locator::Id("password-save")).await;
    wait_visible(&owner, "#password-result").await;
    assert!(
        text_of(&owner, Locator::Id("password-result"))
            .await
            .contains("Password changed")
    );
    let (status, _) = api.send("GET", "/api/auth/me", None);
    assert_eq!(status, 401, "the owner's other session ended");
    let api = login(&server, (EMAIL, "a-new-password-1"));

    // Projects, with the keyboard alone: rename one (Enter on Rename, type, Enter), create one,
    // and a delete refused while a key is limited to the project says what to do.
    open_page(&owner, "projects").await;
    wait_visible(&owner, "#projects-body tr").await;
    owner
        .execute(
            "document.querySelector(\"#projects-body tr[data-project-id='proj_mobile'] .rename-project\").focus()",
            vec![],
        )
        .await
        .expect("focus Rename");
    press(&owner, Key::Enter).await;
    wait_until(
        &owner,
        "return document.activeElement.id === 'rename-name'",
        "the name field",
    )
    .await;
    owner
        .execute("document.getElementById('rename-name').select()", vec![])
        .await
        .expect("select");
    let field = owner.active_element().await.expect("focus");
    field.send_keys("Mobile apps").await.expect("type");
    field
        .send_keys(&char::from(Key::Enter).to_string())
        .await
        .expect("submit");
    wait_until(
        &owner,
        "return !document.getElementById('rename-dialog').open \
           && document.getElementById('projects-body').textContent.includes('Mobile apps')",
        "the renamed project",
    )
    .await;
    let (_, projects) = api.send("GET", "/api/billstack/teams/team_a/projects", None);
    assert!(projects.to_string().contains("Mobile apps"));
    api.create_key(
        "team_a",
        json!({"name": "web only", "projectId": "proj_web"}),
    );
    owner
        .execute(
            "document.querySelector(\"#projects-body tr[data-project-id='proj_web'] .delete-project\").click()",
            vec![],
        )
        .await
        .expect("Delete");
    wait_visible(&owner, "#confirm-ok").await;
    click(&owner, Locator::Id("confirm-ok")).await;
    wait_visible(&owner, "#confirm-error").await;
    assert!(
        text_of(&owner, Locator::Id("confirm-error"))
            .await
            .contains("Revoke them first")
    );
    click(&owner, Locator::Id("confirm-cancel")).await;
    set_value(&owner, "project-name", "Partner portal").await;
    click(&owner, Locator::Id("project-create")).await;
    wait_until(
        &owner,
        "return document.getElementById('projects-body').textContent.includes('Partner portal')",
        "the new project",
    )
    .await;
    // Messages from the API are in people's words, never its field names.
    assert_eq!(
        eval(&owner, "return humanize('expiresAt must be in the future')").await,
        "The expiration date must be in the future."
    );
    owner.close().await.expect("close");
}

/// The id of the key named `name` in a page of `GET …/api-keys`.
fn key_id_named(page: &Value, name: &str) -> String {
    page["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["name"] == name)
        .unwrap_or_else(|| panic!("no key named {name}"))["id"]
        .as_str()
        .expect("id")
        .to_string()
}

/// Whether the element's whole box is inside the viewport (no scrolling needed to see it).
async fn in_viewport(c: &Client, id: &str) -> bool {
    c.execute(
        "const r = document.getElementById(arguments[0]).getBoundingClientRect(); \
         return r.width > 0 && r.top >= 0 && r.left >= 0 && r.bottom <= window.innerHeight \
           && r.right <= window.innerWidth;",
        vec![json!(id)],
    )
    .await
    .expect("measure")
    .as_bool()
    .expect("bool")
}

/// The key list, the key page and the create dialog: paging past 100 keys, search and
/// filters, status badges and only the actions that can succeed, editing and switching a key,
/// its usage by refusal reason, expiry presets, long names, focus, and the time zone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_list_key_page_and_create_dialog_work_for_many_keys() {
    let _turn = BROWSER.lock().await;
    let (dir, server) = acme();
    let api = login(&server, (EMAIL, PASSWORD));
    for i in 0..120 {
        let (status, body) = api.create_key("team_a", json!({"name": format!("bulk key {i}")}));
        assert_eq!(status, 201, "{body}");
    }
    let long_name = "x".repeat(100);
    for (name, scopes) in [
        ("to rotate", json!([])),
        ("Production", json!([])),
        ("Production", json!([])),
        (long_name.as_str(), json!([])),
        ("reader", json!(["products:read"])),
    ] {
        let (status, body) = api.create_key("team_a", json!({"name": name, "scopes": scopes}));
        assert_eq!(status, 201, "{body}");
    }
    let (_, page) = api.send("GET", "/api/billstack/teams/team_a/api-keys?limit=10", None);
    let reader_id = key_id_named(&page, "reader");
    let rotate_id = key_id_named(&page, "to rotate");
    // A key rotated with a one-second grace period: expired soon after, and listed as such.
    let (status, rotated) = api.send(
        "POST",
        &format!("/api/billstack/teams/team_a/api-keys/{rotate_id}/rotate"),
        Some(json!({"gracePeriodSeconds": 1})),
    );
    assert_eq!(status, 201, "{rotated}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while api
        .send(
            "GET",
            "/api/billstack/teams/team_a/api-keys?status=expired",
            None,
        )
        .1["keys"]
        .as_array()
        .is_none_or(Vec::is_empty)
    {
        assert!(Instant::now() < deadline, "the rotated key never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The reader is refused once for scope: one request, refused.
    let raw_reader = {
        let (_, body) = api.create_key("team_a", json!({"name": "scratch"}));
        body["rawKey"].as_str().expect("raw").to_string()
    };
    let _ = raw_reader;
    let total = 120 + 6 + 1;

    let (_driver, webdriver) = start_chromedriver();
    let c = signed_in(&webdriver, &dir.path().join("wide"), 1440, 900, &server).await;
    wait_until(
        &c,
        "return document.querySelectorAll('#keys-body tr').length === 100",
        "a first page of 100",
    )
    .await;
    assert!(
        !scrolls_sideways(&c).await,
        "a 100-character name fits at 1440 px"
    );
    shot(&c, "keys-1440").await;

    // Paging: the rest on page 2, and back.
    click(&c, Locator::Id("keys-next")).await;
    wait_until(
        &c,
        &format!(
            "return document.querySelectorAll('#keys-body tr').length === {}",
            total - 100
        ),
        "the second page",
    )
    .await;
    assert_eq!(text_of(&c, Locator::Id("keys-page-info")).await, "Page 2");
    click(&c, Locator::Id("keys-prev")).await;
    wait_until(
        &c,
        "return document.querySelectorAll('#keys-body tr').length === 100 \
           && document.getElementById('keys-next').hidden === false",
        "the first page again",
    )
    .await;

    // The rotated-out key: Expired, links to its successor, and offers no Rotate.
    let old_row = format!("#keys-body tr[data-key-id='{rotate_id}']");
    let old_text = text_of(&c, Locator::Css(&old_row)).await;
    assert!(
        old_text.contains("Expired") && old_text.contains("Rotated → new key"),
        "{old_text}"
    );
    assert!(
        c.find(Locator::Css(&format!("{old_row} button.rotate")))
            .await
            .is_err(),
        "no Rotate on an expired key"
    );
    c.find(Locator::Css(&format!("{old_row} button.revoke")))
        .await
        .expect("Revoke is still offered");

    // Two keys named alike have buttons that say which is which.
    let labels = eval(
        &c,
        "return [...document.querySelectorAll('#keys-body button.revoke')] \
           .map(b => b.getAttribute('aria-label')).filter(l => l.startsWith('Revoke Production ('))",
    )
    .await;
    let labels = labels.as_array().expect("labels");
    assert_eq!(labels.len(), 2);
    assert_ne!(labels[0], labels[1]);

    // Search and filters ask the server, and say when nothing matches.
    set_value(&c, "keys-search", "production").await;
    wait_until(
        &c,
        "return document.querySelectorAll('#keys-body tr').length === 2",
        "the search",
    )
    .await;
    assert!(
        !c.find(Locator::Id("keys-next"))
            .await
            .expect("next")
            .is_displayed()
            .await
            .expect("shown"),
        "two matches fit on one page"
    );
    set_value(&c, "keys-search", "").await;
    set_value(&c, "keys-status", "expired").await;
    wait_until(
        &c,
        "return document.querySelectorAll('#keys-body tr').length === 1",
        "the status filter",
    )
    .await;
    set_value(&c, "keys-status", "disabled").await;
    wait_visible(&c, "#keys-none-match").await;
    set_value(&c, "keys-status", "").await;
    wait_until(
        &c,
        "return document.querySelectorAll('#keys-body tr').length === 100",
        "no filter",
    )
    .await;

    // Closing a row's dialog gives the focus back to the button that opened it.
    let production_rotate = eval(
        &c,
        "const b = [...document.querySelectorAll('#keys-body button.rotate')] \
           .find(b => b.getAttribute('aria-label').startsWith('Rotate Production (')); \
         b.scrollIntoView({block: 'center'}); b.focus(); return b.getAttribute('aria-label');",
    )
    .await;
    press(&c, Key::Enter).await;
    wait_visible(&c, "#rotate-cancel").await;
    press(&c, Key::Escape).await;
    wait_until(
        &c,
        "return !document.getElementById('rotate-dialog').open",
        "the dialog to close",
    )
    .await;
    assert_eq!(json!(focused(&c).await), production_rotate);

    // A revocation that fails can be retried from the same dialog.
    c.execute(
        "const real = window.fetch; let failed = false; \
         window.fetch = (path, options) => { \
           if (!failed && options && options.method === 'DELETE') { failed = true; \
             return Promise.resolve(new Response(JSON.stringify({error: {code: 'store_unavailable', message: 'the store is not answering; retry'}}), {status: 503})); } \
           return real(path, options); };",
        vec![],
    )
    .await
    .expect("a failing network");
    let victim = eval(
        &c,
        "const b = [...document.querySelectorAll('#keys-body button.revoke')] \
           .find(b => b.getAttribute('aria-label').startsWith('Revoke Production (')); \
         b.click(); return b.closest('tr').dataset.keyId;",
    )
    .await;
    let victim = victim.as_str().expect("id").to_string();
    wait_visible(&c, "#revoke-confirm").await;
    click(&c, Locator::Id("revoke-confirm")).await;
    wait_visible(&c, "#revoke-error").await;
    assert!(
        text_of(&c, Locator::Id("revoke-error"))
            .await
            .contains("not answering")
    );
    click(&c, Locator::Id("revoke-confirm")).await;
    wait_until(
        &c,
        "return !document.getElementById('revoke-dialog').open",
        "the retried revocation",
    )
    .await;
    let (status, _) = api.send(
        "GET",
        &format!("/api/billstack/teams/team_a/api-keys/{victim}"),
        None,
    );
    assert_eq!(status, 404, "revoked");

    // One request: "1 request", not "1 requests".
    let reader_raw = {
        let (status, body) = api.send(
            "POST",
            &format!("/api/billstack/teams/team_a/api-keys/{reader_id}/rotate"),
            Some(json!({"gracePeriodSeconds": 0})),
        );
        assert_eq!(status, 201, "{body}");
        body
    };
    let reader_id = reader_raw["key"]["id"].as_str().expect("id").to_string();
    let reader_raw = reader_raw["rawKey"].as_str().expect("raw").to_string();
    let customers = "/api/billstack/teams/team_a/projects/proj_web/customers";
    assert_eq!(forward_auth(&server, &reader_raw, "GET", customers).0, 403);
    c.refresh().await.expect("reload");
    wait_until(
        &c,
        &format!(
            "const f = document.querySelector(`[data-usage-for='{reader_id}']`); \
             return f !== null && f.getAttribute('aria-label') === '1 request in the last 14 days'"
        ),
        "one request, said once",
    )
    .await;

    // The key page: facts, usage by refusal reason, edit, disable and enable.
    click(
        &c,
        Locator::Css(&format!(
            "#keys-body tr[data-key-id='{reader_id}'] button.open-key"
        )),
    )
    .await;
    wait_visible(&c, "#page-key").await;
    wait_until(
        &c,
        "return document.getElementById('key-title').textContent === 'reader'",
        "the key page",
    )
    .await;
    assert_eq!(text_of(&c, Locator::Id("key-created-by")).await, EMAIL);
    wait_until(
        &c,
        "return document.getElementById('key-usage-body').textContent.includes('missing scope: 1')",
        "the refusal, by reason",
    )
    .await;
    shot(&c, "key-page-1440").await;
    set_value(&c, "edit-name", &"y".repeat(300)).await;
    assert!(
        text_of(&c, Locator::Id("edit-name-count"))
            .await
            .contains("200 characters over")
    );
    click(&c, Locator::Id("edit-save")).await;
    wait_visible(&c, "#edit-name-error").await;
    assert_eq!(
        eval(
            &c,
            "return document.getElementById('edit-name').getAttribute('aria-invalid')"
        )
        .await,
        "true"
    );
    set_value(&c, "edit-name", "reader v2").await;
    set_value(&c, "edit-rate-limit", "10").await;
    set_value(&c, "edit-rate-window", "60").await;
    click(&c, Locator::Id("edit-save")).await;
    wait_until(
        &c,
        "return document.getElementById('key-title').textContent === 'reader v2'",
        "the saved name",
    )
    .await;
    assert_eq!(text_of(&c, Locator::Id("key-rate")).await, "10 / minute");
    let (_, one) = api.send(
        "GET",
        &format!("/api/billstack/teams/team_a/api-keys/{reader_id}"),
        None,
    );
    assert_eq!(
        one["key"]["rateLimit"],
        json!({"limit": 10, "windowSeconds": 60})
    );
    click(&c, Locator::Id("key-toggle")).await;
    wait_until(
        &c,
        "return document.getElementById('key-status').textContent === 'Disabled'",
        "disabled",
    )
    .await;
    let products = "/api/billstack/teams/team_a/projects/proj_web/products";
    assert_eq!(forward_auth(&server, &reader_raw, "GET", products).0, 401);
    click(&c, Locator::Id("key-toggle")).await;
    wait_until(
        &c,
        "return document.getElementById('key-status').textContent !== 'Disabled'",
        "enabled",
    )
    .await;
    assert_eq!(forward_auth(&server, &reader_raw, "GET", products).0, 200);
    click(&c, Locator::Id("key-back")).await;
    wait_visible(&c, "#page-keys").await;

    // The create dialog at 1280×800: its Create button in view, presets, a warning for no
    // expiry, no past dates, and a long pasted name counted, refused and announced.
    let c800 = signed_in(&webdriver, &dir.path().join("laptop"), 1280, 800, &server).await;
    click(&c800, Locator::Id("open-create")).await;
    wait_visible(&c800, "#key-name").await;
    assert!(
        in_viewport(&c800, "create-submit").await,
        "Create is visible at 1280×800"
    );
    set_value(&c800, "key-expiry", "none").await;
    wait_visible(&c800, "#key-expiry-warning").await;
    set_value(&c800, "key-expiry", "custom").await;
    wait_visible(&c800, "#key-expires").await;
    let today = eval(
        &c800,
        "const d = new Date(); return `${d.getFullYear()}-${String(d.getMonth()+1).padStart(2,'0')}-${String(d.getDate()).padStart(2,'0')}`",
    )
    .await;
    assert_eq!(
        eval(&c800, "return document.getElementById('key-expires').min").await,
        today,
        "the picker starts today"
    );
    assert!(
        in_viewport(&c800, "create-submit").await,
        "still visible with more fields"
    );
    set_value(&c800, "key-name", &"z".repeat(300)).await;
    assert!(
        text_of(&c800, Locator::Id("key-name-count"))
            .await
            .contains("200 characters over")
    );
    click(&c800, Locator::Id("create-submit")).await;
    wait_visible(&c800, "#key-name-error").await;
    assert_eq!(
        eval(
            &c800,
            "return document.getElementById('key-name').getAttribute('aria-invalid')"
        )
        .await,
        "true"
    );
    wait_until(
        &c800,
        "return document.getElementById('announcer').textContent.includes('shorten it to 100')",
        "the error, announced",
    )
    .await;
    assert_eq!(
        eval(
            &c800,
            "return document.getElementById('key-name').value.length"
        )
        .await,
        300,
        "nothing was cut silently"
    );
    shot(&c800, "create-dialog-1280x800").await;
    click(&c800, Locator::Id("create-cancel")).await;
    wait_until(
        &c800,
        "return document.activeElement.id === 'open-create'",
        "focus back on Create",
    )
    .await;
    c800.close().await.expect("close");
    c.close().await.expect("close");

    // A phone: the long name wraps, and Create is in view in the dialog.
    let phone = signed_in(&webdriver, &dir.path().join("phone"), 390, 844, &server).await;
    wait_until(
        &phone,
        "return document.querySelectorAll('#keys-body tr').length === 100",
        "the list",
    )
    .await;
    assert!(
        !scrolls_sideways(&phone).await,
        "no sideways scrolling at 390 px"
    );
    shot(&phone, "keys-390").await;
    click(&phone, Locator::Id("open-create")).await;
    wait_visible(&phone, "#key-name").await;
    assert!(
        in_viewport(&phone, "create-submit").await,
        "Create is visible at 390×844"
    );
    shot(&phone, "create-dialog-390x844").await;
    phone.close().await.expect("close");
    drop(_driver);

    // In Tokyo, the chosen day is the last day the key works there.
    let (_tokyo_driver, tokyo_webdriver) = start_chromedriver_in(Some("Asia/Tokyo"));
    let tokyo = signed_in(
        &tokyo_webdriver,
        &dir.path().join("tokyo"),
        1440,
        900,
        &server,
    )
    .await;
    click(&tokyo, Locator::Id("open-create")).await;
    wait_visible(&tokyo, "#key-name").await;
    set_value(&tokyo, "key-name", "tokyo key").await;
    set_value(&tokyo, "key-expiry", "custom").await;
    assert!(
        text_of(&tokyo, Locator::Id("key-expires-help"))
            .await
            .contains("Asia/Tokyo")
    );
    set_value(&tokyo, "key-expires", "2099-06-15").await;
    click(&tokyo, Locator::Id("create-submit")).await;
    wait_until(
        &tokyo,
        "return document.getElementById('secret-dialog').open",
        "the key",
    )
    .await;
    click(&tokyo, Locator::Id("secret-copy")).await;
    click(&tokyo, Locator::Id("secret-done")).await;
    let (_, found) = api.send("GET", "/api/billstack/teams/team_a/api-keys?q=tokyo", None);
    assert_eq!(found["keys"][0]["expiresAt"], "2099-06-15T14:59:59Z");
    wait_until(
        &tokyo,
        "return [...document.querySelectorAll('#keys-body tr')].some(r => r.textContent.includes('tokyo key') && r.textContent.includes('Jun 15, 2099'))",
        "the same day shown back",
    )
    .await;
    tokyo.close().await.expect("close");
}

/// axe-core's own script, from `tests/axe` (`npm ci` there; `.ci/run` does it).
fn axe_source() -> String {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/axe/node_modules/axe-core/axe.min.js");
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}. Install it with `npm ci` in tests/axe (.ci/run does this).",
            path.display()
        )
    })
}

/// Runs axe-core on the page as it is now and fails on any violation, naming each.
async fn assert_accessible(c: &Client, axe: &str, what: &str) {
    c.execute(&format!("{axe}\nreturn typeof window.axe;"), vec![])
        .await
        .expect("inject axe-core");
    let found = c
        .execute_async(
            "const done = arguments[arguments.length - 1]; \
             axe.run(document, {resultTypes: ['violations']}) \
               .then(r => done(r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help, \
                 nodes: v.nodes.slice(0, 5).map(n => n.target.join(' '))})))) \
               .catch(e => done([{id: 'axe-error', help: String(e), nodes: []}]));",
            vec![],
        )
        .await
        .expect("run axe-core");
    let violations = found.as_array().expect("violations");
    assert!(
        violations.is_empty(),
        "axe-core found {} violation(s) on {what}: {}",
        violations.len(),
        serde_json::to_string_pretty(&found).unwrap_or_default()
    );
}

/// Every page and dialog, at 1440 and 390 px wide: zero axe-core violations, and a screenshot
/// of each for a person to look at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs axe-core from npm (tests/axe); .ci/run installs it and runs this"]
async fn every_page_passes_axe_core() {
    let _turn = BROWSER.lock().await;
    let axe = axe_source();
    let (dir, server) = acme();
    let api = login(&server, (EMAIL, PASSWORD));
    let (_, created) = api.create_key(
        "team_a",
        json!({"name": "Production", "projectId": "proj_web", "scopes": ["customers:read"],
               "rateLimit": {"limit": 100, "windowSeconds": 60}}),
    );
    let raw = created["rawKey"].as_str().expect("raw").to_string();
    let key_id = created["key"]["id"].as_str().expect("id").to_string();
    forward_auth(
        &server,
        &raw,
        "GET",
        "/api/billstack/teams/team_a/projects/proj_web/customers",
    );
    forward_auth(
        &server,
        &raw,
        "GET",
        "/api/billstack/teams/team_a/projects/proj_web/products",
    );
    api.create_key(
        "team_a",
        json!({"name": "CI", "expiresAt": "2099-01-01T00:00:00Z"}),
    );
    let (_, invited) = api.send(
        "POST",
        "/api/billstack/teams/team_a/members",
        Some(json!({"email": "new@acme.test", "role": "member"})),
    );
    let invite = invited["inviteUrl"]
        .as_str()
        .expect("invite url")
        .to_string();

    let (_driver, webdriver) = start_chromedriver();
    for (width, height) in [(1440, 1000), (390, 844)] {
        let c = browser(
            &webdriver,
            &dir.path().join(format!("axe-{width}")),
            width,
            height,
        )
        .await;
        c.goto(&server.url("/")).await.expect("open");
        wait_visible(&c, "#sign-in-form").await;
        // The check can fail: an image without a text alternative is found.
        c.execute(
            "const i = document.createElement('img'); i.id = 'axe-probe'; i.src = '/favicon.svg'; document.body.append(i);",
            vec![],
        )
        .await
        .expect("probe");
        let probe = tokio::spawn({
            let (c, axe) = (c.clone(), axe.clone());
            async move { assert_accessible(&c, &axe, "the probe").await }
        })
        .await;
        let why = probe
            .expect_err("axe-core must find the probe")
            .into_panic();
        let why = why.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(why.contains("image-alt"), "{why}");
        c.execute("document.getElementById('axe-probe').remove()", vec![])
            .await
            .expect("remove the probe");
        assert_accessible(&c, &axe, "the sign-in page").await;
        shot(&c, &format!("sign-in-{width}")).await;
        c.goto(&invite).await.expect("open the invitation");
        wait_visible(&c, "#invite-form").await;
        assert_accessible(&c, &axe, "the invitation page").await;
        shot(&c, &format!("invitation-{width}")).await;
        c.goto(&server.url("/#keys")).await.expect("open");
        sign_in(&c).await;
        wait_until(
            &c,
            "const rows = document.querySelectorAll('#keys-body tr').length; \
             return rows > 1 && document.querySelectorAll('#keys-body [data-total]').length === rows",
            "the usage charts",
        )
        .await;
        assert_accessible(&c, &axe, "API Keys").await;
        shot(&c, &format!("keys-page-{width}")).await;
        click(&c, Locator::Id("open-create")).await;
        wait_visible(&c, "#key-name").await;
        set_value(&c, "key-expiry", "none").await;
        assert_accessible(&c, &axe, "the create dialog").await;
        set_value(&c, "key-name", "axe key").await;
        click(&c, Locator::Id("create-submit")).await;
        wait_until(
            &c,
            "return document.getElementById('secret-dialog').open",
            "the key",
        )
        .await;
        assert_accessible(&c, &axe, "the one-time key dialog").await;
        click(&c, Locator::Id("secret-done")).await;
        wait_visible(&c, "#secret-confirm").await;
        assert_accessible(&c, &axe, "the copied-key question").await;
        click(&c, Locator::Id("secret-discard")).await;
        c.execute(
            "location.hash = arguments[0]",
            vec![json!(format!("#key/{key_id}"))],
        )
        .await
        .expect("open the key");
        wait_until(
            &c,
            "return document.getElementById('key-title').textContent === 'Production'",
            "the key page",
        )
        .await;
        wait_until(
            &c,
            "return document.getElementById('key-usage-body').children.length === 1",
            "its usage",
        )
        .await;
        assert_accessible(&c, &axe, "a key's page").await;
        shot(&c, &format!("key-page-{width}")).await;
        click(&c, Locator::Id("key-rotate")).await;
        wait_visible(&c, "#rotate-confirm").await;
        assert_accessible(&c, &axe, "the rotate dialog").await;
        click(&c, Locator::Id("rotate-cancel")).await;
        click(&c, Locator::Id("key-revoke")).await;
        wait_visible(&c, "#revoke-confirm").await;
        assert_accessible(&c, &axe, "the revoke dialog").await;
        click(&c, Locator::Id("revoke-cancel")).await;
        for page in ["members", "projects", "policy", "audit"] {
            open_page(&c, page).await;
            if page == "members" {
                wait_until(
                    &c,
                    "return document.querySelectorAll('#members-body tr').length === 2",
                    "members",
                )
                .await;
            }
            if page == "audit" {
                wait_until(
                    &c,
                    "return document.querySelectorAll('#audit-body tr').length > 3",
                    "events",
                )
                .await;
            }
            assert_accessible(&c, &axe, page).await;
            shot(&c, &format!("{page}-{width}")).await;
        }
        open_page(&c, "projects").await;
        click(&c, Locator::Css(".rename-project")).await;
        wait_visible(&c, "#rename-name").await;
        assert_accessible(&c, &axe, "the rename dialog").await;
        click(&c, Locator::Id("rename-cancel")).await;
        click(&c, Locator::Id("account-link")).await;
        wait_visible(&c, "#password-form").await;
        assert_accessible(&c, &axe, "the password page").await;
        shot(&c, &format!("password-{width}")).await;
        assert!(
            !scrolls_sideways(&c).await,
            "no sideways scrolling at {width} px"
        );
        c.close().await.expect("close");
    }
}
