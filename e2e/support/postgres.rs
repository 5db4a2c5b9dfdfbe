//! A real PostgreSQL for a pre-rollout snapshot: a throwaway cluster in a directory of its
//! own, its server run in the foreground (so it dies with the run), reachable by a Job pod's
//! host process through a Service without a selector and its Endpoints, as a database
//! outside the cluster is.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::process::Proc;

pub struct Postgres {
    pub port: u16,
    /// The host's own address, where pods reach it (Endpoints may not be loopback).
    pub host: String,
    bin: PathBuf,
    _server: Proc,
}

impl Postgres {
    /// Initialises a cluster under `dir` and starts its server; waits until it answers.
    pub fn start(dir: &Path) -> Postgres {
        let bin = bin_dir();
        let base = dir.join("postgres");
        std::fs::create_dir_all(&base).expect("postgres dir");
        let owner = server_user();
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&base, Some(uid), Some(gid)).expect("chown postgres dir");
        }
        let data = base.join("data");
        let mut initdb = Command::new(bin.join("initdb"));
        initdb.arg("-D").arg(&data);
        initdb.args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-locale",
            "-N",
        ]);
        run_as(&mut initdb, owner);
        let out = initdb.output().expect("run initdb");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Pods reach it at the host's address, which initdb's rules do not trust: that one
        // address is, and nothing else on the network.
        let (port, host) = (super::free_port(), super::pod::host_address());
        let hba = data.join("pg_hba.conf");
        let rules = std::fs::read_to_string(&hba).expect("pg_hba.conf");
        let rule = format!("{rules}\nhost all all {host}/32 trust\n");
        std::fs::write(&hba, rule).expect("pg_hba");
        let mut server = Command::new(bin.join("postgres"));
        server.arg("-D").arg(&data).arg("-k").arg(&base);
        server.args(["-p", &port.to_string(), "-c", "fsync=off"]);
        server
            .arg("-c")
            .arg(format!("listen_addresses=127.0.0.1,{host}"));
        run_as(&mut server, owner);
        let server = Proc::spawn("postgres", server, dir);
        let pg = Postgres {
            port,
            host,
            bin,
            _server: server,
        };
        pg.wait_until_ready();
        pg
    }

    fn wait_until_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .output()
                .is_ok_and(|o| o.status.success());
            if ready {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("PostgreSQL did not answer on port {} within 30s", self.port);
    }

    /// Runs `sql` in `database` as the superuser; panics on an error.
    pub fn sql(&self, database: &str, sql: &str) {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .args(["-d", database, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A Service `name` (port 5432) without a selector, and its Endpoints at this server.
    pub fn service_yaml(&self, name: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  ports: [{{name: postgres, port: 5432, targetPort: {port}}}]\n---\napiVersion: v1\nkind: Endpoints\nmetadata: {{name: {name}}}\nsubsets:\n- addresses: [{{ip: \"{host}\"}}]\n  ports: [{{name: postgres, port: {port}}}]\n",
            port = self.port,
            host = self.host,
        )
    }
}

/// The newest PostgreSQL's programs (Debian keeps `initdb` and `postgres` off the PATH).
fn bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL under /usr/lib/postgresql (make test installs it)")
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("an initdb under /usr/lib/postgresql/*/bin")
}

/// The `postgres` account's uid and gid when running as root, which PostgreSQL refuses.
fn server_user() -> Option<(u32, u32)> {
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .is_some_and(|l| l.split_whitespace().nth(1) == Some("0"));
    if !root {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let line = passwd.lines().find(|l| l.starts_with("postgres:"))?;
    let fields: Vec<&str> = line.split(':').collect();
    Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?))
}

fn run_as(cmd: &mut Command, owner: Option<(u32, u32)>) {
    if let Some((uid, gid)) = owner {
        cmd.uid(uid).gid(gid);
    }
}
