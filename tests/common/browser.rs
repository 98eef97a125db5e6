//! What the browser tests (`tests/browser.rs`, `tests/wasm.rs`) share: finding Chromium, a
//! small HTTP server for a page and its files, and loading a page in headless Chromium until it
//! POSTs its report to `/report`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The Chromium to run, or `None` with `WGATTN_SKIP_BROWSER=1` set; fails saying how to install
/// it otherwise. `WGATTN_CHROMIUM` names another Chromium-based browser.
pub fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("WGATTN_CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|p| p.is_file());
    if found.is_none() && std::env::var("WGATTN_SKIP_BROWSER").is_ok_and(|v| v == "1") {
        eprintln!("WGATTN_SKIP_BROWSER=1: the browser test did not run");
        return None;
    }
    Some(found.unwrap_or_else(|| {
        panic!(
            "the browser tests need Chromium and found none on PATH: install it \
             (apt-get install -y chromium), point WGATTN_CHROMIUM at a Chromium-based browser, \
             or set WGATTN_SKIP_BROWSER=1 to skip them explicitly"
        )
    }))
}

/// What a page's server serves: `index` at `/`, and under each URL prefix (`/plans/`, `/`, in
/// the order given, first match wins) the files of a directory.
#[derive(Clone)]
pub struct Site {
    pub index: PathBuf,
    pub mounts: Vec<(&'static str, PathBuf)>,
}

impl Site {
    /// `web/<page>` at `/`, then `mounts`, then the rest of `web/` at `/`.
    pub fn web(page: &str, mounts: &[(&'static str, &Path)]) -> Site {
        let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
        let mut all: Vec<(&'static str, PathBuf)> = mounts
            .iter()
            .map(|(prefix, dir)| (*prefix, dir.to_path_buf()))
            .collect();
        all.push(("/", web.clone()));
        Site {
            index: web.join(page),
            mounts: all,
        }
    }

    fn file(&self, path: &str) -> Option<PathBuf> {
        if path == "/" {
            return Some(self.index.clone());
        }
        if path.contains("..") {
            return None;
        }
        self.mounts
            .iter()
            .find_map(|(prefix, dir)| path.strip_prefix(prefix).map(|rest| dir.join(rest)))
    }
}

/// Serves `site`, and sends each body POSTed to `/report`.
fn serve(listener: TcpListener, site: Site, reports: mpsc::Sender<String>) {
    for stream in listener.incoming().flatten() {
        let (site, reports) = (site.clone(), reports.clone());
        std::thread::spawn(move || {
            let _ = handle(stream, &site, &reports);
        });
    }
}

fn handle(stream: TcpStream, site: &Site, reports: &mpsc::Sender<String>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let mut length = 0;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut stream = stream;
    let path = target.split('?').next().unwrap_or("");
    if method == "POST" && path == "/report" {
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        let _ = reports.send(String::from_utf8_lossy(&body).into_owned());
        return respond(&mut stream, "204 No Content", "text/plain", b"");
    }
    match site
        .file(path)
        .and_then(|f| std::fs::read(&f).ok().map(|b| (f, b)))
    {
        Some((f, body)) => {
            let kind = match f.extension().and_then(|e| e.to_str()) {
                Some("html") => "text/html",
                Some("js") => "text/javascript",
                Some("json") => "application/json",
                Some("wasm") => "application/wasm",
                _ => "application/octet-stream",
            };
            respond(&mut stream, "200 OK", kind, &body)
        }
        None => respond(&mut stream, "404 Not Found", "text/plain", b"not found"),
    }
}

fn respond(stream: &mut TcpStream, status: &str, kind: &str, body: &[u8]) -> std::io::Result<()> {
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(body)?;
    stream.flush()
}

/// Loads `site`'s page with `query` (plus `report=/report`) in headless Chromium with WebGPU
/// on, and returns the first report it POSTs, as JSON; fails after `timeout`.
pub fn run_page(browser: &Path, site: Site, query: &str, timeout: Duration) -> Value {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || serve(listener, site, tx));
    let profile = scratch_dir(&format!("chromium-profile-{port}"));
    let url = format!("http://127.0.0.1:{port}/?{query}&report=/report");
    let mut child = Command::new(browser)
        .args([
            "--headless=new",
            "--enable-unsafe-webgpu",
            "--no-sandbox",
            "--no-first-run",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            &format!("--user-data-dir={}", profile.display()),
            &url,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", browser.display()));
    let started = Instant::now();
    let report = rx.recv_timeout(timeout);
    // SIGTERM lets Chromium end its helper processes; SIGKILL if it does not exit.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&profile);
    let report = report.unwrap_or_else(|_| {
        panic!(
            "the page posted no results within {timeout:?} ({url}); does {} run WebGPU \
             with --enable-unsafe-webgpu?",
            browser.display()
        )
    });
    eprintln!("page ran in {:.1?}", started.elapsed());
    serde_json::from_str(&report).unwrap_or_else(|e| panic!("the report is not JSON: {e}"))
}

/// A fresh, empty directory under the system's temporary directory, named for this process.
pub fn scratch_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wgattn-browser-{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
