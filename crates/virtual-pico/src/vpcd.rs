//! The card in a reader: connects to pcscd's `vpcd` reader driver as a TCP client and answers
//! it. Every message both ways is a 2-byte big-endian length and a payload; a 1-byte payload
//! from vpcd is a control code (0 power off, 1 power on, 2 reset, 4 ATR), anything longer a
//! command APDU, answered with data and status word.
//!
//! Test controls: remove and insert (close and reopen the connection, as pulling and plugging
//! a USB card), a latency per APDU, an APDU counter and a log without data bytes, and a fault
//! that drops the card after N APDUs. The card's state can be saved to a file after every
//! command that changes it, so a stopped emulator plugs the same card in again.

use crate::card::{ATR, Card};
use crate::saved::SavedError;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// About what a USB Pico HSM takes per APDU round trip.
pub const PICO_LATENCY: Duration = Duration::from_millis(8);

/// One logged APDU: the header and lengths, never the data (which may hold a PIN or a
/// secret value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedApdu {
    /// CLA, INS, P1, P2.
    pub header: [u8; 4],
    /// Bytes of command data.
    pub data_len: usize,
    /// Bytes of response data.
    pub response_len: usize,
    /// The status word.
    pub sw: u16,
}

struct Shared {
    card: Mutex<Card>,
    inserted: AtomicBool,
    stop: AtomicBool,
    latency_us: AtomicU64,
    apdus: AtomicU64,
    /// 0: never; else the card drops out after this many more APDUs.
    drop_at: AtomicU64,
    /// How the APDU at `drop_at` ends (see [`DropMode`]).
    drop_mode: Mutex<DropMode>,
    log: Mutex<Vec<LoggedApdu>>,
    connected: AtomicBool,
    /// pcscd has powered the card up since it connected: it has recognised the card.
    recognised: AtomicBool,
    /// pcscd has polled the reader since the card was pulled and found it empty.
    absence_noticed: AtomicBool,
    saved: Mutex<Option<Saved>>,
}

/// Where the card is saved, and what was saved last (to skip writes that change nothing).
struct Saved {
    path: PathBuf,
    last: zeroize::Zeroizing<Vec<u8>>,
}

/// How the card drops out at the APDU [`VirtualCard::drop_after`] and its kin name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DropMode {
    /// The card answers that APDU, then is gone.
    AfterAnswer,
    /// The card applies that APDU, then is gone before answering: the command took effect
    /// but the host never hears so.
    AnswerLost,
    /// Power fails inside that APDU: an UPDATE BINARY writes only the first half of its
    /// data (other commands are all or nothing, and do not happen); nothing is answered.
    Torn,
}

/// SW 6581: memory failure (the card could not write its flash).
const MEMORY_FAILURE: [u8; 2] = [0x65, 0x81];

/// Instructions that may change what the card keeps: VERIFY (counters), CHANGE REFERENCE
/// DATA, RESET RETRY COUNTER, INITIALIZE DEVICE, UPDATE BINARY, DELETE FILE.
fn may_change_flash(ins: u8) -> bool {
    matches!(ins, 0x20 | 0x24 | 0x2C | 0x50 | 0xD7 | 0xE4)
}

/// A card plugged into a vpcd reader, served by a background thread.
pub struct VirtualCard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for VirtualCard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtualCard")
            .field("inserted", &self.shared.inserted.load(Ordering::SeqCst))
            .field("apdus", &self.apdu_count())
            .finish()
    }
}

impl VirtualCard {
    /// Plugs `card` into the vpcd reader listening on `127.0.0.1:port`. The card keeps
    /// trying to connect until the reader is there.
    pub fn start(port: u16, card: Card) -> VirtualCard {
        VirtualCard::start_with(loopback(port), card, None)
    }

    /// Plugs `card` into the vpcd reader listening at `reader` (vpcd listens on every
    /// address of its machine: a pcscd in a container or another network namespace is
    /// reached at that namespace's address).
    pub fn start_at(reader: SocketAddr, card: Card) -> VirtualCard {
        VirtualCard::start_with(reader, card, None)
    }

