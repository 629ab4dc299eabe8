//! The packages, built and installed for real. `packaging/build.sh` (PROFILE=dev) makes the two
//! .deb and two .rpm from this test build's binaries; each .deb is installed with dpkg into a
//! throwaway root with its own dpkg database (maintainer scripts run chrootless with
//! $DPKG_ROOT), its installed binary runs, then it is upgraded, removed and purged there. The
//! .rpm files are inspected with `rpm -qp` (Debian's `rpm` package; `.ci/run` installs it).
//! Skipped, with a message on stderr, only where dpkg-deb is missing.
mod common;

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Instant;

const VERSION: &str = env!("CARGO_PKG_VERSION");
const REPOSITORY: &str = env!("CARGO_PKG_REPOSITORY");

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", "command -v \"$1\" >/dev/null", "sh", tool])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The four packages of one build.sh run, shared by every test in this file.
struct Packages {
    _dir: tempfile::TempDir,
    files: Vec<PathBuf>,
}

impl Packages {
    /// The one package whose file name starts with `prefix` and ends with `suffix`.
    fn file(&self, prefix: &str, suffix: &str) -> &Path {
        let found: Vec<&PathBuf> = self
            .files
            .iter()
            .filter(|f| {
                let name = f.file_name().and_then(OsStr::to_str).unwrap_or("");
                name.starts_with(prefix) && name.ends_with(suffix)
            })
            .collect();
        assert_eq!(found.len(), 1, "{prefix}*{suffix} in {:?}", self.files);
        found[0]
    }
}

fn packages() -> Option<&'static Packages> {
    static PACKAGES: OnceLock<Option<Packages>> = OnceLock::new();
    PACKAGES
        .get_or_init(|| {
            if !have("dpkg-deb") {
                eprintln!(
                    "SKIPPED: the packaging tests need dpkg-deb (apt-get install dpkg); \
                     no package was built or installed"
                );
                return None;
            }
            let dir = tempfile::tempdir().expect("tempdir");
            let bin_dir = Path::new(env!("CARGO_BIN_EXE_tether"))
                .parent()
                .expect("binary directory");
            let started = Instant::now();
            let stdout = run_ok(
                Command::new("bash")
                    .arg(repo().join("packaging/build.sh"))
                    .env("PROFILE", "dev")
                    .env("BIN_DIR", bin_dir)
                    .env("OUT", dir.path())
                    .env("FAST", "1"),
            );
            eprintln!(
                "packaging/build.sh (debug binaries, fast compression): {:.1} s",
                started.elapsed().as_secs_f64()
            );
            let files: Vec<PathBuf> = stdout.lines().map(PathBuf::from).collect();
            assert_eq!(
                files.len(),
                4,
                "build.sh prints the four packages: {stdout}"
            );
            for f in &files {
                let size = std::fs::metadata(f)
                    .unwrap_or_else(|e| panic!("{}: {e}", f.display()))
                    .len();
                eprintln!(
                    "  {} {:.1} MB",
                    f.file_name().unwrap().to_string_lossy(),
                    size as f64 / 1e6
                );
            }
            let p = Packages { _dir: dir, files };
            // The names the documentation promises.
            p.file(&format!("tether_{VERSION}-1_"), ".deb");
            p.file(&format!("tether-receiver_{VERSION}-1_"), ".deb");
            p.file(&format!("tether-{VERSION}-1."), ".rpm");
            p.file(&format!("tether-receiver-{VERSION}-1."), ".rpm");
            Some(p)
        })
        .as_ref()
}

/// A throwaway root with its own dpkg database: what `dpkg --root` installs there touches
/// nothing outside it (the maintainer scripts see it as $DPKG_ROOT).
struct Root {
    dir: tempfile::TempDir,
}

