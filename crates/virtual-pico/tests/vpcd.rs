//! The card's side of the vpcd protocol over real TCP, with the test as the reader.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};
use virtual_pico::card::{AID, ATR, Card};
use virtual_pico::vpcd::VirtualCard;

struct Reader {
    listener: TcpListener,
}

impl Reader {
    fn new() -> Reader {
        Reader {
            listener: TcpListener::bind("127.0.0.1:0").unwrap(),
        }
    }
    fn port(&self) -> u16 {
        self.listener.local_addr().unwrap().port()
    }
    fn accept(&self) -> TcpStream {
        let (stream, _) = self.listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
    }
}

fn send(stream: &mut TcpStream, payload: &[u8]) {
    let mut frame = (payload.len() as u16).to_be_bytes().to_vec();
    frame.extend(payload);
    stream.write_all(&frame).unwrap();
}

fn receive(stream: &mut TcpStream) -> Vec<u8> {
    let mut length = [0u8; 2];
    stream.read_exact(&mut length).unwrap();
    let mut body = vec![0u8; u16::from_be_bytes(length) as usize];
    stream.read_exact(&mut body).unwrap();
    body
}

fn select_applet() -> Vec<u8> {
    let mut apdu = vec![0x00, 0xA4, 0x04, 0x00, 0x0B];
    apdu.extend(AID);
    apdu.push(0x00);
    apdu
}

fn closed(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.read(&mut byte), Ok(0))
}

#[test]
fn answers_the_reader_and_logs_no_data() {
    let reader = Reader::new();
    let card = VirtualCard::start(reader.port(), Card::new("DEEMU13092"));
    let mut link = reader.accept();
    send(&mut link, &[4]);
    assert_eq!(receive(&mut link), ATR);
    send(&mut link, &[1]);
    send(&mut link, &select_applet());
    let response = receive(&mut link);
    assert_eq!(&response[response.len() - 2..], &[0x90, 0x00]);
    // VERIFY with a PIN-like value: the log keeps the header and lengths only.
    send(
        &mut link,
        &[
            0x00, 0x20, 0x00, 0x81, 0x06, b'6', b'4', b'8', b'2', b'1', b'9',
        ],
    );
    assert_eq!(receive(&mut link), vec![0x6A, 0x88]);
    assert_eq!(card.apdu_count(), 2);
    let log = card.apdu_log();
    assert_eq!(log[1].header, [0x00, 0x20, 0x00, 0x81]);
    assert_eq!((log[1].data_len, log[1].sw), (6, 0x6A88));
    assert!(!format!("{log:?}").contains("648219"));
}

#[test]
fn removal_and_reinsertion_keep_the_card() {
    let reader = Reader::new();
    let card = VirtualCard::start(reader.port(), Card::new("DEEMU13092"));
    let mut link = reader.accept();
    initialise(&mut link);

    card.remove();
    assert!(closed(&mut link), "removal closes the connection");
    // The pulled card hangs up on the reader's next presence poll, so that the reader sees
    // the slot empty before anything is plugged in again.
    assert!(!card.is_removal_noticed());
    let mut poll = reader.accept();
    send(&mut poll, &[4]);
    assert!(closed(&mut poll), "a pulled card refuses the presence poll");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !card.is_removal_noticed() {
        assert!(Instant::now() < deadline, "the refusal was not recorded");
        std::thread::sleep(Duration::from_millis(5));
    }
    card.insert();
    let mut link = reader.accept();
    assert!(card.wait_connected(Duration::from_secs(5)));
    send(&mut link, &select_applet());
    receive(&mut link);
    send(&mut link, &[0x00, 0x20, 0x00, 0x81]);
    assert_eq!(
        receive(&mut link),
        vec![0x63, 0xC3],
        "initialised, counter intact"
    );
}

#[test]
fn drops_out_after_n_apdus_and_adds_latency() {
    let reader = Reader::new();
    let card = VirtualCard::start(reader.port(), Card::new("DEEMU13092"));
    let mut link = reader.accept();
    card.set_latency(Duration::from_millis(30));
    let started = Instant::now();
    send(&mut link, &select_applet());
    receive(&mut link);
    assert!(started.elapsed() >= Duration::from_millis(30));
    card.set_latency(Duration::ZERO);
    card.drop_after(1);
    send(&mut link, &select_applet());
    receive(&mut link);
    assert!(
        closed(&mut link),
        "the card dropped out after one more APDU"
    );
    assert!(!card.is_connected() || closed(&mut link));
}