    /// Plugs in the card saved at `path`, or a blank card named `serial` if there is no such
    /// file yet, and saves the card there after every command that changes it.
    pub fn start_saved(port: u16, path: &Path, serial: &str) -> Result<VirtualCard, SavedError> {
        VirtualCard::start_saved_at(loopback(port), path, serial)
    }

    /// As [`VirtualCard::start_saved`], into the vpcd reader listening at `reader`.
    pub fn start_saved_at(
        reader: SocketAddr,
        path: &Path,
        serial: &str,
    ) -> Result<VirtualCard, SavedError> {
        let card = if path.exists() {
            Card::load(path)?
        } else {
            let card = Card::new(serial);
            card.save(path)?;
            card
        };
        let saved = Saved {
            path: path.to_owned(),
            last: card.to_bytes(),
        };
        Ok(VirtualCard::start_with(reader, card, Some(saved)))
    }

    fn start_with(reader: SocketAddr, card: Card, saved: Option<Saved>) -> VirtualCard {
        let shared = Arc::new(Shared {
            card: Mutex::new(card),
            inserted: AtomicBool::new(true),
            stop: AtomicBool::new(false),
            latency_us: AtomicU64::new(0),
            apdus: AtomicU64::new(0),
            drop_at: AtomicU64::new(0),
            drop_mode: Mutex::new(DropMode::AfterAnswer),
            log: Mutex::new(Vec::new()),
            connected: AtomicBool::new(false),
            recognised: AtomicBool::new(false),
            absence_noticed: AtomicBool::new(false),
            saved: Mutex::new(saved),
        });
        let thread = {
            let shared = shared.clone();
            std::thread::spawn(move || run(reader, &shared))
        };
        VirtualCard {
            shared,
            thread: Some(thread),
        }
    }

    /// Pulls the card out: the connection closes, the reader reports the card gone.
    pub fn remove(&self) {
        self.shared.inserted.store(false, Ordering::SeqCst);
    }

    /// Plugs it back in (the same card: files and PINs as they were).
    pub fn insert(&self) {
        self.shared.inserted.store(true, Ordering::SeqCst);
    }

    /// Whether the reader has the card right now.
    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::SeqCst)
    }

    /// Whether pcscd has recognised the card since it was plugged in (it powers a new card
    /// up to read its ATR): from then on its clients see the card. A connection alone may
    /// still wait for pcscd's next poll. Stays true while the card is in, also after pcscd
    /// powers an idle card down.
    pub fn is_recognised(&self) -> bool {
        self.is_connected() && self.shared.recognised.load(Ordering::SeqCst)
    }

    /// Whether the card is out and pcscd has noticed: it polled the reader and found it
    /// empty, so whatever is plugged in next is a new card to it.
    pub fn is_removal_noticed(&self) -> bool {
        !self.is_connected() && self.shared.absence_noticed.load(Ordering::SeqCst)
    }

    /// Waits until the reader has the card, up to `timeout`.
    pub fn wait_connected(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while !self.is_connected() {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }

    /// Delay before each APDU's answer ([`PICO_LATENCY`] resembles a USB Pico HSM).
    pub fn set_latency(&self, latency: Duration) {
        self.shared
            .latency_us
            .store(latency.as_micros() as u64, Ordering::SeqCst);
    }

    /// The card drops out (as if unplugged) after answering `n` more APDUs.
    pub fn drop_after(&self, n: u64) {
        self.drop_at(n, DropMode::AfterAnswer);
    }

    /// The card applies `n` more APDUs and drops out before answering the last: a command
    /// that took effect, whose answer is lost.
    pub fn lose_answer_after(&self, n: u64) {
        self.drop_at(n, DropMode::AnswerLost);
    }

    /// The card answers `n - 1` more APDUs and loses power inside the `n`-th: an UPDATE
    /// BINARY is half written ([`Card::process_torn`]), any other command does not happen.
    pub fn tear_at(&self, n: u64) {
        self.drop_at(n, DropMode::Torn);
    }

    fn drop_at(&self, n: u64, mode: DropMode) {
        *self.shared.drop_mode.lock().expect("drop mode") = mode;
        let now = self.shared.apdus.load(Ordering::SeqCst);
        self.shared.drop_at.store(now + n, Ordering::SeqCst);
    }

    /// APDUs answered so far.
    pub fn apdu_count(&self) -> u64 {
        self.shared.apdus.load(Ordering::SeqCst)
    }

    /// Every APDU so far, without data bytes.
    pub fn apdu_log(&self) -> Vec<LoggedApdu> {
        self.shared.log.lock().expect("log").clone()
    }

    /// A copy of the card as it is now (to check its state, or plug it in elsewhere).
    pub fn card(&self) -> Card {
        self.shared.card.lock().expect("card").clone()
    }

    /// Replaces the card's whole state (best done while it is removed: a reader that has the
    /// card sees its files change underneath). Saved too, when the card is saved to a file.
    pub fn set_card(&self, card: Card) -> Result<(), SavedError> {
        let mut current = self.shared.card.lock().expect("card");
        *current = card;
        current.reset();
        persist(&current, &self.shared)
    }
}

