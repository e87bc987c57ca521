//! Format benchmarks: reading a journal segment and decoding a large catalog, each beside the cost of just hashing
//! the same bytes with BLAKE3 (the floor, since every byte is checked).
//!
//! Run: `cargo bench --bench format`.

// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use backset::format::{self, meta, AtomState, Catalog, CatalogEntry, SegmentHeader, SegmentWriter};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use uuid::Uuid;

fn segment(records: u64, payload: usize) -> Vec<u8> {
    let header = SegmentHeader { database_id: Uuid::nil(), archive_id: 0, segment: 1, first_txn: 1 };
    let mut w = SegmentWriter::create(Vec::new(), header).unwrap();
    let body = vec![0xa5u8; payload];
    for txn in 1..=records {
        w.append(txn, txn, &body).unwrap();
    }
    w.into_inner()
}

fn journal(c: &mut Criterion) {
    let mut g = c.benchmark_group("journal/read");
    for payload in [100usize, 4096] {
        let bytes = segment((64 << 20) / (payload as u64 + 32), payload);
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function(format!("records-{payload}B"), |b| {
            b.iter(|| {
                let (_, reader) = format::read_segment(&bytes).unwrap();
                reader.map(|r| r.unwrap().payload.len()).sum::<usize>()
            })
        });
        g.bench_function(format!("blake3-baseline-{payload}B"), |b| b.iter(|| blake3::hash(&bytes)));
    }
    g.finish();
}

fn catalog(c: &mut Criterion) {
    let catalog = Catalog {
        element_id: Uuid::nil(),
        atoms: (0..1_000_000u64)
            .map(|i| CatalogEntry { atom_id: i, lsn: i * 3, state: AtomState::Present { hash: [i as u8; 32] } })
            .collect(),
    };
    let bytes = meta::encode(&catalog).unwrap();
    let mut g = c.benchmark_group("metadata/catalog-1M");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("decode", |b| b.iter(|| meta::decode::<Catalog>(&bytes).unwrap().atoms.len()));
    g.bench_function("encode", |b| b.iter_batched(|| &catalog, |c| meta::encode(c).unwrap(), BatchSize::SmallInput));
    g.bench_function("blake3-baseline", |b| b.iter(|| blake3::hash(&bytes)));
    g.finish();
}

criterion_group!(benches, journal, catalog);
criterion_main!(benches);
