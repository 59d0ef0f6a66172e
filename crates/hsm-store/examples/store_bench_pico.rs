//! `cargo xtask bench store`, second part: hsm-store on the virtual Pico HSM, through pcscd
//! and OpenSC's `opensc-pkcs11.so`, the path a real Pico HSM takes. A card answers in
//! microseconds here but in milliseconds over USB, so what matters is how many APDUs and
//! calls each operation costs: they are counted, per operation, with the store's index and
//! without it (a stateless client, as the Go operator was, must find and read objects on the
//! token for every list, read and sync). Calls are counted two ways: through the store's
//! `Token` trait, and as the module receives them, by OpenSC's pkcs11-spy in a second run of
//! this program (whose times are not reported: the spy logs every call).
//!
//! OpenSC shows at most 128 objects per token, so the card holds 20 secrets of 3 keys.

use hsm_store::layout::{APPLICATION, metadata_label, value_label};
use hsm_store::testing::Pkcs11Spy;
use hsm_store::token::{InstrumentedToken, Token};
use hsm_store::{
    MetadataChange, Module, Pkcs11Token, SecretData, SecretStore, SecretValue, Store, TokenSelector,
};
use std::sync::Arc;
use std::time::{Duration, Instant};
use virtual_pico::fixture::{OPENSC_MODULE, PicoFixture, USER_PIN};
use virtual_pico::vpcd::PICO_LATENCY;

const SECRETS: usize = 20;
const KEYS: usize = 3;
const VALUE_LEN: usize = 256;

fn data(secret: usize, round: usize) -> SecretData {
    (0..KEYS)
        .map(|k| {
            let seed = format!("{secret}-{k}-{round}-");
            let value: Vec<u8> = seed.bytes().cycle().take(VALUE_LEN).collect();
            (format!("key{k}"), SecretValue::new(value))
        })
        .collect()
}

/// One measured operation: calls, APDUs and wall time, per repetition.
struct Row {
    what: &'static str,
    /// Calls through the store's `Token` trait.
    calls: f64,
    /// Calls the module received (the spied run only).
    module_calls: Option<f64>,
    apdus: f64,
    time: Duration,
}

struct Bench {
    fixture: PicoFixture,
    token: Arc<InstrumentedToken<Pkcs11Token>>,
    rows: Vec<Row>,
    spy: Option<Pkcs11Spy>,
}

/// A logged-in connection to the card, counting its PKCS#11 calls.
fn connect(module: &Module) -> Arc<InstrumentedToken<Pkcs11Token>> {
    Arc::new(InstrumentedToken::new(
        Pkcs11Token::open(module, &TokenSelector::First, &USER_PIN.into()).expect("open"),
    ))
}

impl Bench {
    /// Runs `op` for every `i` in `0..n` and records the averages under `what`.
    fn measure(&mut self, what: &'static str, n: usize, mut op: impl FnMut(usize)) {
        let (calls, apdus) = (self.token.counts(), self.fixture.card.apdu_count());
        let module_calls = self.spy.as_ref().map(Pkcs11Spy::count);
        let started = Instant::now();
        for i in 0..n {
            op(i);
        }
        let time = started.elapsed() / n as u32;
        self.rows.push(Row {
            what,
            calls: self.token.counts().since(&calls).total() as f64 / n as f64,
            module_calls: module_calls
                .zip(self.spy.as_ref())
                .map(|(before, spy)| (spy.count() - before) as f64 / n as f64),
            apdus: (self.fixture.card.apdu_count() - apdus) as f64 / n as f64,
            time,
        });
    }
}

/// A read without the index: find each of the secret's objects by label, then read it.
fn read_without_index(token: &dyn Token, secret: usize) -> usize {
    let name = format!("s{secret}");
    let labels = (0..KEYS)
        .map(|k| value_label(&name, &format!("key{k}")))
        .chain([metadata_label(&name)]);
    let mut bytes = 0;
    for label in labels {
        for handle in token.find(APPLICATION, Some(&label)).expect("find") {
            bytes += token.read(handle).expect("read").value.len();
        }
    }
    bytes
}