impl Root {
    fn new() -> Root {
        let dir = tempfile::tempdir().expect("tempdir");
        let admin = dir.path().join("var/lib/dpkg");
        for sub in ["info", "updates", "triggers"] {
            std::fs::create_dir_all(admin.join(sub)).expect("admindir");
        }
        std::fs::write(admin.join("status"), "").expect("status");
        Root { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn dpkg_command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.arg(format!("--root={}", self.dir.path().display()))
            .arg(format!(
                "--admindir={}",
                self.path("var/lib/dpkg").display()
            ))
            // dpkg looks for ldconfig and start-stop-daemon on PATH.
            .env(
                "PATH",
                format!(
                    "/usr/sbin:/sbin:{}",
                    std::env::var("PATH").unwrap_or_default()
                ),
            );
        cmd
    }

    /// dpkg in this root: scripts run chrootless; the root has no libc6 package in its
    /// database, hence --force-depends.
    fn dpkg(&self, args: &[&OsStr]) -> String {
        let mut cmd = self.dpkg_command("dpkg");
        cmd.args([
            "--force-script-chrootless",
            "--force-not-root",
            "--force-depends",
            "--log=/dev/null",
        ])
        .args(args);
        run_ok(&mut cmd)
    }

    fn install(&self, deb: &Path) {
        self.dpkg(&[OsStr::new("-i"), deb.as_os_str()]);
    }

    /// `dpkg-query -W` field of a package in this root.
    fn query(&self, package: &str, format: &str) -> String {
        let mut cmd = self.dpkg_command("dpkg-query");
        cmd.args(["-W", &format!("-f={format}"), package]);
        let out = cmd.output().expect("dpkg-query");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a binary installed in this root.
    fn run_installed(&self, rel: &str, args: &[&str], home: Option<&Path>) -> String {
        let mut cmd = Command::new(self.path(rel));
        cmd.args(args);
        if let Some(h) = home {
            cmd.env("TETHER_HOME", h);
        }
        run_ok(&mut cmd)
    }
}

/// The man pages a binary generates (`BIN man --out DIR`): `BIN.1` and one per visible
/// subcommand; the packages must carry each of them gzipped.
fn man_pages_of(binary: &str) -> Vec<String> {
    let dir = tempfile::tempdir().expect("tempdir");
    run_ok(Command::new(binary).arg("man").arg("--out").arg(dir.path()));
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("man dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Man pages (gzipped, readable by man's formatter) and the bash, zsh and fish completions
/// of `name` in an installed root.
fn check_docs_installed(root: &Root, name: &str, binary: &str) {
    let pages = man_pages_of(binary);
    assert!(pages.contains(&format!("{name}.1")), "{pages:?}");
    assert!(
        pages.len() > 5,
        "one page per subcommand as well: {pages:?}"
    );
    for page in &pages {
        let path = root.path(&format!("usr/share/man/man1/{page}.gz"));
        assert_eq!(mode(&path), 0o644, "{}", path.display());
        let mut text = String::new();
        use std::io::Read;
        flate2::read::GzDecoder::new(std::fs::File::open(&path).expect("man page"))
            .read_to_string(&mut text)
            .expect("gzipped man page");
        let stem = page.trim_end_matches(".1");
        assert!(
            text.contains(".TH") && text.contains(stem),
            "{page} is a man page titled {stem}"
        );
    }
    for (rel, marker) in [
        (
            format!("usr/share/bash-completion/completions/{name}"),
            "complete -F",
        ),
        (
            format!("usr/share/zsh/vendor-completions/_{name}"),
            "#compdef",
        ),
        (
            format!("usr/share/fish/vendor_completions.d/{name}.fish"),
            "complete -c",
        ),
    ] {
        let text = read(&root.path(&rel));
        assert!(text.contains(marker), "{rel} lacks {marker:?}");
        assert!(text.contains(name), "{rel} completes {name}");
        assert_eq!(mode(&root.path(&rel)), 0o644, "{rel}");
    }
}

/// Where the installed agent meets a real site, as a deployment job would have it: an
/// `enroll.toml` and a scoped token file in etc/tether, the installed `tether enroll`, then the
/// installed daemon serving the site's pull. Returns the files under etc/tether that belong
/// to the administrator (purge keeps them) and the time from `installed_at` to the first
/// served pull (printed, not asserted).
fn enroll_with_the_installed_package(root: &Root, installed_at: Instant) -> Vec<&'static str> {
    let rcv = common::TestReceiver::start("pkg");
    rcv.admin_json(&["folder", "add", "/linux"]);
    rcv.admin_json(&[
        "rule",
        "add",
        "linux",
        "--match",
        "os=linux",
        "--create-in",
        "/linux",
    ]);
    let token = rcv.admin_json(&[
        "token",
        "create",
        "--register-new",
        "--folder",
        "/linux",
        "--labels",
        "os=linux",
        "--max-uses",
        "5000",
        "--ttl",
        "1h",
        "--name",
        "rollout",
    ]);
    let etc = root.path("etc/tether");
    let token_file = etc.join("enroll.token");
    std::fs::write(&token_file, token["token"].as_str().expect("token")).expect("token file");
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600))
        .expect("chmod token");
    std::fs::write(
        etc.join("enroll.toml"),
        format!(
            "server = \"{}\"\nsite = \"pkg\"\ntrust_fingerprint = \"{}\"\nmode = \"new\"\ntoken_file = {:?}\nlabels = {{ os = \"linux\", \"cmk/hostname\" = \"pkghost\" }}\n",
            rcv.server(),
            rcv.fingerprint,
            token_file.display().to_string()
        ),
    )
    .expect("enroll.toml");
    let home = root.path("var/lib/tether");
    let dir = etc.to_str().expect("utf-8 path");
    let enroll = |what: &str| -> serde_json::Value {
        let out = root.run_installed(
            "usr/bin/tether",
            &["enroll", "--json", "--dir", dir],
            Some(&home),
        );
        let doc: serde_json::Value = serde_json::from_str(&out).expect(what);
        common::validate_json("tether.enroll.schema.json", &doc);
        doc
    };
    let first = enroll("first enroll");
    let e = &first["enrollments"][0];
    assert_eq!(e["status"], "enrolled", "{first}");
    assert_eq!(e["changed"], true, "{first}");
    assert_eq!(e["credential_removed"], true, "{first}");
    assert!(!token_file.exists(), "the token file is gone once enrolled");
    let second = enroll("second enroll");
    assert_eq!(
        second["changed"], false,
        "a second enroll changes nothing: {second}"
    );
    assert_eq!(second["enrollments"][0]["uuid"], e["uuid"]);

    let status: serde_json::Value = serde_json::from_str(&root.run_installed(
        "usr/bin/tether",
        &["status", "--json", "--enroll-dir", dir],
        Some(&home),
    ))
    .expect("status json");
    common::validate_json("tether.status.schema.json", &status);
    assert_eq!(status["enrollments"][0]["status"], "enrolled", "{status}");
    let conns = status["connections"].as_array().expect("connections");
    assert_eq!(conns.len(), 1, "{status}");
    assert_eq!(conns[0]["remote"]["hostname"], "pkghost", "{status}");
    assert_eq!(conns[0]["remote"]["status"], "registered", "{status}");
    assert_eq!(mode(&home.join("registry.json")), 0o600);

    // The installed daemon serves the site's pull of the new host.
    let scratch = tempfile::tempdir().expect("tempdir");
    let config = scratch.path().join("tether.toml");
    let agent_output = repo().join("tests/fixtures/agent-output-linux.txt");
    std::fs::write(
        &config,
        format!("[agent]\nfile = {:?}\n", agent_output.display().to_string()),
    )
    .expect("config");
    let ready = scratch.path().join("ready");
    let mut daemon = Command::new(root.path("usr/bin/tether"))
        .args(["daemon", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--ready-file")
        .arg(&ready)
        .env("TETHER_HOME", &home)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("installed daemon");
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    let port = loop {
        let addr = std::fs::read_to_string(&ready)
            .ok()
            .and_then(|t| t.lines().next()?.parse::<std::net::SocketAddr>().ok());
        if addr.is_some() || Instant::now() > deadline {
            break addr.map(|a| a.port());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    rcv.admin_json(&[
        "host",
        "add",
        "pkghost",
        "--folder",
        "/linux",
        "--address",
        "127.0.0.1",
        "--agent-port",
        &port.map(|p| p.to_string()).unwrap_or_default(),
    ]);
    let fetched = port.is_some() && rcv.admin(&["fetch", "pkghost", "--json"]).status.success();
    let _ = daemon.kill();
    let _ = daemon.wait();
    assert!(
        fetched,
        "the site pulled the host from the installed daemon"
    );
    eprintln!(
        "dpkg -i → enrolled → first served pull: {} ms",
        installed_at.elapsed().as_millis()
    );
    vec!["enroll.toml"]
}

#[test]
fn agent_deb_installs_upgrades_removes_and_purges_in_an_isolated_root() {
    let Some(p) = packages() else { return };
    let deb = p.file(&format!("tether_{VERSION}-1_"), ".deb");
    let root = Root::new();

    let started = Instant::now();
    root.install(deb);
    eprintln!(
        "dpkg -i {} into an isolated root: {} ms",
        deb.file_name().unwrap().to_string_lossy(),
        started.elapsed().as_millis()
    );
    assert_eq!(root.query("tether", "${Status}"), "install ok installed");
    assert_eq!(
        root.query("tether", "${Version}"),
        format!("{VERSION}-1"),
        "package version follows Cargo.toml"
    );

    // Files and modes.
    assert_eq!(mode(&root.path("usr/bin/tether")), 0o755);
    assert_eq!(
        mode(&root.path("var/lib/tether")),
        0o700,
        "state is root-only"
    );
    let unit = read(&root.path("usr/lib/systemd/system/tether.service"));
    assert_eq!(
        unit,
        read(&repo().join("packaging/systemd/tether.service")),
        "the unit is packaging/systemd/tether.service"
    );
    for line in [
        "ExecStart=/usr/bin/tether daemon",
        "Type=notify",
        "StateDirectory=tether",
        "StateDirectoryMode=0700",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "ReadWritePaths=/var/lib/tether /etc/tether",
        "WantedBy=multi-user.target",
    ] {
        assert!(
            unit.lines().any(|l| l == line),
            "unit lacks {line:?}:\n{unit}"
        );
    }
    // TETHER_HOME in the unit would move enroll.toml and tether.toml out of /etc/tether.
    assert!(!unit.contains("Environment=TETHER_HOME"), "{unit}");
    let example = read(&repo().join("packaging/tether.toml.example"));
    assert_eq!(read(&root.path("etc/tether/tether.toml")), example);
    assert_eq!(mode(&root.path("etc/tether/tether.toml")), 0o644);
    assert!(
        root.query("tether", "${Conffiles}")
            .contains("/etc/tether/tether.toml"),
        "tether.toml is a conffile"
    );
    let enroll_d = root.path("etc/tether/enroll.d");
    assert!(enroll_d.is_dir(), "enroll.d exists");
    assert_eq!(
        std::fs::read_dir(&enroll_d).expect("enroll.d").count(),
        0,
        "enroll.d is empty"
    );
    assert!(root
        .path("usr/share/doc/tether/examples/enroll.toml")
        .is_file());
    let wants = root.path("etc/systemd/system/multi-user.target.wants/tether.service");
    if have("systemctl") {
        // Enabled offline with `systemctl --root`; nothing was started (no systemd here).
        assert_eq!(
            std::fs::read_link(&wants).expect("enable link"),
            Path::new("/usr/lib/systemd/system/tether.service")
        );
    }

    // The installed binary runs.
    let version = root.run_installed("usr/bin/tether", &["--version"], None);
    assert_eq!(version.trim(), format!("tether {VERSION}"));
    check_docs_installed(&root, "tether", env!("CARGO_BIN_EXE_tether"));

    let admin_files = enroll_with_the_installed_package(&root, started);
    let registry = root.path("var/lib/tether/registry.json");
    let state = read(&registry);

    // Upgrade (the same package again: prerm upgrade, postinst configure with the old
    // version): state and the administrator's edit of the conffile survive.
    let edited = format!("{example}\n# edited by the administrator\n");
    std::fs::write(root.path("etc/tether/tether.toml"), &edited).expect("edit conffile");
    root.install(deb);
    assert_eq!(read(&registry), state, "upgrade keeps the registry");
    assert_eq!(read(&root.path("etc/tether/tether.toml")), edited);
    assert_eq!(mode(&root.path("var/lib/tether")), 0o700);
    assert_eq!(root.query("tether", "${Status}"), "install ok installed");

    // Remove: the program goes, state and configuration stay.
    root.dpkg(&[OsStr::new("--remove"), OsStr::new("tether")]);
    assert!(!root.path("usr/bin/tether").exists());
    assert!(!root.path("usr/lib/systemd/system/tether.service").exists());
    assert_eq!(read(&registry), state, "remove keeps the registry");
    assert_eq!(read(&root.path("etc/tether/tether.toml")), edited);
    assert_eq!(
        root.query("tether", "${Status}"),
        "deinstall ok config-files"
    );

    // Purge: state, configuration and the enable link are gone; the administrator's own
    // files in /etc/tether are not the package's to delete.
    root.dpkg(&[OsStr::new("--purge"), OsStr::new("tether")]);
    assert!(!root.path("var/lib/tether").exists(), "purge removes state");
    assert!(!root.path("etc/tether/tether.toml").exists());
    assert!(!enroll_d.exists(), "purge removes the empty enroll.d");
    assert!(
        wants.symlink_metadata().is_err(),
        "purge removes the enable link"
    );
    let etc = root.path("etc/tether");
    let mut left: Vec<String> = match std::fs::read_dir(&etc) {
        Ok(rd) => rd
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    left.sort();
    let mut expected: Vec<String> = admin_files.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(left, expected, "left in /etc/tether after purge");
    assert_eq!(root.query("tether", "${Status}"), "");
}

#[test]
fn receiver_deb_installs_and_purge_removes_the_site() {
    let Some(p) = packages() else { return };
    let deb = p.file(&format!("tether-receiver_{VERSION}-1_"), ".deb");
    let root = Root::new();
    root.install(deb);
    assert_eq!(
        root.query("tether-receiver", "${Status}"),
        "install ok installed"
    );

    assert_eq!(mode(&root.path("usr/bin/tether-receiver")), 0o755);
    let state = root.path("var/lib/tether-receiver");
    assert_eq!(mode(&state), 0o700, "the site's keys are root-only");
    let unit = read(&root.path("usr/lib/systemd/system/tether-receiver.service"));
    assert_eq!(
        unit,
        read(&repo().join("packaging/systemd/tether-receiver.service"))
    );
    for line in [
        "ExecStart=/usr/bin/tether-receiver serve --listen ${TETHER_RECEIVER_LISTEN}",
        "Environment=TETHER_RECEIVER_DIR=/var/lib/tether-receiver",
        "Environment=TETHER_RECEIVER_LISTEN=[::]:8000",
        "ConditionPathExists=/var/lib/tether-receiver/ca/site-ca.pem",
        "StateDirectoryMode=0700",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/tether-receiver",
    ] {
        assert!(
            unit.lines().any(|l| l == line),
            "unit lacks {line:?}:\n{unit}"
        );
    }
    assert!(
        !root.path("usr/bin/tether").exists(),
        "the agent is its own package"
    );

    // The installed binary makes a site in the package's state directory.
    let version = root.run_installed("usr/bin/tether-receiver", &["--version"], None);
    assert_eq!(version.trim(), format!("tether-receiver {VERSION}"));
    check_docs_installed(
        &root,
        "tether-receiver",
        env!("CARGO_BIN_EXE_tether-receiver"),
    );
    let init = root.run_installed(
        "usr/bin/tether-receiver",
        &[
            "init",
            "--json",
            "--site",
            "pkg",
            "--dir",
            state.to_str().expect("utf-8 path"),
        ],
        None,
    );
    let doc: serde_json::Value = serde_json::from_str(&init).expect("init json");
    common::validate_json("receiver.init.schema.json", &doc);
    let db = state.join("receiver.db");
    assert!(db.is_file());
    // What the unit's ConditionPathExists waits for (on SQLite and PostgreSQL sites alike).
    assert!(state.join("ca/site-ca.pem").is_file());

    // Upgrade keeps the site; purge removes it.
    root.install(deb);
    assert!(db.is_file(), "upgrade keeps the site");
    root.dpkg(&[OsStr::new("--remove"), OsStr::new("tether-receiver")]);
    assert!(db.is_file(), "remove keeps the site");
    root.dpkg(&[OsStr::new("--purge"), OsStr::new("tether-receiver")]);
    assert!(!state.exists(), "purge removes the site");
    assert_eq!(root.query("tether-receiver", "${Status}"), "");
}

/// One line of `rpm -qp --dump`: path size mtime digest mode owner group isconfig isdoc ...
struct DumpLine {
    path: String,
    mode: String,
    owner: String,
    config: bool,
    doc: bool,
}

fn rpm_query(rpm: &Path, args: &[&str]) -> String {
    run_ok(Command::new("rpm").arg("-qp").args(args).arg(rpm))
}

fn rpm_dump(rpm: &Path) -> Vec<DumpLine> {
    rpm_query(rpm, &["--dump"])
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            assert!(f.len() >= 9, "dump line {l:?}");
            DumpLine {
                path: f[0].to_string(),
                mode: f[4].to_string(),
                owner: format!("{}:{}", f[5], f[6]),
                config: f[7] == "1",
                doc: f[8] == "1",
            }
        })
        .collect()
}

/// Checks an .rpm's name, files (path, mode, config, doc) and that its scriptlets are the
/// scripts in packaging/rpm/<name>/.
fn check_rpm(rpm: &Path, name: &str, binary: &str, files: &[(&str, &str, bool, bool)]) {
    assert_eq!(
        rpm_query(
            rpm,
            &["--qf", "%{NAME} %{VERSION} %{RELEASE} %{LICENSE} %{URL}"]
        ),
        format!("{name} {VERSION} 1 GPL-2.0-only {REPOSITORY}")
    );
    // Man pages (doc files) and completions, generated by build.sh.
    let generated: Vec<(String, &str, bool, bool)> = man_pages_of(binary)
        .into_iter()
        .map(|p| {
            (
                format!("/usr/share/man/man1/{p}.gz"),
                "0100644",
                false,
                true,
            )
        })
        .chain([
            (
                format!("/usr/share/bash-completion/completions/{name}"),
                "0100644",
                false,
                false,
            ),
            (
                format!("/usr/share/zsh/site-functions/_{name}"),
                "0100644",
                false,
                false,
            ),
            (
                format!("/usr/share/fish/vendor_completions.d/{name}.fish"),
                "0100644",
                false,
                false,
            ),
        ])
        .collect();
    let files: Vec<(&str, &str, bool, bool)> = files
        .iter()
        .copied()
        .chain(
            generated
                .iter()
                .map(|(p, m, c, d)| (p.as_str(), *m, *c, *d)),
        )
        .collect();
    let files = files.as_slice();
    let dump = rpm_dump(rpm);
    let listed: Vec<&str> = dump.iter().map(|d| d.path.as_str()).collect();
    let wanted: Vec<&str> = files.iter().map(|f| f.0).collect();
    let mut listed_sorted = listed.clone();
    listed_sorted.sort();
    let mut wanted_sorted = wanted.clone();
    wanted_sorted.sort();
    assert_eq!(listed_sorted, wanted_sorted, "files of {name}");
    for (path, file_mode, config, doc) in files {
        let d = dump.iter().find(|d| d.path == *path).expect("listed");
        assert_eq!(d.mode, *file_mode, "mode of {path}");
        assert_eq!(d.owner, "root:root", "owner of {path}");
        assert_eq!(d.config, *config, "config flag of {path}");
        assert_eq!(d.doc, *doc, "doc flag of {path}");
    }
    let scripts = rpm_query(rpm, &["--scripts"]);
    for (heading, file) in [
        ("postinstall scriptlet (using /bin/sh):", "post.sh"),
        ("preuninstall scriptlet (using /bin/sh):", "preun.sh"),
        ("postuninstall scriptlet (using /bin/sh):", "postun.sh"),
    ] {
        let script = read(&repo().join("packaging/rpm").join(name).join(file));
        let at = scripts
            .find(heading)
            .unwrap_or_else(|| panic!("{name}: no {heading}\n{scripts}"));
        assert!(
            scripts[at + heading.len()..]
                .trim_start()
                .starts_with(script.trim()),
            "{name}: {heading} is not packaging/rpm/{name}/{file}\n{scripts}"
        );
    }
    for absent in [
        "preinstall scriptlet",
        "pretrans scriptlet",
        "posttrans scriptlet",
    ] {
        assert!(!scripts.contains(absent), "{name}: {absent}");
    }
}

#[test]
fn rpms_carry_their_files_modes_and_scriptlets() {
    let Some(p) = packages() else { return };
    assert!(
        have("rpm"),
        "the rpm checks need `rpm` (apt-get install rpm; .ci/run installs it)"
    );
    let agent = p.file(&format!("tether-{VERSION}-1."), ".rpm");
    check_rpm(
        agent,
        "tether",
        env!("CARGO_BIN_EXE_tether"),
        &[
            ("/usr/bin/tether", "0100755", false, false),
            (
                "/usr/lib/systemd/system/tether.service",
                "0100644",
                false,
                false,
            ),
            ("/etc/tether/tether.toml", "0100644", true, false),
            ("/usr/share/doc/tether/README.md", "0100644", false, true),
            (
                "/usr/share/doc/tether/examples/enroll.toml",
                "0100644",
                false,
                true,
            ),
        ],
    );
    // %config(noreplace): an edited tether.toml survives upgrades.
    let flags = rpm_query(agent, &["--qf", "[%{FILENAMES} %{FILEFLAGS:fflags}\n]"]);
    assert!(
        flags.lines().any(|l| l == "/etc/tether/tether.toml cn"),
        "{flags}"
    );
    // The scriptlets create the state directory root-only, enable on installation only,
    // start only where systemd runs, and never delete state (rpm has no purge).
    let scripts = rpm_query(agent, &["--scripts"]);
    for needle in [
        "chmod 0700 /var/lib/tether",
        "mkdir -p /var/lib/tether /etc/tether/enroll.d",
        "if [ \"$1\" -eq 1 ] && command -v systemctl",
        "if [ -d /run/systemd/system ]; then",
        "systemctl try-restart tether.service",
    ] {
        assert!(scripts.contains(needle), "lacks {needle:?}:\n{scripts}");
    }
    assert!(!scripts.contains("rm -"), "rpm scriptlets delete nothing");

    let receiver = p.file(&format!("tether-receiver-{VERSION}-1."), ".rpm");
    check_rpm(
        receiver,
        "tether-receiver",
        env!("CARGO_BIN_EXE_tether-receiver"),
        &[
            ("/usr/bin/tether-receiver", "0100755", false, false),
            (
                "/usr/lib/systemd/system/tether-receiver.service",
                "0100644",
                false,
                false,
            ),
            (
                "/usr/share/doc/tether-receiver/README.md",
                "0100644",
                false,
                true,
            ),
        ],
    );
    let scripts = rpm_query(receiver, &["--scripts"]);
    assert!(
        scripts.contains("chmod 0700 /var/lib/tether-receiver"),
        "{scripts}"
    );
    assert!(!scripts.contains("rm -"), "rpm scriptlets delete nothing");
}

#[test]
fn maintainer_scripts_are_valid_sh() {
    for dir in [
        "packaging/deb/tether",
        "packaging/deb/tether-receiver",
        "packaging/rpm/tether",
        "packaging/rpm/tether-receiver",
    ] {
        for entry in std::fs::read_dir(repo().join(dir)).expect(dir) {
            let path = entry.expect("entry").path();
            run_ok(Command::new("sh").arg("-n").arg(&path));
            if dir.starts_with("packaging/deb") {
                assert_eq!(mode(&path), 0o755, "{} is executable", path.display());
                assert!(
                    read(&path).starts_with("#!/bin/sh\n"),
                    "{} starts with #!/bin/sh",
                    path.display()
                );
            }
        }
    }
}

/// The Debian changelog's newest entry is this version (lintian and dpkg read it).
#[test]
fn debian_changelog_names_this_version() {
    let changelog = read(&repo().join("packaging/deb/changelog"));
    let first = changelog.lines().next().expect("changelog");
    assert!(
        first.starts_with(&format!("tether ({VERSION}-1) ")),
        "packaging/deb/changelog starts with {first:?}; add an entry for {VERSION}-1"
    );
}

/// lintian on both .deb files (where it is installed; it runs offline): nothing but
/// `initial-upload-closes-no-bugs`, which only concerns uploads to Debian. In particular no
/// `no-manual-page`: the packages carry their man pages.
#[test]
fn lintian_reports_nothing_but_the_first_upload() {
    let Some(p) = packages() else { return };
    if !have("lintian") {
        eprintln!("SKIPPED: lintian is not installed");
        return;
    }
    // One run for both: lintian's start-up dominates.
    let debs = [
        p.file(&format!("tether_{VERSION}-1_"), ".deb"),
        p.file(&format!("tether-receiver_{VERSION}-1_"), ".deb"),
    ];
    let out = Command::new("lintian")
        .args(["--no-cfg", "--tag-display-limit", "0"])
        .args(debs)
        .output()
        .expect("lintian");
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    let tags: Vec<&str> = report
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("N:"))
        .filter(|l| !l.contains("initial-upload-closes-no-bugs"))
        .collect();
    assert!(tags.is_empty(), "lintian: {}", text(&out));
    assert!(!report.contains("no-manual-page"), "{report}");
}
