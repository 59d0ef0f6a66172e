//! A wrapper that counts every call the store makes, and can cut the token off at the N-th
//! call: that call and every later one fail, as they would for a process that crashed or a
//! device that was unplugged there. Tests use it to prove writes are atomic at every cut and
//! that index-served operations make no object reads; the benchmark uses it to count calls.

use super::{Handle, NewObject, StoredObject, Token, TokenError, TokenErrorKind, TokenInfo};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

/// Calls made so far, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallCounts {
    /// `C_FindObjects*` sequences.
    pub find: u64,
    /// `C_GetAttributeValue`.
    pub read: u64,
    /// `C_CreateObject`.
    pub create: u64,
    /// `C_DestroyObject`.
    pub destroy: u64,
    /// `C_SetAttributeValue` (relabel).
    pub relabel: u64,
    /// `C_GetTokenInfo`.
    pub info: u64,
}

impl CallCounts {
    /// All calls.
    pub fn total(&self) -> u64 {
        self.find + self.read + self.create + self.destroy + self.relabel + self.info
    }

    /// The calls made since `earlier`.
    pub fn since(&self, earlier: &CallCounts) -> CallCounts {
        CallCounts {
            find: self.find - earlier.find,
            read: self.read - earlier.read,
            create: self.create - earlier.create,
            destroy: self.destroy - earlier.destroy,
            relabel: self.relabel - earlier.relabel,
            info: self.info - earlier.info,
        }
    }
}

/// Counts calls to the inner token and optionally fails from the N-th call on.
#[derive(Debug)]
pub struct InstrumentedToken<T> {
    inner: T,
    find: AtomicU64,
    read: AtomicU64,
    create: AtomicU64,
    destroy: AtomicU64,
    relabel: AtomicU64,
    info: AtomicU64,
    calls: AtomicU64,
    /// When false, relabelling is refused as a module without it would.
    relabel_supported: std::sync::atomic::AtomicBool,
    /// 0 = never cut; otherwise the 1-based number of the first failing call.
    cut_at: AtomicU64,
    /// Whether cut calls report the token gone ([`TokenErrorKind::TokenLost`], as a pulled
    /// card) rather than a failed call ([`TokenErrorKind::Injected`]).
    cut_loses_token: std::sync::atomic::AtomicBool,
    /// Whether a call has failed at the cut since it was set (stays set after [`heal`]).
    ///
    /// [`heal`]: InstrumentedToken::heal
    fired: std::sync::atomic::AtomicBool,
}

impl<T: Token> InstrumentedToken<T> {
    /// Wraps `inner`, counting, with no cut.
    pub fn new(inner: T) -> Self {
        InstrumentedToken {
            inner,
            find: AtomicU64::new(0),
            read: AtomicU64::new(0),
            create: AtomicU64::new(0),
            destroy: AtomicU64::new(0),
            relabel: AtomicU64::new(0),
            info: AtomicU64::new(0),
            calls: AtomicU64::new(0),
            relabel_supported: std::sync::atomic::AtomicBool::new(true),
            cut_at: AtomicU64::new(0),
            cut_loses_token: std::sync::atomic::AtomicBool::new(false),
            fired: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// From now on, the `n`-th call from now (1-based) and every call after it fail.
    pub fn cut_after(&self, n: u64) {
        self.cut_loses_token.store(false, SeqCst);
        self.fired.store(false, SeqCst);
        self.cut_at.store(self.calls.load(SeqCst) + n, SeqCst);
    }

    /// Like [`cut_after`](Self::cut_after), but the failing calls report the token gone
    /// ([`TokenErrorKind::TokenLost`]), as when a card is pulled: callers drop the token and
    /// open it again.
    pub fn lose_after(&self, n: u64) {
        self.cut_loses_token.store(true, SeqCst);
        self.fired.store(false, SeqCst);
        self.cut_at.store(self.calls.load(SeqCst) + n, SeqCst);
    }

    /// Makes relabelling fail with [`TokenErrorKind::Unsupported`], as on modules that cannot
    /// change `CKA_LABEL`, so the store's fallback path is exercised.
    pub fn refuse_relabel(&self) {
        self.relabel_supported.store(false, SeqCst);
    }

    /// Removes the cut.
    pub fn heal(&self) {
        self.cut_at.store(0, SeqCst);
    }

    /// Whether a call has failed at the cut set last (also once healed).
    pub fn was_cut(&self) -> bool {
        self.fired.load(SeqCst)
    }

    /// The counts so far.
    pub fn counts(&self) -> CallCounts {
        CallCounts {
            find: self.find.load(SeqCst),
            read: self.read.load(SeqCst),
            create: self.create.load(SeqCst),
            destroy: self.destroy.load(SeqCst),
            relabel: self.relabel.load(SeqCst),
            info: self.info.load(SeqCst),
        }
    }

    /// The wrapped token.
    pub fn inner(&self) -> &T {
        &self.inner
    }

    fn enter(&self, counter: &AtomicU64, call: &'static str) -> Result<(), TokenError> {
        let n = self.calls.fetch_add(1, SeqCst) + 1;
        let cut = self.cut_at.load(SeqCst);
        if cut != 0 && n >= cut {
            self.fired.store(true, SeqCst);
            let kind = if self.cut_loses_token.load(SeqCst) {
                TokenErrorKind::TokenLost
            } else {
                TokenErrorKind::Injected
            };
            return Err(TokenError { call, kind });
        }
        counter.fetch_add(1, SeqCst);
        Ok(())
    }
}

impl<T: Token> Token for InstrumentedToken<T> {
    fn find(&self, application: &str, label: Option<&str>) -> Result<Vec<Handle>, TokenError> {
        self.enter(&self.find, "C_FindObjects")?;
        self.inner.find(application, label)
    }
    fn read(&self, handle: Handle) -> Result<StoredObject, TokenError> {
        self.enter(&self.read, "C_GetAttributeValue")?;
        self.inner.read(handle)
    }
    fn read_sized(
        &self,
        handle: Handle,
        label_len: usize,
        value_len: usize,
    ) -> Result<StoredObject, TokenError> {
        self.enter(&self.read, "C_GetAttributeValue")?;
        self.inner.read_sized(handle, label_len, value_len)
    }
    fn create(&self, object: &NewObject<'_>) -> Result<Handle, TokenError> {
        self.enter(&self.create, "C_CreateObject")?;
        self.inner.create(object)
    }
    fn destroy(&self, handle: Handle) -> Result<(), TokenError> {
        self.enter(&self.destroy, "C_DestroyObject")?;
        self.inner.destroy(handle)
    }
    fn relabel(&self, handle: Handle, label: &str) -> Result<(), TokenError> {
        self.enter(&self.relabel, "C_SetAttributeValue")?;
        if !self.relabel_supported.load(SeqCst) {
            return Err(TokenError {
                call: "C_SetAttributeValue",
                kind: TokenErrorKind::Unsupported,
            });
        }
        self.inner.relabel(handle, label)
    }
    fn info(&self) -> Result<TokenInfo, TokenError> {
        self.enter(&self.info, "C_GetTokenInfo")?;
        self.inner.info()
    }
}
