//! Fills a data directory with N keys for footprint benchmarks (`bench/startup.sh`):
//! `cargo run --release -p billstack-keystore --example bulk_keys -- DATA_DIR/db-parent N`.
//!
//! Writes are flushed once at the end, not per key (`StoreOptions::durable_writes = false`),
//! which is only acceptable because a crash here loses nothing anyone was promised.

use billstack_keystore::storage::*;
use billstack_keystore::{NewApiKey, Store, StoreOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(n)) = (args.next(), args.next()) else {
        return Err("usage: bulk_keys STORE_DIR N".into());
    };
    let n: usize = n.parse()?;
    let store = Store::open_with(
        &dir,
        &StoreOptions {
            durable_writes: false,
            ..StoreOptions::default()
        },
    )?;
    if store.get_team("team_bulk")?.is_none() {
        store.create_team(Some("team_bulk"), "Bulk", "bulk_keys".into())?;
    }
    for i in 0..n {
        store.create_key(
            &NewApiKey {
                scopes: vec!["customers:read".into()],
                ..NewApiKey::new("team_bulk", format!("bulk {i}"))
            },
            "test".into(),
        )?;
    }
    store.flush()?;
    println!("{n} keys written to {dir}");
    Ok(())
}
