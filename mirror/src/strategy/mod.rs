//! Interval strategies: the decisions in which the mirror designs of real
//! drivers differ, behind one trait, and the registry that names them.
//!
//! Everything else (the device page table, the fault state machine, the
//! callback skeleton with the driver lock and `set_seq`, the teardown of
//! device PTEs, deferred-work scheduling, snapshots) is shared and lives in
//! the crate root. A strategy decides:
//!
//! * what it sets up at open ([`Strategy::open`]);
//! * which interval covers a fault, and how it is found or created
//!   ([`Strategy::interval`]), and what a finished fault lets go of
//!   ([`Strategy::fault_end`]);
//! * what its callback does beyond the common teardown
//!   ([`Strategy::invalidated`], [`Strategy::must_wait`]);
//! * what deferred work exists and what it does ([`Strategy::run_work`]);
//! * what commit must check under the driver lock ([`Strategy::commit_ok`],
//!   [`Strategy::commit_ok_for`]) and whether a huge device entry may map
//!   a huge CPU page ([`Strategy::huge_ok`]);
//! * what a fault does first ([`Strategy::fault_begin`]: a garbage
//!   collector);
//! * which pages its intervals cover for the own-migration fixup
//!   ([`Strategy::covers`]);
//! * whether device accesses go through registrations
//!   ([`Strategy::registrations`]).
//!
//! A strategy is named by a [`StrategySpec`]: an index into the registry
//! ([`kinds`]) and a parameter. Its name in `.ops` files is the kind's name,
//! with `:SIZE` for a kind that takes a size.
//!
//! # A strategy of your own
//!
//! Another crate implements [`Strategy`] and [`register`]s a
//! [`StrategyKind`]; from then on `.ops` files, the codec, the engines,
//! replay, minimization and soak run it like a built-in one
//! (`harness::cli::main` is the whole command line, and
//! `harness::targets::mirror_pinned` a fuzz target for it). The smallest
//! correct strategy puts one interval over the address space at open and
//! leaves everything else to the shared code:
//!
//! ```
//! use mirror::strategy::{self, in_tree, Cover, FaultReq, Notify, Strategy, StrategyKind};
//! use mirror::MirrorError;
//! use mm::Mm;
//! use notifier::Interval;
//!
//! #[derive(Debug)]
//! struct Whole(Option<Interval>);
//!
//! impl Strategy for Whole {
//!     fn open(&mut self, mm: &Mm, n: &Notify<'_>) -> Result<(), MirrorError> {
//!         self.0 = Some(n.insert(mm, 0, mm.config.task_size)?);
//!         Ok(())
//!     }
//!     fn interval(&mut self, _: FaultReq, _: &Mm, _: &Notify<'_>) -> Result<Cover, MirrorError> {
//!         let iv = self.0.clone().ok_or(MirrorError::Segv(mm::MmError::Fault))?;
//!         Ok(Cover { iv, hold: None })
//!     }
//!     // The own-migration fixup maps only pages an interval in the tree covers.
//!     fn covers(&self, _page: u64) -> bool {
//!         self.0.as_ref().is_some_and(in_tree)
//!     }
//!     fn clear(&mut self) {
//!         self.0 = None;
//!     }
//! }
//!
//! let kind = StrategyKind {
//!     name: "whole",
//!     param: None,
//!     build: |_, _| Box::new(Whole(None)),
//! };
//! let i = strategy::register(kind).unwrap();
//! assert_eq!(strategy::StrategySpec::from_name("whole").unwrap().kind, i);
//! ```
//!
//! A strategy that creates intervals on demand also decides what a fault
//! gives back ([`Strategy::fault_end`]), what its deferred work removes
//! ([`Strategy::run_work`]) and what commit must re-check
//! ([`Strategy::commit_ok`]); `examples/own-strategy` in the repository is
//! one, fuzzed in CI.

use std::any::Any;
use std::fmt;
use std::sync::{Arc, RwLock};

use mm::{FrameId, Mm, HUGE};
use notifier::{ClassicId, Interval, PlantedBug, Range};

use crate::{interval_ops, Callback, Dev, MirrorError};

