//! A token in memory: the same object semantics as a PKCS#11 token (labels not unique,
//! handles not reused, filtering by application), so that the whole store, including its
//! journal and recovery, runs unchanged in unit tests and in demos without a module.

use super::{Handle, NewObject, StoredObject, Token, TokenError, TokenErrorKind, TokenInfo};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use zeroize::Zeroizing;

#[derive(Clone)]
struct Object {
    label: String,
    application: String,
    value: Zeroizing<Vec<u8>>,
    /// A ghost: listed, but its value is gone and it cannot be destroyed.
    value_lost: bool,
}

/// An in-memory token.
#[derive(Default)]
pub struct MemoryToken {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    next_handle: Handle,
    objects: BTreeMap<Handle, Object>,
}

impl MemoryToken {
    /// An empty token.
    pub fn new() -> Self {
        Self::default()
    }

    /// Turns the object into a ghost, as a destroy cut in half leaves one on a
    /// SmartCard-HSM behind OpenSC: still listed, its value unreadable
    /// ([`TokenErrorKind::ValueLost`]), and destroying it fails.
    pub fn lose_value(&self, handle: Handle) {
        if let Some(object) = self.state.lock().objects.get_mut(&handle) {
            object.value = Zeroizing::new(Vec::new());
            object.value_lost = true;
        }
    }

    /// How many objects it holds (foreign ones included).
    pub fn object_count(&self) -> usize {
        self.state.lock().objects.len()
    }
}

impl std::fmt::Debug for MemoryToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryToken")
            .field("objects", &self.object_count())
            .finish()
    }
}

impl Token for MemoryToken {
    fn find(&self, application: &str, label: Option<&str>) -> Result<Vec<Handle>, TokenError> {
        Ok(self
            .state
            .lock()
            .objects
            .iter()
            .filter(|(_, o)| o.application == application)
            .filter(|(_, o)| label.is_none_or(|l| o.label == l))
            .map(|(h, _)| *h)
            .collect())
    }

    fn read(&self, handle: Handle) -> Result<StoredObject, TokenError> {
        let state = self.state.lock();
        let object = state.objects.get(&handle).ok_or(TokenError {
            call: "C_GetAttributeValue",
            kind: TokenErrorKind::ObjectGone,
        })?;
        if object.value_lost {
            return Err(TokenError {
                call: "C_GetAttributeValue",
                kind: TokenErrorKind::ValueLost {
                    label: object.label.clone(),
                },
            });
        }
        Ok(StoredObject {
            label: object.label.clone(),
            value: object.value.clone(),
        })
    }

    fn create(&self, object: &NewObject<'_>) -> Result<Handle, TokenError> {
        let mut state = self.state.lock();
        state.next_handle += 1;
        let handle = state.next_handle;
        state.objects.insert(
            handle,
            Object {
                label: object.label.to_owned(),
                application: object.application.to_owned(),
                value: Zeroizing::new(object.value.to_vec()),
                value_lost: false,
            },
        );
        Ok(handle)
    }

    fn destroy(&self, handle: Handle) -> Result<(), TokenError> {
        let mut state = self.state.lock();
        if state.objects.get(&handle).is_some_and(|o| o.value_lost) {
            return Err(TokenError {
                call: "C_DestroyObject",
                kind: TokenErrorKind::Other("GeneralError".into()),
            });
        }
        match state.objects.remove(&handle) {
            Some(_) => Ok(()),
            None => Err(TokenError {
                call: "C_DestroyObject",
                kind: TokenErrorKind::ObjectGone,
            }),
        }
    }

    fn relabel(&self, handle: Handle, label: &str) -> Result<(), TokenError> {
        match self.state.lock().objects.get_mut(&handle) {
            Some(object) => {
                object.label = label.to_owned();
                Ok(())
            }
            None => Err(TokenError {
                call: "C_SetAttributeValue",
                kind: TokenErrorKind::ObjectGone,
            }),
        }
    }

    fn info(&self) -> Result<TokenInfo, TokenError> {
        Ok(TokenInfo {
            label: "memory".into(),
            manufacturer: "hsm-secrets-operator".into(),
            model: "in-memory token".into(),
            serial_number: "0".into(),
            firmware_version: "0.0".into(),
        })
    }
}
