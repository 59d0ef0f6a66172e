//! The token on a real PKCS#11 module, through `cryptoki`.
//!
//! A module is initialised once per process (a second `C_Initialize` fails, and SoftHSM2 reads
//! its configuration only then), so [`Module::load`] hands out one shared context per path.
//! A token keeps a small pool of sessions: reads run concurrently on separate sessions, and the
//! pool always keeps one open so the login, which belongs to the token, is never lost.

use super::{Handle, NewObject, StoredObject, Token, TokenError, TokenErrorKind, TokenInfo};
use crate::error::{LoadError, Result, StoreError};
use cryptoki::context::Function;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, Rv, RvError};
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use parking_lot::Mutex;
use secrecy::{ExposeSecret, SecretString};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use zeroize::Zeroizing;

/// A loaded and initialised PKCS#11 module, shared by every token of this process.
#[derive(Clone)]
pub struct Module {
    path: PathBuf,
    pub(crate) ctx: Pkcs11,
    /// OpenSC reads `CKA_APPLICATION` as a NUL-terminated C string and ignores its length:
    /// without a NUL it stores bytes read past the value. On such a module the store writes
    /// the NUL and recognises its objects by comparing what is stored (see [`app_matches`]).
    /// OpenSC also relabels in place, not atomically (see [`Pkcs11Token::relabel`]).
    c_string_application: bool,
    /// The module's own `C_GetAttributeValue`, for reads whose buffer sizes are known:
    /// cryptoki's `get_attributes` always asks for the sizes first, two calls per read.
    get_attribute_value: cryptoki_sys::CK_C_GetAttributeValue,
}

impl std::fmt::Debug for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Module").field("path", &self.path).finish()
    }
}

fn loaded_modules() -> &'static Mutex<HashMap<PathBuf, Module>> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Module>>> = OnceLock::new();
    MODULES.get_or_init(Default::default)
}

impl Module {
    /// Loads and initialises the module at `path`, or returns the one this process already has.
    pub fn load(path: impl AsRef<Path>) -> Result<Module> {
        let path = path.as_ref().to_path_buf();
        let mut modules = loaded_modules().lock();
        if let Some(module) = modules.get(&path) {
            return Ok(module.clone());
        }
        let load_error = |source: LoadError| StoreError::ModuleLoad {
            path: path.display().to_string(),
            source,
        };
        if !path.exists() {
            return Err(load_error(LoadError::Missing));
        }
        let ctx = Pkcs11::new(&path).map_err(|e| load_error(LoadError::Library(e)))?;
        match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => return Err(load_error(LoadError::Initialize(e))),
        }
        let c_string_application = ctx
            .get_library_info()
            .map(|info| info.manufacturer_id().contains("OpenSC"))
            .unwrap_or(false);
        let get_attribute_value = raw_get_attribute_value(&path);
        let module = Module {
            path,
            ctx,
            c_string_application,
            get_attribute_value,
        };
        modules.insert(module.path.clone(), module.clone());
        Ok(module)
    }

    /// The module's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every slot with a token, with the token's label and serial.
    pub fn tokens(&self) -> Result<Vec<(Slot, TokenInfo)>> {
        let slots = self
            .ctx
            .get_slots_with_token()
            .map_err(|e| map_error("C_GetSlotList", e))?;
        let mut out = Vec::with_capacity(slots.len());
        for slot in slots {
            // A slot whose token cannot be described is skipped, not fatal: a reader may hold
            // an unsupported card next to the one we want.
            if let Ok(info) = self.ctx.get_token_info(slot) {
                out.push((slot, token_info(&info)));
            }
        }
        Ok(out)
    }

    /// Finds the slot `selector` names.
    pub fn find_slot(&self, selector: &TokenSelector) -> Result<Slot> {
        let tokens = self.tokens()?;
        let found = tokens.iter().find(|(slot, info)| match selector {
            TokenSelector::First => true,
            TokenSelector::Label(label) => info.label == *label,
            TokenSelector::Serial(serial) => info.serial_number == *serial,
            TokenSelector::Slot(id) => slot.id() == *id,
        });
        match found {
            Some((slot, _)) => Ok(*slot),
            None => Err(StoreError::TokenNotFound {
                selector: selector.to_string(),
                available: describe(&tokens),
            }),
        }
    }

    /// Initialises a token in the first slot whose token is not initialised yet (SoftHSM2
    /// always offers one), and sets its user PIN. For development and tests; real HSMs are
    /// initialised with their own tools.
    pub fn init_token(
        &self,
        label: &str,
        so_pin: &SecretString,
        user_pin: &SecretString,
    ) -> Result<TokenInfo> {
        // Two threads must not both pick the same free slot.
        static INIT: Mutex<()> = Mutex::new(());
        let _serialised = INIT.lock();
        let free = self
            .tokens()?
            .into_iter()
            .find(|(slot, _)| {
                self.ctx
                    .get_token_info(*slot)
                    .map(|i| !i.token_initialized())
                    .unwrap_or(false)
            })
            .map(|(slot, _)| slot)
            .ok_or_else(|| StoreError::TokenNotFound {
                selector: "a slot with an uninitialised token".into(),
                available: describe(&self.tokens().unwrap_or_default()),
            })?;
        let so = AuthPin::new(so_pin.expose_secret().into());
        self.ctx
            .init_token(free, &so, label)
            .map_err(|e| map_error("C_InitToken", e))?;
        let session = self
            .ctx
            .open_rw_session(free)
            .map_err(|e| map_error("C_OpenSession", e))?;
        session
            .login(UserType::So, Some(&so))
            .map_err(|e| map_login_error(map_error("C_Login", e)))?;
        session
            .init_pin(&AuthPin::new(user_pin.expose_secret().into()))
            .map_err(|e| map_error("C_InitPIN", e))?;
        let _ = session.logout();
        let info = self
            .ctx
            .get_token_info(free)
            .map_err(|e| map_error("C_GetTokenInfo", e))?;
        Ok(token_info(&info))
    }
}