pub mod fullva;
pub mod gpusvm;
pub mod kfd;
pub mod odp;
pub mod perfault;
pub mod regcache;
pub mod vma;

/// The planted bug a mirror was opened with; never set without the
/// `planted-bugs` feature.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Planted(Option<PlantedBug>);

impl Planted {
    /// Wraps the run's planted bug (dropped without the feature).
    pub fn new(b: Option<PlantedBug>) -> Planted {
        #[cfg(feature = "planted-bugs")]
        return Planted(b);
        #[cfg(not(feature = "planted-bugs"))]
        {
            let _ = b;
            Planted(None)
        }
    }

    /// Whether `b` is planted.
    #[inline]
    pub fn is(self, b: PlantedBug) -> bool {
        #[cfg(feature = "planted-bugs")]
        return self.0 == Some(b);
        #[cfg(not(feature = "planted-bugs"))]
        {
            let _ = b;
            false
        }
    }
}

/// Inserts intervals (and registers classic subscribers) whose callbacks
/// are this mirror's shared invalidate callback.
pub struct Notify<'a>(pub(crate) &'a Callback);

impl Notify<'_> {
    /// Inserts an interval over `[start, start + len)` of `mm`.
    pub fn insert(&self, mm: &Mm, start: u64, len: u64) -> Result<Interval, MirrorError> {
        mm.notifier
            .insert(start, len, interval_ops(self.0.clone()))
            .map_err(MirrorError::Notifier)
    }

    /// Registers a classic subscriber: it sees every invalidation of `mm`.
    pub fn register(&self, mm: &Mm) -> Result<ClassicId, MirrorError> {
        mm.notifier
            .register(Arc::new(self.0.clone()))
            .map_err(MirrorError::Notifier)
    }
}

/// What a fault asks its strategy for.
#[derive(Clone, Copy, Debug)]
pub struct FaultReq {
    /// The first page.
    pub addr: u64,
    /// The registration being pinned, if the fault pins one.
    pub reg: Option<u64>,
}

/// The interval a fault read_begins on.
#[derive(Debug)]
pub struct Cover {
    /// The interval.
    pub iv: Interval,
    /// A use the fault holds until it ends (given back in [`FaultEnd`]).
    pub hold: Option<u64>,
}

/// What a fault gives back when it ends.
#[derive(Debug)]
pub struct FaultEnd {
    /// The interval it read_began on, if it found one.
    pub iv: Option<Interval>,
    /// The use of [`Cover::hold`].
    pub hold: Option<u64>,
    /// The registration it pinned.
    pub reg: Option<u64>,
    /// It failed.
    pub failed: bool,
}

/// One item of deferred work, defined by the strategy that queued it.
pub type Work = Box<dyn Any + Send>;

