//! A throwaway PostgreSQL server for tests: `initdb` into a temporary directory, `postgres` on a free loopback port,
//! users for each login method. The binaries come from the PATH or Debian's /usr/lib/postgresql/VERSION/bin;
//! running as root, they run as the `postgres` user (they refuse root), through `setpriv`, which execs the program
//! itself, so the child the test holds is the server and a signal to it reaches the server.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::programs::{as_server_user, program, running_as_root};

pub struct Postgres {
    pub port: u16,
    dir: TempDir,
    server: Option<Child>,
    max_connections: u32,
    /// Whether the server also takes TLS connections, with a certificate for `localhost` from [`Postgres::ca`].
    tls: bool,
}

/// Users the server is set up with, one per login method.
pub const TRUST_USER: &str = "trust_user";
pub const MD5_USER: &str = "md5_user";
pub const MD5_PASSWORD: &str = "md5-secret";
pub const SCRAM_USER: &str = "scram_user";
pub const SCRAM_PASSWORD: &str = "scram-secret";

/// The server allows this many connections.
pub const MAX_CONNECTIONS: u32 = 20;

impl Postgres {
    pub fn start() -> Self {
        Self::start_with(MAX_CONNECTIONS, None)
    }

    fn start_with(max_connections: u32, ca: Option<&super::fakes::TestCa>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        if running_as_root() {
            let status = Command::new("chown").args(["-R", "postgres"]).arg(dir.path()).status().unwrap();
            assert!(status.success(), "chown the server's directory to the postgres user");
        }
        let data = dir.path().join("data");
        let output = as_server_user(&program("initdb"))
            .args(["-D", data.to_str().unwrap(), "-U", "postgres", "--auth=trust", "--no-sync", "--no-instructions"])
            .output()
            .unwrap();
        assert!(output.status.success(), "initdb failed: {}", String::from_utf8_lossy(&output.stderr));
        std::fs::write(
            data.join("pg_hba.conf"),
            format!(
                "local all all trust\n\
                 host all postgres 127.0.0.1/32 trust\n\
                 host all {TRUST_USER} 127.0.0.1/32 trust\n\
                 host all {MD5_USER} 127.0.0.1/32 md5\n\
                 host all all 127.0.0.1/32 scram-sha-256\n"
            ),
        )
        .unwrap();
        if let Some(ca) = ca {
            std::fs::write(data.join("server.crt"), &ca.leaf_pem).unwrap();
            std::fs::write(data.join("server.key"), &ca.leaf_key_pem).unwrap();
            std::fs::set_permissions(data.join("server.key"), std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .unwrap();
            if running_as_root() {
                let status = Command::new("chown")
                    .args(["postgres"])
                    .arg(data.join("server.crt"))
                    .arg(data.join("server.key"))
                    .status()
                    .unwrap();
                assert!(status.success());
            }
        }
        let mut postgres = Self { port: super::free_port(), dir, server: None, max_connections, tls: ca.is_some() };
        postgres.run();
        postgres.psql(&format!(
            "SET password_encryption = 'md5'; CREATE USER {MD5_USER} PASSWORD '{MD5_PASSWORD}';
             RESET password_encryption; CREATE USER {SCRAM_USER} PASSWORD '{SCRAM_PASSWORD}';
             CREATE USER {TRUST_USER}; GRANT pg_monitor TO {TRUST_USER};"
        ));
        postgres
    }

    fn run(&mut self) {
        let server = as_server_user(&program("postgres"))
            .args(["-D", self.dir.path().join("data").to_str().unwrap()])
            .args(["-p", &self.port.to_string(), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .args(["-c", &format!("unix_socket_directories={}", self.dir.path().display())])
            .args([
                "-c",
                &format!("max_connections={}", self.max_connections),
                "-c",
                "superuser_reserved_connections=1",
            ])
            .args(if self.tls { ["-c", "ssl=on"] } else { ["-c", "ssl=off"] })
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.server = Some(server);
        for _ in 0..300 {
            if self.psql_status("SELECT 1") {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("PostgreSQL did not start on port {}", self.port);
    }

    /// Fast shutdown, as an operator's `pg_ctl stop` does.
    pub fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = Command::new("kill").args(["-INT", &server.id().to_string()]).status();
            let _ = server.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }

    /// Run SQL as the superuser over the server's Unix socket.
    pub fn psql(&self, sql: &str) {
        let output = self.psql_command(sql).output().unwrap();
        assert!(output.status.success(), "psql failed: {}", String::from_utf8_lossy(&output.stderr));
    }

    fn psql_status(&self, sql: &str) -> bool {
        self.psql_command(sql).output().is_ok_and(|o| o.status.success())
    }

    /// A `psql` session over TCP that stays connected (and idle) until the returned child is killed.
    pub fn idle_session(&self) -> Child {
        let mut command = self.psql_command("");
        command.args(["-h", "127.0.0.1"]).stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::null());
        command.spawn().unwrap()
    }

    /// A session running `sql` in the background.
    pub fn background(&self, sql: &str) -> Child {
        let mut command = self.psql_command(sql);
        command.stdout(Stdio::null()).stderr(Stdio::null());
        command.spawn().unwrap()
    }

    /// Other sessions connected to the server right now, from its own statistics.
    pub fn client_sessions(&self) -> u32 {
        let output = self
            .psql_command("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()")
            .arg("-tA")
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).trim().parse().unwrap_or(0)
    }

    fn psql_command(&self, sql: &str) -> Command {
        let mut command = Command::new(program("psql"));
        command.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-U", "postgres", "-d", "postgres"]);
        command.args(["-h", self.dir.path().to_str().unwrap(), "-p", &self.port.to_string()]);
        if !sql.is_empty() {
            command.args(["-c", sql]);
        }
        command
    }
}

/// One server for the whole test binary, for tests of selfmon's own store on PostgreSQL: each takes a database of
/// its own ([`Postgres::database`]). It is stopped when the binary exits.
pub fn shared() -> &'static Postgres {
    static SHARED: std::sync::OnceLock<Postgres> = std::sync::OnceLock::new();
    SHARED.get_or_init(|| {
        let postgres = Postgres::start_with(400, Some(ca()));
        let pid = postgres.server.as_ref().map_or(0, Child::id);
        SHARED_PID.store(pid, std::sync::atomic::Ordering::SeqCst);
        let _ = SHARED_DIR.set(postgres.dir.path().to_path_buf());
        // SAFETY: registers a plain function with no captured state; it only sends a signal and waits.
        unsafe { libc::atexit(stop_shared) };
        postgres
    })
}

/// The authority that signed the shared server's certificate (for `localhost`).
pub fn ca() -> &'static super::fakes::TestCa {
    static CA: std::sync::OnceLock<super::fakes::TestCa> = std::sync::OnceLock::new();
    CA.get_or_init(super::fakes::TestCa::new)
}

static SHARED_PID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
static SHARED_DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

extern "C" fn stop_shared() {
    let pid = SHARED_PID.load(std::sync::atomic::Ordering::SeqCst);
    if let Ok(pid) = i32::try_from(pid)
        && pid > 0
    {
        let pid = nix::unistd::Pid::from_raw(pid);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let _ = nix::sys::wait::waitpid(pid, None);
    }
    if let Some(dir) = SHARED_DIR.get() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

impl Postgres {
    /// A new, empty database for selfmon's store, as the superuser over loopback: its URL.
    pub fn database(&self) -> String {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let name = format!("store_{}", NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst));
        self.psql(&format!("CREATE DATABASE {name}"));
        format!("postgres://postgres@127.0.0.1:{}/{name}?sslmode=disable", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Run SQL on the database of `url` with `psql`.
pub fn psql_at(url: &str, sql: &str) {
    let output =
        Command::new(program("psql")).args([url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql]).output().unwrap();
    assert!(output.status.success(), "psql failed: {}", String::from_utf8_lossy(&output.stderr));
}