fn initialise(link: &mut TcpStream) {
    send(link, &select_applet());
    receive(link);
    let init = [
        &[
            0x80u8, 0x50, 0x00, 0x00, 0x19, 0x80, 0x02, 0x00, 0x01, 0x81, 0x06,
        ][..],
        b"648219",
        &[0x82, 0x08],
        b"57621880",
        &[0x91, 0x01, 0x03],
    ]
    .concat();
    send(link, &init);
    assert_eq!(receive(link), vec![0x90, 0x00]);
}

#[test]
fn a_saved_card_comes_back_as_it_was_left() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("card");
    let reader = Reader::new();
    {
        let card = VirtualCard::start_saved(reader.port(), &path, "DEEMU13092").unwrap();
        let mut link = reader.accept();
        initialise(&mut link);
        // A wrong PIN: the counter goes to 2, and that is saved too.
        send(
            &mut link,
            &[&[0x00u8, 0x20, 0x00, 0x81, 0x06][..], b"000000"].concat(),
        );
        assert_eq!(receive(&mut link), vec![0x63, 0xC2]);
        // Log in and write a private data object.
        send(
            &mut link,
            &[&[0x00u8, 0x20, 0x00, 0x81, 0x06][..], b"648219"].concat(),
        );
        assert_eq!(receive(&mut link), vec![0x90, 0x00]);
        send(
            &mut link,
            &[
                0x00, 0xD7, 0xCD, 0x01, 0x09, 0x54, 0x02, 0x00, 0x00, 0x53, 0x03, 7, 8, 9,
            ],
        );
        assert_eq!(receive(&mut link), vec![0x90, 0x00]);
        // One more wrong PIN after the write: 2 tries left again.
        send(
            &mut link,
            &[&[0x00u8, 0x20, 0x00, 0x81, 0x06][..], b"111111"].concat(),
        );
        assert_eq!(receive(&mut link), vec![0x63, 0xC2]);
        drop(card);
    }
    // The emulator is gone; a new one plugs in the same card.
    let card = VirtualCard::start_saved(reader.port(), &path, "OTHER00000").unwrap();
    let mut link = reader.accept();
    assert_eq!(card.card().user_tries_left(), Some(2));
    assert!(card.card().file_ids().contains(&0xCD01));
    send(&mut link, &select_applet());
    receive(&mut link);
    send(&mut link, &[0x00, 0x20, 0x00, 0x81]);
    assert_eq!(receive(&mut link), vec![0x63, 0xC2], "the counter survived");
    send(
        &mut link,
        &[&[0x00u8, 0x20, 0x00, 0x81, 0x06][..], b"648219"].concat(),
    );
    assert_eq!(receive(&mut link), vec![0x90, 0x00], "the PIN survived");
    send(
        &mut link,
        &[0x00, 0xB1, 0xCD, 0x01, 0x04, 0x54, 0x02, 0x00, 0x00, 0x00],
    );
    assert_eq!(
        receive(&mut link),
        vec![7, 8, 9, 0x90, 0x00],
        "the file survived"
    );
    // The correct PIN reset the counter, and the file already says so.
    assert_eq!(
        card.card().to_bytes().as_slice(),
        virtual_pico::card::Card::load(&path)
            .unwrap()
            .to_bytes()
            .as_slice()
    );
}

#[test]
fn a_corrupt_saved_card_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("card");
    std::fs::write(&path, b"not a card").unwrap();
    let err = VirtualCard::start_saved(1, &path, "DEEMU13092").unwrap_err();
    assert!(
        matches!(err, virtual_pico::saved::SavedError::BadMagic),
        "{err}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"not a card");
}

/// A reader at another address than 127.0.0.1 (as vpcd in a container, at its pod's
/// address): the binary's `--host` dials it there, and stopping the process pulls the card.
#[test]
fn the_binary_dials_the_reader_at_the_host_it_is_given() {
    let listener = TcpListener::bind("127.0.0.2:0").unwrap();
    let address = listener.local_addr().unwrap();
    // Killed when dropped, also when an assertion below fails.
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Killed(
        std::process::Command::new(env!("CARGO_BIN_EXE_virtual-pico"))
            .args(["--host", "127.0.0.2", "--port", &address.port().to_string()])
            .args(["--serial", "DENK0100123"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Only 127.0.0.2 listens: a card dialling 127.0.0.1 is never accepted.
    let (mut link, _) = listener.accept().unwrap();
    link.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    send(&mut link, &[4]);
    assert_eq!(receive(&mut link), ATR);
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    assert!(closed(&mut link), "the stopped card left the reader open");
}

#[test]
fn the_binary_without_a_port_or_private_reader_is_refused() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_virtual-pico"))
        .args(["--host", "127.0.0.2"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.contains("--port"), "{said}");
}
