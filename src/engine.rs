//! The wasmtime engine, the linker every process shares, and the cache of compiled components.
//!
//! Compiling a component costs ~1000x instantiating it, so every component is compiled at most
//! once per run (the in-memory [`ComponentCache`], keyed by content hash, holding ready-to-
//! instantiate `CommandPre`s) and, with a cache directory, at most once per machine (wasmtime's
//! own on-disk cache). Compilation runs on a blocking thread so one guest's spawn never stalls
//! its siblings on the supervisor thread.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use sha2::{Digest, Sha256};
use thiserror::Error;
use wasmtime::component::{types::ComponentItem, Component, Linker};
use wasmtime::{Config, Engine};
use wasmtime_wasi::p2::bindings::{CommandPre, LinkOptions};

use serde::Serialize;

use crate::limits::{COMPONENT_CACHE_ENTRIES, EPOCH_TICK};
use crate::state::ProcState;

/// wasmtime's on-disk compile cache, as seen by this run.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct CompileCacheStats {
    pub enabled: bool,
    /// Components (and their modules) found compiled on disk.
    pub hits: u64,
    /// Compiled and written to the disk cache.
    pub misses: u64,
}

/// How the engine is set up; fixed for a run.
#[derive(Clone, Debug, Default)]
pub struct EngineConfig {
    /// Directory of wasmtime's on-disk compile cache; `None` disables it.
    pub cache_dir: Option<PathBuf>,
    /// Meter CPU fuel (costs some speed; enabled only when a fuel limit is set).
    pub fuel: bool,
}

/// The WASI packages cell links, with the versions in `wit/`. A component importing anything
/// else cannot run under cell; see [`missing_import`].
pub(crate) const PROVIDED_PACKAGES: &[&str] = &[
    "wasi:cli",
    "wasi:clocks",
    "wasi:filesystem",
    "wasi:http",
    "wasi:io",
    "wasi:random",
    "wasi:sockets",
];

/// The SHA-256 of a component's bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ContentHash([u8; 32]);

impl ContentHash {
    pub fn of(bytes: &[u8]) -> Self {
        ContentHash(Sha256::digest(bytes).into())
    }

    /// The hash its hex text names (what `Display` writes), if it is one.
    pub(crate) fn parse(hex_text: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_text, &mut out).ok()?;
        Some(ContentHash(out))
    }
}

impl std::fmt::Display for ContentHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl std::fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", &hex::encode(&self.0[..6]))
    }
}

/// A compiled component, pre-linked and ready to instantiate into a new store.
pub struct LoadedComponent {
    pub hash: ContentHash,
    pub size: usize,
    pub pre: CommandPre<ProcState>,
    /// The bytes it was compiled from, kept for [`ComponentCache::candidate`]. They add
    /// at most their own size to an entry whose compiled code is already larger.
    bytes: Arc<[u8]>,
}

impl LoadedComponent {
    /// The bytes it was compiled from.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl std::fmt::Debug for LoadedComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LoadedComponent({}, {} bytes)", self.hash, self.size)
    }
}

/// Why bytes could not become a runnable component. Returned to whoever supplied the bytes.
#[derive(Debug, Error)]
pub enum LoadError {
    #[error("not a WebAssembly binary (no \\0asm header)")]
    NotWasm,
    #[error("this is a core wasm module, not a component (build for wasm32-wasip2, or wrap it with `wasm-tools component new`)")]
    CoreModule,
    #[error("invalid component: {0}")]
    Invalid(String),
    #[error("component imports `{0}`, which cell does not provide (cell provides wasi:cli, wasi:clocks, wasi:filesystem, wasi:http, wasi:io, wasi:random and wasi:sockets at 0.2)")]
    MissingImport(String),
    #[error("component cannot be linked: {0}")]
    Link(String),
    #[error("component is not a command (it must export wasi:cli/run): {0}")]
    NotCommand(String),
    #[error("component is not an HTTP proxy (it must export wasi:http/incoming-handler): {0}")]
    NotProxy(String),
}