impl Drop for VirtualCard {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The vpcd reader on this machine's loopback address.
fn loopback(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

fn run(reader: SocketAddr, shared: &Shared) {
    while !shared.stop.load(Ordering::SeqCst) {
        let inserted = shared.inserted.load(Ordering::SeqCst);
        if !inserted && shared.absence_noticed.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        let Ok(stream) = TcpStream::connect_timeout(&reader, Duration::from_secs(1)) else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        if !inserted {
            refuse_presence_poll(stream, shared);
            continue;
        }
        shared.card.lock().expect("card").reset();
        shared.recognised.store(false, Ordering::SeqCst);
        shared.absence_noticed.store(false, Ordering::SeqCst);
        shared.connected.store(true, Ordering::SeqCst);
        serve(stream, shared);
        shared.connected.store(false, Ordering::SeqCst);
    }
}

/// A pulled card lets vpcd accept it only to hang up on its next presence poll (an ATR
/// request), so pcscd records the reader empty. vpcd learns of a pulled card only when it
/// next talks to it: a card plugged back in before pcscd's next poll would otherwise look as
/// if it had never left, and pcscd would not power it up again.
fn refuse_presence_poll(mut stream: TcpStream, shared: &Shared) {
    let _ = stream.set_read_timeout(Some(IDLE_POLL));
    while !shared.stop.load(Ordering::SeqCst) && !shared.inserted.load(Ordering::SeqCst) {
        match read_frame(&mut stream) {
            Frame::Idle => continue,
            Frame::Closed => return,
            Frame::Message(message) => {
                if message == [4] {
                    shared.absence_noticed.store(true, Ordering::SeqCst);
                }
                // Hanging up (dropping the stream) fails whatever vpcd asked.
                return;
            }
        }
    }
}

/// How long a read waits for vpcd before the card looks at its controls again.
const IDLE_POLL: Duration = Duration::from_millis(50);

/// What one read from vpcd gave.
enum Frame {
    /// Nothing within [`IDLE_POLL`].
    Idle,
    /// The connection is gone, or a message stopped half-way.
    Closed,
    /// A control byte or a command APDU.
    Message(Vec<u8>),
}

/// Reads one length-prefixed vpcd message from a stream whose read timeout is
/// [`IDLE_POLL`].
fn read_frame(stream: &mut TcpStream) -> Frame {
    let mut length = [0u8; 2];
    match stream.read_exact(&mut length) {
        Ok(()) => {}
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            return Frame::Idle;
        }
        Err(_) => return Frame::Closed,
    }
    // vpcd sends length and body in two writes and, under Nagle, holds the body until the
    // length is acknowledged: acknowledge it now, not after the ~40 ms delayed ACK. Quick
    // ACK is not sticky, so it is set again after every read.
    quick_ack(stream);
    let mut message = vec![0u8; u16::from_be_bytes(length) as usize];
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let read = stream.read_exact(&mut message);
    let _ = stream.set_read_timeout(Some(IDLE_POLL));
    quick_ack(stream);
    match read {
        Ok(()) => Frame::Message(message),
        Err(_) => Frame::Closed,
    }
}

/// Answers the reader until the card is removed, dropped, stopped or the reader goes away.
fn serve(mut stream: TcpStream, shared: &Shared) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(IDLE_POLL));
    loop {
        if shared.stop.load(Ordering::SeqCst) || !shared.inserted.load(Ordering::SeqCst) {
            return;
        }
        let message = match read_frame(&mut stream) {
            Frame::Idle => continue,
            Frame::Closed => return,
            Frame::Message(message) => message,
        };
        let reply = match message.as_slice() {
            [command @ 0..=2] => {
                shared.card.lock().expect("card").reset();
                // 0 powers off; 1 powers on, 2 resets.
                if *command != 0 {
                    shared.recognised.store(true, Ordering::SeqCst);
                }
                None
            }
            [4] => Some(ATR.to_vec()),
            [] | [_] => None,
            apdu => {
                let drop_at = shared.drop_at.load(Ordering::SeqCst);
                let last = drop_at != 0 && shared.apdus.load(Ordering::SeqCst) + 1 >= drop_at;
                match *shared.drop_mode.lock().expect("drop mode") {
                    DropMode::AnswerLost if last => {
                        answer(apdu, shared);
                        return pulled(shared);
                    }
                    DropMode::Torn if last => {
                        tear(apdu, shared);
                        return pulled(shared);
                    }
                    _ => Some(answer(apdu, shared)),
                }
            }
        };
        if let Some(reply) = reply {
            let mut frame = (reply.len() as u16).to_be_bytes().to_vec();
            frame.extend(reply);
            if stream.write_all(&frame).is_err() {
                return;
            }
        }
        let drop_at = shared.drop_at.load(Ordering::SeqCst);
        if drop_at != 0 && shared.apdus.load(Ordering::SeqCst) >= drop_at {
            shared.drop_at.store(0, Ordering::SeqCst);
            shared.inserted.store(false, Ordering::SeqCst);
            return;
        }
    }
}