/// The `C_GetAttributeValue` of the module at `path`, from its function list; `None` if the
/// module does not give one (reads then take cryptoki's two calls).
fn raw_get_attribute_value(path: &Path) -> cryptoki_sys::CK_C_GetAttributeValue {
    // SAFETY: `path` is the module cryptoki has just loaded and initialised; loading the same
    // path again gives the same instance (the dynamic loader counts references), so its
    // functions act on the sessions cryptoki opens. The second reference is leaked: like the
    // module itself (kept in `loaded_modules`), it stays loaded for the life of the process,
    // so the function pointer never dangles.
    #[allow(unsafe_code)]
    unsafe {
        let library = cryptoki_sys::Pkcs11::new(path).ok()?;
        let library: &'static cryptoki_sys::Pkcs11 = Box::leak(Box::new(library));
        if library.C_GetFunctionList.is_err() {
            return None;
        }
        let mut list: *mut cryptoki_sys::CK_FUNCTION_LIST = std::ptr::null_mut();
        if library.C_GetFunctionList(&mut list) != cryptoki_sys::CKR_OK || list.is_null() {
            return None;
        }
        (*list).C_GetAttributeValue
    }
}

fn describe(tokens: &[(Slot, TokenInfo)]) -> String {
    if tokens.is_empty() {
        return "none".into();
    }
    tokens
        .iter()
        .map(|(slot, info)| {
            format!(
                "slot {} label {:?} serial {:?}",
                slot.id(),
                info.label,
                info.serial_number
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn token_info(info: &cryptoki::slot::TokenInfo) -> TokenInfo {
    TokenInfo {
        label: info.label().trim().to_owned(),
        manufacturer: info.manufacturer_id().trim().to_owned(),
        model: info.model().trim().to_owned(),
        serial_number: info.serial_number().trim().to_owned(),
        firmware_version: info.firmware_version().to_string(),
    }
}

/// Which token of a module to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSelector {
    /// The first slot with a token.
    First,
    /// The token with this label (trimmed).
    Label(String),
    /// The token with this serial number.
    Serial(String),
    /// The slot with this id.
    Slot(u64),
}

impl std::fmt::Display for TokenSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSelector::First => write!(f, "the first token"),
            TokenSelector::Label(l) => write!(f, "token label {l:?}"),
            TokenSelector::Serial(s) => write!(f, "token serial {s:?}"),
            TokenSelector::Slot(s) => write!(f, "slot {s}"),
        }
    }
}