/// The engine, linker and caches, shared by every process of a run — and by every shard
/// (`Send + Sync`: wasmtime's engine, linker and pre-instantiated components are, the cache is
/// behind a mutex held only for a lookup or an insert, never across a compile).
pub struct CellEngine {
    engine: Engine,
    linker: Linker<ProcState>,
    cache: Mutex<ComponentCache>,
    /// Every component compiled by this engine that someone still holds (a `Component`
    /// capability, a running process), cached or not: how a shard finds, by hash, the very
    /// component another shard's capability names (see [`CellEngine::find_live`]).
    live: Mutex<LiveComponents>,
    /// Loads the in-memory cache answered.
    memory_hits: AtomicU64,
    /// wasmtime's on-disk cache, when enabled (kept to read its hit/miss counters).
    disk_cache: Option<wasmtime::Cache>,
    /// Compiles running at once, at most one per core: a guest spawning many distinct
    /// components waits for a slot instead of occupying every blocking thread. The slot is
    /// held by the compiling thread itself, so a compile whose spawner went away (and whose
    /// result is dropped) still counts until it really ends.
    compile_slots: Arc<tokio::sync::Semaphore>,
    _ticker: EpochTicker,
}

impl CellEngine {
    /// Builds the engine: component model, async, epoch interruption, optional fuel and disk
    /// cache, and a linker with exactly the WASI interfaces in [`PROVIDED_PACKAGES`].
    ///
    /// # Errors
    /// The cache directory cannot be created, or wasmtime rejects the configuration.
    pub fn new(cfg: &EngineConfig) -> anyhow::Result<Self> {
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            // Copy each instance's data segments instead of mapping them copy-on-write: two
            // memory mappings fewer per process (5 instead of 7), which is what lets 10,000
            // processes fit under Linux's default vm.max_map_count (65,530). Measured: no
            // slower for cached spawns, same RSS (see BENCHMARKS.md, "Scale").
            .memory_init_cow(false)
            .consume_fuel(cfg.fuel)
            // Fiber stacks reused between stores, not mapped and unmapped per process (see
            // `stacks.rs`: each unmap shoots down the other shards' TLBs).
            .with_host_stack(std::sync::Arc::new(crate::stacks::StackPool::default()));
        let mut disk_cache = None;
        if let Some(dir) = &cfg.cache_dir {
            crate::hostfiles::prepare_cache_dir(dir)?;
            let mut cache_cfg = wasmtime::CacheConfig::new();
            // wasmtime wants an absolute path; a relative --cache-dir means relative to here.
            cache_cfg.with_directory(std::path::absolute(dir)?);
            let cache = wasmtime::Cache::new(cache_cfg)
                .map_err(|e| anyhow::anyhow!("opening compile cache in {}: {e}", dir.display()))?;
            config.cache(Some(cache.clone()));
            disk_cache = Some(cache);
        }
        let engine =
            Engine::new(&config).map_err(|e| anyhow::anyhow!("configuring wasmtime: {e}"))?;
        let mut linker = Linker::new(&engine);
        // WASI 0.2.12 includes `exit-with-code` (exact exit codes; std's `exit(n)` on wasip2
        // reports every non-zero code as 1), so the default link options are complete.
        wasmtime_wasi::p2::add_to_linker_with_options_async(&mut linker, &LinkOptions::default())
            .map_err(|e| anyhow::anyhow!("linking WASI: {e}"))?;
        // Sockets a guest makes itself count against its max-sockets, like RPC sockets.
        crate::net::count::add_to_linker(&mut linker, ProcState::counted_sockets)
            .map_err(|e| anyhow::anyhow!("linking WASI sockets: {e}"))?;
        // Name lookups under the policy's name rules, not wasmtime-wasi's all-or-nothing switch.
        crate::net::lookup::add_to_linker(&mut linker, ProcState::name_lookup)
            .map_err(|e| anyhow::anyhow!("linking WASI name lookup: {e}"))?;
        // Outgoing HTTP under the same policy (see `crate::net::http`).
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(|e| anyhow::anyhow!("linking WASI HTTP: {e}"))?;
        // Its header fields charged to the process's memory limit.
        crate::net::http::held::add_to_linker(&mut linker, ProcState::held_headers)
            .map_err(|e| anyhow::anyhow!("linking WASI HTTP fields: {e}"))?;
        Ok(CellEngine {
            _ticker: EpochTicker::start(engine.clone()),
            engine,
            linker,
            cache: Mutex::default(),
            live: Mutex::default(),
            memory_hits: AtomicU64::new(0),
            disk_cache,
            compile_slots: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(1, |n| n.get()),
            )),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Loads answered from the in-memory cache (nothing compiled or read from disk).
    pub fn memory_hits(&self) -> u64 {
        self.memory_hits.load(Ordering::Relaxed)
    }

    /// The cache, for one lookup or insert. A panic while it was held (there is no code that
    /// could panic there) would only have left a consistent map behind, so poison is ignored.
    fn cache(&self) -> MutexGuard<'_, ComponentCache> {
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Components compiled (or loaded from the disk cache) so far in this run.
    pub fn compiled_count(&self) -> u64 {
        self.cache().compiled
    }

    /// What wasmtime's on-disk compile cache did so far: hits are compilations avoided.
    pub fn compile_cache_stats(&self) -> CompileCacheStats {
        match &self.disk_cache {
            Some(c) => CompileCacheStats {
                enabled: true,
                hits: c.cache_hits() as u64,
                misses: c.cache_misses() as u64,
            },
            None => CompileCacheStats::default(),
        }
    }

    /// Compiles bytes on the calling thread (through the disk cache, when enabled), without
    /// linking: for `cell compile` and `cell inspect`, which run no guest.
    ///
    /// # Errors
    /// [`LoadError::NotWasm`], [`LoadError::CoreModule`] or [`LoadError::Invalid`].
    pub fn compile_blocking(&self, bytes: &[u8]) -> Result<Component, LoadError> {
        check_header(bytes)?;
        Component::new(&self.engine, bytes).map_err(|e| LoadError::Invalid(format!("{e:#}")))
    }

    /// Turns bytes into a runnable component, compiling at most once per content hash.
    ///
    /// # Errors
    /// [`LoadError`] naming why the bytes cannot run.
    pub async fn load(&self, bytes: Arc<[u8]>) -> Result<Arc<LoadedComponent>, LoadError> {
        check_header(&bytes)?;
        // Fast path: the very bytes of a cached component (a parent spawning the same child
        // again) are recognised by comparing them, which costs a fraction of hashing them
        // (SHA-256 was ~20% of a cached spawn of a 64 KiB child).
        // The candidate is taken under the lock, the bytes compared outside it: shards load
        // at once, and a 64 KiB comparison under the lock serialised their spawns.
        let candidate = self.cache().candidate(bytes.len());
        let identical = candidate.filter(|c| *c.bytes == *bytes);
        if let Some(hit) = identical {
            self.cache().touch(&hit.hash);
            self.memory_hits.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(target: "cell::engine", hash = %hit.hash, "component cache hit (same bytes)");
            return Ok(hit);
        }
        let hash = ContentHash::of(&bytes);
        let cached = self.cache().get(&hash);
        if let Some(hit) = cached {
            self.memory_hits.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(target: "cell::engine", %hash, "component cache hit");
            return Ok(hit);
        }
        let started = std::time::Instant::now();
        let instance_pre = self.compile(bytes.clone()).await?;
        let pre =
            CommandPre::new(instance_pre).map_err(|e| LoadError::NotCommand(format!("{e:#}")))?;
        let loaded = Arc::new(LoadedComponent {
            hash,
            size: bytes.len(),
            pre,
            bytes: bytes.clone(),
        });
        tracing::info!(target: "cell::engine", %hash, size = bytes.len(), ms = started.elapsed().as_millis() as u64, "compiled component");
        // Two concurrent loads of the same bytes may both compile; the second insert wins and
        // both results are equivalent. Counting both keeps the counter honest.
        self.cache().insert(hash, loaded.clone());
        self.live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(&loaded);
        Ok(loaded)
    }

    /// The component with this hash that is compiled and still held somewhere in the run
    /// (any shard), without compiling anything; `None` when nothing holds it.
    pub(crate) fn find_live(&self, hash: &ContentHash) -> Option<Arc<LoadedComponent>> {
        if let Some(hit) = self.cache().get(hash) {
            return Some(hit);
        }
        self.live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(hash)
    }

    /// Compiles `bytes` as a `wasi:http/proxy` component (for `cell serve --http`), ready to
    /// be instantiated once per request. Not kept in the component cache: a server loads its
    /// one component once (wasmtime's disk cache still applies).
    ///
    /// # Errors
    /// As [`CellEngine::load`], or [`LoadError::NotProxy`] when it does not export
    /// `wasi:http/incoming-handler`.
    pub(crate) async fn load_proxy(
        &self,
        bytes: Arc<[u8]>,
    ) -> Result<wasmtime_wasi_http::p2::bindings::ProxyPre<ProcState>, LoadError> {
        check_header(&bytes)?;
        let instance_pre = self.compile(bytes).await?;
        wasmtime_wasi_http::p2::bindings::ProxyPre::new(instance_pre)
            .map_err(|e| LoadError::NotProxy(format!("{e:#}")))
    }

    /// Compiles `bytes` on a blocking thread, in a compile slot, and links it.
    async fn compile(
        &self,
        bytes: Arc<[u8]>,
    ) -> Result<wasmtime::component::InstancePre<ProcState>, LoadError> {
        let engine = self.engine.clone();
        let slot = self
            .compile_slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| LoadError::Invalid(format!("compiler unavailable: {e}")))?;
        let component = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            Component::new(&engine, &*bytes)
        })
        .await
        .map_err(|e| LoadError::Invalid(format!("compiler task failed: {e}")))?
        .map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
        if let Some(name) = missing_import(&self.engine, &component) {
            return Err(LoadError::MissingImport(name));
        }
        self.linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Link(format!("{e:#}")))
    }
}

