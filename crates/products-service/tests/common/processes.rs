//! Private instances of stack components for tests that stop a dependency on
//! purpose: each test gets its own Redis or FerretDB process on a free
//! loopback port, so stopping it disturbs no other test.

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use super::eventually;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn stop(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A throwaway `redis-server` (Debian package, installed by the stack scripts).
pub struct PrivateRedis {
    pub port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    pub async fn start() -> Self {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (make stack-up installs it)");
        let redis = Self {
            port,
            child: Some(child),
        };
        let url = redis.url();
        eventually(Duration::from_secs(10), || async {
            let Ok(client) = redis::Client::open(url.as_str()) else {
                return false;
            };
            match client.get_multiplexed_async_connection().await {
                Ok(mut conn) => redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .is_ok(),
                Err(_) => false,
            }
        })
        .await;
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        stop(&mut self.child);
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A throwaway FerretDB (SQLite backend) that can be stopped and restarted
/// on the same port and data directory.
pub struct PrivateFerretDb {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

fn ferretdb_binary() -> PathBuf {
    if let Ok(path) = std::env::var("FERRETDB_BIN") {
        return path.into();
    }
    let cache = std::env::var("PRODUCTS_STACK_CACHE").map_or_else(
        |_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/products-stack"),
        PathBuf::from,
    );
    cache.join("ferretdb-1.24.2/ferretdb")
}

impl PrivateFerretDb {
    pub async fn start() -> Self {
        let dir = std::env::temp_dir().join(super::unique("ferretdb"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut db = Self {
            port: free_port(),
            dir,
            child: None,
        };
        db.restart().await;
        db
    }

    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port and data, waiting until it answers.
    pub async fn restart(&mut self) {
        let binary = ferretdb_binary();
        let child = Command::new(&binary)
            .arg("--handler=sqlite")
            .arg(format!("--sqlite-url=file:{}/", self.dir.display()))
            .arg(format!("--listen-addr=127.0.0.1:{}", self.port))
            .arg("--debug-addr=-")
            .arg(format!("--state-dir={}/state", self.dir.display()))
            .arg("--telemetry=disable")
            .arg("--log-level=error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {}: {e} (run make stack-up)", binary.display())
            });
        self.child = Some(child);
        let uri = self.uri();
        eventually(Duration::from_secs(20), || async {
            let Ok(client) = mongodb::Client::with_uri_str(&uri).await else {
                return false;
            };
            client
                .database("admin")
                .run_command(mongodb::bson::doc! { "ping": 1 })
                .await
                .is_ok()
        })
        .await;
    }

    pub fn stop(&mut self) {
        stop(&mut self.child);
    }
}

impl Drop for PrivateFerretDb {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
