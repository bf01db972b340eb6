//! The route's `options:`, parsed with serde (an error names its option
//! path, and the host points at the conf.d line), with their defaults.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use tamada_sdk::units::{Secs, Size};

/// How ETags are made.
#[derive(Deserialize, schemars::JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum EtagMode {
    /// From size, modification time (with nanoseconds) and inode.
    #[default]
    Metadata,
    /// From a hash of the content, computed once per file identity.
    Content,
    /// No ETag.
    Off,
}

/// Where symlinks may lead.
#[derive(Deserialize, schemars::JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Symlinks {
    /// Only to files inside the root.
    #[default]
    Inside,
    /// Anywhere (as nginx's `disable_symlinks off`).
    Follow,
}

/// The route's `options:`.
#[derive(Deserialize, schemars::JsonSchema, Debug, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Serve this folder for the route (the rest of the path after the
    /// route prefix maps into it), instead of the vhost's document_root.
    pub root: Option<PathBuf>,
    /// Index files tried for a directory, in order.
    pub index: Vec<String>,
    /// List directories without an index file.
    pub autoindex: bool,
    /// Serve dotfiles and dot-directories (`.well-known/` always is).
    pub dotfiles: bool,
    pub symlinks: Symlinks,
    /// Served (200) for a missing path whose last segment has no extension.
    pub fallback: Option<String>,
    /// Pages served with their original status, e.g. `404: /404.html`.
    pub error_pages: BTreeMap<u16, String>,
    /// Extension (with or without dot) -> Content-Type, over the table.
    pub mime_types: BTreeMap<String, String>,
    pub etag: EtagMode,
    /// Serve `x.br` / `x.gz` beside `x` to clients that accept them.
    pub precompressed: bool,
    /// A Cache-Control value for every file.
    pub cache_control: Option<String>,
    /// Most ranges in one request (after coalescing); more -> 200.
    pub max_ranges: usize,
    /// The open-file cache.
    pub cache: CacheConfig,
}

/// The `cache:` option: the open-file cache of each event loop.
#[derive(Deserialize, schemars::JsonSchema, Debug, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// How long what a path resolved to is trusted before it is looked
    /// at again (a file replaced on disk is served within this time).
    pub valid: Secs,
    /// Most paths remembered per event loop; 0 turns the cache off.
    pub entries: usize,
    /// Files up to this size are kept in memory.
    pub max_file_size: Size,
    /// Memory for file contents per event loop.
    pub memory: Size,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            valid: Secs(Duration::from_secs(1)),
            entries: 10_000,
            max_file_size: Size(64 << 10),
            memory: Size(64 << 20),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            root: None,
            index: vec!["index.html".into()],
            autoindex: false,
            dotfiles: false,
            symlinks: Symlinks::Inside,
            fallback: None,
            error_pages: BTreeMap::new(),
            mime_types: BTreeMap::new(),
            etag: EtagMode::Metadata,
            precompressed: false,
            cache_control: None,
            max_ranges: 32,
            cache: CacheConfig::default(),
        }
    }
}