/// Rejects non-wasm bytes and core modules before handing bytes to the compiler, so the error
/// says what is wrong instead of a parser offset.
fn check_header(bytes: &[u8]) -> Result<(), LoadError> {
    const MAGIC: &[u8] = b"\0asm";
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        return Err(LoadError::NotWasm);
    }
    // Bytes 4..8: version (u16) and layer (u16); layer 0 is a core module, 1 a component.
    if bytes[6..8] == [0, 0] {
        return Err(LoadError::CoreModule);
    }
    Ok(())
}

/// The first import of `component` that cell does not link, if any.
///
/// Names are compared by package (`wasi:cli`) and major version 0.2, as wasmtime's linker
/// accepts any 0.2.x import for the 0.2 interfaces it provides.
pub(crate) fn missing_import(engine: &Engine, component: &Component) -> Option<String> {
    component
        .component_type()
        .imports(engine)
        .filter(|(_, item)| !matches!(item.ty, ComponentItem::Type(_)))
        .map(|(name, _)| name.to_string())
        .find(|name| !is_provided(name))
}

/// Whether cell links `import` (a name like `wasi:cli/stdin@0.2.6`).
pub(crate) fn is_provided(import: &str) -> bool {
    let (path, version) = import.split_once('@').unwrap_or((import, ""));
    let package = path.split('/').next().unwrap_or(path);
    PROVIDED_PACKAGES.contains(&package) && (version.is_empty() || version.starts_with("0.2."))
}