/// The decisions in which the mirror designs differ. One value per open
/// mirror, kept with the device state behind the mirror's state mutex: a
/// method runs with that mutex held (never with the logical driver lock
/// taken on its behalf; the shared code does that).
pub trait Strategy: Any + fmt::Debug + Send {
    /// Sets up at open: an interval over everything, a classic
    /// subscriber, or nothing (then it must refuse a released mm).
    fn open(&mut self, mm: &Mm, n: &Notify<'_>) -> Result<(), MirrorError>;

    /// The interval that covers fault `f`, found or created.
    fn interval(&mut self, f: FaultReq, mm: &Mm, n: &Notify<'_>) -> Result<Cover, MirrorError>;

    /// A fault ends (installed, or failed): give back its use; returns an
    /// interval to remove now (a temporary one).
    fn fault_end(&mut self, _dev: &mut Dev, _end: FaultEnd) -> Option<Interval> {
        None
    }

    /// After a retry, whether the fault must look its interval up again
    /// rather than read_begin on the same one.
    fn relookup_on_retry(&self) -> bool {
        false
    }

    /// Whether a fault may still install PTEs under `iv` (checked under
    /// the driver lock at commit, besides read_retry).
    fn commit_ok(&self, _iv: &Interval) -> bool {
        true
    }

    /// Like [`Strategy::commit_ok`], for a fault that holds `hold` (its
    /// [`Cover::hold`]): what a strategy whose faults each work on one of
    /// several objects under one interval checks. Asks `commit_ok` unless
    /// overridden.
    fn commit_ok_for(&self, iv: &Interval, _hold: Option<u64>) -> bool {
        self.commit_ok(iv)
    }

    /// Whether a fault under `iv` may map the huge CPU page at `base` with
    /// one 2 MiB device entry (asked after the walk and again at commit).
    /// By default when `iv` covers the 2 MiB whole, so that every change
    /// of any page of it is heard.
    fn huge_ok(&self, iv: &Interval, base: u64) -> bool {
        iv.start() <= base && iv.last() >= base.saturating_add(HUGE - 1)
    }

    /// A fault (re)starts, before it looks its interval up: work the
    /// driver does at the top of every fault (a garbage collector). The
    /// driver lock may be held by another fault between its commit and its
    /// install, whose interval and hold must stay.
    fn fault_begin(&mut self, _dev: &mut Dev) {}

    /// Whether the callback for `range` would have to wait (for device
    /// accesses in flight).
    fn must_wait(&self, _range: &Range) -> bool {
        false
    }

    /// The callback's own part, after the common teardown: `iv` was
    /// invalidated for `range` (driver lock semantics: the callback holds it).
    fn invalidated(&mut self, _dev: &mut Dev, _iv: &Interval, _range: &Range) {}

    /// Runs one item of deferred work (the driver lock is free and taken
    /// by nobody): an interval to remove, or why there was nothing to do.
    fn run_work(
        &mut self,
        _dev: &mut Dev,
        _item: Work,
        _mm: &Mm,
        _n: &Notify<'_>,
    ) -> Result<Interval, &'static str> {
        Err("nothing")
    }

    /// Like [`Strategy::run_work`], for work that can misuse the notifier
    /// API: `Err` is a driver bug (an interval inserted into a released
    /// address space…) that the harness reports.
    fn run_work_checked(
        &mut self,
        dev: &mut Dev,
        item: Work,
        mm: &Mm,
        n: &Notify<'_>,
    ) -> Result<Result<Interval, &'static str>, MirrorError> {
        Ok(self.run_work(dev, item, mm, n))
    }

    /// Whether running `item` takes the mmap lock of `mm` for write: it
    /// then waits until nobody holds the mmap lock. Taking the lock of an
    /// address space that has exited is a use after free (the work must
    /// hold a reference, mmget_not_zero, and give up without one): the
    /// shared code reports it.
    fn work_takes_mmap_write(&self, _item: &Work, _mm: &Mm) -> bool {
        false
    }

    /// Sets attributes on `[addr, addr + len)` (an explicit registration
    /// of the range with the driver); a strategy without attributes
    /// refuses with [`MirrorError::Inval`].
    fn set_attr(
        &mut self,
        _dev: &mut Dev,
        _mm: &Mm,
        _n: &Notify<'_>,
        _addr: u64,
        _len: u64,
    ) -> Result<(), MirrorError> {
        Err(MirrorError::Inval)
    }

    /// Whether the device is stopped (its queues evicted): no access may
    /// use a device PTE and a fault answers [`MirrorError::Again`].
    fn device_quiesced(&self) -> bool {
        false
    }

    /// Whether an interval of this mirror covers `page`, so that a later
    /// change there is heard (the own-migration fixup maps only those).
    /// Only an interval in the tree counts: one inserted while the current
    /// cycle runs waits on the deferred list, and an invalidation that
    /// starts before the cycle ends would not call it (see [`in_tree`]).
    fn covers(&self, page: u64) -> bool;

    /// Whether device accesses go through registrations (and so never
    /// through device faults or the device's own migrations).
    fn registrations(&self) -> bool {
        false
    }

    /// Registrations: installs the `samples` pinned by a fault of `reg`;
    /// returns the frames to unpin (the old pins).
    fn install_registration(
        &mut self,
        _dev: &mut Dev,
        _reg: u64,
        samples: Vec<(FrameId, bool)>,
    ) -> Vec<FrameId> {
        samples.into_iter().map(|(f, _)| f).collect()
    }

    /// Frames pinned: each must stay live.
    fn pinned_frames(&self) -> Vec<FrameId> {
        Vec::new()
    }

    /// Drops every interval it holds (their callbacks point back at the
    /// state that holds them).
    fn clear(&mut self);

