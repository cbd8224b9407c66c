//! Micro-benchmarks of the crypto the filesystem does per operation, on one
//! core, through the same public functions the filesystem uses:
//!
//! - `block/encrypt`, `block/decrypt`: one content block (BLOCK_SIZE = 4096
//!   plaintext bytes) sealed in place/opened with
//!   `Cipher::seal_detached`/`open_detached` under the content-block AAD
//!   (`format::aad::block`), its header in an entry half
//!   (`format::block::Half::put`/`halves`), as in
//!   `vault/workspace/content.rs`. Throughput is in plaintext bytes.
//!   `scripts/bench.sh` reads these two results as the single-core crypto
//!   ceiling (`target/criterion/block/{encrypt,decrypt}/new/estimates.json`).
//! - `name/encrypt`: a new directory entry: name index HMAC
//!   (`subkeys::name_index` under `aad::name_scope`) plus the sealed name
//!   (`EpochKeys::name.seal` under `aad::dirent_name`), as `new_dirent` in
//!   `vault/workspace/tree.rs`.
//! - `name/lookup`: `CircleKeys::name_indexes` (one HMAC per held epoch; one
//!   epoch here) plus opening the stored name, as `find` in tree.rs.
//! - `name/index_hmac`: the index HMAC alone.
//! - `key/unwrap`: X25519 sealed box `KeyPair::unwrap_key` of a circle key
//!   (`aad::circle_key`), and `key/unwrap_circle` = that plus deriving the
//!   epoch's subkeys (`EpochKeys::new`), as `CircleKeys::unwrap` per epoch.
//! - `kdf/argon2id_default`: `derive_kek` at `KdfParams::DEFAULT`
//!   (m = 64 MiB, t = 3, p = 4), the cost of one unlock; sample size 10.
//!   (`kdf/argon2id_fast` = the `--kdf fast` profile, for reference.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use circlefs::crypto::aead::{Cipher, Nonces};
use circlefs::crypto::kdf::{KdfParams, SALT_LEN, derive_kek};
use circlefs::crypto::subkeys::name_index;
use circlefs::crypto::wrap::{KeyPair, wrap_to};
use circlefs::crypto::{Key32, Passphrase};
use circlefs::format::aad;
use circlefs::format::block::{BLOCK_SIZE, ENTRY, HALF, Half, halves};
use circlefs::ids::{AccountId, BlockIndex, CircleId, ContentId, Epoch, InodeId, KeyGen};
use circlefs::vault::keys::{CircleKeys, EpochKeys};

const CIRCLE: CircleId = CircleId(3);
const PARENT: InodeId = InodeId(42);
const EPOCH: Epoch = Epoch(1);
const GEN: KeyGen = KeyGen(1);
const ACCOUNT: AccountId = AccountId(2);
const NAME: &[u8] = b"some_source_file_name.rs";

fn block(c: &mut Criterion) {
    let key = Key32::random().unwrap();
    let cipher = Cipher::new(&key);
    let content = ContentId([7u8; 16]);
    let pt: Vec<u8> = (0..BLOCK_SIZE).map(|i| (i % 251) as u8).collect();
    let mut page = pt.clone();
    let mut entry = [0u8; ENTRY];

    let mut g = c.benchmark_group("block");
    g.throughput(Throughput::Bytes(BLOCK_SIZE as u64));
    g.bench_function("encrypt", |b| {
        b.iter(|| {
            page.copy_from_slice(black_box(&pt));
            let (nonce, tag) = cipher
                .seal_detached(
                    &mut Nonces::fresh(1).unwrap(),
                    &aad::block(CIRCLE, &content, GEN, BlockIndex(black_box(5))),
                    &mut page,
                )
                .unwrap();
            Half {
                keygen: GEN,
                nonce,
                tag,
            }
            .put(&mut entry[..HALF]);
        })
    });

    let mut out = vec![0u8; BLOCK_SIZE];
    g.bench_function("decrypt", |b| {
        b.iter(|| {
            let [Some(h), _] = halves(black_box(&entry)) else {
                panic!("no header")
            };
            cipher
                .open_detached(
                    &aad::block(CIRCLE, &content, h.keygen, BlockIndex(black_box(5))),
                    &h.nonce,
                    &h.tag,
                    &page,
                    &mut out,
                    "content block",
                )
                .unwrap();
        })
    });
    g.finish();
    assert_eq!(out, pt);
}

fn names(c: &mut Criterion) {
    let ck = Key32::random().unwrap();
    let ek = EpochKeys::new(ck.clone()).unwrap();
    let mut epochs = std::collections::BTreeMap::new();
    epochs.insert(EPOCH, EpochKeys::new(ck).unwrap());
    let keys = CircleKeys {
        circle: CIRCLE,
        current: EPOCH,
        epochs,
    };
    let scope = aad::name_scope(CIRCLE, PARENT);
    let stored_ct = ek
        .name
        .seal(&aad::dirent_name(CIRCLE, PARENT, EPOCH), NAME)
        .unwrap();

    let mut g = c.benchmark_group("name");
    g.bench_function("encrypt", |b| {
        b.iter(|| {
            let idx =
                name_index(&ek.index, &aad::name_scope(CIRCLE, PARENT), black_box(NAME)).unwrap();
            let ct = ek
                .name
                .seal(&aad::dirent_name(CIRCLE, PARENT, EPOCH), black_box(NAME))
                .unwrap();
            (idx, ct)
        })
    });
    g.bench_function("lookup", |b| {
        b.iter(|| {
            let idx = keys.name_indexes(PARENT, black_box(NAME)).unwrap();
            let k = keys.epoch(idx[0].0).unwrap();
            let nm = k
                .name
                .open(
                    &aad::dirent_name(CIRCLE, PARENT, EPOCH),
                    black_box(&stored_ct),
                    "file name",
                )
                .unwrap();
            assert_eq!(nm, NAME);
            idx
        })
    });
    g.bench_function("index_hmac", |b| {
        b.iter(|| name_index(&ek.index, &scope, black_box(NAME)).unwrap())
    });
    g.finish();
}

fn key_unwrap(c: &mut Criterion) {
    let kp = KeyPair::generate().unwrap();
    let ck = Key32::random().unwrap();
    let ctx = aad::circle_key(CIRCLE, EPOCH, ACCOUNT);
    let wrapped = wrap_to(&kp.public, &ctx, &ck).unwrap();

    let mut g = c.benchmark_group("key");
    g.bench_function("unwrap", |b| {
        b.iter(|| kp.unwrap_key(&ctx, black_box(&wrapped)).unwrap())
    });
    g.bench_function("unwrap_circle", |b| {
        b.iter(|| {
            let k = kp.unwrap_key(&ctx, black_box(&wrapped)).unwrap();
            EpochKeys::new(k).unwrap()
        })
    });
    g.finish();
}

fn kdf(c: &mut Criterion) {
    let pass = Passphrase::new(b"correct horse battery staple".to_vec());
    let salt = [9u8; SALT_LEN];
    let mut g = c.benchmark_group("kdf");
    g.sample_size(10);
    g.bench_function("argon2id_default", |b| {
        b.iter(|| derive_kek(&pass, black_box(&salt), KdfParams::DEFAULT).unwrap())
    });
    g.bench_function("argon2id_fast", |b| {
        b.iter(|| derive_kek(&pass, black_box(&salt), KdfParams::FLOOR).unwrap())
    });
    g.finish();
}

criterion_group!(benches, block, names, key_unwrap, kdf);
criterion_main!(benches);