/// In-memory cache of compiled components, bounded to [`COMPONENT_CACHE_ENTRIES`] (least
/// recently used evicted first), so a guest spawning endless distinct blobs cannot grow it.
///
/// `by_len` remembers, for each length, the entry most recently inserted or hit with that
/// length: the one candidate (`candidate`) whose bytes a load compares its own against.
/// One candidate, never a scan, so a lookup costs at most one comparison of the caller's own
/// bytes (less than hashing them) whatever is in the cache.
#[derive(Default)]
struct ComponentCache {
    entries: HashMap<ContentHash, (u64, Arc<LoadedComponent>)>,
    by_len: HashMap<usize, ContentHash>,
    clock: u64,
    compiled: u64,
}

impl ComponentCache {
    /// The cached component that bytes of length `len` may be identical to (the latest one
    /// of that length); the caller compares the bytes themselves, byte for byte, so no hash
    /// is trusted and no collision (crafted or not) can ever return another component.
    fn candidate(&self, len: usize) -> Option<Arc<LoadedComponent>> {
        let hash = self.by_len.get(&len)?;
        self.entries.get(hash).map(|(_, c)| c.clone())
    }

    /// Marks a component as just used (the LRU order).
    fn touch(&mut self, hash: &ContentHash) {
        let _ = self.get(hash);
    }

    fn get(&mut self, hash: &ContentHash) -> Option<Arc<LoadedComponent>> {
        self.clock += 1;
        let clock = self.clock;
        let hit = self.entries.get_mut(hash).map(|(used, c)| {
            *used = clock;
            c.clone()
        });
        if let Some(c) = &hit {
            self.by_len.insert(c.size, c.hash);
        }
        hit
    }

    fn insert(&mut self, hash: ContentHash, c: Arc<LoadedComponent>) {
        self.compiled += 1;
        if self.entries.len() >= COMPONENT_CACHE_ENTRIES {
            if let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, (used, _))| *used)
                .map(|(h, _)| *h)
            {
                self.entries.remove(&oldest);
                self.by_len.retain(|_, h| *h != oldest);
            }
        }
        self.clock += 1;
        self.by_len.insert(c.size, hash);
        self.entries.insert(hash, (self.clock, c));
    }
}