    /// The most changes that one queued item of deferred work has
    /// collected and will apply at once (a tracked VMA's holes); 0 for a
    /// strategy whose items carry one change each. Feedback: a batch
    /// that grows is state that few programs reach.
    fn deepest_backlog(&self) -> usize {
        0
    }

    /// Bytes of its own state now (counted costs, issue 16): its
    /// structures' element sizes, [`INTERVAL_BYTES`] per interval it holds.
    fn state_bytes(&self) -> usize {
        0
    }
}

/// A kind's parameter: log2 of a size, written `NAME:SIZE` (`16k`, `2m`,
/// `1g`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SizeParam {
    /// Smallest log2.
    pub min: u8,
    /// Largest log2.
    pub max: u8,
    /// What `NAME` alone would mean, and what the codec decodes first.
    pub default: u8,
    /// Its name in messages.
    pub what: &'static str,
}

/// One entry of the registry.
#[derive(Clone, Copy)]
pub struct StrategyKind {
    /// Its name in `.ops` files.
    pub name: &'static str,
    /// Its parameter, if any.
    pub param: Option<SizeParam>,
    /// Builds a mirror's strategy from a valid parameter.
    pub build: fn(param: u8, planted: Planted) -> Box<dyn Strategy>,
}

impl fmt::Debug for StrategyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StrategyKind")
            .field("name", &self.name)
            .field("param", &self.param)
            .finish()
    }
}

/// Bytes of one interval notifier in the kernel (struct
/// mmu_interval_notifier on x86_64: tree node, ops, mm, list, seq).
pub const INTERVAL_BYTES: usize = 88;

/// Counts a driver-side lookup in a balanced tree of `n` entries: the
/// depth it descends (costs, issue 16), and the driver lock it takes
/// when `locked`.
pub(crate) fn count_lookup(n: usize, locked: bool) {
    use notifier::cost::{add, one, Metric};
    add(
        Metric::FaultLookups,
        u64::from(usize::BITS - n.leading_zeros()).max(1),
    );
    if locked {
        one(Metric::DriverLock);
    }
}

/// The built-in strategies, in registry order. The codec names kinds by
/// name, so the order matters only to [`StrategySpec::kind`] indices
/// within one build; new kinds go at the end all the same.
pub const BUILTIN: [StrategyKind; 8] = [
    fullva::KIND,
    perfault::KIND,
    odp::KIND,
    vma::KIND,
    regcache::KIND,
    gpusvm::KIND,
    kfd::KIND,
    kfd::KIND_NOXNACK,
];

static EXTRA: RwLock<Vec<StrategyKind>> = RwLock::new(Vec::new());

/// Why [`register`] refused a kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegisterError {
    /// The name is empty or has a character other than `a-z`, `0-9`, `-`
    /// (it must read back from an `.ops` config line).
    BadName(String),
    /// A built-in strategy, or a different kind registered earlier, has
    /// this name.
    Taken(String),
    /// Its parameter's range is empty or its default outside it.
    BadParam(String),
    /// 256 kinds are registered already.
    Full,
}

impl fmt::Display for RegisterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegisterError::BadName(n) => {
                write!(f, "strategy name '{n}' must be non-empty a-z, 0-9, '-'")
            }
            RegisterError::Taken(n) => write!(f, "strategy name '{n}' is taken"),
            RegisterError::BadParam(n) => write!(f, "strategy '{n}': parameter range is empty"),
            RegisterError::Full => write!(f, "256 strategies are registered already"),
        }
    }
}

impl std::error::Error for RegisterError {}

