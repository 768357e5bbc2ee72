//! A minimal Redis client for the tests' own checks (the backplane under test uses the `redis`
//! crate; these speak RESP by hand so a test can see Redis as it is).

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

/// The Redis URL of the test services (`TENANTKIT_TEST_REDIS_URL`), or `None` (and a note;
/// with `CI=true`, a panic) when it is not set.
pub fn url() -> Option<String> {
    tenantkit_core::testing::required_service("TENANTKIT_TEST_REDIS_URL", "Redis")
}

/// A key prefix of its own for one test.
pub fn prefix() -> String {
    format!("tk-test:{}", uuid::Uuid::now_v7())
}

/// A reply, flattened: integers and strings as text, arrays as their items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`, a bulk string, an integer.
    Text(String),
    /// `$-1` / `*-1`.
    Nil,
    /// An array.
    Array(Vec<Reply>),
    /// `-ERR ...`.
    Error(String),
}

/// Runs one command on a new connection to `url` (`redis://127.0.0.1:port/...`).
///
/// # Panics
/// When Redis cannot be reached or answers nonsense.
pub async fn command(url: &str, args: &[&str]) -> Reply {
    let host = url
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .expect("a redis url");
    let stream = TcpStream::connect(host).await.expect("redis reachable");
    let mut stream = BufReader::new(stream);
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream
        .get_mut()
        .write_all(request.as_bytes())
        .await
        .expect("write");
    read(&mut stream).await
}

fn read(
    stream: &mut BufReader<TcpStream>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Reply> + Send + '_>> {
    Box::pin(async move {
        let mut line = String::new();
        stream.read_line(&mut line).await.expect("read");
        let line = line.trim_end();
        let (kind, rest) = line.split_at(1);
        match kind {
            "+" | ":" => Reply::Text(rest.to_owned()),
            "-" => Reply::Error(rest.to_owned()),
            "$" => {
                let len: i64 = rest.parse().expect("a length");
                if len < 0 {
                    return Reply::Nil;
                }
                let mut buf = vec![0; usize::try_from(len).expect("len") + 2];
                stream.read_exact(&mut buf).await.expect("read");
                buf.truncate(buf.len() - 2);
                Reply::Text(String::from_utf8(buf).expect("utf-8"))
            }
            "*" => {
                let len: i64 = rest.parse().expect("a length");
                if len < 0 {
                    return Reply::Nil;
                }
                let mut items = Vec::new();
                for _ in 0..len {
                    items.push(read(stream).await);
                }
                Reply::Array(items)
            }
            other => panic!("unexpected redis reply {other}{rest}"),
        }
    })
}
