//! The virtual card through the software a Pico HSM uses: pcscd, the vpcd reader, OpenSC's
//! `opensc-pkcs11.so`, driven with cryptoki as the agent drives it. Each test runs in its own
//! process (cargo-nextest): the module reads pcscd's socket path once per process.

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, RvError};
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use std::time::Duration;
use virtual_pico::fixture::{OPENSC_MODULE, PicoFixture, SO_PIN_HEX, TOKEN_LABEL, USER_PIN};

fn module() -> (Pkcs11, Slot) {
    let p11 = Pkcs11::new(OPENSC_MODULE).unwrap();
    p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let slot = p11.get_slots_with_token().unwrap()[0];
    let label = p11.get_token_info(slot).unwrap().label().trim().to_owned();
    assert_eq!(label, format!("{TOKEN_LABEL} (UserPIN)"));
    (p11, slot)
}

fn pin(p: &str) -> AuthPin {
    AuthPin::new(p.into())
}

fn rv(result: Result<(), Error>) -> Option<RvError> {
    match result {
        Ok(()) => None,
        Err(Error::Pkcs11(rv, _)) => Some(rv),
        Err(other) => panic!("{other}"),
    }
}

fn create(session: &Session, label: &str, value: &[u8]) -> cryptoki::object::ObjectHandle {
    session
        .create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Value(value.to_vec()),
        ])
        .unwrap()
}

fn value_of(session: &Session, label: &str) -> Result<Vec<u8>, Error> {
    let handles = session.find_objects(&[
        Attribute::Class(ObjectClass::DATA),
        Attribute::Label(label.as_bytes().to_vec()),
    ])?;
    let handle = *handles.first().expect("object found");
    let attrs = session.get_attributes(handle, &[AttributeType::Value])?;
    match attrs.into_iter().next() {
        Some(Attribute::Value(v)) => Ok(v),
        other => panic!("{other:?}"),
    }
}