/// Adds a strategy kind, written in any crate, after the built-in ones;
/// returns its registry index. Registering a kind of the same name and
/// parameter again returns the same index (the first constructor stays), so a fuzz target may call it
/// on every input. From then on `.ops` files name it, `mnfuzz fuzz
/// --strategy NAME` pins devices to it, and the codec reaches the first
/// one registered through device code 7 (see the harness's codec).
///
/// ```
/// use mirror::strategy::{self, StrategyKind};
/// # fn build(_: u8, _: strategy::Planted) -> Box<dyn strategy::Strategy> { unimplemented!() }
/// let kind = StrategyKind { name: "my-cache", param: None, build };
/// let i = strategy::register(kind).unwrap();
/// assert_eq!(strategy::register(kind), Ok(i));
/// assert_eq!(strategy::StrategySpec::from_name("my-cache").map(|s| s.kind), Some(i));
/// assert!(strategy::register(StrategyKind { name: "odp", ..kind }).is_err());
/// ```
pub fn register(kind: StrategyKind) -> Result<u8, RegisterError> {
    let name = kind.name;
    let good = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    if name.is_empty() || !name.chars().all(good) {
        return Err(RegisterError::BadName(name.into()));
    }
    if let Some(p) = kind.param {
        if p.min > p.max || !(p.min..=p.max).contains(&p.default) || p.max > 62 {
            return Err(RegisterError::BadParam(name.into()));
        }
    }
    if BUILTIN.iter().any(|k| k.name == name) {
        return Err(RegisterError::Taken(name.into()));
    }
    let mut extra = EXTRA.write().unwrap_or_else(|e| e.into_inner());
    if let Some(i) = extra.iter().position(|k| k.name == name) {
        return if extra[i].param == kind.param {
            Ok((BUILTIN.len() + i) as u8)
        } else {
            Err(RegisterError::Taken(name.into()))
        };
    }
    let i = u8::try_from(BUILTIN.len() + extra.len()).map_err(|_| RegisterError::Full)?;
    extra.push(kind);
    Ok(i)
}

/// Every registered kind, built-in ones first.
pub fn kinds() -> Vec<StrategyKind> {
    let extra = EXTRA.read().unwrap_or_else(|e| e.into_inner());
    BUILTIN.iter().chain(extra.iter()).copied().collect()
}

/// The kind at registry index `i`.
pub fn kind(i: u8) -> Option<StrategyKind> {
    let i = usize::from(i);
    BUILTIN.get(i).copied().or_else(|| {
        let extra = EXTRA.read().unwrap_or_else(|e| e.into_inner());
        extra.get(i - BUILTIN.len()).copied()
    })
}

/// How a device's TLB learns of zapped PTEs (DESIGN.md §4). Works with
/// every strategy: it is the shared callback's business, not theirs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tlb {
    /// The callback flushes before it returns (one pass).
    #[default]
    Sync,
    /// The first pass issues the flush, a two-pass finish waits for it
    /// (xe style): flushes of all intervals overlap.
    TwoPass,
}

impl Tlb {
    /// Both modes.
    pub const ALL: [Tlb; 2] = [Tlb::Sync, Tlb::TwoPass];

    /// Its name after `@` in a strategy name (`fullva@twopass`).
    pub fn name(self) -> &'static str {
        match self {
            Tlb::Sync => "sync",
            Tlb::TwoPass => "twopass",
        }
    }

    /// The mode called `s`.
    pub fn from_name(s: &str) -> Option<Tlb> {
        Tlb::ALL.into_iter().find(|t| t.name() == s)
    }
}

/// A strategy, its parameter and its device's TLB mode: what a program's
/// config and `open` name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StrategySpec {
    /// Index into the registry.
    pub kind: u8,
    /// Its parameter (zero for a kind without one).
    pub param: u8,
    /// The device's TLB flushes.
    pub tlb: Tlb,
}

impl StrategySpec {
    /// Built-in kind `kind` with its default parameter.
    pub const fn of(kind: u8) -> StrategySpec {
        let i = kind as usize;
        let param = if i < BUILTIN.len() {
            match BUILTIN[i].param {
                Some(p) => p.default,
                None => 0,
            }
        } else {
            0
        };
        StrategySpec {
            kind,
            param,
            tlb: Tlb::Sync,
        }
    }

    /// This spec with TLB mode `tlb`.
    pub const fn with_tlb(self, tlb: Tlb) -> StrategySpec {
        StrategySpec { tlb, ..self }
    }

    /// The kind with its default parameter, if `kind` is registered.
    pub fn default_of(kind: u8) -> Option<StrategySpec> {
        let k = self::kind(kind)?;
        Some(StrategySpec {
            kind,
            param: k.param.map_or(0, |p| p.default),
            tlb: Tlb::Sync,
        })
    }

