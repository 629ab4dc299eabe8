//! A throwaway PostgreSQL cluster for tests: `initdb` into a temp dir as the current user,
//! then the server on an ephemeral port with its unix socket in that dir (no system service,
//! no TCP exposure beyond loopback). A watchdog shell stops the server and removes the dir
//! when the test process exits, however it exits.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The settings of [`PgCluster::start_durable`]: PostgreSQL's own default buffer pool, not
/// the tests' economy 16 MB; fsync and synchronous_commit stay at their (durable) defaults.
pub const DURABLE_SETTINGS: &str = "-c shared_buffers=128MB";

pub struct PgCluster {
    pub dir: PathBuf,
    pub socket_dir: PathBuf,
    pub port: u16,
    pub user: String,
}

/// The directory of initdb/pg_ctl/postgres: Debian's /usr/lib/postgresql/N/bin (newest),
/// else whatever `initdb` on PATH belongs to.
pub fn pg_bin_dir() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    if let Some((_, b)) = found.pop() {
        return Some(b);
    }
    let out = Command::new("sh")
        .args(["-c", "command -v initdb"])
        .output()
        .ok()?;
    let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let p = std::fs::canonicalize(p).ok()?;
    Some(p.parent()?.to_path_buf())
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl PgCluster {
    /// The cluster shared by this test process (started on first use).
    pub fn shared() -> &'static PgCluster {
        static C: OnceLock<PgCluster> = OnceLock::new();
        C.get_or_init(PgCluster::start)
    }

    pub fn start() -> PgCluster {
        // Durability is not under test here: no fsync keeps the cluster fast on 2 cores.
        Self::start_with("-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
    }

    /// A cluster with PostgreSQL's durable defaults (fsync, synchronous_commit on), for
    /// benchmarks that compare with SQLite's synchronous=FULL.
    pub fn start_durable() -> PgCluster {
        Self::start_with(DURABLE_SETTINGS)
    }

    /// A cluster with extra server settings (`-c name=value ...`), for diagnosis.
    pub fn start_with_settings(settings: &str) -> PgCluster {
        Self::start_with(settings)
    }

    // The watchdog outlives the test process on purpose (it cleans up after it).
    #[allow(clippy::zombie_processes)]
    fn start_with(settings: &str) -> PgCluster {
        let bin = pg_bin_dir().expect(
            "PostgreSQL is not installed (Debian: apt-get install postgresql; .ci/run does it)",
        );
        // Kept past this function: the watchdog removes it when the test process is gone.
        let dir = tempfile::Builder::new()
            .prefix("tether-pg-")
            .tempdir()
            .expect("tempdir")
            .keep();
        let data = dir.join("data");
        // PostgreSQL refuses to run as root: then the cluster belongs to `nobody`.
        let as_root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        let runas: Vec<&str> = if as_root {
            let st = Command::new("chown")
                .args(["nobody:"])
                .arg(&dir)
                .status()
                .expect("chown");
            assert!(st.success(), "chown nobody failed");
            // setpriv execs in place (runuser would fork and not pass SIGINT on).
            vec![
                "setpriv",
                "--reuid=nobody",
                "--regid=nogroup",
                "--clear-groups",
            ]
        } else {
            Vec::new()
        };
        let user = "tether".to_string();
        let initdb = bin.join("initdb");
        let mut cmd = match runas.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&initdb);
                c
            }
            None => Command::new(&initdb),
        };
        let out = cmd
            .args(["-D"])
            .arg(&data)
            .args(["-U", &user, "-A", "trust", "-E", "UTF8", "--no-sync"])
            .args(["--locale", "C"])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let server = format!(
            "exec {runas} {postgres} -D {data} -p {port} -k {sock} -c listen_addresses=127.0.0.1 \
             -c max_connections=200 -c shared_buffers=16MB {settings}",
            runas = runas.join(" "),
            postgres = bin.join("postgres").display(),
            data = data.display(),
            sock = dir.display(),
        );
        // The watchdog: runs the server, and stops it (and removes the cluster) once the
        // test process has gone.
        let script = format!(
            "( {server} ) >{log} 2>&1 & pg=$!\n\
             while kill -0 {parent} 2>/dev/null && kill -0 $pg 2>/dev/null; do sleep 0.5; done\n\
             kill -INT $pg 2>/dev/null; wait $pg; rm -rf {dir}\n",
            log = dir.join("server.log").display(),
            parent = std::process::id(),
            dir = dir.display(),
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn postgres");
        let c = PgCluster {
            socket_dir: dir.clone(),
            dir,
            port,
            user,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if c.client("postgres").is_ok() {
                return c;
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not start: {}",
                std::fs::read_to_string(c.dir.join("server.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A connection string for `db` (key=value form; unix socket in the cluster's dir).
    pub fn conninfo(&self, db: &str) -> String {
        format!(
            "host={} port={} user={} dbname={db}",
            self.socket_dir.display(),
            self.port,
            self.user
        )
    }

    pub fn client(&self, db: &str) -> Result<postgres::Client, postgres::Error> {
        postgres::Client::connect(&self.conninfo(db), postgres::NoTls)
    }

    /// A new empty database; returns its connection string.
    pub fn create_db(&self) -> String {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "t{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let mut c = self.client("postgres").expect("connect to postgres");
        c.batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create database");
        self.conninfo(&name)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }
}

/// Whether this run puts receivers on PostgreSQL (`TETHER_TEST_BACKEND=postgres`): the
/// conformance run of the receiver suites.
pub fn backend_is_postgres() -> bool {
    std::env::var("TETHER_TEST_BACKEND").is_ok_and(|v| v == "postgres")
}