/// A logged-in token on a PKCS#11 module.
pub struct Pkcs11Token {
    module: Module,
    slot: Slot,
    sessions: Mutex<Vec<Session>>,
}

impl std::fmt::Debug for Pkcs11Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Token")
            .field("module", &self.module.path)
            .field("slot", &self.slot.id())
            .finish()
    }
}

impl Pkcs11Token {
    /// Opens a read-write session on the selected token and logs in as the user.
    ///
    /// A wrong PIN is [`StoreError::PinIncorrect`]: the caller must not try it again.
    ///
    /// PKCS#11 login belongs to the token, not the session: while another handle of this
    /// process holds a logged-in session on the same token, `C_Login` answers
    /// `CKR_USER_ALREADY_LOGGED_IN` and `pin` is not checked again. Logging out to re-check it
    /// would break that other handle and spend one of the token's PIN tries.
    pub fn open(module: &Module, selector: &TokenSelector, pin: &SecretString) -> Result<Self> {
        let slot = module.find_slot(selector)?;
        let session = module
            .ctx
            .open_rw_session(slot)
            .map_err(|e| map_error("C_OpenSession", e))?;
        match session.login(
            UserType::User,
            Some(&AuthPin::new(pin.expose_secret().into())),
        ) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(e) => return Err(map_login_error(map_error("C_Login", e))),
        }
        Ok(Pkcs11Token {
            module: module.clone(),
            slot,
            sessions: Mutex::new(vec![session]),
        })
    }

    /// Changes the user PIN (`C_SetPIN` in a logged-in session). A wrong old PIN is
    /// [`StoreError::PinIncorrect`] and costs one of the token's tries.
    pub fn change_pin(&self, old: &SecretString, new: &SecretString) -> Result<()> {
        self.with_session("C_SetPIN", |s| {
            s.set_pin(
                &AuthPin::new(old.expose_secret().into()),
                &AuthPin::new(new.expose_secret().into()),
            )
        })
        .map_err(map_login_error)
    }

    /// The slot the token is in.
    pub fn slot(&self) -> Slot {
        self.slot
    }

    /// Runs `f` on a pooled session. A session that saw the token go away is dropped.
    fn with_session<R>(
        &self,
        call: &'static str,
        f: impl FnOnce(&Session) -> std::result::Result<R, CkError>,
    ) -> std::result::Result<R, TokenError> {
        let pooled = self.sessions.lock().pop();
        let session = match pooled {
            Some(s) => s,
            None => self
                .module
                .ctx
                .open_rw_session(self.slot)
                .map_err(|e| map_error("C_OpenSession", e))?,
        };
        let result = f(&session).map_err(|e| map_error(call, e));
        match &result {
            Err(e) if e.is_token_lost() => drop(session),
            _ => self.sessions.lock().push(session),
        }
        result
    }
}

/// A template entry for `C_GetAttributeValue` into `buffer`.
fn raw_attribute(
    kind: cryptoki_sys::CK_ATTRIBUTE_TYPE,
    buffer: &mut [u8],
) -> cryptoki_sys::CK_ATTRIBUTE {
    cryptoki_sys::CK_ATTRIBUTE {
        type_: kind,
        pValue: buffer.as_mut_ptr().cast(),
        ulValueLen: buffer.len() as cryptoki_sys::CK_ULONG,
    }
}