    /// This spec with its kind's default parameter (itself without one).
    pub fn with_default_param(self) -> StrategySpec {
        match self::kind(self.kind).and_then(|k| k.param) {
            Some(p) => StrategySpec {
                param: p.default,
                ..self
            },
            None => self,
        }
    }

    /// Whether its kind is registered and takes this parameter.
    pub fn check(self) -> Result<(), String> {
        let k = kind(self.kind).ok_or_else(|| format!("unknown strategy #{}", self.kind))?;
        match k.param {
            Some(p) if !(p.min..=p.max).contains(&self.param) => {
                Err(format!("{} out of range ({}..={})", p.what, p.min, p.max))
            }
            None if self.param != 0 => Err(format!("{} takes no parameter", k.name)),
            _ => Ok(()),
        }
    }

    /// Its name in `.ops` files: `fullva`, `odp:2m`, `kfd@twopass`… (the
    /// default TLB mode, `sync`, is not written).
    pub fn name(self) -> String {
        let base = self.kind_name();
        match self.tlb {
            Tlb::Sync => base,
            t => format!("{base}@{}", t.name()),
        }
    }

    fn kind_name(self) -> String {
        match kind(self.kind) {
            Some(StrategyKind {
                name,
                param: Some(_),
                ..
            }) => format!("{name}:{}", size_name(self.param)),
            Some(k) => k.name.to_string(),
            None => format!("#{}", self.kind),
        }
    }

    /// Looks a strategy up by name.
    pub fn from_name(s: &str) -> Option<StrategySpec> {
        let (base, tlb) = match s.split_once('@') {
            Some((b, t)) => (b, Tlb::from_name(t)?),
            None => (s, Tlb::Sync),
        };
        let st = StrategySpec::base_from_name(base)?.with_tlb(tlb);
        (st.name() == s).then_some(st)
    }

    fn base_from_name(s: &str) -> Option<StrategySpec> {
        let (name, size) = match s.split_once(':') {
            Some((n, z)) => (n, Some(z)),
            None => (s, None),
        };
        let all = kinds();
        let i = all.iter().position(|k| k.name == name)?;
        let kind = u8::try_from(i).ok()?;
        let param = match (all[i].param, size) {
            (None, None) => 0,
            (Some(p), Some(size)) => {
                let shift = parse_size(size)?;
                (p.min..=p.max).contains(&shift).then_some(shift)?
            }
            _ => return None,
        };
        let st = StrategySpec {
            kind,
            param,
            tlb: Tlb::Sync,
        };
        (st.name() == s).then_some(st)
    }

    /// Like [`StrategySpec::from_name`], but a sized kind's bare name
    /// (`odp`) means its default size: what command-line options accept.
    pub fn from_arg(s: &str) -> Option<StrategySpec> {
        StrategySpec::from_name(s).or_else(|| {
            let (base, tlb) = match s.split_once('@') {
                Some((b, t)) => (b, Tlb::from_name(t)?),
                None => (s, Tlb::Sync),
            };
            let i = kinds().iter().position(|k| k.name == base)?;
            Some(StrategySpec::default_of(u8::try_from(i).ok()?)?.with_tlb(tlb))
        })
    }

    /// Every valid spec: each kind with each of its parameters, with the
    /// default TLB mode.
    pub fn every() -> Vec<StrategySpec> {
        let mut all = Vec::new();
        for (i, k) in kinds().iter().enumerate() {
            let kind = u8::try_from(i).expect("fewer than 256 strategies");
            match k.param {
                Some(p) => all.extend((p.min..=p.max).map(|param| StrategySpec {
                    kind,
                    param,
                    tlb: Tlb::Sync,
                })),
                None => all.push(StrategySpec {
                    kind,
                    param: 0,
                    tlb: Tlb::Sync,
                }),
            }
        }
        all
    }

    /// Builds the strategy; `None` for an invalid spec.
    pub fn build(self, planted: Planted) -> Option<Box<dyn Strategy>> {
        self.check().ok()?;
        Some((kind(self.kind)?.build)(self.param, planted))
    }
}