/// A logged-in session on the card once it is back, in the same process (no C_Finalize).
/// OpenSC may still hand out a session on the card it knew until pcscd's next poll; that
/// session fails at its first command, so the login is part of the wait.
fn logged_in_when_back(p11: &Pkcs11) -> Session {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(slot) = p11.get_slots_with_token().unwrap().first()
            && let Ok(session) = p11.open_rw_session(*slot)
            && session.login(UserType::User, Some(&pin(USER_PIN))).is_ok()
        {
            return session;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the card never came back"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn private_data_objects_with_the_operators_labels() {
    let _fixture = PicoFixture::start().unwrap();
    let (p11, slot) = module();
    let session = p11.open_rw_session(slot).unwrap();
    // Invisible and unwritable before login.
    assert!(
        session
            .create_object(&[
                Attribute::Class(ObjectClass::DATA),
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Label(b"x".to_vec()),
                Attribute::Value(b"v".to_vec()),
            ])
            .is_err()
    );
    session.login(UserType::User, Some(&pin(USER_PIN))).unwrap();
    create(&session, "db-credentials/password", b"s3cr3t");
    create(&session, "db-credentials", b"data-key");
    let blob: Vec<u8> = (0..4000u32).map(|i| i as u8).collect();
    create(&session, "db-credentials/blob", &blob);
    assert_eq!(
        value_of(&session, "db-credentials/password").unwrap(),
        b"s3cr3t"
    );
    assert_eq!(value_of(&session, "db-credentials/blob").unwrap(), blob);
    let all = session
        .find_objects(&[Attribute::Class(ObjectClass::DATA)])
        .unwrap();
    assert_eq!(all.len(), 3);
    // A fresh session after logout sees nothing private.
    session.logout().unwrap();
    let fresh = p11.open_ro_session(slot).unwrap();
    assert!(
        fresh
            .find_objects(&[Attribute::Class(ObjectClass::DATA)])
            .unwrap()
            .is_empty()
    );
    fresh.login(UserType::User, Some(&pin(USER_PIN))).unwrap();
    let handle = fresh
        .find_objects(&[Attribute::Label(b"db-credentials".to_vec())])
        .unwrap()[0];
    drop(fresh);
    let rw = p11.open_rw_session(slot).unwrap();
    rw.destroy_object(handle).unwrap();
    assert_eq!(
        rw.find_objects(&[Attribute::Class(ObjectClass::DATA)])
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn wrong_pins_count_down_lock_and_the_so_unblocks() {
    let fixture = PicoFixture::start().unwrap();
    let (p11, slot) = module();
    let session = p11.open_rw_session(slot).unwrap();
    let wrong = pin("111111");
    assert_eq!(
        rv(session.login(UserType::User, Some(&wrong))),
        Some(RvError::PinIncorrect)
    );
    assert_eq!(
        fixture.card.card().user_tries_left(),
        Some(2),
        "one wrong PIN, one try"
    );
    assert_eq!(
        rv(session.login(UserType::User, Some(&wrong))),
        Some(RvError::PinIncorrect)
    );
    assert_eq!(
        rv(session.login(UserType::User, Some(&wrong))),
        Some(RvError::PinLocked)
    );
    assert_eq!(
        rv(session.login(UserType::User, Some(&pin(USER_PIN)))),
        Some(RvError::PinLocked),
        "locked: even the right PIN is refused"
    );
    // Unblock: the SO logs in and sets a new user PIN (RESET RETRY COUNTER).
    session.login(UserType::So, Some(&pin(SO_PIN_HEX))).unwrap();
    session.init_pin(&pin("654321")).unwrap();
    session.logout().unwrap();
    session.login(UserType::User, Some(&pin("654321"))).unwrap();
    assert_eq!(fixture.card.card().user_tries_left(), Some(3));
}

#[test]
fn the_pin_can_be_changed() {
    let _fixture = PicoFixture::start().unwrap();
    let (p11, slot) = module();
    let session = p11.open_rw_session(slot).unwrap();
    session.login(UserType::User, Some(&pin(USER_PIN))).unwrap();
    session.set_pin(&pin(USER_PIN), &pin("246810")).unwrap();
    session.logout().unwrap();
    assert_eq!(
        rv(session.login(UserType::User, Some(&pin(USER_PIN)))),
        Some(RvError::PinIncorrect)
    );
    session.login(UserType::User, Some(&pin("246810"))).unwrap();
}

#[test]
fn a_new_session_recovers_after_removal_without_finalize() {
    let fixture = PicoFixture::start().unwrap();
    let (p11, slot) = module();
    let session = p11.open_rw_session(slot).unwrap();
    session.login(UserType::User, Some(&pin(USER_PIN))).unwrap();
    create(&session, "s/k", b"before");

    fixture.card.remove();
    std::thread::sleep(Duration::from_millis(1500));
    let seen = value_of(&session, "s/k");
    let rv = match seen {
        Err(Error::Pkcs11(rv, _)) => rv,
        other => panic!("reading from a removed card: {other:?}"),
    };
    assert!(
        matches!(
            rv,
            RvError::DeviceRemoved
                | RvError::SessionHandleInvalid
                | RvError::TokenNotPresent
                | RvError::UserNotLoggedIn
        ),
        "{rv:?}"
    );

    fixture.card.insert();
    assert!(fixture.card.wait_connected(Duration::from_secs(10)));
    let fresh = logged_in_when_back(&p11);
    assert_eq!(value_of(&fresh, "s/k").unwrap(), b"before");
}

/// OpenSC's own limits (reference: 64 KiB per object, 128 objects per token in its PKCS#11
/// layer): the card takes everything OpenSC can send and gives it back.
#[test]
fn objects_as_large_and_as_many_as_opensc_allows() {
    let _fixture = PicoFixture::start().unwrap();
    let largest: Vec<u8> = (0..65_536u32).map(|i| (i * 7 + i / 256) as u8).collect();
    {
        let (p11, slot) = module();
        let session = p11.open_rw_session(slot).unwrap();
        session.login(UserType::User, Some(&pin(USER_PIN))).unwrap();
        create(&session, "big/data", &largest);
        for i in 1..128 {
            create(
                &session,
                &format!("many/{i:03}"),
                format!("value {i}").as_bytes(),
            );
        }
        p11.finalize().unwrap();
    }
    // A newly initialised module reads everything back from the card.
    let (p11, slot) = module();
    let session = p11.open_rw_session(slot).unwrap();
    session.login(UserType::User, Some(&pin(USER_PIN))).unwrap();
    let all = session
        .find_objects(&[Attribute::Class(ObjectClass::DATA)])
        .unwrap();
    assert_eq!(all.len(), 128);
    let back = value_of(&session, "big/data").unwrap();
    let first_difference = back.iter().zip(&largest).position(|(a, b)| a != b);
    assert!(
        back.len() == largest.len() && first_difference.is_none(),
        "read {} bytes of {}, first difference at {first_difference:?}",
        back.len(),
        largest.len()
    );
    for i in [1, 64, 127] {
        assert_eq!(
            value_of(&session, &format!("many/{i:03}")).unwrap(),
            format!("value {i}").as_bytes()
        );
    }
}

/// A card saved to a file is the same card after its emulator stops and starts again, as a
/// USB token unplugged and plugged in later: its objects and its PIN.
#[test]
fn a_saved_card_survives_its_emulator() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("card");
    let mut fixture = PicoFixture::start_saved(&path).unwrap();
    let (p11, slot) = module();
    {
        let session = p11.open_rw_session(slot).unwrap();
        session.login(UserType::User, Some(&pin(USER_PIN))).unwrap();
        create(&session, "kept/k", b"survives");
    }
    fixture.restart_card().unwrap();
    let session = logged_in_when_back(&p11);
    assert_eq!(value_of(&session, "kept/k").unwrap(), b"survives");
    drop(session);
    let left = fixture.card.card().to_bytes();
    drop(fixture);
    // A new fixture on the same file plugs the card in as it was, without re-initialising
    // it. (OpenSC's pcsc-lite keeps the first fixture's socket for the process, so this
    // compares the card itself.)
    let again = PicoFixture::start_saved(&path).unwrap();
    assert!(again.card.card().to_bytes() == left, "the card changed");
}

/// A destroy cut between its two DELETE FILEs (value file, then description) leaves a ghost,
/// as on a real SmartCard-HSM behind OpenSC 0.23: the object is still listed and its label
/// reads, but its value fails with CKR_GENERAL_ERROR, and so does destroying it again (the
/// driver deletes the value file first and stops when it is missing). The store relies on
/// exactly this to recognise ghosts.
#[test]
fn a_destroy_cut_in_half_leaves_a_ghost() {
    let fixture = PicoFixture::start().unwrap();
    let (p11, slot) = module();
    {
        let session = p11.open_rw_session(slot).unwrap();
        session.login(UserType::User, Some(&pin(USER_PIN))).unwrap();
        create(&session, "torn/k", b"value");
        let handle = session
            .find_objects(&[Attribute::Label(b"torn/k".to_vec())])
            .unwrap()[0];
        // A SELECT, then DELETE FILE of the value: pulled right after it.
        fixture.card.drop_after(2);
        assert_eq!(
            rv(session.destroy_object(handle)),
            Some(RvError::GeneralError)
        );
        let last = fixture.card.apdu_log().pop().unwrap();
        assert_eq!((last.header[1], last.sw), (0xE4, 0x9000));
    }
    fixture.replug(fixture.card.card()).unwrap();
    let session = logged_in_when_back(&p11);
    let ghost = session
        .find_objects(&[Attribute::Label(b"torn/k".to_vec())])
        .unwrap();
    assert_eq!(ghost.len(), 1, "the ghost is listed");
    let label = session.get_attributes(ghost[0], &[AttributeType::Label]);
    assert_eq!(label.unwrap(), vec![Attribute::Label(b"torn/k".to_vec())]);
    let value = session.get_attributes(ghost[0], &[AttributeType::Value]);
    assert!(
        matches!(value, Err(Error::Pkcs11(RvError::GeneralError, _))),
        "{value:?}"
    );
    assert_eq!(
        rv(session.destroy_object(ghost[0])),
        Some(RvError::GeneralError)
    );
    assert_eq!(
        session
            .find_objects(&[Attribute::Label(b"torn/k".to_vec())])
            .unwrap()
            .len(),
        1,
        "the ghost stays"
    );
}