fn object_handle(handle: Handle) -> ObjectHandle {
    // SAFETY: every handle the store passes here came from this module's C_FindObjects or
    // C_CreateObject; a stale one is rejected by the module with CKR_OBJECT_HANDLE_INVALID.
    #[allow(unsafe_code)]
    unsafe {
        ObjectHandle::new_from_raw(handle as _)
    }
}

impl Token for Pkcs11Token {
    fn find(&self, application: &str, label: Option<&str>) -> Result<Vec<Handle>, TokenError> {
        let mut template = vec![Attribute::Class(ObjectClass::DATA), Attribute::Token(true)];
        if let Some(label) = label {
            template.push(Attribute::Label(label.as_bytes().to_vec()));
        }
        if !self.module.c_string_application {
            template.push(Attribute::Application(application.as_bytes().to_vec()));
            return self
                .with_session("C_FindObjects", |s| s.find_objects(&template))
                .map(|handles| handles.into_iter().map(|h| h.handle() as Handle).collect());
        }
        // The stored application may carry bytes OpenSC read past a value written without a
        // NUL (the Go operator's objects): compare what is stored instead of matching exactly.
        let handles = self.with_session("C_FindObjects", |s| s.find_objects(&template))?;
        let mut ours = Vec::new();
        for handle in handles {
            let stored = self.with_session("C_GetAttributeValue", |s| {
                s.get_attributes(handle, &[AttributeType::Application])
            })?;
            if let Some(Attribute::Application(stored)) = stored.into_iter().next()
                && app_matches(&stored, application.as_bytes())
            {
                ours.push(handle.handle() as Handle);
            }
        }
        Ok(ours)
    }

    fn read(&self, handle: Handle) -> Result<StoredObject, TokenError> {
        let attributes = match self.with_session("C_GetAttributeValue", |s| {
            s.get_attributes(
                object_handle(handle),
                &[AttributeType::Label, AttributeType::Value],
            )
        }) {
            Ok(attributes) => attributes,
            Err(e) if is_general_error(&e) => return Err(self.ghost_or(handle, e)),
            Err(e) => return Err(e),
        };
        let mut label = None;
        let mut value = None;
        for attribute in attributes {
            match attribute {
                Attribute::Label(l) => label = Some(String::from_utf8_lossy(&l).into_owned()),
                Attribute::Value(v) => value = Some(Zeroizing::new(v)),
                _ => {}
            }
        }
        match (label, value) {
            (Some(label), Some(value)) => Ok(StoredObject { label, value }),
            _ => Err(TokenError {
                call: "C_GetAttributeValue",
                kind: TokenErrorKind::Other("label or value unavailable".into()),
            }),
        }
    }

    /// One `C_GetAttributeValue` into buffers of the known sizes. An object whose label or
    /// value has grown since (`CKR_BUFFER_TOO_SMALL`) is read again the long way; one that
    /// shrank comes back shorter; the store's digest check notices either.
    fn read_sized(
        &self,
        handle: Handle,
        label_len: usize,
        value_len: usize,
    ) -> Result<StoredObject, TokenError> {
        let Some(get_attribute_value) = self.module.get_attribute_value else {
            return self.read(handle);
        };
        let mut label = vec![0u8; label_len];
        let mut value = Zeroizing::new(vec![0u8; value_len]);
        let mut template = [
            raw_attribute(cryptoki_sys::CKA_LABEL, &mut label),
            raw_attribute(cryptoki_sys::CKA_VALUE, &mut value),
        ];
        let fits = self.with_session("C_GetAttributeValue", |s| {
            // SAFETY: the template's two buffers live until after the call and their
            // lengths are what the template says; the session and the object handle
            // belong to this module (see `object_handle`).
            #[allow(unsafe_code)]
            let rv = unsafe {
                get_attribute_value(
                    s.handle(),
                    handle as cryptoki_sys::CK_OBJECT_HANDLE,
                    template.as_mut_ptr(),
                    template.len() as cryptoki_sys::CK_ULONG,
                )
            };
            match rv {
                cryptoki_sys::CKR_BUFFER_TOO_SMALL => Ok(false),
                rv => Rv::from(rv)
                    .into_result(Function::GetAttributeValue)
                    .map(|()| true),
            }
        });
        match fits {
            Ok(true) => {}
            Ok(false) => return self.read(handle),
            Err(e) if is_general_error(&e) => return Err(self.ghost_or(handle, e)),
            Err(e) => return Err(e),
        }
        let returned =
            |attribute: &cryptoki_sys::CK_ATTRIBUTE, capacity: usize| match usize::try_from(
                attribute.ulValueLen,
            ) {
                Ok(len) if len <= capacity => Some(len),
                _ => None,
            };
        match (
            returned(&template[0], label_len),
            returned(&template[1], value_len),
        ) {
            (Some(label_returned), Some(value_returned)) => {
                label.truncate(label_returned);
                value.truncate(value_returned);
                Ok(StoredObject {
                    label: String::from_utf8_lossy(&label).into_owned(),
                    value,
                })
            }
            _ => Err(TokenError {
                call: "C_GetAttributeValue",
                kind: TokenErrorKind::Other("label or value unavailable".into()),
            }),
        }
    }

