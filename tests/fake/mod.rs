//! A scripted HTTP server for the answers no real server gives on purpose: redirects,
//! keys echoed back, streams without line breaks, pages that are not event streams,
//! silence. It binds port 0, serves each connection on its own thread, records every
//! request it reads (head and body), and answers with whatever the test's handler returns.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// What the handler answers.
pub enum Reply {
    /// These bytes (a whole HTTP response), then the connection closes.
    Raw(Vec<u8>),
    /// A 200 with `content-type`, and this body.
    Ok(&'static str, String),
    /// A status line and headers, then `piece` again and again until the client hangs up.
    Endless { status: &'static str, content_type: &'static str, piece: Vec<u8> },
    /// Nothing at all, until the client hangs up.
    Silence,
    /// A 200 with `content-type`, then `piece` every 100 ms, never ending: a body
    /// that outlasts any timeout.
    Drip(&'static str, Vec<u8>),
}

/// One request as read: the request line and headers, and its body.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub head: String,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then_some(v.trim())
        })
    }
}

pub struct FakeServer {
    pub base: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeServer {
    pub fn start(handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (handler, log) = (Arc::new(handler), seen.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (handler, log) = (handler.clone(), log.clone());
                std::thread::spawn(move || serve(stream, &*handler, &log));
            }
        });
        FakeServer { base, seen }
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn serve(stream: TcpStream, handler: &(dyn Fn(&Seen) -> Reply + Send + Sync), log: &Mutex<Vec<Seen>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut seen = Seen { path, head, body: Vec::new() };
    let length: usize = seen.header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    seen.body = body;
    log.lock().unwrap().push(seen.clone());
    let mut out = stream;
    let _ = match handler(&seen) {
        Reply::Raw(bytes) => out.write_all(&bytes),
        Reply::Ok(content_type, body) => out.write_all(
            format!("HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len())
                .as_bytes(),
        ),
        Reply::Endless { status, content_type, piece } => {
            let _ = out.write_all(format!("HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\nconnection: close\r\n\r\n").as_bytes());
            while out.write_all(&piece).is_ok() {}
            Ok(())
        }
        Reply::Drip(content_type, piece) => {
            let _ = out.write_all(format!("HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\nconnection: close\r\n\r\n").as_bytes());
            while out.write_all(&piece).and_then(|_| out.flush()).is_ok() {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Ok(())
        }
        Reply::Silence => {
            // Until the client gives up and closes: a read then returns 0 or fails.
            let _ = reader.read(&mut [0u8; 1]);
            Ok(())
        }
    };
}

/// A whole response: status line, headers, body.
pub fn response(status: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut text = format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n", body.len());
    for (k, v) in headers {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    text.push_str("\r\n");
    text.push_str(body);
    Reply::Raw(text.into_bytes())
}

/// `/v1/models` listing `model`, as any OpenAI-compatible server answers it.
pub fn models(model: &str) -> Reply {
    Reply::Ok("application/json", format!(r#"{{"object":"list","data":[{{"id":"{model}","object":"model"}}]}}"#))
}
