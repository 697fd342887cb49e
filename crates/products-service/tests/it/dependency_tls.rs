//! TLS and credentials towards the dependencies, against real servers
//! started privately: Redis with TLS (`rediss://`) and `requirepass`, the
//! password read from a secret file; FerretDB (MongoDB protocol) with TLS.
//! Certificates come from `gen-cert` at test time. Readiness tells whether
//! the service got through; wrong credentials or an untrusted CA do not.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::common::{
    eventually, free_port,
    processes::ferretdb_binary,
    products::{create_product, product_body},
    spawn_app_with, test_settings, unique, TestApp,
};

/// Kills the child process when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    fn generate() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new(env!("CARGO_BIN_EXE_products-service"))
            .args(["gen-cert", "--out"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

async fn wait_for_port(port: u16) {
    eventually(Duration::from_secs(20), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;
}

async fn checks(app: &TestApp) -> serde_json::Value {
    let response = app.client.get(app.url("/ready")).send().await.unwrap();
    response.json::<serde_json::Value>().await.unwrap()["checks"].clone()
}

async fn eventually_check(app: &TestApp, dependency: &str, expected: &str) {
    eventually(Duration::from_secs(20), || async {
        checks(app).await[dependency] == expected
    })
    .await;
}

fn secret_file(dir: &Path, content: &str) -> PathBuf {
    let path = dir.join(unique("secret"));
    std::fs::write(&path, content).unwrap();
    path
}

#[tokio::test]
async fn redis_over_tls_with_a_password_file() {
    let certs = Certs::generate();
    let port = free_port();
    let password = "redis-test-password";
    let _redis = Server(
        Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", "0"])
            .args(["--tls-port", &port.to_string()])
            .arg("--tls-cert-file")
            .arg(certs.path("server.crt"))
            .arg("--tls-key-file")
            .arg(certs.path("server.key"))
            .args(["--tls-auth-clients", "no", "--requirepass", password])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH"),
    );
    wait_for_port(port).await;

    let settings = |password_file: PathBuf, ca: Option<PathBuf>| {
        let mut settings = test_settings();
        settings.redis.url = format!("rediss://127.0.0.1:{port}").into();
        settings.redis.tls_ca_file = ca;
        settings.redis.auth.password_file = Some(password_file);
        settings
    };
    let good = secret_file(certs.dir.path(), &format!("{password}\n"));
    let bad = secret_file(certs.dir.path(), "wrong");

    let app = spawn_app_with(settings(good.clone(), Some(certs.path("ca.crt")))).await;
    eventually_check(&app, "redis", "up").await;
    app.stop().await.unwrap();

    let wrong_password = spawn_app_with(settings(bad, Some(certs.path("ca.crt")))).await;
    assert_eq!(checks(&wrong_password).await["redis"], "down");
    wrong_password.stop().await.unwrap();

    // System roots only: the generated CA is not trusted.
    let untrusted = spawn_app_with(settings(good, None)).await;
    assert_eq!(checks(&untrusted).await["redis"], "down");
    untrusted.stop().await.unwrap();
}

#[tokio::test]
async fn mongodb_over_tls_trusting_the_ca_file() {
    let certs = Certs::generate();
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let _ferretdb = Server(
        Command::new(ferretdb_binary())
            .arg("--handler=sqlite")
            .arg(format!("--sqlite-url=file:{}/", data.path().display()))
            .arg(format!("--listen-addr=127.0.0.1:{}", free_port()))
            .arg(format!("--listen-tls=127.0.0.1:{port}"))
            .arg(format!(
                "--listen-tls-cert-file={}",
                certs.path("server.crt").display()
            ))
            .arg(format!(
                "--listen-tls-key-file={}",
                certs.path("server.key").display()
            ))
            .arg("--debug-addr=-")
            .arg(format!("--state-dir={}", data.path().display()))
            .arg("--telemetry=disable")
            .arg("--log-level=error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("FerretDB (run make stack-up)"),
    );
    wait_for_port(port).await;

    let settings = |ca: Option<PathBuf>| {
        let mut settings = test_settings();
        settings.mongo.uri = format!("mongodb://127.0.0.1:{port}").into();
        settings.mongo.tls.enabled = true;
        settings.mongo.tls.ca_file = ca;
        settings
    };
    let app = spawn_app_with(settings(Some(certs.path("ca.crt")))).await;
    eventually_check(&app, "mongodb", "up").await;
    // Writes and reads travel over the TLS connection.
    let created = create_product(&app, &product_body("Mongo tls mug")).await;
    assert_eq!(created["name"], "Mongo tls mug");
    app.stop().await.unwrap();

    let untrusted = spawn_app_with(settings(None)).await;
    assert_eq!(checks(&untrusted).await["mongodb"], "down");
    untrusted.stop().await.unwrap();
}