    fn create(&self, object: &NewObject<'_>) -> Result<Handle, TokenError> {
        let mut application = object.application.as_bytes().to_vec();
        if self.module.c_string_application {
            application.push(0);
        }
        let template = [
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Modifiable(true),
            Attribute::Label(object.label.as_bytes().to_vec()),
            Attribute::Application(application),
            Attribute::ObjectId(object.object_id.clone()),
            Attribute::Value(object.value.to_vec()),
        ];
        self.with_session("C_CreateObject", |s| s.create_object(&template))
            .map(|h| h.handle() as Handle)
    }

    fn destroy(&self, handle: Handle) -> Result<(), TokenError> {
        self.with_session("C_DestroyObject", |s| {
            s.destroy_object(object_handle(handle))
        })
    }

    /// Refused ([`TokenErrorKind::Unsupported`]) on OpenSC: it relabels a data object by
    /// rewriting the object's description file in place, in one UPDATE BINARY. A card that
    /// loses power inside that command is left with a description it cannot parse, and the
    /// object — a write's journal, at its commit — vanishes, with the write's values already
    /// in place. The store then commits by copying the journal and destroying it, which
    /// keeps the journal until the copy is whole.
    fn relabel(&self, handle: Handle, label: &str) -> Result<(), TokenError> {
        if self.module.c_string_application {
            return Err(TokenError {
                call: "C_SetAttributeValue",
                kind: TokenErrorKind::Unsupported,
            });
        }
        self.with_session("C_SetAttributeValue", |s| {
            s.update_attributes(
                object_handle(handle),
                &[Attribute::Label(label.as_bytes().to_vec())],
            )
        })
    }

    /// The token's description, and a health check: the token info alone still answers
    /// after a card was pulled and another (or the same) plugged in, so a session is asked
    /// too. It is gone, or no longer logged in, after such a swap: token lost.
    fn info(&self) -> Result<TokenInfo, TokenError> {
        // C_GetSlotInfo asks the reader whether a card is present (OpenSC answers token and
        // session info from its cache, so a card pulled while idle went unnoticed).
        let slot = self
            .module
            .ctx
            .get_slot_info(self.slot)
            .map_err(|e| map_error("C_GetSlotInfo", e))?;
        if !slot.token_present() {
            return Err(TokenError {
                call: "C_GetSlotInfo",
                kind: TokenErrorKind::TokenLost,
            });
        }
        let info = self
            .module
            .ctx
            .get_token_info(self.slot)
            .map(|i| token_info(&i))
            .map_err(|e| map_error("C_GetTokenInfo", e))?;
        let state = self.with_session("C_GetSessionInfo", |s| s.get_session_info())?;
        if !matches!(
            state.session_state(),
            SessionState::RwUser | SessionState::RoUser
        ) {
            return Err(TokenError {
                call: "C_GetSessionInfo",
                kind: TokenErrorKind::TokenLost,
            });
        }
        Ok(info)
    }
}

