//! A moto S3 server (PyPI `moto[server]`, installed by `make test-tools`) for the e2e tests
//! that run on `s3://` storage: on a free loopback port, with bucket `dp-e2e`, killed when
//! dropped.

use std::io::{Read, Write};
use std::time::Duration;

use crate::wait_until;

pub struct Moto {
    pub port: u16,
    child: std::process::Child,
}

impl Moto {
    /// Starts moto and creates bucket `dp-e2e`; panics naming `make test-tools` if it
    /// cannot.
    pub fn start() -> Self {
        let port = crate::free_port();
        let child = std::process::Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 (moto runs under it): run `make test-tools`");
        let m = Self { port, child };
        let up = wait_until(Duration::from_secs(30), || {
            m.http("PUT", "/dp-e2e")
                .is_ok_and(|r| r.starts_with("HTTP/1.1 200"))
        });
        assert!(
            up,
            "moto did not start: run `make test-tools` (pip install 'moto[server]')"
        );
        m
    }

    /// `http://127.0.0.1:<port>`, for `storage.s3.endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// One plain HTTP request (moto accepts unsigned requests); the whole reply.
    pub fn http(&self, method: &str, path: &str) -> std::io::Result<String> {
        let port = self.port;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        let mut reply = String::new();
        s.read_to_string(&mut reply)?;
        Ok(reply)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
