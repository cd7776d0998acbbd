//! Order files as the web shop writes them, for tests and benches.

/// A realistic order body of roughly `size` bytes, unique to `n`.
pub fn order(n: usize, size: usize) -> Vec<u8> {
    let mut lines = String::new();
    let mut i = 0;
    while lines.len() + 200 < size {
        lines.push_str(&format!(
            r#"{{"sku": "LF-{n:06}-{i:03}", "description": "Pendant light, brushed brass, E27", "qty": {q}, "unit_price": "{p}.90"}},"#,
            q = 1 + (n + i) % 7,
            p = 20 + (n * 7 + i) % 300
        ));
        i += 1;
    }
    lines.pop();
    format!(
        r#"{{"schema": "plutus.webshop.order/v2", "order_id": "2026-{n:06}", "customer": {{"name": "Kunde {n}", "email": "k{n}@example.com"}}, "lines": [{lines}]}}"#
    )
    .into_bytes()
}

/// `n` orders named `order-2026-000000.json` and up, 1-10 KB each, the sizes drawn
/// from `seed`: the same files on every run with the same seed.
pub fn seeded(n: usize, seed: u64) -> Vec<(String, Vec<u8>)> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n)
        .map(|i| {
            (
                format!("order-2026-{i:06}.json"),
                order(i, 1000 + rng.usize(0..9000)),
            )
        })
        .collect()
}