/// Whether a stored `CKA_APPLICATION` is `wanted`: exactly, or with a trailing NUL, or
/// followed by bytes that cannot continue an application name (what OpenSC stores when a
/// value without a NUL is read past its end).
pub fn app_matches(stored: &[u8], wanted: &[u8]) -> bool {
    match stored.strip_prefix(wanted) {
        Some([]) => true,
        Some([next, ..]) => !(next.is_ascii_alphanumeric() || matches!(next, b'-' | b'_' | b'.')),
        None => false,
    }
}

fn map_login_error(e: TokenError) -> StoreError {
    match e.kind {
        TokenErrorKind::PinIncorrect => StoreError::PinIncorrect,
        TokenErrorKind::PinLocked => StoreError::PinLocked,
        TokenErrorKind::PinInvalid => StoreError::PinInvalid("rejected by the token"),
        _ => StoreError::Token(e),
    }
}

fn is_general_error(error: &TokenError) -> bool {
    error.kind == TokenErrorKind::Other("GeneralError".into())
}

impl Pkcs11Token {
    /// Tells a ghost (see [`TokenErrorKind::ValueLost`]) from a passing failure: the value
    /// fails again with CKR_GENERAL_ERROR while the label, which the module keeps apart
    /// from the value, still reads. Anything else keeps the first error.
    fn ghost_or(&self, handle: Handle, first: TokenError) -> TokenError {
        let attribute = |wanted: AttributeType| {
            self.with_session("C_GetAttributeValue", |s| {
                s.get_attributes(object_handle(handle), &[wanted])
            })
        };
        match attribute(AttributeType::Value) {
            Err(again) if is_general_error(&again) => {}
            _ => return first,
        }
        match attribute(AttributeType::Label).as_deref() {
            Ok([Attribute::Label(label)]) => TokenError {
                call: "C_GetAttributeValue",
                kind: TokenErrorKind::ValueLost {
                    label: String::from_utf8_lossy(label).into_owned(),
                },
            },
            _ => first,
        }
    }
}

fn map_error(call: &'static str, error: CkError) -> TokenError {
    let kind = match &error {
        CkError::Pkcs11(rv, _) => match rv {
            RvError::PinIncorrect => TokenErrorKind::PinIncorrect,
            RvError::PinLocked => TokenErrorKind::PinLocked,
            RvError::PinLenRange | RvError::PinInvalid => TokenErrorKind::PinInvalid,
            RvError::DeviceRemoved
            | RvError::DeviceError
            | RvError::TokenNotPresent
            | RvError::TokenNotRecognized
            | RvError::SessionHandleInvalid
            | RvError::SessionClosed
            | RvError::UserNotLoggedIn
            | RvError::CryptokiNotInitialized => TokenErrorKind::TokenLost,
            RvError::ObjectHandleInvalid => TokenErrorKind::ObjectGone,
            RvError::AttributeReadOnly
            | RvError::FunctionNotSupported
            | RvError::ActionProhibited => TokenErrorKind::Unsupported,
            other => TokenErrorKind::Other(format!("{other:?}")),
        },
        other => TokenErrorKind::Other(other.to_string()),
    };
    TokenError { call, kind }
}

#[cfg(test)]
mod tests {
    use super::app_matches;

    #[test]
    fn applications_with_opensc_over_read_bytes_still_match() {
        let app = b"hsm-secrets-operator";
        assert!(app_matches(b"hsm-secrets-operator", app));
        assert!(app_matches(b"hsm-secrets-operator\0", app));
        assert!(app_matches(b"hsm-secrets-operator\xcf\x7f", app));
        assert!(!app_matches(b"hsm-secrets-operator2", app));
        assert!(!app_matches(b"hsm-secrets-operator-x", app));
        assert!(!app_matches(b"other", app));
    }
}
