//! `pod-runner-echo`: a tiny HTTP server to run as a pod's container in tests and demos.
//!
//! At start it prints its arguments and its environment (one `arg=`/`env=` line each) to
//! stdout, then serves on `$POD_IP:$ECHO_PORT` (port 8093 by default): `/readyz` answers
//! 200 `ok`, `/info` the same lines as printed, `/file?PATH` the contents of a file (for
//! checking written volumes over the pod's address), `/proxy?HOST:PORT/PATH` what a GET of
//! `http://HOST:PORT/PATH` answered (for checking what a pod reaches: its `localhost`, this
//! machine). With `ECHO_EXIT_CODE` set it exits at once with that code instead (a crashing
//! container).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

/// A GET of `http://HOST:PORT/PATH` (`target` is `HOST:PORT/PATH`): the whole response.
fn fetch(target: &str) -> std::io::Result<String> {
    let (address, path) = target.split_once('/').unwrap_or((target, ""));
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET /{path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    stream.read_to_string(&mut out)?;
    Ok(out)
}

fn info() -> String {
    let mut out = String::new();
    for a in std::env::args().skip(1) {
        out.push_str(&format!("arg={a}\n"));
    }
    let mut env: Vec<(String, String)> = std::env::vars().collect();
    env.sort();
    for (k, v) in env {
        out.push_str(&format!("env={k}={v}\n"));
    }
    out
}

fn main() -> std::io::Result<()> {
    let info = info();
    print!("{info}");
    std::io::stdout().flush()?;
    if let Ok(code) = std::env::var("ECHO_EXIT_CODE") {
        std::process::exit(code.parse().unwrap_or(1));
    }
    let ip = std::env::var("POD_IP").unwrap_or_else(|_| "127.0.0.1".into());
    let port = std::env::var("ECHO_PORT").unwrap_or_else(|_| "8093".into());
    let listener = TcpListener::bind(format!("{ip}:{port}"))?;
    println!("listening on {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let mut line = String::new();
        if BufReader::new(&stream).read_line(&mut line).is_err() {
            continue;
        }
        let target = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
        let (status, body) = match target.split_once('?') {
            _ if target == "/readyz" => ("200 OK", "ok".to_owned()),
            _ if target == "/info" => ("200 OK", info.clone()),
            Some(("/file", path)) => match std::fs::read_to_string(path) {
                Ok(s) => ("200 OK", s),
                Err(e) => ("404 Not Found", e.to_string()),
            },
            Some(("/proxy", target)) => match fetch(target) {
                Ok(s) => ("200 OK", s),
                Err(e) => ("502 Bad Gateway", e.to_string()),
            },
            _ => ("404 Not Found", String::new()),
        };
        let _ = write!(
            stream,
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }
    Ok(())
}
