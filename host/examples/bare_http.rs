//! The floor for the HTTP benchmarks (`bench/http.sh`): an axum server on the same stack as
//! BillStack Keys (tokio multi-thread runtime, axum 0.8, hyper) whose only handler answers
//! `200 ok` to any method and path. It doubles as the trivial upstream for the proxy figures.
//!
//! `cargo run --release -p billstack-host --example bare_http -- 127.0.0.1:0` prints
//! `listening on http://ADDR` once it accepts connections.

use axum::Router;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_string());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let app = Router::new().fallback(|| async { "ok" });
    axum::serve(listener, app).await
}