/// The card is gone: no more APDUs until it is plugged back in.
fn pulled(shared: &Shared) {
    shared.drop_at.store(0, Ordering::SeqCst);
    shared.inserted.store(false, Ordering::SeqCst);
}

/// Applies `apdu` torn in the middle (see [`DropMode::Torn`]), counting it as sent.
fn tear(apdu: &[u8], shared: &Shared) {
    let mut card = shared.card.lock().expect("card");
    if card.process_torn(apdu) {
        let _ = persist(&card, shared);
    }
    shared.apdus.fetch_add(1, Ordering::SeqCst);
}

/// Sends any pending ACK now and keeps the socket out of delayed-ACK mode until the kernel
/// next falls back to it.
fn quick_ack(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_tcp_quickack(true);
}

/// Saves the card if it is saved to a file and changed since the last save.
fn persist(card: &Card, shared: &Shared) -> Result<(), SavedError> {
    let mut saved = shared.saved.lock().expect("saved");
    let Some(saved) = saved.as_mut() else {
        return Ok(());
    };
    let now = card.to_bytes();
    if now != saved.last {
        card.save(&saved.path)?;
        saved.last = now;
    }
    Ok(())
}

fn answer(apdu: &[u8], shared: &Shared) -> Vec<u8> {
    let latency = shared.latency_us.load(Ordering::SeqCst);
    if latency > 0 {
        std::thread::sleep(Duration::from_micros(latency));
    }
    let response = {
        let mut card = shared.card.lock().expect("card");
        let response = card.process(apdu);
        if may_change_flash(apdu[1]) && persist(&card, shared).is_err() {
            MEMORY_FAILURE.to_vec()
        } else {
            response
        }
    };
    shared.apdus.fetch_add(1, Ordering::SeqCst);
    let sw = u16::from_be_bytes([response[response.len() - 2], response[response.len() - 1]]);
    let header = [
        apdu[0],
        apdu[1],
        apdu.get(2).copied().unwrap_or(0),
        apdu.get(3).copied().unwrap_or(0),
    ];
    shared.log.lock().expect("log").push(LoggedApdu {
        header,
        data_len: apdu.len().saturating_sub(5),
        response_len: response.len() - 2,
        sw,
    });
    response
}