fn main() {
    let spied = hsm_store::testing::is_spied_run();
    let fixture = PicoFixture::start().expect("the virtual card (pcscd, vpcd, OpenSC)");
    let spy = spied.then(|| Pkcs11Spy::in_front_of(OPENSC_MODULE));
    let module = Module::load(spy.as_ref().map_or(OPENSC_MODULE, Pkcs11Spy::module))
        .expect("OpenSC's module");
    let token = connect(&module);
    let store = Store::open(token.clone()).expect("store");
    let mut bench = Bench {
        fixture,
        token: token.clone(),
        rows: Vec::new(),
        spy,
    };

    bench.measure("write, new secret", SECRETS, |i| {
        store
            .write(&format!("s{i}"), &data(i, 0), MetadataChange::Keep)
            .expect("write");
    });
    bench.measure("write, all keys change", SECRETS, |i| {
        store
            .write(&format!("s{i}"), &data(i, 1), MetadataChange::Keep)
            .expect("overwrite");
    });
    bench.measure("write, nothing changes", SECRETS, |i| {
        store
            .write(&format!("s{i}"), &data(i, 1), MetadataChange::Keep)
            .expect("same write");
    });

    // OpenSC serves values it wrote itself from memory. Pull the card and plug it back in,
    // so that OpenSC forgets it and reads it again, as after a restart or a replug.
    drop(store);
    drop(token);
    let card = bench.fixture.card.card();
    bench.fixture.replug(card).expect("replug");
    let apdus = bench.fixture.card.apdu_count();
    let module_calls = bench.spy.as_ref().map(Pkcs11Spy::count);
    let started = Instant::now();
    let token = connect(&module);
    let store = Store::open(token.clone()).expect("store");
    bench.rows.push(Row {
        what: "open after a replug (bind, login, scan)",
        calls: token.counts().total() as f64,
        module_calls: module_calls
            .zip(bench.spy.as_ref())
            .map(|(before, spy)| (spy.count() - before) as f64),
        apdus: (bench.fixture.card.apdu_count() - apdus) as f64,
        time: started.elapsed(),
    });
    bench.token = token.clone();
    bench.measure("read (index)", SECRETS, |i| {
        std::hint::black_box(store.read(&format!("s{i}")).expect("read"));
    });
    // Without the index, a read and a no-change sync are the same work: the values are
    // needed to compare them.
    bench.measure(
        "read or no-change sync (no index: find + read)",
        SECRETS,
        |i| {
            std::hint::black_box(read_without_index(token.as_ref(), i));
        },
    );
    bench.measure("no-change sync (index checksum)", SECRETS, |i| {
        std::hint::black_box(store.checksum(&format!("s{i}")).expect("checksum"));
    });
    bench.measure("list all (index)", 100, |_| {
        assert_eq!(std::hint::black_box(store.list("")).len(), SECRETS);
    });
    bench.measure("list all (no index: full token scan)", 3, |_| {
        std::hint::black_box(store.rescan().expect("rescan"));
    });

    if spied {
        println!(
            "Calls per operation on the virtual Pico HSM, counted two ways (a second run with \
             OpenSC's pkcs11-spy in front of opensc-pkcs11.so)"
        );
        println!();
        println!(
            "| operation | Token-trait calls (store's count) | PKCS#11 module calls (pkcs11-spy) |"
        );
        println!("|---|---:|---:|");
        for r in &bench.rows {
            println!(
                "| {} | {:.1} | {:.1} |",
                r.what,
                r.calls,
                r.module_calls.unwrap_or(f64::NAN)
            );
        }
        return;
    }
    println!(
        "hsm-store on the virtual Pico HSM (pcscd + vpcd + opensc-pkcs11.so): {SECRETS} secrets of {KEYS} keys x {VALUE_LEN} B"
    );
    println!();
    println!(
        "| operation | Token-trait calls | APDUs | time (emulator) | time at {} ms per APDU (estimate) |",
        PICO_LATENCY.as_millis()
    );
    println!("|---|---:|---:|---:|---:|");
    for r in &bench.rows {
        let at_usb = r.time + PICO_LATENCY.mul_f64(r.apdus);
        println!(
            "| {} | {:.1} | {:.1} | {:.2} ms | {:.0} ms |",
            r.what,
            r.calls,
            r.apdus,
            r.time.as_secs_f64() * 1e3,
            at_usb.as_secs_f64() * 1e3
        );
    }
    drop(store);
    drop(token);
    drop(bench);
    println!();
    print!("{}", hsm_store::testing::rerun_spied());
}
