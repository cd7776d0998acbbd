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