/// Weak references to every compiled component, by hash. Bounded by what is held: an entry
/// whose component is gone is dropped by the next prune, which runs whenever the map has
/// doubled since the last one (amortised O(1) per insert).
#[derive(Default)]
struct LiveComponents {
    by_hash: HashMap<ContentHash, std::sync::Weak<LoadedComponent>>,
    prune_at: usize,
}

impl LiveComponents {
    fn insert(&mut self, c: &Arc<LoadedComponent>) {
        if self.by_hash.len() >= self.prune_at {
            self.by_hash.retain(|_, w| w.strong_count() > 0);
            self.prune_at = (self.by_hash.len() * 2).max(COMPONENT_CACHE_ENTRIES);
        }
        self.by_hash.insert(c.hash, Arc::downgrade(c));
    }

    fn get(&self, hash: &ContentHash) -> Option<Arc<LoadedComponent>> {
        self.by_hash.get(hash)?.upgrade()
    }
}

/// Advances the engine's epoch every [`EPOCH_TICK`] on a plain thread, so running guests yield
/// regularly (fairness, kill and deadline checks). Stops when dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    fn start(engine: Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let spawned = std::thread::Builder::new()
            .name("cell-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start the epoch thread ({e}); guests will not be preempted");
        }
        EpochTicker { stop }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_check_names_the_problem() {
        assert!(matches!(check_header(b"not wasm"), Err(LoadError::NotWasm)));
        assert!(matches!(
            check_header(b"\0asm\x01\0\0\0"),
            Err(LoadError::CoreModule)
        ));
        assert!(check_header(b"\0asm\x0d\0\x01\0").is_ok());
    }

    #[test]
    fn provided_imports() {
        assert!(is_provided("wasi:cli/environment@0.2.0"));
        assert!(is_provided("wasi:io/streams@0.2.12"));
        assert!(is_provided("wasi:http/outgoing-handler@0.2.0"));
        assert!(!is_provided("wasi:keyvalue/store@0.2.0"));
        assert!(!is_provided("wasi:cli/environment@0.3.0"));
        assert!(!is_provided("my:custom/thing"));
    }

    /// The same bytes again (a new allocation, as every spawn request brings) hit the cache
    /// without compiling; bytes of the same length that differ in one byte never do.
    #[tokio::test]
    async fn identical_bytes_hit_the_cache_and_others_do_not() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/guests/target/wasm32-wasip2/release/child-silent.wasm"
        );
        let bytes = std::fs::read(path).expect("build the guests first (make guests)");
        let engine = CellEngine::new(&EngineConfig::default()).unwrap();
        let first = engine.load(Arc::from(&bytes[..])).await.unwrap();
        let again = engine.load(Arc::from(&bytes[..])).await.unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(engine.compiled_count(), 1);

        let mut other = bytes.clone();
        let last = other.len() - 1;
        other[last] ^= 0xff; // inside the trailing custom section: still a valid component
        let other = engine.load(Arc::from(&other[..])).await.unwrap();
        assert!(!Arc::ptr_eq(&first, &other));
        assert_ne!(first.hash, other.hash);
        assert_eq!(engine.compiled_count(), 2);
        // And the original is still found by its bytes, now that `other` took its length.
        let third = engine.load(Arc::from(&bytes[..])).await.unwrap();
        assert!(Arc::ptr_eq(&first, &third));
        assert_eq!(engine.compiled_count(), 2);
        // Another shard finds it by the hash a capability names, compiling nothing.
        let named = ContentHash::parse(&first.hash.to_string()).unwrap();
        assert!(Arc::ptr_eq(&engine.find_live(&named).unwrap(), &first));
        assert!(engine
            .find_live(&ContentHash::of(b"never loaded"))
            .is_none());
        assert!(ContentHash::parse("not hex").is_none());
        assert_eq!(engine.compiled_count(), 2);
    }

    /// `wit/` documents the world cell provides; keep it and [`PROVIDED_PACKAGES`] in step.
    #[test]
    fn provided_packages_match_wit() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/wit/deps");
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            for line in text.lines() {
                if let Some(rest) = line.strip_prefix("package ") {
                    found.push(rest.split('@').next().unwrap().to_string());
                }
            }
        }
        found.sort();
        let mut expected: Vec<_> = PROVIDED_PACKAGES.iter().map(|s| s.to_string()).collect();
        expected.sort();
        assert_eq!(found, expected);
    }
}