/// A size by its log2: `16k`, `2m`, `1g`.
pub fn size_name(shift: u8) -> String {
    let (n, unit) = match shift {
        30.. => (1u64 << (shift - 30), "g"),
        20..=29 => (1u64 << (shift - 20), "m"),
        _ => (1u64 << shift.saturating_sub(10), "k"),
    };
    format!("{n}{unit}")
}

/// log2 of a size written `Nk`, `Nm` or `Ng` with N a power of two.
fn parse_size(size: &str) -> Option<u8> {
    let (digits, shift) = match size.as_bytes().last()? {
        b'k' => (&size[..size.len() - 1], 10),
        b'm' => (&size[..size.len() - 1], 20),
        b'g' => (&size[..size.len() - 1], 30),
        _ => return None,
    };
    let n: u64 = digits.parse().ok()?;
    if !n.is_power_of_two() {
        return None;
    }
    u8::try_from(n.trailing_zeros() + shift).ok()
}

/// What `open` answers for a strategy whose intervals come later: a
/// released mm takes no new interval.
pub fn refuse_released(mm: &Mm) -> Result<(), MirrorError> {
    if mm.notifier.snapshot().released {
        return Err(MirrorError::Notifier(notifier::Error::Released));
    }
    Ok(())
}

/// Whether `iv` is in the tree now, so that every invalidation that starts
/// from now on calls it (not pending insert, not pending removal).
pub fn in_tree(iv: &Interval) -> bool {
    iv.phase() == notifier::Phase::InTree
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for (i, k) in BUILTIN.iter().enumerate() {
            let s = StrategySpec::default_of(i as u8).unwrap();
            assert_eq!(StrategySpec::of(i as u8), s);
            assert_eq!(StrategySpec::from_name(&s.name()), Some(s), "{}", k.name);
        }
        let names: Vec<String> = (0..8).map(|i| StrategySpec::of(i).name()).collect();
        assert_eq!(
            names,
            [
                "fullva",
                "perfault",
                "odp:2m",
                "vma",
                "regcache",
                "gpusvm:64k",
                "kfd",
                "kfd-noxnack"
            ]
        );
        let svm = |param| StrategySpec {
            kind: 5,
            param,
            tlb: Tlb::Sync,
        };
        assert_eq!(StrategySpec::from_name("gpusvm:16k"), Some(svm(14)));
        assert_eq!(StrategySpec::from_name("gpusvm:2m"), Some(svm(21)));
        assert_eq!(StrategySpec::from_arg("gpusvm"), Some(svm(16)));
        assert_eq!(StrategySpec::from_name("gpusvm:8k"), None);
        let two = svm(21).with_tlb(Tlb::TwoPass);
        assert_eq!(two.name(), "gpusvm:2m@twopass");
        assert_eq!(StrategySpec::from_name("gpusvm:2m@twopass"), Some(two));
        assert_eq!(
            StrategySpec::from_name("gpusvm:2m@sync"),
            None,
            "sync is not written"
        );
        assert_eq!(
            StrategySpec::from_arg("gpusvm@twopass"),
            Some(svm(16).with_tlb(Tlb::TwoPass))
        );
        assert_eq!(StrategySpec::from_arg("gpusvm@lazy"), None);
        let odp = |param| StrategySpec {
            kind: 2,
            param,
            tlb: Tlb::Sync,
        };
        assert_eq!(StrategySpec::from_name("odp:16k"), Some(odp(14)));
        assert_eq!(StrategySpec::from_name("odp:1g"), Some(odp(30)));
        for bad in [
            "odp",
            "odp:8k",
            "odp:2g",
            "odp:3m",
            "odp:1024k",
            "fullva:2m",
            "gpu",
        ] {
            assert_eq!(StrategySpec::from_name(bad), None, "{bad}");
        }
        assert!(odp(13).check().unwrap_err().contains("ODP chunk shift"));
        assert_eq!(odp(21).check(), Ok(()));
        assert!(StrategySpec::of(0).with_tlb(Tlb::TwoPass).check().is_ok());
        assert!(StrategySpec {
            kind: 0,
            param: 1,
            tlb: Tlb::Sync
        }
        .check()
        .is_err());
        assert!(StrategySpec {
            kind: 200,
            param: 0,
            tlb: Tlb::Sync
        }
        .check()
        .is_err());
    }
}
